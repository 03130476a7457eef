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

    return Built(f"exact flat {docs.shape[1]}-d", "exact", search, [("flat", {})], time.perf_counter() - started, ram, 0, ram)


# ---------------------------------------------------------------- funnel


def _document_batches(count: int, docs: np.ndarray, texts: list[str] | None, batch: int = 65_536):
    from funnel.corpus import DOCUMENT_SCHEMA

    for start in range(0, count, batch):
        n = min(batch, count - start)
        ids = pa.array([f"d{i}" for i in range(start, start + n)])
        empty = pa.nulls(n, pa.string())
        text = pa.array(texts[start : start + n] if texts is not None else [""] * n)
        yield (
            pa.RecordBatch.from_arrays([ids, empty, text, empty], schema=DOCUMENT_SCHEMA),
            np.asarray(docs[start : start + n], dtype=np.float32),
        )


def funnel_index(docs: np.ndarray, workdir: Path, name: str, specs: tuple, texts: list[str] | None = None) -> tuple[Any, float, Path]:
    """Build a funnel index folder with ``write_index`` and load it with ``Index.load``: the
    documents (with their texts, so fetching hits costs what it costs), the vectors in the
    rotation the product fits (``rotation="auto"``: PCA order where it shortlists better)."""
    from funnel.indexes.builder import IndexConfig, write_index
    from funnel.indexes.index import Index

    path = workdir / name
    shutil.rmtree(path, ignore_errors=True)
    started = time.perf_counter()
    write_index(
        _document_batches(len(docs), docs, texts),
        path,
        model="bench-vectors",
        dim=docs.shape[1],
        config=IndexConfig(shortlists=specs, rotation="auto"),
        overwrite=True,
    )
    index = Index.load(path)
    return index, time.perf_counter() - started, path


def _funnel_built(
    family: str, index: Any, seconds: float, configs: list[tuple[str, dict]], dim: int, notes: str = "", compiled: bool = False
) -> Built:
    """A funnel family: one shortlist (at ``dim``) of the loaded index, run by ``run_funnel``;
    two-stage plans as one FAISS call (``compiled``, :mod:`funnel.search.compiled`, what searches
    do by default) or through the Python stages (``run_funnel(..., compiled=False)``)."""
    from funnel.evaluation.compute import shortlist_bytes
    from funnel.stages import parse_stages, run_funnel

    plans: dict[str, Any] = {}

    def search(queries: np.ndarray, k: int, params: dict) -> np.ndarray:
        if "nprobe" in params:
            for segment in index.segments:
                segment.shortlists[params["dim"]][1].nprobe = params["nprobe"]
        # A shortlist shorter than k (n=40 with k=100 for recall@100) passes on k instead.
        text = params["stages"].replace("N", str(max(params.get("n", 0), k))).replace("K", str(k))
        stages = plans.get(text) or plans.setdefault(text, parse_stages(text))
        return run_funnel(index, queries, stages, k, compiled=compiled).positions

    vectors = sum(p.stat().st_size for p in index.path.rglob("vectors.*"))
    # Compiled plans read a resident copy of the vectors; the Python stages their memory map.
    codes = shortlist_bytes(index, dim)
    ram, mapped = codes + (vectors if compiled else 0), 0 if compiled else vectors
    disk = vectors + codes + sum(p.stat().st_size for p in index.path.rglob("documents.arrow"))
    return Built(family, "funnel", search, configs, seconds, ram, mapped, disk, notes)


def _both_paths(family: str, index: Any, seconds: float, configs: list[tuple[str, dict]], dim: int, notes: str = "") -> list[Built]:
    """The family's two-stage plans through the Python stages and compiled into one FAISS call."""
    return [
        _funnel_built(family, index, seconds, configs, dim, notes),
        _funnel_built(f"{family}, compiled (IndexRefine)", index, seconds, configs, dim, notes, compiled=True),
    ]


def _two(dim: int, n: int) -> dict:
    return {"stages": f"{dim}:N,full:K", "dim": dim, "n": n}


def funnel_methods(
    docs: np.ndarray, workdir: Path, scale: int, texts: list[str] | None = None, calibration: np.ndarray | None = None
) -> tuple[list[tuple[str, Callable[[], list[Built]]]], Callable[[], tuple[Any, float]]]:
    """Lazy builders (name, thunk) so each shortlist is built, measured and freed in turn, and the
    function that writes (once) and returns the index they share.

    One index folder is written (documents, vectors in the product's rotation); each family then
    builds its shortlist in memory over the stored vectors (``Index.add_shortlist``), so the 1M
    run writes a million documents once. Every family rescores exactly at full dims. With
    ``calibration`` (query vectors not among the measured ones), graph and IVF families also
    run the plan ``funnel tune`` chooses for recall@10 ≥ 0.99.
    """
    from funnel.indexes.shortlist import make_spec

    large = scale >= 1_000_000
    full = docs.shape[1]
    shared: dict[str, Any] = {}

    def base() -> tuple[Any, float]:
        if "index" not in shared:
            # Stored with a 64-dim PQ fast-scan shortlist: cheap to build; the families replace it.
            shared["index"], shared["seconds"], _ = funnel_index(docs, workdir, "funnel", (make_spec(64, "pq-fastscan"),), texts)
        return shared["index"], shared["seconds"]

    def family(kind: str, dim: int, **params: int) -> tuple[Any, float]:
        index, written = base()
        started = time.perf_counter()
        index.add_shortlist(dim, kind, **params)
        return index, written + time.perf_counter() - started

    def tuned(index: Any, dim: int, longest: int) -> list[tuple[str, dict]]:
        found = tuned_plan(index, dim, calibration, max(longest, 2000)) if calibration is not None else None
        return [found] if found else []

    def flat() -> list[Built]:
        out = []
        for dim in (64, 128):
            index, seconds = family("flat", dim)
            out += _both_paths(f"funnel flat-{dim} → {full}", index, seconds, [(f"n={n}", _two(dim, n)) for n in (100, 300, 1000)], dim)
        three = [("64:3000→128:300", {"stages": "64:3000,128:300,full:K"})]
        out.append(_funnel_built(f"funnel 3-stage flat-64 → 128 → {full}", index, seconds, three, 64))
        return out

    # HNSW graphs: M=32, efConstruction=40 at every scale, as FAISS's full-dimension HNSW below.
    graph = {"m": 32, "ef_construction": 40, "ef_search": 16}  # efSearch follows the shortlist size

    def hnsw(kind: str, dim: int, sizes: tuple[int, ...]) -> Callable[[], list[Built]]:
        def build() -> list[Built]:
            index, seconds = family(kind, dim, **graph)
            # Not tuned: where no shortlist within the sweep meets 0.99 the tuner falls back to
            # "shortlist everything", which on a graph is a walk of the whole graph per query.
            configs = [(f"n=ef={n}", _two(dim, n)) for n in sizes]
            notes = f"HNSW M={graph['m']}, efConstruction={graph['ef_construction']}"
            return _both_paths(f"funnel {kind}-{dim} → {full}", index, seconds, configs, dim, notes)

        return build

    def scan(kind: str, dim: int, sizes: tuple[int, ...], tune_it: bool = True, **params: int) -> Callable[[], list[Built]]:
        def build() -> list[Built]:
            index, seconds = family(kind, dim, **params)
            configs = [(f"n={n}", _two(dim, n)) for n in sizes] + (tuned(index, dim, max(sizes)) if tune_it else [])
            parts = f" ({params['pq_m']}×4-bit parts)" if "pq_m" in params else ""
            return _both_paths(f"funnel {kind}-{dim}{parts} → {full}", index, seconds, configs, dim)

        return build

    def ivf_pq() -> list[Built]:
        dim = 128
        params = {"nlist": 1024} if large else {}  # default 4·sqrt(n) = 4000 at 1M: slow to train here
        index, seconds = family("ivf-pq-fastscan", dim, **params)
        nlist = index.segments[0].shortlists[dim][1].nlist
        configs = [(f"nprobe={p} n={n}", {**_two(dim, n), "nprobe": p}) for p in (32, 128, 256) for n in (1000, 3000)]
        notes = f"IVF nlist={nlist}, PQ {dim // 2}×4 bits fast-scan"
        return _both_paths(f"funnel ivf-pq-fastscan-{dim} → {full}", index, seconds, configs, dim, notes)

    def binary() -> list[Built]:
        index, seconds = family("binary", full)
        return [
            _funnel_built(f"funnel binary-{full} → {full}", index, seconds, [(f"n={n}", _two(full, n)) for n in (200, 1000, 4000)], full)
        ]

    # At 1M the graph and PQ families that can approach recall 0.99 within the 30-minute budget;
    # IVF (coarse lists cap recall near 0.96 on these queries), exhaustive float/8-bit scans
    # (25+ ms, far from exact/30) and the other graphs are measured at 10k and 100k.
    out: list[tuple[str, Callable[[], list[Built]]]] = [
        ("funnel-pq", scan("pq-fastscan", 128, (1000, 3000, 6000) if large else (300, 1000, 3000))),
        ("funnel-hnsw", hnsw("hnsw", 64, (100, 200, 400, 800, 1600) + ((3200,) if large else ()))),
        ("funnel-binary", binary),
        # PQ fast-scan over all dims, 4 dims a part: the codes of FAISS's IndexRefineFlat(PQ…x4fs),
        # as a funnel shortlist (a prefix is not always the best use of the bytes: see summary.md).
        ("funnel-pq-full", scan("pq-fastscan", full, (40, 160, 640, 2000), tune_it=False, pq_m=full // 4)),
    ]
    if not large:
        out += [
            ("funnel-hnsw128", hnsw("hnsw", 128, (100, 200, 400, 800))),
            ("funnel-hnsw-sq8", hnsw("hnsw-sq8", 128, (100, 200, 400, 800))),
            ("funnel-ivf-pq", ivf_pq),
            ("funnel-flat", flat),
            ("funnel-sq8", scan("sq8", 128, (100, 300, 1000))),
        ]
    return out, base


def fetch_timing(index: Any, positions: np.ndarray, rounds: int = 5) -> float:
    """Median ms to fetch the documents (id, title, text, metadata) of each row of ``positions``
    (q, k) from the index's Arrow files, as ``Retriever`` does for its hits."""
    times = []
    for _ in range(rounds):
        for row in positions:
            began = time.perf_counter()
            index.documents([int(p) for p in row if p >= 0])
            times.append(time.perf_counter() - began)
    return float(np.median(times) * 1000)


def tuned_plan(index: Any, dim: int, calibration: np.ndarray, max_candidates: int, target: float = 0.99) -> tuple[str, dict] | None:
    """``funnel tune`` on the family's shortlist (given calibration query vectors, none of them
    among the measured queries; shortlists up to ``max_candidates`` examined): the config label
    and params of the plan it chose; None when no shortlist that long met the target (the tuner
    then falls back to exact search, which the exact row already measures)."""
    from funnel.stages import format_stages
    from funnel.tuning import TuneOptions, tune

    options = TuneOptions(seed=0, dims=(dim,), max_stages=2, max_candidates=max_candidates)
    plan = tune(index, None, target, 10, calibration, options)
    if plan.is_exact:
        print(
            f"  tune: no {dim}-dim plan within {max_candidates} candidates met {target} ({plan.notes[0] if plan.notes else ''})", flush=True
        )
        return None
    stages = format_stages(plan.stages)
    return f"tuned {stages}", {"stages": stages.rsplit(",", 1)[0] + ",full:K", "dim": dim, "n": plan.stages[0].candidates}


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
    return Built(
        f"faiss HNSW {docs.shape[1]}-d", "hnsw-full", search, configs, seconds, ram, 0, ram, f"M={m}, efConstruction={ef_construction}"
    )
