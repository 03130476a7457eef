"""The harness on a real index: exact search scored by funnel equals pytrec_eval on the same run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import pytrec_eval

from funnel.errors import InputError
from funnel.evaluation.harness import EvalOptions, evaluate
from funnel.evaluation.plot import plot_report
from funnel.evaluation.report import EvaluationReport
from funnel.indexes.index import Index
from funnel.readers import load_qrels, load_queries
from funnel.search.exact import exact_search

METRICS = ["ndcg@10", "mrr@10", "recall@10", "recall@100", "map@100"]
TREC = {"ndcg@10": "ndcg_cut_10", "recall@10": "recall_10", "recall@100": "recall_100", "map@100": "map_cut_100"}


@pytest.fixture(scope="module")
def cranfield_files(data_dir: Path) -> tuple[Path, Path]:
    folder = data_dir / "cranfield"
    return folder / "queries.jsonl", folder / "qrels" / "test.tsv"


@pytest.fixture(scope="module")
def report(cranfield_index: Path, cranfield_files: tuple[Path, Path], encoder) -> EvaluationReport:
    """150 Cranfield documents; a shortlist of all 150 at 64 dims, and a three-stage chain."""
    queries, qrels = cranfield_files
    return evaluate(
        cranfield_index,
        model=encoder,
        options=EvalOptions(
            queries=queries,
            qrels=qrels,
            metrics=tuple(METRICS),
            dims=(64,),
            shortlists=(150,),
            plans=("32:150,128:120,full:100",),
            repeats=1,
            encode_sample=3,
            command="pytest",
        ),
    )


def test_exact_search_matches_pytrec_eval_on_the_same_run(report, cranfield_index, cranfield_files, encoder) -> None:
    queries_file, qrels_file = cranfield_files
    queries = load_queries(queries_file)
    query_ids = list(report.reference.per_query)
    # An independent run: FAISS exact search over the stored vectors, ids resolved by hand; with an
    # existing index, judgements of documents it does not hold are skipped (and warned about).
    index = Index.load(cranfield_index)
    ids = index.ids()
    all_qrels = load_qrels(qrels_file)
    qrels = {q: {d: level for d, level in all_qrels[q].items() if d in set(ids)} for q in query_ids}
    scores, positions = exact_search(index, encoder.encode([queries[q] for q in query_ids]), k=100)
    run = {q: {ids[p]: float(s) for s, p in zip(row_s, row_p)} for q, row_s, row_p in zip(query_ids, scores, positions)}
    expected = pytrec_eval.RelevanceEvaluator(qrels, set(TREC.values())).evaluate(run)
    top10 = {q: dict(sorted(r.items(), key=lambda item: (np.float32(item[1]), item[0]), reverse=True)[:10]) for q, r in run.items()}
    reciprocal = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    assert len(query_ids) >= 20  # queries judged on the 150 indexed documents
    for query_id in query_ids:
        got = report.reference.per_query[query_id]
        for metric, trec in TREC.items():
            assert got[metric] == pytest.approx(expected[query_id][trec], abs=1e-6), (query_id, metric)
        assert got["mrr@10"] == pytest.approx(reciprocal[query_id]["recip_rank"], abs=1e-6)
    mean = np.mean([expected[q]["ndcg_cut_10"] for q in query_ids])
    assert report.reference.means["ndcg@10"] == pytest.approx(mean, abs=1e-6)


def test_a_shortlist_of_the_whole_corpus_equals_exact_search(report) -> None:
    whole = next(row for row in report.rows if row.name == "64:150,full:100")
    for metric in METRICS:
        assert whole.means[metric] == pytest.approx(report.reference.means[metric], abs=1e-6)
        assert whole.retained[metric] == pytest.approx(100.0, abs=1e-4)


def test_rows_carry_costs_timings_and_ratios(report) -> None:
    assert [row.name for row in report.rows] == ["exact", "64:150,full:100", "32:150,128:120,full:100"]
    exact, whole, chain = report.rows
    assert exact.search_flops == 2 * 150 * 384 and exact.bytes_read == 150 * 384 * 4
    # 150 vectors at 64 dims, then 150 candidates at 384 dims read as float16 rows.
    assert whole.search_flops == 2 * (150 * 64 + 150 * 384)
    assert whole.bytes_read == 150 * 64 * 4 + 150 * 384 * 2
    assert [cost.dim for cost in chain.costs] == [32, 128, 384]
    assert [cost.vectors for cost in chain.costs] == [150, 150, 120]
    assert all(t.median_ms > 0 and t.p95_ms >= t.median_ms for row in report.rows for t in [row.search, *row.stage_timings])
    assert exact.speedup == 1.0 and whole.speedup > 0 and exact.shortlist_bytes >= 150 * 384 * 4
    assert report.encoding.layers == 6 and report.encoding.tokens_mean > 5 and report.encoding.flops_mean > 1e7
    assert any(row.pareto for row in report.rows)


def test_report_records_what_reproduces_it(report, tmp_path: Path) -> None:
    paths = report.write(tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert {"dataset", "model", "index", "metrics", "encoding", "rows", "environment", "command", "warnings"} <= set(data)
    assert data["command"] == "pytest" and data["model"]["name"] == "all-MiniLM-L6-v2"
    assert data["environment"]["cores"] >= 1 and "numpy" in data["environment"]["versions"]
    assert data["index"]["count"] == 150 and data["index"]["vector_dtype"] == "float16"
    assert data["rows"][0]["costs"][0]["role"] == "shortlist" and "per_query" not in data["rows"][0]
    per_query = json.loads(paths["per_query"].read_text())
    assert per_query["command"] == "pytest" and per_query["environment"]["versions"] and per_query["index"]["count"] == 150
    assert per_query["rows"]["exact"] == {
        q: {m: round(v, 6) for m, v in values.items()} for q, values in report.reference.per_query.items()
    }
    # Judgements of Cranfield documents beyond the first 150 are skipped, and said so with counts.
    assert any("judgements of" in warning and "not in the index" in warning for warning in data["warnings"])
    markdown = paths["markdown"].read_text()
    assert "| exact" in markdown and "Command: `pytest`" in markdown
    assert "| 32:150,128:120,full:100 | 128:120 | rescore | full vectors | 128 | 150 |" in markdown
    assert plot_report(report, tmp_path / "out" / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_the_terminal_table_is_narrow_and_names_every_configuration(report: EvaluationReport) -> None:
    """`funnel eval` prints this one; the ~200-column markdown table stays in report.md."""
    lines = report.terminal_table().splitlines()
    assert max(len(line) for line in lines) <= 100 < len(report.table().splitlines()[0])
    assert lines[0].split()[:3] == ["config", "NDCG@10", "MRR@10"]
    assert [line.split()[0] for line in lines[1:]] == [row.name for row in report.rows]


def test_the_query_engine_is_chosen_and_recorded(report, cranfield_index, cranfield_files, encoder) -> None:
    """The default (auto) evaluates the fp32 ONNX graph: the same quality as torch to float error;
    int8 queries are evaluated on their own vectors and score differently."""
    queries, qrels = cranfield_files

    def run(engine: str) -> EvaluationReport:
        options = EvalOptions(queries=queries, qrels=qrels, metrics=("ndcg@10",), plans=("full:100",), repeats=1, encode_sample=2)
        return evaluate(cranfield_index, model=encoder, options=replace(options, query_encoder=engine))

    torch_run, int8_run = run("torch"), run("onnx-int8")
    assert report.encoding.engine == "onnx-fp32" and torch_run.encoding.engine == "torch" and int8_run.encoding.engine == "onnx-int8"
    exact = {name: r.rows[0].means["ndcg@10"] for name, r in (("auto", report), ("torch", torch_run), ("int8", int8_run))}
    assert exact["auto"] == pytest.approx(exact["torch"], abs=1e-6)
    assert exact["int8"] != exact["torch"] and exact["int8"] == pytest.approx(exact["torch"], abs=0.05)
    assert "(onnx-int8, 2 queries)" in int8_run.markdown()
    with pytest.raises(InputError, match="query encoder 'onnx-fp16' is not one funnel knows"):
        EvalOptions(query_encoder="onnx-fp16")  # type: ignore[arg-type]


def test_plans_with_bm25_candidates_are_evaluated_on_the_query_texts(cranfield_index, cranfield_files, encoder) -> None:
    """A plan that adds BM25 candidates runs on the evaluation's own query texts: its row is the
    run of that plan with those texts, and differs from the dense plan's."""
    from funnel.evaluation.inputs import index_data
    from funnel.evaluation.metrics import evaluate_run, run_from_arrays
    from funnel.search.plan import Plan
    from funnel.search.run import run_funnel

    queries, qrels = cranfield_files
    options = EvalOptions(
        queries=queries, qrels=qrels, metrics=("ndcg@10",), plans=("64:10,full:10", "64:10+bm25:40,full:10"), repeats=1, encode_sample=2
    )
    report = evaluate(cranfield_index, model=encoder, options=options, progress=None)
    by_name = {row.stages: row for row in report.rows}
    index = Index.load(cranfield_index)
    data = index_data(index, queries, qrels)
    texts = list(data.queries.values())
    result = run_funnel(index, encoder.encode(texts), Plan.parse("64:10+bm25:40,full:10"), 10, texts=texts)
    run = run_from_arrays(list(data.queries), result.positions, result.scores, corpus_ids=index.ids())
    expected = evaluate_run(run, data.qrels, ["ndcg@10"])
    assert by_name["64:10+bm25:40,full:10"].means["ndcg@10"] == pytest.approx(expected.means["ndcg@10"], abs=1e-3)
    assert by_name["64:10+bm25:40,full:10"].means["ndcg@10"] != by_name["64:10,full:10"].means["ndcg@10"]
    # The share of queries whose exact top 10 each row keeps, and the queries BM25 rescued.
    dense, union = by_name["64:10,full:10"], by_name["64:10+bm25:40,full:10"]
    assert report.rows[0].exact_kept == 1.0 and 0 <= dense.exact_kept <= union.exact_kept <= 1
    assert union.rescued and not dense.rescued and set(union.rescued) <= set(data.queries)
    queries_count = len(data.queries)
    assert len(union.rescued) >= round((union.exact_kept - dense.exact_kept) * queries_count)
    assert f"rescued the exact top 10 of {len(union.rescued)} queries" in report.markdown()
