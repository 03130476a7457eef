"""Which engine should encode corpora on this machine: passages per second, torch against ONNX Runtime.

    python -m benchmarks.corpus_engine [--passages 600] [--rounds 3]

Real passages of two lengths: Debian package descriptions (short, ~75 characters) and Cranfield
abstracts (long, ~900 characters). Each round encodes the same passages with every engine in
turn (engines interleaved, so load drifts hit all of them): sentence-transformers on torch's
default threads, and the exported fp32 ONNX graph on its batch session (a thread per core) at
several batch sizes, texts batched longest-first as sentence-transformers batches them. Reports
the median passages/s per engine and corpus and the ratio to torch in the same run.

Writes ``benchmarks/results/corpus-engine/corpus-engine.json`` and ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from benchmarks.common import DATA, RESULTS

BENCHMARK = "corpus_engine"
OUT = RESULTS / "corpus-engine"
ONNX_BATCHES = (16, 32, 128)


def passages(count: int) -> dict[str, list[str]]:
    """``count`` short and ``count`` long real passages (the first of each corpus)."""
    from benchmarks.recall_latency.corpus import corpus_texts

    with (DATA / "cranfield" / "corpus.jsonl").open() as handle:
        cranfield = [" ".join(filter(None, (row.get("title"), row.get("text")))) for row in map(json.loads, handle)]
    return {"debian": corpus_texts()[:count], "cranfield": [text for text in cranfield if text.strip()][:count]}


def engines() -> dict[str, tuple[Any, int]]:
    """Name → (encoder, batch size)."""
    from funnel.encoders import load_query_encoder
    from funnel.models import Encoder

    torch_encoder = Encoder.load()
    onnx = load_query_encoder(None, "onnx")
    return {"torch (batch 64)": (torch_encoder, 64), **{f"onnx fp32 (batch {size})": (onnx, size) for size in ONNX_BATCHES}}


def measure(texts: dict[str, list[str]], rounds: int) -> dict[str, dict[str, Any]]:
    chosen = engines()
    for encoder, size in chosen.values():  # warm up: the batch session is made on first use
        encoder.encode(texts["debian"][: size * 2], batch_size=size)
    rates: dict[str, dict[str, list[float]]] = {corpus: {name: [] for name in chosen} for corpus in texts}
    for round_number in range(rounds):
        for corpus, batch in texts.items():
            for name, (encoder, size) in chosen.items():
                started = time.perf_counter()
                encoder.encode(batch, batch_size=size)
                rates[corpus][name].append(len(batch) / (time.perf_counter() - started))
        print(f"round {round_number + 1}/{rounds}: " + ", ".join(f"{n} {r[-1]:.0f}/s" for n, r in rates["debian"].items()), flush=True)
    out: dict[str, dict[str, Any]] = {}
    for corpus, by_engine in rates.items():
        torch_rate = float(np.median(by_engine["torch (batch 64)"]))
        out[corpus] = {
            name: {
                "passages_per_second": round(float(np.median(values)), 1),
                "per_round": [round(v, 1) for v in values],
                "ratio_to_torch": round(float(np.median(values)) / torch_rate, 2),
            }
            for name, values in by_engine.items()
        }
        out[corpus]["mean_characters"] = {"value": round(float(np.mean([len(t) for t in texts[corpus]])), 1)}
    return out


def readme(results: dict[str, Any], record: dict[str, Any]) -> str:
    lines = [
        "# Corpus encoding: torch against ONNX Runtime",
        "",
        f"`{common.command()}` on {record.get('cores')} cores ({record.get('processor', '')}), load average at start "
        f"{record.get('load_average', ['?'])[0]}. Median passages/s over interleaved rounds; the ratio is to torch in the same run.",
        "",
        "| corpus | engine | passages/s | ÷ torch |",
        "|---|---|---:|---:|",
    ]
    for corpus, by_engine in results["rates"].items():
        for name, figures in by_engine.items():
            if name != "mean_characters":
                lines.append(
                    f"| {corpus} ({by_engine['mean_characters']['value']:.0f} chars) | {name} | "
                    f"{figures['passages_per_second']:.1f} | {figures['ratio_to_torch']:.2f} |"
                )
    best = {
        corpus: max((n for n in by if n != "mean_characters"), key=lambda n: by[n]["passages_per_second"])
        for corpus, by in results["rates"].items()
    }
    lines += ["", "Fastest here: " + "; ".join(f"{corpus}: {name}" for corpus, name in best.items()) + ".", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=600, help="passages of each corpus per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    record = common.machine()
    results = {"rates": measure(passages(args.passages), args.rounds)}
    common.write_result(args.out / "corpus-engine.json", common.Result.make(BENCHMARK, common.parameters(args), results, record))
    (args.out / "README.md").write_text(readme(results, record))
    print((args.out / "README.md").read_text())


if __name__ == "__main__":
    main()
