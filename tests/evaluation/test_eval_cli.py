"""`funnel eval` on bad input: one line on stderr, exit code 2, no traceback; skips are warned with counts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from funnel.evaluation.harness import EvalOptions, evaluate

REPO = Path(__file__).resolve().parents[2]
CORPUS = [
    {"_id": "d1", "title": "Wings", "text": "lift on a swept wing at low speed"},
    {"_id": "d2", "title": "", "text": "drag of a slender body at high speed"},
    {"_id": "d3", "title": "Heat", "text": "heat transfer in a laminar boundary layer"},
    {"_id": "d4", "title": "", "text": ""},
]
QUERIES = [{"_id": "q1", "text": "wing lift"}, {"_id": "q2", "text": "boundary layer heating"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td3\t1\nq2\td4\t1\n"


def beir(folder: Path, queries=QUERIES, qrels: str = QRELS) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in CORPUS))
    (folder / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in queries))
    (folder / "qrels" / "test.tsv").write_text(qrels)
    return folder


def funnel_eval(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "funnel", "eval", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "case, args, message",
    [
        ("split", ["--split", "dev"], r"qrels has no split 'dev' \(dev.tsv\); splits there: test"),
        ("malformed", [], r"test.tsv line 3: found 2 columns"),
        ("no queries", [], r"queries.jsonl holds no queries"),
        ("nothing judged", [], r"none of the 2 queries in queries.jsonl is judged in split 'test'"),
        ("dims", ["--dims", "16,x"], r"--dims '16,x' is not a comma-separated list of positive integers"),
        ("metric", ["--metrics", "ndcg@10,bleu"], r"unknown metric 'bleu'"),
        ("stages", ["--stages", "64:x,full:10"], r"stage '64:x' is not DIM:CANDIDATES"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path, case: str, args: list[str], message: str) -> None:
    qrels = {"malformed": QRELS.replace("q2\td3\t1", "q2 d3"), "nothing judged": "x\td1\t1\n"}.get(case, QRELS)
    folder = beir(tmp_path / "tiny", queries=[] if case == "no queries" else QUERIES, qrels=qrels)
    result = funnel_eval(str(folder), *args, "--index-dir", str(tmp_path / "indexes"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert re.search(message, result.stderr), result.stderr


def test_index_mode_needs_queries_and_qrels(tmp_path: Path) -> None:
    result = funnel_eval(cwd=tmp_path)
    assert result.returncode == 2 and "give a BEIR dataset folder, or an existing index" in result.stderr
    result = funnel_eval("--index", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_unknown_ids_and_unindexed_documents_are_warned_with_counts(tmp_path: Path, encoder) -> None:
    qrels = QRELS + "q9\td1\t1\nq9\td2\t1\nq1\tnope\t1\n"
    report = evaluate(
        beir(tmp_path / "tiny", qrels=qrels),
        model=encoder,
        options=EvalOptions(
            index_dir=tmp_path / "indexes", metrics=("ndcg@10", "recall@10"), dims=(64,), shortlists=(2,), repeats=1, encode_sample=1
        ),
    )
    text = "\n".join(report.warnings)
    assert "skipped 2 judgements of 1 query ids not in queries.jsonl (such as 'q9')" in text
    assert "skipped 1 judgements of 1 document ids not in corpus.jsonl (such as 'nope')" in text
    assert "indexing skipped 1 corpus rows (1 empty text)" in text
    assert "1 judgements (1 relevant) name documents not in the index, such as 'd4'" in text
    # d4 cannot be retrieved but still counts: q2 finds at most half its relevant documents.
    assert report.reference.per_query["q2"]["recall@10"] == 0.5
    assert report.index["count"] == 3
