"""The query engine: torch against ONNX Runtime, per query, under load, and from a cold CLI.

    python -m benchmarks.query_engine

Everything is measured in one run on this machine, as ratios against the torch path:

- ``encode``: single short Debian queries (real, from tests/data), one at a time, engines
  alternating round by round: torch on 1 thread and on its default threads, ONNX Runtime fp32
  (the default engine: attention fused by ONNX Runtime's transformer optimizer), the same graph
  as traced (unfused) and int8; p50/p90 ms and the cosine of each engine's vectors to torch's.
- ``under_load``: in-process ``Retriever.search`` on the sample index, quiet and while two
  other processes keep both cores busy; p50 and the loaded ÷ quiet ratio, per engine.
- ``cold_cli``: wall seconds of ``funnel search INDEX "query"`` as a fresh process, per engine,
  and whether torch was imported (``python -X importtime``).
- ``end_to_end``: the default engine's encode p50 here plus the 100k MiniLM search and fetch
  ms recorded by ``benchmarks.recall_latency`` (benchmarks/results/recall-latency-onnx/minilm-100k.json).

Writes ``benchmarks/results/query-engine/query-engine.json`` and ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.common import REPO, RESULTS, percentiles_ms

BENCHMARK = "query_engine"
OUT = RESULTS / "query-engine"
CORPUS = REPO / "examples" / "debian-300.parquet"
QUERIES = REPO / "tests" / "data" / "debian" / "queries.jsonl"
RECALL_LATENCY = RESULTS / "recall-latency-onnx" / "minilm-100k.json"


def queries(count: int) -> list[str]:
    """The first ``count`` query texts of the Debian fixture (short real queries)."""
    with QUERIES.open() as handle:
        return [json.loads(line)["text"] for line in handle][:count]


def encode_one(encoder: Any, text: str) -> object:
    return encoder.encode([text])


def search_one(retriever: Any, text: str) -> object:
    return retriever.search(text, k=10)


def timed(call: Callable[[str], object], texts: list[str]) -> list[float]:
    """Seconds of ``call(text)`` for each text, once each, no warm-up."""
    return [float(seconds) for seconds in common.time_calls(call, texts).wall.ravel()]


def encode_engines(texts: list[str], rounds: int, unfused: Path) -> dict[str, Any]:
    """Each engine's single-query encode (p50/p90 ms, cosine to torch); ``unfused``: a folder
    for the traced graph without ONNX Runtime's fusions, exported for comparison."""
    import torch

    from funnel.encoders import OnnxEncoder, load_query_encoder
    from funnel.encoders.onnx_export import export_graph
    from funnel.models import Encoder

    torch_encoder = Encoder.load()
    default_threads = torch.get_num_threads()
    export_graph(torch_encoder, unfused, fuse=False)
    engines = {
        "torch, 1 thread": (torch_encoder, 1),
        f"torch, {default_threads} threads (torch's default)": (torch_encoder, 0),
        "onnx fp32 (default)": (load_query_encoder(None, "onnx"), None),
        "onnx fp32, unfused (the traced graph, as exported before 2026-12-05)": (OnnxEncoder.load(unfused), None),
        "onnx int8": (load_query_encoder(None, "onnx-int8"), None),
    }
    reference = torch_encoder.encode(texts)
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, (encoder, threads) in engines.items():
            if threads is not None:
                torch_encoder.query_threads = threads
            times[name] += timed(partial(encode_one, encoder), texts)
    torch_encoder.query_threads = 1
    result: dict[str, Any] = {}
    for name, (encoder, _) in engines.items():
        vectors = np.vstack([encoder.encode([text]) for text in texts])
        cosine = (vectors * reference).sum(axis=1)
        result[name] = {
            **percentiles_ms(times[name]),
            "cosine_to_torch_min": round(float(cosine.min()), 7),
            "cosine_to_torch_mean": round(float(cosine.mean()), 7),
        }
    base = result["torch, 1 thread"]["p50_ms"]
    for row in result.values():
        row["speedup_vs_torch_1_thread"] = round(base / row["p50_ms"], 2)
    return result


def _spin(stop: Any) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def under_load(index: Path, texts: list[str], rounds: int) -> dict[str, Any]:
    from funnel.models import Encoder
    from funnel.retriever import Retriever

    retrievers = {
        "onnx fp32 (default)": Retriever.load(index, query_encoder="onnx"),
        "torch, 1 thread": Retriever.load(index, query_encoder="torch"),
    }
    default_threads = Encoder.load()
    default_threads.query_threads = 0  # torch's own setting
    retrievers["torch, default threads"] = Retriever(retrievers["torch, 1 thread"].index, default_threads)
    result: dict[str, Any] = {}
    for phase in ("quiet", "loaded"):
        stop = multiprocessing.Event()
        spinners = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(2 if phase == "loaded" else 0)]
        for process in spinners:
            process.start()
        time.sleep(0.5 if spinners else 0)
        try:
            for name, retriever in retrievers.items():
                seconds: list[float] = []
                for _ in range(rounds):
                    seconds += timed(partial(search_one, retriever), texts)
                result.setdefault(name, {})[phase] = percentiles_ms(seconds)
        finally:
            stop.set()
            for process in spinners:
                process.join()
    for row in result.values():
        row["loaded_over_quiet_p50"] = round(row["loaded"]["p50_ms"] / row["quiet"]["p50_ms"], 2)
    return result


def cold_cli(index: Path, runs: int) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result: dict[str, Any] = {}
    for engine in ("auto", "torch"):
        walls = []
        for _ in range(runs):
            began = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-X",
                    "importtime",
                    "-m",
                    "funnel",
                    "search",
                    str(index),
                    "play a puzzle game over the network",
                    "--query-encoder",
                    engine,
                ],
                capture_output=True,
                text=True,
                env=env,
            )
            walls.append(time.perf_counter() - began)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-2000:])
        imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
        result[engine] = {
            "median_s": round(statistics.median(walls), 3),
            "runs_s": [round(w, 3) for w in walls],
            "imports_torch": "torch" in imported,
            "imports_sentence_transformers": "sentence_transformers" in imported,
        }
    result["torch_over_auto"] = round(result["torch"]["median_s"] / result["auto"]["median_s"], 2)
    return result


def end_to_end(encode_ms: float, torch_encode_ms: float, target: float = 0.99) -> dict[str, Any] | None:
    """The fastest funnel plan at recall@10 ≥ ``target`` on 100k MiniLM vectors, as recorded, with
    this run's encode in place of the recorded torch one."""
    if not RECALL_LATENCY.exists():
        return None
    recorded = common.read_result(RECALL_LATENCY).results
    configs = [
        (config["batch1"]["cpu_median_ms"], method["family"], config["label"], config["recall@10"])
        for method in recorded["methods"]
        if method["method"].startswith("funnel")
        for config in method["configs"]
        if config["recall@10"] >= target
    ]
    if not configs:
        return None
    search_ms, family, label, recall = min(configs)
    fetch_ms = recorded["fetch_ms"]
    return {
        "plan": f"{family}, {label}",
        "recall@10": recall,
        "search_ms_recorded": round(search_ms, 3),
        "fetch_ms_recorded": round(fetch_ms, 3),
        "encode_ms_recorded": round(recorded["encode_ms"]["median_ms"], 3),
        "total_ms_recorded": round(recorded["encode_ms"]["median_ms"] + search_ms + fetch_ms, 3),
        "encode_ms_torch_1_thread_here": torch_encode_ms,
        "encode_ms_default_engine_here": encode_ms,
        "total_ms_default_engine": round(encode_ms + search_ms + fetch_ms, 3),
        "source": str(RECALL_LATENCY.relative_to(REPO)),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=100, help="short real Debian queries, each timed once per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cli-runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts = queries(args.queries)
    from funnel import Retriever

    with tempfile.TemporaryDirectory() as temp:
        index = Path(temp) / "debian-300"
        Retriever.build(CORPUS, index, show_progress=False)
        cli = cold_cli(index, args.cli_runs)
        encode = encode_engines(texts, args.rounds, Path(temp) / "unfused")
        load = under_load(index, texts[:50], args.rounds)
    results = {
        "queries": len(texts),
        "rounds": args.rounds,
        "encode": encode,
        "under_load": load,
        "cold_cli": cli,
        "end_to_end": end_to_end(encode["onnx fp32 (default)"]["p50_ms"], encode["torch, 1 thread"]["p50_ms"]),
    }
    common.write_result(args.out / "query-engine.json", common.Result.make(BENCHMARK, common.parameters(args), results))
    print(json.dumps({k: results[k] for k in ("encode", "under_load", "cold_cli", "end_to_end")}, indent=2))


if __name__ == "__main__":
    main()
