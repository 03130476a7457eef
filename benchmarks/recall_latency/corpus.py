"""Benchmark corpora: real text in quantity, and real vectors of it (MiniLM's and a static model's).

Texts: every PyPI and npm package in the tool library's package lists with a summary of at least
10 characters, written ``"name: summary"`` (1,024,624 texts), in a fixed random order; the first
N of that order is the N-document corpus, so the corpora are nested (10k ⊂ 100k ⊂ 1M). Queries:
the real query texts of ../shared/data (Cranfield, SciFact test, Debian; 1,746 texts).

Vectors over those texts (cached under ``~/.cache/funnel/bench/``):

- ``minilm``: all-MiniLM-L6-v2 itself (384 dims, normalized), for the first 100k texts and the
  queries. Real embeddings of real text (the texts are short: about 230 a second here, so 100k
  take about 7 minutes once).
- ``static``: a static model distilled from the same MiniLM (model2vec, 256 dims) for all 1M
  texts: real vectors of a real model at a scale this machine can encode (about a minute).
- ``minilm-pca``: the MiniLM vectors rotated into the principal axes of the 10k real documents
  (funnel's own rotation, :func:`funnel.indexes.rotation.pca_rotation`), before any method sees
  them: the earlier runs of the appendix; today funnel's index rotates its own vectors.

All vectors are stored as float16 (what funnel stores) and every method reads the same values.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks import common

if TYPE_CHECKING:
    from model2vec import StaticModel

CACHE = common.CACHE / "bench"
PACKAGES = common.PACKAGE_LISTS
SEED = 20261123
MINILM_DOCS = 10_000  # the first real MiniLM vectors, and the documents the PCA axes of minilm-pca are fitted on
MINILM_MAX_DOCS = 100_000  # real MiniLM vectors are encoded for this many texts
QUERY_SETS = ("cranfield", "scifact", "debian")  # of common.DATASETS: each one's judged test queries
KINDS = ("minilm", "static", "minilm-pca")
SOURCE = {"texts": "PyPI+npm package summaries", "queries": "real query texts of cranfield, scifact (test), debian"}


def corpus_texts(packages: Path = PACKAGES) -> list[str]:
    """All package texts, shuffled with the fixed seed (cached as JSON lines)."""
    path = CACHE / "texts.jsonl"
    if path.exists():
        with path.open() as handle:
            return [json.loads(line) for line in handle]
    csv.field_size_limit(1 << 30)
    texts = []
    for name in ("pypi.tsv", "npm.tsv"):
        with (packages / name).open(encoding="utf-8", errors="replace") as handle:
            rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            next(rows)
            for row in rows:
                summary = row[-1].strip() if len(row) >= 2 else ""
                if len(summary) >= 10:
                    texts.append(f"{row[0]}: {summary}")
    order = np.random.default_rng(SEED).permutation(len(texts))
    texts = [texts[i] for i in order]
    CACHE.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for text in texts:
            handle.write(json.dumps(text) + "\n")
    return texts


def query_texts() -> list[str]:
    """The distinct query texts of the shared datasets (:data:`QUERY_SETS`), each one's judged
    test queries in file order (every Cranfield and Debian query is judged there)."""
    texts: list[str] = []
    seen: set[str] = set()
    for name in QUERY_SETS:
        for raw in common.DATASETS[name].queries().values():
            text = raw.strip()
            if text and text not in seen:
                seen.add(text)
                texts.append(text)
    return texts


def _encode_minilm(texts: list[str], path: Path, chunk: int = 5_000) -> np.ndarray:
    """MiniLM vectors for ``texts``, computed in chunks that survive an interruption, on the
    fp32 ONNX graph (the model's vectors to cosine 0.9999999; on these short texts 2.5× torch's
    passages/s here: benchmarks/results/corpus-engine), 16 texts a batch."""
    from funnel.encoders import load_query_encoder

    if path.exists():
        return np.load(path)
    parts_dir = path.with_suffix(".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    encoder: Any = None
    parts = []
    for start in range(0, len(texts), chunk):
        part = parts_dir / f"{start:09d}.npy"
        if not part.exists():
            encoder = encoder or load_query_encoder(None, "onnx")
            np.save(part, encoder.encode(texts[start : start + chunk], batch_size=16).astype(np.float16))
            print(f"minilm {path.name}: {start + chunk:,}/{len(texts):,}", flush=True)
        parts.append(np.load(part))
    vectors = np.concatenate(parts)
    np.save(path, vectors)
    return vectors


def query_encode_timing(kind: str, texts: list[str], rounds: int = 3) -> dict[str, Any] | None:
    """Median ms to encode one query text with the run's model (MiniLM or the static model), on
    the process's threads: the part of a query's latency every method shares."""
    encode: Any
    if kind.startswith("minilm"):
        from funnel.encoders import load_query_encoder

        encoder = load_query_encoder(None)  # the engine a search runs on (ONNX Runtime unless it cannot)
        encode, model = (lambda text: encoder.encode([text])), f"all-MiniLM-L6-v2 ({type(encoder).__name__})"
    elif kind == "static":
        static = static_model()
        encode, model = (lambda text: static.encode([text])), "static (model2vec from MiniLM, 256 dims)"
    else:
        return None
    calls = common.time_calls(encode, texts, rounds=rounds, warmup=3)
    return {"model": model, "median_ms": float(np.median(calls.wall) * 1000), "queries": len(texts), "rounds": rounds}


def minilm_vectors(count: int = MINILM_DOCS) -> tuple[np.ndarray, np.ndarray]:
    """(documents (10k or 100k, 384), queries (1746, 384)) float16, real MiniLM."""
    queries = _encode_minilm(query_texts(), CACHE / "minilm-queries.npy")
    documents = _encode_minilm(corpus_texts()[:MINILM_DOCS], CACHE / "minilm-docs-10k.npy")
    if count > MINILM_DOCS:
        # The corpora are nested: the 10k's chunks are the first chunks of the 100k.
        parts = CACHE / "minilm-docs-100k.parts"
        parts.mkdir(parents=True, exist_ok=True)
        for part in (CACHE / "minilm-docs-10k.parts").glob("*.npy"):
            if not (parts / part.name).exists():
                os.link(part, parts / part.name)
        documents = _encode_minilm(corpus_texts()[:MINILM_MAX_DOCS], CACHE / "minilm-docs-100k.npy")
    return documents, queries


def static_model() -> StaticModel:
    """model2vec distilled from the offline MiniLM (256 dims), cached on disk."""
    from model2vec import StaticModel

    folder = CACHE / "static-minilm-256"
    if not folder.exists():
        from model2vec.distill import distill

        from funnel.models import default_model_path

        distill(str(default_model_path()), pca_dims=256).save_pretrained(str(folder))
    return StaticModel.from_pretrained(str(folder))


STATIC_DOCS = 1_000_000


def static_vectors(count: int) -> tuple[np.ndarray, np.ndarray]:
    """(documents (count, 256) float16 memmap, queries (1746, 256) float16): the static model's
    own vectors (model2vec distilled from MiniLM; its dims come out of a PCA, largest first),
    normalized. Real vectors of a real model at 1M: about 2 minutes to encode here."""
    docs_path = CACHE / "static-docs-1m.npy"
    queries_path = CACHE / "static-queries.npy"
    if not docs_path.exists():
        model = static_model()
        texts = corpus_texts()[:STATIC_DOCS]
        np.save(queries_path, _unit_f16(model.encode(query_texts(), batch_size=4096)))
        out = np.lib.format.open_memmap(str(docs_path) + ".tmp.npy", mode="w+", dtype=np.float16, shape=(len(texts), 256))
        step = 50_000
        for start in range(0, len(texts), step):
            out[start : start + step] = _unit_f16(model.encode(texts[start : start + step], batch_size=4096))
            print(f"static: {min(start + step, len(texts)):,}/{len(texts):,}", flush=True)
        out.flush()
        del out
        os.replace(str(docs_path) + ".tmp.npy", docs_path)
    return np.load(docs_path, mmap_mode="r")[:count], np.load(queries_path)


def _unit_f16(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float16)


def rotated(documents: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same vectors in PCA order, by funnel's own rotation (:mod:`funnel.indexes.rotation`:
    the eigenvectors of DᵀD over the first 10k real MiniLM documents, largest first): inner
    products (so the exact ranking) are unchanged; only which dims come first changes, so that
    prefixes carry the most variance, as in a nested model. The rotated documents are cached."""
    from funnel.indexes.rotation import pca_rotation, rotate, second_moment

    real, _ = minilm_vectors()
    rotation = pca_rotation(second_moment([real]))
    path = CACHE / f"minilm-rotated-docs-{len(documents)}.npy"
    if not path.exists():
        out = np.lib.format.open_memmap(str(path) + ".tmp.npy", mode="w+", dtype=np.float16, shape=documents.shape)
        for start in range(0, len(documents), 65_536):
            chunk = rotate(documents[start : start + 65_536], rotation)
            out[start : start + 65_536] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
        out.flush()
        del out
        os.replace(str(path) + ".tmp.npy", path)
    query_vectors = rotate(queries, rotation)
    return np.load(path, mmap_mode="r"), (query_vectors / np.linalg.norm(query_vectors, axis=1, keepdims=True)).astype(np.float16)


HELD_OUT = 2_000
"""In-distribution queries: the last texts of the fixed order, beyond every corpus (at most 1M of
1,024,624 texts), so never indexed: the ann-benchmarks convention of queries drawn from the
corpus's own distribution."""
QUERY_SETS_BY_NAME = ("suite", "held-out")


def add_query_set_option(parser: argparse.ArgumentParser, default: str) -> None:
    """``--query-set``, as every script over these vectors takes it."""
    parser.add_argument(
        "--query-set",
        choices=QUERY_SETS_BY_NAME,
        default=default,
        help=f"suite: the real query texts of ../shared/data; held-out: corpus texts never indexed, in-distribution (default: {default})",
    )


def held_out_texts() -> list[str]:
    return corpus_texts()[-HELD_OUT:]


def held_out_queries(kind: str) -> np.ndarray:
    """The held-out texts' vectors by the run's model (float16, normalized), cached."""
    path = CACHE / f"{kind.removesuffix('-pca')}-heldout-queries.npy"
    if not path.exists():
        texts = held_out_texts()
        if kind.startswith("minilm"):
            from funnel.encoders import load_query_encoder

            vectors = load_query_encoder(None, "onnx").encode(texts, batch_size=16)
        else:
            vectors = static_model().encode(texts, batch_size=4096)
        np.save(path, _unit_f16(vectors))
    return np.load(path)


def load(kind: str, count: int, query_set: str = "suite") -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Documents (count, dim) and queries (q, dim), float16, and a description of where they come
    from. ``query_set``: ``suite`` (the real query texts of ../shared/data) or ``held-out``
    (:data:`HELD_OUT` corpus texts never indexed)."""
    if query_set == "held-out":
        if kind == "minilm-pca":
            raise SystemExit("held-out queries are made for --vectors minilm and static")
        documents, _, source = load(kind, count)
        queries = held_out_queries(kind)
        return (
            documents,
            queries,
            {**source, "queries": f"{HELD_OUT:,} held-out package summaries (never indexed, the corpus's own distribution)"},
        )
    if kind == "minilm":
        if count > MINILM_MAX_DOCS:
            raise SystemExit(f"real MiniLM vectors are made for up to {MINILM_MAX_DOCS:,} documents, not {count:,}: use --vectors static")
        documents, queries = minilm_vectors(count)
        return documents[:count], queries, {"vectors": "all-MiniLM-L6-v2 (real)", **SOURCE}
    if kind == "static":
        documents, queries = static_vectors(count)
        return documents, queries, {"vectors": "static model (real): model2vec distilled from all-MiniLM-L6-v2, 256 dims", **SOURCE}
    if kind == "minilm-pca":
        documents, queries, source = load("minilm", count)
        documents, queries = rotated(documents, queries)
        return (
            documents,
            queries,
            {
                **source,
                "vectors": "real MiniLM, rotated to PCA order (nested-like prefixes)",
                "rotation": "funnel's PCA rotation (eigenvectors of DᵀD) of the 10k real MiniLM documents, largest first; inner products unchanged",
            },
        )
    raise SystemExit(f"unknown vectors {kind!r}: {', '.join(KINDS)}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Make and cache the benchmark's vectors (MiniLM for the first 10k texts and the queries).")
    parser.add_argument("--minilm-100k", action="store_true", help="MiniLM vectors for the first 100k texts")
    parser.add_argument("--static", action="store_true", help="the static model's vectors for all 1M texts")
    args = parser.parse_args()
    minilm_vectors(MINILM_MAX_DOCS if args.minilm_100k else MINILM_DOCS)
    if args.static:
        static_vectors(STATIC_DOCS)


if __name__ == "__main__":
    main()
