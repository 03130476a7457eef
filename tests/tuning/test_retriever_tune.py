"""Retriever.tune and `funnel tune`: the plan is stored, used by default and shown by `funnel info`."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from funnel.cli import app
from funnel.indexes.index import Index
from funnel.indexes.manifest import read_manifest
from funnel.retriever import Retriever
from funnel.search.plan import Plan
from funnel.search.run import run_funnel
from funnel.spans import random_span
from funnel.tuning.calibration import read_query_file


@pytest.fixture()
def index_copy(tmp_path, cranfield_index):
    return shutil.copytree(cranfield_index, tmp_path / "cranfield")


def test_retriever_tune_stores_the_plan_and_search_uses_it(index_copy, encoder, query_vectors):
    retriever = Retriever(Index.load(index_copy), encoder)
    plan = retriever.tune(0.9, k=10, calibration_size=60, seed=1, timing_queries=5)
    stored = read_manifest(index_copy).plan
    assert stored["stages"] == plan.stages_text and stored["k"] == 10 and stored["target_recall"] == 0.9
    assert stored["calibration"] == {
        "source": "corpus: sampled documents' random 5-10 word spans (every 4th holding its document's rarest term), "
        "each left out of its own query's results",
        "queries": 60,
        "fit": 30,
        "holdout": 30,
        "seed": 1,
    }
    assert set(stored["measured"]) >= {"recall", "ms_per_query", "flops", "exact_ms_per_query"}
    assert stored["measured"]["recall"] >= 0.9 or stored["notes"]
    # Corpus-made queries can be easier than real ones: the target gets a quarter of the miss rate on top.
    assert stored["selection"].endswith("lower bound of fit-half recall ≥ 0.925")
    # Used by default, in this retriever and in a freshly loaded one, for any k up to the tuned one.
    fresh = Retriever(Index.load(index_copy), encoder)
    for searcher in (retriever, fresh):
        assert searcher.plan(10) == plan.stages and searcher.plan(5) == plan.stages
        assert searcher.plan(20) != plan.stages
    dense = Plan.of(plan.stages).dense()  # vectors alone bring no texts for BM25 candidates
    expected = run_funnel(fresh.index, query_vectors[:3], dense, 10).positions
    np.testing.assert_array_equal(fresh.search_vectors(query_vectors[:3], k=10).positions, expected)
    hits = fresh.search("boundary layer transition", k=5)
    assert len(hits) == 5


def test_retriever_tune_without_saving_leaves_the_index_alone(index_copy, encoder):
    retriever = Retriever(Index.load(index_copy), encoder)
    retriever.tune(1.0, k=5, save=False, calibration_size=10, timing_queries=2)
    assert read_manifest(index_copy).plan is None


def test_cli_tune_then_info(index_copy, tmp_path):
    queries = tmp_path / "queries.txt"
    queries.write_text(
        "\n".join(
            [
                "shock waves on a cone",
                "heat transfer in hypersonic flow",
                "wing flutter",
                "",
                "boundary layer suction",
                "buckling of thin cylinders",
                "slender body drag",
            ]
        )
        + "\n"
    )
    runner = CliRunner()
    result = runner.invoke(app, ["tune", str(index_copy), "--recall", "0.9", "-k", "5", "--queries", str(queries), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["calibration"]["source"] == f"file: {queries}" and report["calibration"]["queries"] == 6
    assert report["stored"] is True
    info = runner.invoke(app, ["info", str(index_copy)])
    assert info.exit_code == 0
    assert f"plan       {report['stages']} (k ≤ 5)" in info.output
    assert "tuned      recall@5" in info.output and "calibrated on 6 queries: file:" in info.output


def test_cli_rejects_a_bad_target(index_copy):
    result = CliRunner().invoke(app, ["tune", str(index_copy), "--recall", "1.5"])
    assert result.exit_code != 0
    assert "target recall must be above 0 and at most 1" in str(result.exception)


def test_random_spans_and_query_files(tmp_path):
    rng = np.random.default_rng(0)
    text = " ".join(f"w{i}" for i in range(100))
    spans = [random_span(text, rng) for _ in range(50)]
    assert all(5 <= len(span.split()) <= 10 and span in text for span in spans) and len(set(spans)) > 40
    assert random_span("just three words", rng) == "just three words"
    with pytest.raises(Exception, match="does not exist"):
        read_query_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(Exception, match="no queries in"):
        read_query_file(tmp_path / "empty.txt")


def test_tuning_measures_whether_int8_queries_agree_and_auto_follows(index_copy, encoder):
    """int8 query graphs are on only where the calibration queries show the tuned plan's top-k
    agreeing with the fp32 path at the target; `auto` then opens the graph the tuner chose."""
    retriever = Retriever(Index.load(index_copy), encoder)
    strict = retriever.tune(1.0, k=10, calibration_size=40, seed=2, timing_queries=2).query_encoder
    assert strict is not None and strict["queries"] == 40 and strict["target_recall"] == 1.0
    assert 0.5 < strict["int8_agreement"] < 1.0, "MiniLM's int8 queries are close to fp32's, not equal"
    assert strict["precision"] == "fp32" and read_manifest(index_copy).plan["query_encoder"] == strict
    assert Retriever.load(index_copy).encoder.precision == "fp32"

    loose = retriever.tune(0.5, k=10, calibration_size=40, seed=2, timing_queries=2).query_encoder
    assert loose is not None and loose["precision"] == "int8" and loose["int8_agreement"] >= 0.5
    assert Retriever.load(index_copy).encoder.precision == "int8"
    assert Retriever.load(index_copy, query_encoder="onnx").encoder.precision == "fp32", "an explicit engine wins"
    info = CliRunner().invoke(app, ["info", str(index_copy)])
    assert "queries    int8 ONNX: int8's top-10 agrees with fp32's at" in info.output and "≥ target 0.5" in info.output
