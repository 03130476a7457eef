"""Precomputed embeddings: used only when a re-encoded sample matches, and then the figures are equal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from funnel.corpus import document_text
from funnel.errors import InputError
from funnel.evaluation.harness import EvalOptions, evaluate

CORPUS = [
    {"_id": "d1", "title": "Wings", "text": "lift on a swept wing at low speed"},
    {"_id": "d2", "title": "", "text": "drag of a slender body at high speed"},
    {"_id": "d3", "title": "Heat", "text": "heat transfer in a laminar boundary layer"},
]
QUERIES = [{"_id": "q1", "text": "wing lift"}, {"_id": "q2", "text": "boundary layer heating"}]


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    dataset = tmp_path / "tiny"
    (dataset / "qrels").mkdir(parents=True)
    (dataset / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in CORPUS))
    (dataset / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in QUERIES))
    (dataset / "qrels" / "test.tsv").write_text("q1\td1\t2\nq2\td3\t1\n")
    return dataset


def write_cache(root: Path, encoder, corrupt: bool = False) -> Path:
    folder = root / "tiny"  # the cache keeps one subfolder per dataset
    folder.mkdir(parents=True)
    corpus = encoder.encode([document_text(row["title"], row["text"]) for row in CORPUS])
    if corrupt:
        corpus = corpus[::-1].copy()
    np.save(folder / "corpus.npy", corpus)
    np.save(folder / "queries.npy", encoder.encode([row["text"] for row in QUERIES]))
    (folder / "corpus_ids.json").write_text(json.dumps([row["_id"] for row in CORPUS]))
    (folder / "queries_ids.json").write_text(json.dumps([row["_id"] for row in QUERIES]))
    return root


def run(folder: Path, encoder, index_dir: Path, cache: Path | None):
    return evaluate(
        folder,
        model=encoder,
        options=EvalOptions(
            index_dir=index_dir,
            embeddings_cache=cache,
            metrics=("ndcg@10", "mrr@10"),
            dims=(32,),
            shortlists=(2,),
            repeats=1,
            encode_sample=1,
        ),
    )


def test_a_matching_cache_gives_the_figures_of_a_real_encode(folder: Path, tmp_path: Path, encoder) -> None:
    cached = run(folder, encoder, tmp_path / "cached", write_cache(tmp_path / "cache", encoder))
    real = run(folder, encoder, tmp_path / "real", None)
    assert [row.per_query for row in cached.rows] == [row.per_query for row in real.rows]
    assert cached.index["source"]["embeddings"].endswith("tiny")


def test_a_cache_of_other_vectors_is_refused(folder: Path, tmp_path: Path, encoder) -> None:
    with pytest.raises(InputError, match=r"the cached vector of 'd\d' differs from the model's .* rebuild it or drop --embeddings-cache"):
        run(folder, encoder, tmp_path / "indexes", write_cache(tmp_path / "cache", encoder, corrupt=True))
