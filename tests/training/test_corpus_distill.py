"""Training on an index's own corpus: (span, document) pairs read from the index folder, and a
start from the model with the index's rotation folded in, so its prefixes start at the index's."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import vector_index

from funnel.errors import InputError
from funnel.indexes.builder import IndexConfig
from funnel.indexes.index import Index
from funnel.readers import document_text
from funnel.training import TrainConfig, train
from funnel.training.data import SPANS_PER_DOCUMENT, load_examples
from funnel.training.trainer import fold_rotation


def test_an_index_folder_gives_span_document_pairs_of_its_documents(cranfield_index):
    index = Index.load(cranfield_index)
    passages = {document_text(doc["title"], doc["text"]) for doc in index.documents(list(range(index.count)))}
    dataset = load_examples([cranfield_index], seed=1)
    assert len(dataset) == SPANS_PER_DOCUMENT * index.count
    for row in dataset.select(range(20)):
        assert row["positive"] in passages and row["anchor"] in row["positive"]


def test_the_folded_model_gives_the_vectors_the_index_stores(cranfield_index):
    from funnel.models import load_model

    index = Index.load(cranfield_index)
    assert index.rotation(None) is not None
    model = load_model(None)
    fold_rotation(model, cranfield_index)
    documents = index.documents([0, 1, 2])
    vectors = model.encode([document_text(d["title"], d["text"]) for d in documents], normalize_embeddings=True)
    stored = index.vectors(np.array([0, 1, 2]))
    assert (vectors * stored).sum(axis=1).min() > 0.999  # float16 storage, nothing else between them


def test_folding_refuses_an_index_in_the_models_order_or_of_another_width(tmp_path, cranfield_index, tiny_model_path):
    from funnel.models import load_model

    plain = vector_index(tmp_path / "plain", np.random.default_rng(0).normal(size=(50, 384)), IndexConfig(rotation="none"))
    with pytest.raises(InputError, match="stores its vectors in the model's order"):
        fold_rotation(load_model(None), plain)
    with pytest.raises(InputError, match="384-dim rotation but the model gives 64 dims"):
        fold_rotation(load_model(tiny_model_path), cranfield_index)


def test_distillation_on_the_corpus_starts_from_the_folded_model(tmp_path, cranfield_index):
    output = tmp_path / "m"
    train(TrainConfig(data=(cranfield_index,), output=output, fold_rotation=cranfield_index, loss="distill", dims=(384, 64),
                      max_steps=1, batch_size=8, max_seq_length=32, show_progress=False))  # fmt: skip
    from funnel.models import load_model, read_model_metadata

    trained = load_model(output)
    assert [type(module).__name__ for module in trained][-1] == "Dense"
    assert "rotation of" in read_model_metadata(output)["base_model"]
