"""int8 as a measured choice: each 8-bit setting of the query graph against fp32, on Cranfield.

    python -m benchmarks.query_int8

Every setting of :data:`funnel.encoders.onnx_export.INT8_SETTINGS` is quantized from the default
model's fp32 ONNX graph with :func:`~funnel.encoders.onnx_export.quantize_file` into a graph folder
of its own (a temporary folder holding the 8-bit file, the tokenizer and a fresh ``graph.json``)
and opened with :class:`~funnel.encoders.onnx_engine.OnnxEncoder`, as funnel opens its own int8
graph. Beside them: the fp32 graph (the default engine) and torch on 1 thread (the reference row
of ``benchmarks.query_engine``).

- quality, over the 225 Cranfield queries each encoded alone: the cosine of each row's query
  vectors to fp32 ONNX's (mean, min); top-10 agreement (overlap@10 / 10, mean over queries) of
  exact search over the fp32 document vectors with the row's query vectors against exact search
  with fp32's; and Cranfield NDCG@10 of exact search with the row's queries on the fp32
  documents (``funnel.evaluation.metrics``).
- speed: single-query p50/p90 ms over the 225 queries, one at a time, engines interleaved round
  by round (each round every engine encodes all queries once, in an order rotated each round, so
  load drifts hit every engine alike); the graph file's size; p50 ÷ fp32's p50 in this run.

The 1,400 fp32 document vectors are encoded once (fp32 ONNX, batched) and kept under
``$FUNNEL_CACHE/benchmarks/query-int8/<model>-<fingerprint>/``; a rerun reads them.

Writes ``benchmarks/results/query-int8/query-int8.json``; the README beside it reads the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.common import CACHE, DATA, RESULTS, Result, machine, parameters, shown, write_result

if TYPE_CHECKING:
    from funnel.encoders.choose import TextEncoder
    from funnel.evaluation.datasets import BeirDataset

BENCHMARK = "query_int8"
OUT = RESULTS / "query-int8"
FP32 = "onnx fp32 (default)"
TORCH = "torch, 1 thread"
CPU_FLAGS = ("avx2", "avx512_vnni", "avx_vnni", "amx_int8")


@dataclass
class Row:
    """One engine under test: its encoder, the graph file it runs (None for torch), and how it was made."""

    name: str
    encoder: TextEncoder
    graph: Path | None
    setting: dict[str, Any]


# ---------------------------------------------------------------- the machine


def cpu_flags() -> dict[str, bool]:
    """Whether the processor has each of :data:`CPU_FLAGS` (``/proc/cpuinfo``): what decides
    which 8-bit kernels ONNX Runtime runs (VNNI: u8s8 dot products; without it avx2 may
    saturate, which reduce_range avoids)."""
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    flags = set(line.split(":", 1)[1].split()) if ":" in line else set()
    return {flag: flag in flags for flag in CPU_FLAGS}


# ---------------------------------------------------------------- the graphs


def int8_folder(fp32_folder: Path, folder: Path, setting_name: str) -> Path:
    """A graph folder at ``folder`` holding the 8-bit copy of ``fp32_folder``'s graph under
    ``setting_name``, the same tokenizer and a ``graph.json`` naming both with their sha256."""
    from funnel.checksums import file_sha256
    from funnel.encoders.graph_cache import GRAPH_FILES, META_FILE, TOKENIZER_FILE, GraphMeta
    from funnel.encoders.onnx_export import INT8_SETTINGS, quantize_file

    meta = GraphMeta.read(fp32_folder)
    source = meta.check(fp32_folder, GRAPH_FILES["fp32"])
    folder.mkdir(parents=True)
    target = folder / GRAPH_FILES["int8"]
    quantize_file(source, target, INT8_SETTINGS[setting_name])
    shutil.copyfile(meta.check(fp32_folder, TOKENIZER_FILE), folder / TOKENIZER_FILE)
    files = {GRAPH_FILES["int8"]: file_sha256(target), TOKENIZER_FILE: file_sha256(folder / TOKENIZER_FILE)}
    fresh = dataclasses.replace(meta, files=files)
    (folder / META_FILE).write_text(json.dumps(fresh.to_json(), indent=2))
    return folder


def rows(temp: Path) -> tuple[list[Row], Path]:
    """torch (1 thread), fp32 ONNX and every int8 setting, loaded; and the fp32 graph folder."""
    from dataclasses import asdict

    from funnel.encoders import load_query_encoder
    from funnel.encoders.graph_cache import GRAPH_FILES, graph_folder
    from funnel.encoders.onnx_engine import OnnxEncoder
    from funnel.encoders.onnx_export import INT8_SETTINGS
    from funnel.models import Encoder, resolve_model

    torch_encoder = Encoder.load()
    torch_encoder.query_threads = 1  # a query on one torch thread (funnel's default), as benchmarks.query_engine runs it
    fp32 = load_query_encoder(None, "onnx")  # exports the graph on first use
    fp32_folder = graph_folder(resolve_model(None))
    found = [
        Row(TORCH, torch_encoder, None, {"engine": "torch", "threads": 1}),
        Row(FP32, fp32, fp32_folder / GRAPH_FILES["fp32"], {"engine": "onnx", "precision": "fp32"}),
    ]
    for name, setting in INT8_SETTINGS.items():
        began = time.perf_counter()
        folder = int8_folder(fp32_folder, temp / name, name)
        seconds = time.perf_counter() - began
        encoder = OnnxEncoder.load(folder, "int8")
        found.append(
            Row(name, encoder, encoder.graph, {"engine": "onnx", "precision": "int8", **asdict(setting), "quantize_s": round(seconds, 2)})
        )
    return found, fp32_folder


# ---------------------------------------------------------------- the fp32 documents


def document_vectors(dataset: BeirDataset, fp32: TextEncoder, fp32_folder: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The corpus's fp32 ONNX vectors (batched), from the benchmark cache when it holds them for
    this model (graph folder fingerprint), these ids and these texts; encoded and kept otherwise."""
    passages = dataset.passages()
    digest = hashlib.sha256("\0".join(f"{doc_id}\t{text}" for doc_id, text in zip(dataset.corpus_ids, passages)).encode()).hexdigest()
    folder = CACHE / "benchmarks" / "query-int8" / f"{fp32.name.replace('/', '_')}-{fp32_folder.name[:12]}"
    vectors_file, key_file = folder / f"{dataset.path.name}-corpus-fp32.npy", folder / f"{dataset.path.name}-corpus-fp32.json"
    key = {"model": fp32.name, "graph_folder": fp32_folder.name, "documents": len(passages), "texts_sha256": digest}
    if vectors_file.is_file() and key_file.is_file() and json.loads(key_file.read_text()) == key:
        return np.load(vectors_file), {"cache": shown(vectors_file), "from_cache": True}
    began = time.perf_counter()
    vectors = fp32.encode(passages, batch_size=32)
    seconds = time.perf_counter() - began
    folder.mkdir(parents=True, exist_ok=True)
    temp = vectors_file.with_name(f".{vectors_file.name}.tmp-{os.getpid()}.npy")
    np.save(temp, vectors)
    os.replace(temp, vectors_file)
    key_file.write_text(json.dumps(key, indent=2))
    return vectors, {"cache": shown(vectors_file), "from_cache": False, "encode_s": round(seconds, 1)}


# ---------------------------------------------------------------- quality


def exact_top(queries: np.ndarray, documents: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product search: the first ``k`` document rows of each query (ties by row) and their scores."""
    scores = queries @ documents.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, axis=1)


def quality(
    vectors: np.ndarray, fp32_vectors: np.ndarray, documents: np.ndarray, dataset: BeirDataset, query_ids: Sequence[str], k: int
) -> dict[str, float]:
    """Cosine to fp32 ONNX, top-``k`` agreement with fp32's exact search, and NDCG@10 (funnel's metrics)."""
    from funnel.agreement import recall_against
    from funnel.evaluation.metrics import evaluate_run, run_from_arrays

    cosine = (vectors * fp32_vectors).sum(axis=1)
    found, _ = exact_top(vectors, documents, k)
    reference, _ = exact_top(fp32_vectors, documents, k)
    agreement = recall_against(found, reference)
    positions, scores = exact_top(vectors, documents, 100)
    run = run_from_arrays(list(query_ids), positions, scores, corpus_ids=dataset.corpus_ids)
    means = evaluate_run(run, dataset.qrels, ["ndcg@10"]).means
    return {
        "cosine_to_fp32_mean": round(float(cosine.mean()), 6),
        "cosine_to_fp32_min": round(float(cosine.min()), 6),
        f"top{k}_agreement": round(float(agreement.mean()), 4),
        f"top{k}_identical_share": round(float(np.mean(agreement == 1.0)), 4),
        "ndcg@10": round(float(means["ndcg@10"]), 4),
    }


# ---------------------------------------------------------------- speed


def interleaved_times(engines: Sequence[Row], texts: Sequence[str], rounds: int, warmup: int) -> dict[str, np.ndarray]:
    """Seconds of ``encode([text])`` per engine, shape (rounds, len(texts)): each round every engine
    encodes every text once, engines in an order rotated by one each round; ``warmup`` untimed
    encodes per engine first."""
    for row in engines:
        for text in texts[:warmup]:
            row.encoder.encode([text])
    times = {row.name: np.zeros((rounds, len(texts))) for row in engines}
    for number in range(rounds):
        shift = number % len(engines)
        for row in [*engines[shift:], *engines[:shift]]:
            encode = row.encoder.encode
            spent = times[row.name][number]
            for position, text in enumerate(texts):
                began = time.perf_counter()
                encode([text])
                spent[position] = time.perf_counter() - began
    return times


def speed(seconds: np.ndarray) -> dict[str, Any]:
    ms = seconds * 1000
    p50, p90 = np.percentile(ms, [50, 90])
    return {
        "p50_ms": round(float(p50), 3),
        "p90_ms": round(float(p90), 3),
        "p50_ms_per_round": [round(float(value), 3) for value in np.median(ms, axis=1)],
        "calls": int(ms.size),
    }


# ---------------------------------------------------------------- the run


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=DATA / "cranfield", help="a BEIR folder (its test split)")
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds; each engine encodes every query once a round")
    parser.add_argument("--warmup", type=int, default=20, help="untimed encodes per engine before the first round")
    parser.add_argument("--k", type=int, default=10, help="the top-k of the agreement figure")
    parser.add_argument("--out", type=Path, default=OUT)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from funnel.evaluation.datasets import load_beir

    started = time.perf_counter()
    load_before = list(os.getloadavg())
    dataset = load_beir(args.dataset, "test")
    query_ids = list(dataset.queries)
    texts = [dataset.queries[query_id] for query_id in query_ids]
    with tempfile.TemporaryDirectory(prefix="query-int8-") as temp:
        engines, fp32_folder = rows(Path(temp))
        fp32 = next(row for row in engines if row.name == FP32)
        documents, documents_record = document_vectors(dataset, fp32.encoder, fp32_folder)
        vectors = {row.name: np.vstack([row.encoder.encode([text]) for text in texts]) for row in engines}
        timed_at = time.perf_counter()
        times = interleaved_times(engines, texts, args.rounds, args.warmup)
        timing_s = time.perf_counter() - timed_at
        table: dict[str, Any] = {}
        for row in engines:
            table[row.name] = {
                **row.setting,
                "size_mb": None if row.graph is None else round(row.graph.stat().st_size / 1e6, 1),
                **speed(times[row.name]),
                **quality(vectors[row.name], vectors[FP32], documents, dataset, query_ids, args.k),
            }
    base = table[FP32]["p50_ms"]
    for entry in table.values():
        entry["p50_over_fp32"] = round(entry["p50_ms"] / base, 3)
    target = 0.99
    reaching = [name for name, entry in table.items() if name not in (FP32, TORCH) and entry[f"top{args.k}_agreement"] >= target]
    results = {
        "dataset": shown(args.dataset),
        "queries": len(texts),
        "documents": len(dataset.corpus_ids),
        "rounds": args.rounds,
        "k": args.k,
        "documents_fp32": documents_record,
        "rows": table,
        "agreement_target": target,
        "int8_settings_reaching_target": reaching,
        "timing_s": round(timing_s, 1),
        "total_s": round(time.perf_counter() - started, 1),
    }
    record = machine(
        ("onnxruntime", "onnx", "tokenizers"),
        cpu_flags=cpu_flags(),
        onnx_query_threads=_onnx_threads(),
        load_average_before=load_before,
    )
    write_result(args.out / "query-int8.json", Result.make(BENCHMARK, parameters(args), results, record))
    print(json.dumps(results, indent=2))


def _onnx_threads() -> int:
    from funnel.encoders.onnx_engine import QUERY_THREADS

    return QUERY_THREADS


if __name__ == "__main__":
    main()
