"""Indexes that store vectors of shallower layers, and funnels whose stages name a layer."""

import json

import numpy as np
import pytest
from helpers import assert_same_ranking

from funnel import Retriever, verify_index
from funnel.corpus import document_text, open_corpus
from funnel.errors import InputError
from funnel.indexes.builder import IndexConfig, build_index
from funnel.indexes.index import Index
from funnel.indexes.shortlist import make_spec
from funnel.indexes.updates import add_documents, compact_index, delete_documents
from funnel.layers import LayeredEncoder, encode_documents
from funnel.search.plan import Plan, Stage
from funnel.search.run import LayeredQueries, run_funnel
from funnel.vectors import normalize, truncate

PLAN = "2:64:40,6:full:5"


@pytest.fixture(scope="module")
def layered_index(tmp_path_factory, cranfield_parquet, encoder):
    path = tmp_path_factory.mktemp("layers") / "cranfield"
    return build_index(open_corpus(cranfield_parquet), encoder, path, IndexConfig(shortlists=(make_spec(64),), layers=(2, 4)))


@pytest.fixture(scope="module")
def layered(encoder):
    return LayeredEncoder(encoder)


def test_stored_layer_vectors_are_the_cut_models_vectors(layered_index, layered, encoder, cranfield_docs):
    index = Index.load(layered_index)
    assert (index.layers, index.depth) == ((2, 4), 6)
    texts = [document_text(row["title"], row["text"]) for row in cranfield_docs[:12]]
    positions = np.arange(12)
    # Stored in each depth's own basis: the model's vectors through that depth's rotation.
    for layer in (2, 4):
        np.testing.assert_allclose(
            index.vectors(positions, layer=layer), index.stored_queries(layered.encode(texts, layer), layer).vectors, atol=2e-3
        )
    np.testing.assert_allclose(index.vectors(positions), index.stored_queries(encoder.encode(texts)).vectors, atol=2e-3)
    np.testing.assert_allclose(index.vectors(positions, layer=6), index.vectors(positions))
    # Shallow vectors are not the full ones: the index really holds two models' vectors.
    assert np.abs(index.vectors(positions, layer=2) - index.vectors(positions)).max() > 0.05
    assert verify_index(layered_index).ok


def test_layered_funnel_equals_a_manual_shallow_shortlist_and_deep_rescore(layered_index, layered, cranfield_queries):
    index = Index.load(layered_index)
    queries = cranfield_queries[:6]
    result = run_funnel(index, LayeredQueries(layered, queries), Plan.parse(PLAN), 5)

    shallow_q, deep_q = (
        index.stored_queries(layered.encode(queries, 2), 2).vectors,
        index.stored_queries(layered.encode(queries, 6), 6).vectors,
    )
    all_positions = np.arange(index.count)
    shallow_docs = truncate(index.vectors(all_positions, layer=2), 64)
    shortlist = np.argsort(-(truncate(shallow_q, 64) @ shallow_docs.T), axis=1, kind="stable")[:, :40]
    deep_scores = np.einsum("qnd,qd->qn", normalize(index.vectors(shortlist)), deep_q)
    order = np.argsort(-deep_scores, axis=1, kind="stable")[:, :5]
    assert_same_ranking(
        result.scores, result.positions, np.take_along_axis(deep_scores, order, 1), np.take_along_axis(shortlist, order, 1), 2e-3
    )


def test_a_query_runs_each_layer_once(layered_index, layered, cranfield_queries):
    queries = LayeredQueries(layered, cranfield_queries[:3])
    result = run_funnel(Index.load(layered_index), queries, Plan.parse("2:64:40,4:full:20,full:5"), 5)
    assert [stage.layers_run for stage in result.trace] == [2, 4, 6]
    assert queries.layers_run == 6, "continuing from layer 2 and 4 runs 6 layers in all, not 12"
    assert all(stage.encode_seconds > 0 for stage in result.trace)


def test_retriever_search_with_layered_stages(layered_index, cranfield_queries):
    retriever = Retriever.load(layered_index)
    hits = retriever.search(cranfield_queries[0], k=5, stages=PLAN)
    assert len(hits) == 5 and hits[0].score >= hits[-1].score
    # The last stage rescores with the full model: its scores are the full model's cosines.
    full = retriever.index.stored_queries(retriever.encode_queries([cranfield_queries[0]])).vectors[0]
    stored = {doc_id: row for doc_id, row in zip(retriever.index.ids(), range(retriever.index.count))}
    vectors = normalize(retriever.index.vectors(np.array([stored[h.id] for h in hits])))
    np.testing.assert_allclose([h.score for h in hits], vectors @ full, atol=2e-3)


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ("3:64:40,full:5", "not of layer 3: rebuild it with --layers 3"),
        ("2:32:40,full:5", "first stage scores at 32 dims"),
        ("4:64:40,2:full:5", "must not go back to a shallower layer"),
    ],
)
def test_plans_the_index_cannot_run(layered_index, plan, message):
    with pytest.raises(InputError, match=message):
        Retriever.load(layered_index).search("shock waves", k=5, stages=plan)


def test_ready_vectors_cannot_feed_a_shallow_stage(layered_index, encoder):
    with pytest.raises(InputError, match="needs query vectors from layer 2"):
        run_funnel(Index.load(layered_index), encoder.encode(["shock waves"]), Plan.parse(PLAN), 5)


def test_layers_the_model_does_not_have(tmp_path, cranfield_parquet, encoder):
    with pytest.raises(InputError, match=r"layers \[7\] do not exist in this 6-layer model"):
        build_index(open_corpus(cranfield_parquet), encoder, tmp_path / "bad", IndexConfig(layers=(7,)))
    assert not (tmp_path / "bad").exists()


def test_add_delete_and_compact_keep_layer_vectors(tmp_path, layered_index, encoder, layered):
    import shutil

    import pyarrow as pa

    from funnel.corpus import DOCUMENT_SCHEMA

    path = tmp_path / "copy"
    shutil.copytree(layered_index, path)
    texts = ["supersonic flow over a flat plate", "heat transfer in a hypersonic boundary layer"]
    batch = pa.RecordBatch.from_arrays(
        [pa.array(["new-1", "new-2"]), pa.array([None, None], pa.string()), pa.array(texts), pa.array([None, None], pa.string())],
        schema=DOCUMENT_SCHEMA,
    )
    full, by_layer = encode_documents(encoder, texts, (2, 4))
    add_documents(path, [(batch, full, by_layer)])
    renamed = batch.set_column(0, "id", pa.array(["other-1", "other-2"]))
    with pytest.raises(ValueError, match=r"vectors for layers \[\] but this segment stores layers \[2, 4\]"):
        add_documents(path, [(renamed, full)])
    delete_documents(path, [Index.load(path).ids()[0]])
    compact_index(path)
    index = Index.load(path)
    ids = index.ids()
    rows = np.array([ids.index("new-1"), ids.index("new-2")])
    np.testing.assert_allclose(index.vectors(rows, layer=2), index.stored_queries(layered.encode(texts, 2), 2).vectors, atol=2e-3)
    assert len(index.segments) == 1 and verify_index(path).ok
    result = run_funnel(index, LayeredQueries(layered, texts[:1]), Plan.parse(PLAN), 5)
    assert ids[result.positions[0][0]] == "new-1"


def test_manifest_names_the_layers(layered_index):
    manifest = json.loads((layered_index / "manifest.json").read_text())
    assert manifest["layers"] == [2, 4] and manifest["depth"] == 6
    files = manifest["segments"][0]["files"]
    assert {"vectors-l2.f16", "shortlist-l2-d64.faiss", "vectors-l4.f16", "shortlist-l4-d64.faiss"} <= set(files)
    # Each stored depth gets its own rotation decision (and its own matrix where it rotates).
    decision = manifest["rotation"]["decision"]
    assert set(decision) == {"full", "2", "4"}
    for key, record in decision.items():
        name = "rotation.f32" if key == "full" else f"rotation-l{key}.f32"
        assert (name in manifest["rotation"]["files"]) == (record["method"] == "pca")


def test_stage_names_layer_dim_and_candidates():
    assert Plan.parse("2:64:200,6:full:10") == (Stage(64, 200, layer=2), Stage(None, 10, layer=6))


def test_layered_plans_on_the_onnx_engine_run_cut_graphs_and_rank_as_torch(layered_index, encoder, cranfield_queries):
    from funnel.encoders import OnnxEncoder, load_query_encoder
    from funnel.search.run import CutQueries

    index = Index.load(layered_index)
    onnx = Retriever(index, load_query_encoder(None, "onnx"))
    on_torch = Retriever(index, encoder)
    assert isinstance(onnx.encoder, OnnxEncoder)
    queries = cranfield_queries[:5]
    source = onnx._query_source(queries, Plan.parse(PLAN), index)
    assert isinstance(source, CutQueries)
    # A stage at layer 2 runs the 2-layer graph only; the full-depth stage then runs the full one.
    np.testing.assert_allclose((source.at(2) * LayeredEncoder(encoder).encode(queries, 2)).sum(axis=1), 1.0, atol=1e-5)
    assert source.layers_run == 2
    source.at(None)
    assert source.layers_run == 8
    for plan in (PLAN, "2:64:5", "2:64:40,4:full:10,full:5"):
        for query in queries:
            got, expected = onnx.search(query, stages=plan), on_torch.search(query, stages=plan)
            assert [hit.id for hit in got] == [hit.id for hit in expected], plan
            np.testing.assert_allclose([hit.score for hit in got], [hit.score for hit in expected], atol=1e-4)


def test_an_export_leaves_the_torch_model_as_it_was(encoder, cranfield_queries, tmp_path):
    """Regression: the export put every submodule in the top module's mode afterwards (train
    mode for a loaded SentenceTransformer), so layers called directly ran their dropout."""
    from funnel.encoders.onnx_export import export_graph

    before = LayeredEncoder(encoder).encode(cranfield_queries[:4], 2)
    encoder.model.training = True  # as SentenceTransformer loads: its top module in train mode, its layers in eval
    modes = [module.training for module in encoder.model.modules()]
    try:
        export_graph(encoder, tmp_path / "graph", depth=2)
        assert [module.training for module in encoder.model.modules()] == modes
    finally:
        encoder.model.eval()
    np.testing.assert_allclose(LayeredEncoder(encoder).encode(cranfield_queries[:4], 2), before, atol=1e-6)
