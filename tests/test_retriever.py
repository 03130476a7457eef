from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import assert_same_ranking

from funnel import Retriever, Stage
from funnel.encoders.onnx_engine import OnnxEncoder
from funnel.errors import InputError
from funnel.indexes.index import Index
from funnel.models import Encoder
from funnel.search.exact import exact_search
from funnel.search.plan import Plan


@pytest.fixture(scope="module")
def retriever(cranfield_index, encoder):
    return Retriever(Index.load(cranfield_index), encoder)


def test_search_returns_hits_best_first(retriever):
    hits = retriever.search("heat transfer in hypersonic boundary layers", k=5)
    assert [hit.rank for hit in hits] == [1, 2, 3, 4, 5]
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    assert hits[0].text and hits[0].metadata["year"] >= 1960
    assert "heat" in (hits[0].title + hits[0].text).lower()


def test_search_batch_equals_single_searches(retriever, cranfield_queries):
    batch = retriever.search_batch(cranfield_queries[:4], k=3)
    for query, hits in zip(cranfield_queries[:4], batch):
        assert [h.id for h in hits] == [h.id for h in retriever.search(query, k=3)]


def test_whole_corpus_shortlist_equals_exact_full_dim_search(retriever, query_vectors):
    result = retriever.search_vectors(query_vectors, k=10, stages=Plan.two_stage(64, retriever.index.count, 10))
    assert_same_ranking(result.scores, result.positions, *exact_search(retriever.index, query_vectors, 10))


def test_default_plan_and_string_stages(retriever, query_vectors):
    assert retriever.plan(10) == (Stage(64, 150), Stage(None, 10))  # 200 clipped to the 150 documents
    three = retriever.search_vectors(query_vectors, k=5, stages="128:100,256:20,full:5")
    assert [t.dim for t in three.trace] == [128, 256, 384]
    assert three.positions.shape == (len(query_vectors), 5)


def test_concurrent_searches_equal_serial_ones(retriever, cranfield_queries):
    serial = [[h.id for h in retriever.search(q, k=5)] for q in cranfield_queries]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda q: [h.id for h in retriever.search(q, k=5)], cranfield_queries * 2))
    assert parallel == serial * 2


def test_k_larger_than_the_corpus_returns_every_document(retriever):
    hits = retriever.search("wing", k=400, stages=Plan.two_stage(64, 500, 400))
    assert len(hits) == 150 and len({h.id for h in hits}) == 150


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query_is_refused(retriever, query):
    with pytest.raises(InputError, match=r"query 1 is empty: give some text to search for"):
        retriever.search(query)


def test_search_batch_wants_a_list(retriever):
    with pytest.raises(InputError, match=r"takes a list of queries"):
        retriever.search_batch("one query")
    assert retriever.search_batch([]) == []


@pytest.fixture(scope="module")
def two_layer_index(tmp_path_factory, encoder, cranfield_docs):
    """40 Cranfield abstracts indexed with MiniLM cut after 2 layers (a model other than the
    default, so that an index reopened with the default model would rank differently), and that
    model on torch."""
    import copy

    import pyarrow as pa
    import pyarrow.parquet as pq
    from torch import nn

    from funnel.corpus import open_corpus
    from funnel.indexes.builder import build_index

    model = copy.deepcopy(encoder.model)
    bert = model[0].auto_model
    bert.encoder.layer = nn.ModuleList(bert.encoder.layer[:2])
    bert.config.num_hidden_layers = 2
    folder = tmp_path_factory.mktemp("models") / "minilm-2-layers"
    model.save(str(folder))
    cut = Encoder(model=model, name=str(folder))
    corpus = tmp_path_factory.mktemp("corpus") / "cranfield-40.parquet"
    pq.write_table(
        pa.table(
            {key: [doc[column] for doc in cranfield_docs[:40]] for key, column in [("id", "_id"), ("title", "title"), ("text", "text")]}
        ),
        corpus,
    )
    return build_index(open_corpus(corpus), cut, tmp_path_factory.mktemp("indexes") / "two-layer"), cut


def test_load_reopens_the_index_with_its_model(two_layer_index, encoder, cranfield_queries):
    index, built_with_model = two_layer_index
    loaded = Retriever.load(index)
    assert isinstance(loaded.encoder, OnnxEncoder)  # by default queries run without torch
    ours = loaded.search_vectors(loaded.encode_queries(cranfield_queries), k=10)
    built_with = Retriever(Index.load(index), built_with_model)
    theirs = built_with.search_vectors(built_with.encode_queries(cranfield_queries), k=10)
    assert_same_ranking(ours.scores, ours.positions, theirs.scores, theirs.positions)
    assert loaded.encoder.name == built_with_model.name
    # The default model ranks these documents otherwise: a load that ignored the manifest would fail above.
    default = Retriever(Index.load(index), encoder).search_vectors(encoder.encode(cranfield_queries), k=10)
    assert (default.positions != theirs.positions).mean() > 0.5
