"""Benchmark corpora: real text in quantity, real MiniLM vectors, and a MiniLM-space surrogate.

Texts: every PyPI and npm package in the tool library's package lists with a summary of at least
10 characters, written ``"name: summary"`` (1,024,624 texts), in a fixed random order; the first
N of that order is the N-document corpus, so the corpora are nested (10k ⊂ 100k ⊂ 1M). Queries:
the real query texts of ../shared/data (Cranfield, SciFact test, Debian; 1,746 texts).

Two kinds of vectors over those texts (cached under ``~/.cache/funnel/bench/``):

- ``minilm``: all-MiniLM-L6-v2 itself (384 dims, normalized), for the first 100k texts and the
  queries. Real embeddings of real text (the texts are short: about 230 a second here, so 100k
  take about 7 minutes once).
- ``surrogate``: a stand-in for MiniLM at 1M documents, where encoding a million texts with the
  transformer (about 5 hours on this machine) is out of reach. A static model distilled from
  the same MiniLM (model2vec, 256 dims) embeds every text; a ridge-regression map fitted on the
  10k (static, MiniLM) pairs carries it into MiniLM's 384-dim coordinates — MiniLM's own
  dimension order, not a PCA order, so the prefix structure is MiniLM's, not a flattered one;
  Gaussian noise with the covariance of the map's residuals (also fitted on the pairs) restores
  the part of MiniLM the static model cannot predict, so the per-dimension variances and the
  cross-dimension correlations match real MiniLM vectors; rows are then L2-normalized. Queries
  get the same construction from their texts. The 10k run uses both kinds on the same
  texts, which shows how far the surrogate's curves sit from the real ones.

All vectors are stored as float16 (what funnel stores) and every method reads the same values.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import common

CACHE = common.CACHE / "bench"
PACKAGES = common.PACKAGE_LISTS
DATA = common.DATA
SEED = 20261123
MINILM_DOCS = 10_000  # the (static, MiniLM) pairs the surrogate map is fitted on, and the PCA axes
MINILM_MAX_DOCS = 100_000  # real MiniLM vectors are encoded for this many texts
QUERY_SETS = (("cranfield", None), ("scifact", "test"), ("debian", None))


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


def query_texts(data: Path = DATA) -> list[str]:
    """The distinct query texts of the shared datasets (a split's judged queries where one is named)."""
    from funnel.readers import load_qrels, load_queries

    texts, seen = [], set()
    for name, split in QUERY_SETS:
        wanted = set(load_qrels(data / name / "qrels" / f"{split}.tsv")) if split else None
        for query_id, raw in load_queries(data / name / "queries.jsonl").items():
            text = raw.strip()
            if (wanted is None or query_id in wanted) and text and text not in seen:
                seen.add(text)
                texts.append(text)
    return texts


def _encode_minilm(texts: list[str], path: Path, chunk: int = 5_000) -> np.ndarray:
    """MiniLM vectors for ``texts``, computed in chunks that survive an interruption."""
    from funnel.models import Encoder

    if path.exists():
        return np.load(path)
    parts_dir = path.with_suffix(".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    encoder = None
    parts = []
    for start in range(0, len(texts), chunk):
        part = parts_dir / f"{start:09d}.npy"
        if not part.exists():
            encoder = encoder or Encoder.load()
            np.save(part, encoder.encode(texts[start : start + chunk], batch_size=128).astype(np.float16))
            print(f"minilm {path.name}: {start + chunk:,}/{len(texts):,}", flush=True)
        parts.append(np.load(part))
    vectors = np.concatenate(parts)
    np.save(path, vectors)
    return vectors


def query_encode_timing(kind: str, texts: list[str], rounds: int = 3) -> dict | None:
    """Median ms to encode one query text with the run's model (MiniLM or the static model), on
    the process's threads: the part of a query's latency every method shares."""
    import time

    if kind.startswith("minilm"):
        from funnel.encoders import load_query_encoder

        encoder = load_query_encoder(None)  # the engine a search runs on (ONNX Runtime unless it cannot)
        encode, model = (lambda text: encoder.encode([text])), f"all-MiniLM-L6-v2 ({type(encoder).__name__})"
    elif kind == "static":
        static = static_model()
        encode, model = (lambda text: static.encode([text])), "static (model2vec from MiniLM, 256 dims)"
    else:
        return None
    for text in texts[:3]:
        encode(text)
    times = []
    for _ in range(rounds):
        for text in texts:
            began = time.perf_counter()
            encode(text)
            times.append(time.perf_counter() - began)
    return {"model": model, "median_ms": float(np.median(times) * 1000), "queries": len(texts), "rounds": rounds}


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


def static_model():
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


@dataclass(frozen=True)
class SurrogateMap:
    """static (256) → MiniLM (384): ``y = normalize(x @ weights + bias + noise @ noise_factor)``."""

    weights: np.ndarray
    bias: np.ndarray
    noise_factor: np.ndarray
    r2: float

    def apply(self, static: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        mapped = static.astype(np.float32) @ self.weights + self.bias
        mapped += rng.standard_normal(mapped.shape, dtype=np.float32) @ self.noise_factor
        return (mapped / np.linalg.norm(mapped, axis=1, keepdims=True)).astype(np.float16)


def fit_map(static: np.ndarray, minilm: np.ndarray, ridge: float = 1e-2) -> SurrogateMap:
    x = static.astype(np.float64)
    y = minilm.astype(np.float64)
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    weights = np.linalg.solve(xc.T @ xc + ridge * len(x) * np.eye(x.shape[1]), xc.T @ yc)
    residual = yc - xc @ weights
    covariance = residual.T @ residual / len(x)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    noise_factor = (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))).T  # z @ F ~ N(0, covariance)
    r2 = 1.0 - residual.var(0).sum() / yc.var(0).sum()
    return SurrogateMap(
        weights.astype(np.float32), (y_mean - x_mean @ weights).astype(np.float32), noise_factor.astype(np.float32), float(r2)
    )


def surrogate_vectors(count: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(documents (count, 384) float16 memmap, queries (1746, 384) float16, construction facts)."""
    docs_path = CACHE / "surrogate-docs-1m.npy"
    queries_path = CACHE / "surrogate-queries.npy"
    facts_path = CACHE / "surrogate.json"
    if not docs_path.exists():
        texts = corpus_texts()[:1_000_000]
        model = static_model()
        real_docs, real_queries = minilm_vectors()
        pair_static = model.encode(texts[:MINILM_DOCS], batch_size=4096)
        mapping = fit_map(pair_static, real_docs)
        rng = np.random.default_rng(SEED)
        np.save(queries_path, mapping.apply(model.encode(query_texts(), batch_size=4096), rng))
        out = np.lib.format.open_memmap(str(docs_path) + ".tmp.npy", mode="w+", dtype=np.float16, shape=(len(texts), 384))
        step = 50_000
        for start in range(0, len(texts), step):
            out[start : start + step] = mapping.apply(model.encode(texts[start : start + step], batch_size=4096), rng)
        out.flush()
        del out
        os.replace(str(docs_path) + ".tmp.npy", docs_path)
        real = real_docs.astype(np.float32)
        made = np.load(docs_path, mmap_mode="r")[:MINILM_DOCS].astype(np.float32)
        facts = {
            "static_model": "model2vec distilled from all-MiniLM-L6-v2, pca_dims=256",
            "map_r2_on_10k_pairs": mapping.r2,
            "per_dim_std_correlation_real_vs_surrogate": float(np.corrcoef(real.std(0), made.std(0))[0, 1]),
            "mean_cosine_real_vs_surrogate_same_text": float(np.mean(np.sum(real * made, axis=1))),
        }
        facts_path.write_text(json.dumps(facts, indent=2))
    documents = np.load(docs_path, mmap_mode="r")[:count]
    return documents, np.load(queries_path), json.loads(facts_path.read_text())


def pca_rotation() -> np.ndarray:
    """(384, 384) orthonormal: the principal axes of the 10k real MiniLM documents, largest first."""
    real, _ = minilm_vectors()
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(real.astype(np.float64).T))
    return eigenvectors[:, ::-1].astype(np.float32)


def rotated(kind: str, documents: np.ndarray, queries: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The same vectors in PCA order: inner products (so the exact ranking) are unchanged; only
    which dims come first changes, so that prefixes carry the most variance, as in a nested model."""
    rotation = pca_rotation()
    path = CACHE / f"{kind}-pca-docs-{len(documents)}.npy"
    if not path.exists():
        out = np.lib.format.open_memmap(str(path) + ".tmp.npy", mode="w+", dtype=np.float16, shape=documents.shape)
        for start in range(0, len(documents), 65_536):
            chunk = np.asarray(documents[start : start + 65_536], dtype=np.float32) @ rotation
            out[start : start + 65_536] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
        out.flush()
        del out
        os.replace(str(path) + ".tmp.npy", path)
    query_vectors = np.asarray(queries, dtype=np.float32) @ rotation
    return np.load(path, mmap_mode="r")[:count], (query_vectors / np.linalg.norm(query_vectors, axis=1, keepdims=True)).astype(np.float16)


def load(kind: str, count: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Documents (count, 384) and queries (q, 384), float16, and a description of where they come from."""
    if kind == "minilm":
        if count > MINILM_MAX_DOCS:
            raise SystemExit(
                f"real MiniLM vectors are made for up to {MINILM_MAX_DOCS:,} documents, not {count:,}: use --vectors surrogate"
            )
        documents, queries = minilm_vectors(count)
        return (
            documents[:count],
            queries,
            {
                "vectors": "all-MiniLM-L6-v2 (real)",
                "texts": "PyPI+npm package summaries",
                "queries": "real query texts of cranfield, scifact (test), debian",
            },
        )
    if kind == "static":
        documents, queries = static_vectors(count)
        return (
            documents,
            queries,
            {
                "vectors": "static model (real): model2vec distilled from all-MiniLM-L6-v2, 256 dims",
                "texts": "PyPI+npm package summaries",
                "queries": "real query texts of cranfield, scifact (test), debian",
            },
        )
    if kind == "surrogate":
        documents, queries, facts = surrogate_vectors(count)
        return (
            documents,
            queries,
            {
                "vectors": "MiniLM-space surrogate (see corpus.py)",
                "texts": "PyPI+npm package summaries",
                "queries": "real query texts of cranfield, scifact (test), debian",
                **facts,
            },
        )
    if kind in ("minilm-pca", "surrogate-pca"):
        base = kind.removesuffix("-pca")
        documents, queries, source = load(base, count if base == "minilm" else 1_000_000)
        documents, queries = rotated(base, documents, queries, count)
        label = "real MiniLM" if base == "minilm" else "MiniLM-space surrogate"
        return (
            documents,
            queries,
            {
                **source,
                "vectors": f"{label}, rotated to PCA order (nested-like prefixes)",
                "rotation": "principal axes of the 10k real MiniLM documents, largest variance first; inner products unchanged",
            },
        )
    raise SystemExit(f"unknown vectors {kind!r}: minilm, surrogate, minilm-pca or surrogate-pca")


if __name__ == "__main__":
    import sys

    minilm_vectors(MINILM_MAX_DOCS if "--minilm-100k" in sys.argv else MINILM_DOCS)
    if "--static" in sys.argv:
        static_vectors(STATIC_DOCS)
    if "--surrogate" in sys.argv:
        surrogate_vectors(1_000_000)
        load("surrogate-pca", 1_000_000)  # writes the rotated copy once, outside the timed runs
