"""Cheap query encoders distilled into MiniLM's space, the documents left as they are (issue 26).

    python -m benchmarks.query_students

A student encodes queries; the documents keep all-MiniLM-L6-v2's vectors, so nothing is
re-encoded. Each student is trained to give MiniLM's normalized query embedding for a text
(mean squared error, sentence-transformers' ``MSELoss``), without labels, on query-like text:
the training pairs' queries (Debian one-line summaries, SciFact train claims), spans of the
evaluated corpora's documents (``funnel.spans.span_queries``; no test query is ever seen) and
real package summaries of the benchmark corpus. The teacher's embeddings are computed once and
cached. Students:

- ``minilm-L2``, ``minilm-L3``: MiniLM cut after its first 2 or 3 layers (its own pooling and
  normalization), all weights trained;
- ``static``: a token table distilled from MiniLM by model2vec (``StaticEmbedding.from_distillation``,
  384 dims, no PCA), trained the same way.

Each is measured on Cranfield and SciFact test queries against MiniLM's document vectors (exact
cosine search): NDCG@10 kept of the full model's, and the single-query encode on the engine a
search runs (ONNX Runtime for transformers, numpy for static), alternating with the full model's.
Writes ``benchmarks/results/query-students/query-students[-TAG].json``; the README there reads them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks import common

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from funnel.encoders.choose import TextEncoder

BENCHMARK = "query_students"
OUT = common.RESULTS / "query-students"
STUDENT_CACHE = common.CACHE / "query-students"
EVALUATED = ("cranfield", "scifact")


def query_like_texts() -> list[str]:
    """Query-like texts beside the evaluated corpora: the training pairs' queries and package
    summaries beyond every benchmark corpus (``--write-texts`` saves them, a text a line, for
    ``funnel train --query-encoder``)."""
    from benchmarks.recall_latency.corpus import corpus_texts

    texts: list[str] = []
    for name in ("debian-pairs.jsonl", "scifact-train-pairs.jsonl"):
        with (common.DATA / "train" / name).open() as handle:
            texts += [json.loads(line)["query"] for line in handle]
    texts += corpus_texts()[-200_000:]
    return texts


def training_texts(limit: int, seed: int) -> list[str]:
    """Query-like texts, no test query among them: pair queries, corpus spans, package summaries."""
    from funnel.spans import span_queries

    texts = query_like_texts()
    for dataset in EVALUATED:
        loaded = common.DATASETS[dataset].load()
        for round_seed in range(3):  # three spans a document
            texts += span_queries(loaded.corpus_titles, loaded.corpus_texts, seed + round_seed)
    unique = sorted({text.strip() for text in texts if text and text.strip()})
    random.Random(seed).shuffle(unique)
    return unique[:limit]


def cached(path: Path, make: Any) -> np.ndarray:
    if path.exists():
        return np.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vectors = make()
    np.save(path, vectors)
    return vectors


def teacher_vectors(teacher: TextEncoder, texts: list[str], tag: str) -> np.ndarray:
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    return cached(STUDENT_CACHE / f"teacher-{tag}-{digest}.npy", lambda: teacher.encode(texts, batch_size=16))


def cut_student(layers: int) -> SentenceTransformer:
    from funnel.models import load_model

    model = load_model(None)
    backbone: Any = model[0].auto_model
    del backbone.encoder.layer[layers:]
    backbone.config.num_hidden_layers = layers
    return model


def static_student() -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, StaticEmbedding

    from funnel.models import default_model_path

    static = StaticEmbedding.from_distillation(str(default_model_path()), pca_dims=None, device="cpu")
    return SentenceTransformer(modules=[static, Normalize()], device="cpu")


def train(
    student: SentenceTransformer, texts: list[str], targets: np.ndarray, args: argparse.Namespace, static: bool, output: Path
) -> float:
    """Distill ``student`` onto ``targets``; saves it at ``output``; returns the seconds spent."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MSELoss

    data = Dataset.from_dict({"text": texts, "label": targets.astype(np.float32)})
    arguments = SentenceTransformerTrainingArguments(
        output_dir=str(output.with_suffix(".run")),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.static_batch if static else args.batch,
        learning_rate=args.static_lr if static else args.lr,
        warmup_ratio=0.05,
        logging_steps=50,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        dataloader_drop_last=True,
    )
    started = time.perf_counter()
    SentenceTransformerTrainer(model=student, args=arguments, train_dataset=data, loss=MSELoss(student)).train()
    seconds = time.perf_counter() - started
    student.save(str(output))
    return seconds


def exact_ndcg(queries: np.ndarray, documents: np.ndarray, loaded: Any) -> float:
    scores = queries @ documents.T
    top = np.argsort(-scores, axis=1)[:, :100]
    return common.ndcg(list(loaded.queries), top, np.take_along_axis(scores, top, axis=1), loaded.corpus_ids, loaded.qrels)


def single_query_ms(encoders: dict[str, TextEncoder], texts: list[str], rounds: int = 3) -> dict[str, float]:
    """Median ms of one query, the encoders alternating round by round."""
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for encoder in encoders.values():
        encoder.encode(texts[:2])
    for _ in range(rounds):
        for name, encoder in encoders.items():
            times[name] += list(common.time_calls(_one_query(encoder), texts).wall.ravel())
    return {name: round(float(np.median(values)) * 1000, 3) for name, values in times.items()}


def _one_query(encoder: TextEncoder) -> Callable[[str], object]:
    return lambda text: encoder.encode([text])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=40_000, help="query-like training texts")
    parser.add_argument("--students", nargs="+", default=["static", "minilm-L2", "minilm-L3"])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--static-batch", type=int, default=256)
    parser.add_argument("--static-lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=20261205)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--tag", default="", help="suffix for the JSON name, to keep runs with other settings apart")
    parser.add_argument("--write-texts", type=Path, help="only write the query-like texts (a text a line) to this file, for funnel train")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.write_texts is not None:
        lines = (text.replace("\n", " ").strip() for text in query_like_texts())
        args.write_texts.write_text("".join(line + "\n" for line in lines if line))
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from funnel.encoders import load_query_encoder

    teacher = load_query_encoder(None, "onnx")
    texts = training_texts(args.texts, args.seed)
    print(f"{len(texts):,} training texts", flush=True)
    targets = teacher_vectors(teacher, texts, "train")
    evaluation = {}
    for dataset in EVALUATED:
        loaded = common.DATASETS[dataset].load()
        documents = teacher_vectors(teacher, loaded.passages(), f"{dataset}-corpus")
        queries = list(loaded.queries.values())
        evaluation[dataset] = (loaded, documents, queries, exact_ndcg(teacher.encode(queries), documents, loaded))
        print(f"{dataset}: full model NDCG@10 {evaluation[dataset][3]:.4f}", flush=True)
    rows: dict[str, Any] = {}
    encoders: dict[str, TextEncoder] = {"all-MiniLM-L6-v2 (full)": teacher}
    for name in args.students:
        static = name == "static"
        student = static_student() if static else cut_student(int(name.removeprefix("minilm-L")))
        folder = STUDENT_CACHE / f"student-{name}{'-' + args.tag if args.tag else ''}"
        seconds = train(student, texts, targets, args, static, folder)
        encoder = load_query_encoder(str(folder), "onnx")  # the engine a search would run it on
        encoders[name] = encoder
        rows[name] = {"train_seconds": round(seconds, 1), "engine": type(encoder).__name__}
        for dataset, (loaded, documents, queries, full) in evaluation.items():
            got = exact_ndcg(encoder.encode(queries), documents, loaded)
            rows[name][dataset] = {"ndcg@10": round(got, 4), "kept": round(got / full, 4)}
        print(name, rows[name], flush=True)
    timing_texts = list(evaluation["cranfield"][2])[:100]
    ms = single_query_ms(encoders, timing_texts)
    full_ms = ms["all-MiniLM-L6-v2 (full)"]
    for name in rows:
        rows[name]["encode_ms"] = ms[name]
        rows[name]["cheaper_than_full"] = round(full_ms / ms[name], 2)
    results = {
        "training_texts": len(texts),
        "full_model": {dataset: round(values[3], 4) for dataset, values in evaluation.items()} | {"encode_ms": full_ms},
        "students": rows,
    }
    name = f"query-students{'-' + args.tag if args.tag else ''}.json"
    common.write_result(args.out / name, common.Result.make(BENCHMARK, common.parameters(args), results))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
