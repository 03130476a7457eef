"""The methods on the plot: each builds once over the same vectors and answers ``search(queries, k, params)``.

Every ``search`` takes normalized float32 query vectors (q, 384) and returns positions (q, k);
query encoding is the same for every method, so it is left out of every latency.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

SearchFn = Callable[[np.ndarray, int, dict], np.ndarray]


@dataclass
class Built:
    """One built index and the parameter settings to sweep on it."""

    family: str  # one line on the plot
    method: str  # "funnel", "exact", "faiss-refine", "st-quantized", "hnsw-full"
    search: SearchFn
    configs: list[tuple[str, dict]]
    build_seconds: float
    ram_bytes: int  # held in process memory to answer queries
    mapped_bytes: int = 0  # memory-mapped files that should sit in the page cache
    disk_bytes: int = 0
    notes: str = ""
    release: Callable[[], None] = field(default=lambda: None)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def faiss_bytes(index: Any, path: Path) -> int:
    import faiss

    (faiss.write_index_binary if isinstance(index, faiss.IndexBinary) else faiss.write_index)(index, str(path))
    size = path.stat().st_size
    path.unlink()
    return size


def gpu_count() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


# ---------------------------------------------------------------- exact reference


def exact(docs: np.ndarray, workdir: Path, use_gpu: bool) -> Built:
    import faiss

    started = time.perf_counter()
    index = faiss.IndexFlatIP(docs.shape[1])
    for start in range(0, len(docs), 65_536):
        index.add(np.asarray(docs[start : start + 65_536], dtype=np.float32))
    ram = index.ntotal * index.d * 4
    if use_gpu:
        index = faiss.index_cpu_to_all_gpus(index)

    def search(queries: np.ndarray, k: int, params: dict) -> np.ndarray:
        return index.search(queries, k)[1]

    return Built("exact flat 384-d", "exact", search, [("flat", {})], time.perf_counter() - started, ram, 0, ram)


# ---------------------------------------------------------------- funnel


def _document_batches(count: int, docs: np.ndarray, batch: int = 65_536):
    from funnel.corpus import DOCUMENT_SCHEMA

    for start in range(0, count, batch):
        n = min(batch, count - start)
        ids = pa.array([f"d{i}" for i in range(start, start + n)])
        empty = pa.nulls(n, pa.string())
        yield (
            pa.RecordBatch.from_arrays([ids, empty, pa.array([""] * n), empty], schema=DOCUMENT_SCHEMA),
            np.asarray(docs[start : start + n], dtype=np.float32),
        )


def funnel_index(docs: np.ndarray, workdir: Path, name: str, specs: tuple) -> tuple[Any, float, Path]:
    """Build a funnel index folder with ``write_index`` and load it with ``Index.load``."""
    from funnel.indexes.builder import IndexConfig, write_index
    from funnel.indexes.index import Index

    path = workdir / name
    shutil.rmtree(path, ignore_errors=True)
    started = time.perf_counter()
    # rotation="none": the run's vectors are already in the order it names (model or PCA order).
    write_index(
        _document_batches(len(docs), docs),
        path,
        model="bench-vectors",
        dim=docs.shape[1],
        config=IndexConfig(shortlists=specs, rotation="none"),
        overwrite=True,
    )
    index = Index.load(path)
    return index, time.perf_counter() - started, path


def _funnel_built(
    family: str, index: Any, path: Path, seconds: float, configs: list[tuple[str, dict]], shortlist_dims: list[int], notes: str = ""
) -> Built:
    from funnel.stages import parse_stages, run_funnel

    plans: dict[str, Any] = {}

    def search(queries: np.ndarray, k: int, params: dict) -> np.ndarray:
        if "nprobe" in params:
            for segment in index.segments:
                segment.shortlists[params["dim"]][1].nprobe = params["nprobe"]
        text = params["stages"].replace("K", str(k))
        stages = plans.get(text) or plans.setdefault(text, parse_stages(text))
        return run_funnel(index, queries, stages, k).positions

    shortlist_files = [p for p in path.rglob("shortlist-*") if int(p.stem.split("-d")[-1]) in shortlist_dims]
    ram = sum(p.stat().st_size for p in shortlist_files)
    mapped = sum(p.stat().st_size for p in path.rglob("vectors.*"))
    disk = mapped + ram + sum(p.stat().st_size for p in path.rglob("documents.arrow"))
    return Built(family, "funnel", search, configs, seconds, ram, mapped, disk, notes)


def funnel_methods(docs: np.ndarray, workdir: Path, scale: int) -> list[tuple[str, Callable[[], list[Built]]]]:
    """Lazy builders (name, thunk) so each index is built, measured and freed in turn."""
    from funnel.indexes.shortlist import make_spec

    large = scale >= 1_000_000
    # At 1M the sweep is trimmed to fit the 30-minute budget; 32-dim MiniLM prefixes are too weak to matter there.
    sizes = [300, 1000, 3000] if large else [100, 300, 1000, 3000]

    def two(dim: int, n: int) -> dict:
        return {"stages": f"{dim}:{n},full:K", "dim": dim}

    def flat() -> list[Built]:
        dims = (64, 128) if large else (32, 64, 128)
        index, seconds, path = funnel_index(docs, workdir, "funnel-flat", tuple(make_spec(d, "flat") for d in dims))
        built = [_funnel_built(f"funnel flat-{d} → 384", index, path, seconds, [(f"n={n}", two(d, n)) for n in sizes], [d]) for d in dims]
        three = [("64:3000→128:300", {"stages": "64:3000,128:300,full:K"})] + (
            [] if large else [("32:3000→128:300", {"stages": "32:3000,128:300,full:K"})]
        )
        built.append(_funnel_built("funnel 3-stage flat → 128 → 384", index, path, seconds, three, [64]))
        return built

    def hnsw() -> list[Built]:
        # efSearch follows the shortlist size (funnel sets efSearch = max(ef_search, n)). The same
        # graph (M=32, efConstruction=40) as FAISS's full-dimension HNSW at every scale; at 1M the
        # build takes about 2 minutes on 2 idle cores (run.py: FULL_HNSW_BUILD).
        m, ef_construction = 32, 40
        spec = make_spec(64, "hnsw", m=m, ef_construction=ef_construction, ef_search=16)
        index, seconds, path = funnel_index(docs, workdir, "funnel-hnsw", (spec,))
        two_stage = [(f"n=ef={n}", two(64, n)) for n in (100, 200, 400, 800, 1600, 3200) + ((6400,) if large else ())]
        three = [(f"64:{n}→128:{m}", {"stages": f"64:{n},128:{m},full:K"}) for n, m in ((1600, 200), (3200, 300))]
        return [
            _funnel_built("funnel hnsw-64 → 384", index, path, seconds, two_stage, [64], f"HNSW M={m}, efConstruction={ef_construction}"),
            _funnel_built(
                "funnel 3-stage hnsw-64 → 128 → 384", index, path, seconds, three, [64], f"HNSW M={m}, efConstruction={ef_construction}"
            ),
        ]

    def hnsw128() -> list[Built]:
        # A wider prefix for the graph: each candidate costs twice the 64-dim one to score, but far
        # fewer candidates hold the top-10 (real MiniLM in PCA order at 100k: 128:300 flat keeps
        # 0.996 of it, 64:300 0.90), so the shortlist can be much shorter.
        m, ef_construction = 32, 40
        spec = make_spec(128, "hnsw", m=m, ef_construction=ef_construction, ef_search=16)
        index, seconds, path = funnel_index(docs, workdir, "funnel-hnsw128", (spec,))
        configs = [(f"n=ef={n}", two(128, n)) for n in (100, 200, 400, 800, 1600) + ((3200,) if large else ())]
        return [
            _funnel_built("funnel hnsw-128 → 384", index, path, seconds, configs, [128], f"HNSW M={m}, efConstruction={ef_construction}")
        ]

    def ivf() -> list[Built]:
        spec = make_spec(64, "ivf", **({"nlist": 1024} if large else {}))  # default 4·sqrt(n) = 4000 at 1M: too slow to train here
        index, seconds, path = funnel_index(docs, workdir, "funnel-ivf", (spec,))
        nlist = index.segments[0].shortlists[64][1].nlist
        configs = [(f"nprobe={p} n={n}", {**two(64, n), "nprobe": p}) for p in (16, 64) for n in (500, 2000)]
        return [_funnel_built("funnel ivf-64 → 384", index, path, seconds, configs, [64], f"IVFFlat nlist={nlist}")]

    def binary() -> list[Built]:
        dims = (256, 384) if large else (128, 256, 384)
        index, seconds, path = funnel_index(docs, workdir, "funnel-binary", tuple(make_spec(d, "binary") for d in dims))
        built = [
            _funnel_built(
                f"funnel binary-{d} → 384",
                index,
                path,
                seconds,
                [(f"n={n}", two(d, n)) for n in ((200, 1000, 4000) if d == 384 else (1000, 4000))],
                [d],
            )
            for d in dims
        ]
        three = [(f"bin256:{n}→128:{m}", {"stages": f"256:{n},128:{m},full:K"}) for n, m in ((4000, 300), (8000, 400))]
        built.append(_funnel_built("funnel 3-stage binary-256 → 128 → 384", index, path, seconds, three, [256]))
        return built

    return [("funnel-flat", flat), ("funnel-hnsw", hnsw), ("funnel-hnsw128", hnsw128), ("funnel-ivf", ivf), ("funnel-binary", binary)]


# ---------------------------------------------------------------- FAISS refine


def faiss_refine(docs: np.ndarray, workdir: Path, base: str, use_gpu: bool) -> Built:
    """``IndexRefineFlat`` over a PQ or IVF-PQ base: FAISS's own shortlist-and-rerank."""
    import faiss

    d = docs.shape[1]
    started = time.perf_counter()
    train = np.asarray(docs[np.random.default_rng(0).choice(len(docs), min(len(docs), 50_000), replace=False)], dtype=np.float32)
    base_index = faiss.index_factory(d, base, faiss.METRIC_INNER_PRODUCT)
    # index_factory turns on polysemous training for PQ: a simulated annealing that takes many
    # minutes on 2 cores and only serves Hamming-filtered search, which is not used here.
    if hasattr(base_index, "do_polysemous_training"):
        base_index.do_polysemous_training = False
    base_index.train(train)
    refine = faiss.IndexRefineFlat(base_index)
    for start in range(0, len(docs), 65_536):
        refine.add(np.asarray(docs[start : start + 65_536], dtype=np.float32))
    seconds = time.perf_counter() - started
    ram = faiss_bytes(refine, workdir / "refine.faiss")
    ivf = "IVF" in base
    configs = [
        ((f"nprobe={p} " if p else "") + f"k_factor={f}", {"nprobe": p, "k_factor": f})
        for p in ((16, 64) if ivf else (None,))
        for f in (4, 16, 64)
    ]

    def search(queries: np.ndarray, k: int, params: dict) -> np.ndarray:
        inner = faiss.IVFSearchParameters(nprobe=params["nprobe"]) if params.get("nprobe") else None
        search_params = faiss.IndexRefineSearchParameters(k_factor=params["k_factor"], base_index_params=inner)
        return refine.search(queries, k, params=search_params)[1]

    return Built(f"faiss IndexRefineFlat({base})", "faiss-refine", search, configs, seconds, ram, 0, ram)


def faiss_refine_hnsw(
    docs: np.ndarray, workdir: Path, m: int, ef_construction: int, efs: tuple[int, ...], k_factors: tuple[int, ...]
) -> Built:
    """``IndexRefineFlat`` over ``IndexHNSWSQ`` (HNSW on 8-bit scalar-quantized full vectors).

    The usual memory-saving HNSW: the graph walks 8-bit codes (a quarter of float32), and the
    ``k_factor · k`` candidates are re-ranked on the stored float32 vectors — Milvus's HNSW_SQ with
    ``refine``, FAISS's ``HNSW32,SQ8,RFlat``. Swept: efSearch and k_factor.
    """
    import faiss

    d = docs.shape[1]
    started = time.perf_counter()
    base_index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, m, faiss.METRIC_INNER_PRODUCT)
    base_index.hnsw.efConstruction = ef_construction
    base_index.train(np.asarray(docs[np.random.default_rng(0).choice(len(docs), min(len(docs), 50_000), replace=False)], dtype=np.float32))
    refine = faiss.IndexRefineFlat(base_index)
    for start in range(0, len(docs), 65_536):
        refine.add(np.asarray(docs[start : start + 65_536], dtype=np.float32))
    seconds = time.perf_counter() - started
    ram = faiss_bytes(refine, workdir / "refine-hnsw.faiss")
    configs = [(f"ef={ef} k_factor={f}", {"ef": ef, "k_factor": f}) for ef in efs for f in k_factors]

    def search(queries: np.ndarray, k: int, params: dict) -> np.ndarray:
        # FAISS's HNSW returns at most efSearch results, so efSearch is raised to the k_factor·k
        # candidates asked for (as funnel raises its own to the shortlist size).
        inner = faiss.SearchParametersHNSW(efSearch=max(params["ef"], k * params["k_factor"]))
        search_params = faiss.IndexRefineSearchParameters(k_factor=params["k_factor"], base_index_params=inner)
        return refine.search(queries, k, params=search_params)[1]

    return Built(
        f"faiss IndexRefineFlat(HNSW{m},SQ8)",
        "faiss-refine",
        search,
        configs,
        seconds,
        ram,
        0,
        ram,
        f"HNSW M={m}, efConstruction={ef_construction}, 8-bit codes; re-rank on float32",
    )


# ---------------------------------------------------------------- sentence-transformers quantized search


def st_quantized(docs: np.ndarray, workdir: Path, precision: str, multipliers: tuple[int, ...]) -> Built:
    """``semantic_search_faiss`` with a uint8 or ubinary corpus and rescoring (its own exact index)."""
    import faiss
    from sentence_transformers.util.quantization import quantize_embeddings, semantic_search_faiss

    started = time.perf_counter()
    calibration = np.asarray(docs[np.random.default_rng(0).choice(len(docs), min(len(docs), 10_000), replace=False)], dtype=np.float32)
    ranges = None
    if precision == "uint8":
        ranges = np.vstack([calibration.min(0), calibration.max(0)])
        index = faiss.IndexFlatIP(docs.shape[1])
    else:
        index = faiss.IndexBinaryFlat(docs.shape[1])
    for start in range(0, len(docs), 65_536):
        chunk = np.asarray(docs[start : start + 65_536], dtype=np.float32)
        index.add(quantize_embeddings(chunk, precision=precision, ranges=ranges))
    seconds = time.perf_counter() - started
    ram = faiss_bytes(index, workdir / "st.faiss")

    def search(queries: np.ndarray, k: int, params: dict) -> np.ndarray:
        results, _ = semantic_search_faiss(
            queries,
            corpus_index=index,
            corpus_precision=precision,
            top_k=k,
            ranges=ranges,
            rescore=True,
            rescore_multiplier=params["rescore_multiplier"],
        )
        out = np.full((len(queries), k), -1, dtype=np.int64)
        for row, hits in enumerate(results):
            out[row, : len(hits)] = [hit["corpus_id"] for hit in hits]
        return out

    configs = [(f"rescore×{m}", {"rescore_multiplier": m}) for m in multipliers]
    notes = "exact index (faiss IndexFlatIP over uint8 codes)" if precision == "uint8" else "exact index (faiss IndexBinaryFlat, 384 bits)"
    return Built(f"sentence-transformers {precision} + rescore", "st-quantized", search, configs, seconds, ram, 0, ram, notes)


# ---------------------------------------------------------------- HNSW over full vectors


def hnsw_full(docs: np.ndarray, workdir: Path, m: int = 32, ef_construction: int = 40, efs: tuple[int, ...] = (16, 64, 256, 1024)) -> Built:
    import faiss

    started = time.perf_counter()
    index = faiss.IndexHNSWFlat(docs.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    for start in range(0, len(docs), 65_536):
        index.add(np.asarray(docs[start : start + 65_536], dtype=np.float32))
    seconds = time.perf_counter() - started
    ram = faiss_bytes(index, workdir / "hnsw.faiss")

    def search(queries: np.ndarray, k: int, params: dict) -> np.ndarray:
        return index.search(queries, k, params=faiss.SearchParametersHNSW(efSearch=max(params["ef"], k)))[1]

    configs = [(f"ef={ef}", {"ef": ef}) for ef in efs]
    return Built("faiss HNSW 384-d", "hnsw-full", search, configs, seconds, ram, 0, ram, f"M={m}, efConstruction={ef_construction}")
