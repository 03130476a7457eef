"""The methods on the plot: each builds once over the same vectors and answers ``search(queries, k, params)``.

Every ``search`` takes normalized float32 query vectors (q, dim) and returns positions (q, k);
query encoding is the same for every method, so it is left out of every latency. :data:`METHODS`
is the registry ``run.py`` goes through (``--only`` names its entries), in the order the results
list them.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from benchmarks import common
from funnel.indexes.shortlist import FAST_SCAN_BLOCK

if TYPE_CHECKING:
    from funnel.indexes.index import Index

SearchFn = Callable[[np.ndarray, int, dict[str, Any]], np.ndarray]
Configs = list[tuple[str, dict[str, Any]]]

KINDS = {
    "exact": "exact inner-product search over all dims (the reference)",
    "funnel": "a funnel plan over one shortlist of funnel's index, through run_funnel",
    "faiss-refine": "FAISS's shortlist-and-rerank (IndexRefineFlat) over full-dimension codes",
    "st-quantized": "sentence-transformers quantized search with rescoring",
    "hnsw-full": "FAISS HNSW over the full vectors",
}
"""The kinds of method a run compares; each :class:`Built` names one (the plots style them apart)."""


@dataclass
class Built:
    """One built index and the parameter settings to sweep on it."""

    family: str  # one line on the plot
    method: str  # one of KINDS
    search: SearchFn
    configs: Configs
    build_seconds: float
    ram_bytes: int  # held in process memory to answer queries
    mapped_bytes: int = 0  # memory-mapped files that should sit in the page cache
    disk_bytes: int = 0
    notes: str = ""
    release: Callable[[], None] = field(default=lambda: None)

    def __post_init__(self) -> None:
        if self.method not in KINDS:
            raise ValueError(f"method kind {self.method!r} is not one of {', '.join(KINDS)}")


@dataclass
class Setup:
    """What every method of one run builds over: the documents (n, dim), possibly memory-mapped,
    their texts, the calibration queries ``funnel tune`` chooses plans on, and where to build."""

    docs: np.ndarray
    workdir: Path
    use_gpu: bool = False
    texts: list[str] | None = None
    calibration: np.ndarray | None = None
    hnsw_full: bool = True
    query_texts: dict[bytes, str] = field(default_factory=dict)
    """Each measured query's text by its vector's bytes: for plans that add BM25 candidates,
    whose search takes the text beside the vector."""
    _funnel: tuple[Index, float] | None = field(default=None, repr=False)

    @property
    def scale(self) -> int:
        return len(self.docs)

    @property
    def large(self) -> bool:
        return self.scale >= 1_000_000

    @property
    def full(self) -> int:
        return int(self.docs.shape[1])

    def funnel_index(self) -> tuple[Index, float]:
        """The one funnel index every funnel family shares, written on first use, and the seconds
        that took. Stored with a 64-dim PQ fast-scan shortlist: cheap to build; the families add their own."""
        from funnel.indexes.shortlist import make_spec

        if self._funnel is None:
            index, seconds, _ = funnel_index(self.docs, self.workdir, "funnel", (make_spec(64, "pq-fastscan"),), self.texts)
            self._funnel = index, seconds
        return self._funnel

    def family(self, kind: str, dim: int, **params: int) -> tuple[Index, float]:
        """The shared index with a ``kind`` shortlist at ``dim`` dims added in memory, and the
        seconds the index and that shortlist took to build."""
        index, written = self.funnel_index()
        started = time.perf_counter()
        index.add_shortlist(dim, kind, **params)
        return index, written + time.perf_counter() - started


@dataclass(frozen=True)
class Method:
    """One entry of :data:`METHODS`: the name ``--only`` gives, how it builds over a
    :class:`Setup` (one or more :class:`Built`, measured and freed in turn), and where it runs."""

    name: str
    build: Callable[[Setup], list[Built]]
    runs_at: Callable[[Setup], bool] = lambda setup: True


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def faiss_bytes(index: Any, path: Path) -> int:
    faiss = common.faiss_untyped()

    (faiss.write_index_binary if isinstance(index, faiss.IndexBinary) else faiss.write_index)(index, str(path))
    size = path.stat().st_size
    path.unlink()
    return size


def gpu_count() -> int:
    faiss = common.faiss_untyped()

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


# ---------------------------------------------------------------- exact reference


def exact(docs: np.ndarray, workdir: Path, use_gpu: bool) -> Built:
    faiss = common.faiss_untyped()

    started = time.perf_counter()
    index = faiss.IndexFlatIP(docs.shape[1])
    for start in range(0, len(docs), 65_536):
        index.add(np.asarray(docs[start : start + 65_536], dtype=np.float32))
    ram = index.ntotal * index.d * 4
    if use_gpu:
        index = faiss.index_cpu_to_all_gpus(index)

    def search(queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
        return index.search(queries, k)[1]

    return Built(f"exact flat {docs.shape[1]}-d", "exact", search, [("flat", {})], time.perf_counter() - started, ram, 0, ram)


# ---------------------------------------------------------------- funnel


def funnel_index(
    docs: np.ndarray, workdir: Path, name: str, specs: tuple[Any, ...], texts: list[str] | None = None, lexical: bool = False
) -> tuple[Index, float, Path]:
    """Build a funnel index folder (:func:`benchmarks.common.index_from_vectors`) and load it with
    ``Index.load``: the documents (with their texts, so fetching hits costs what it costs), the
    vectors in the rotation the product fits (``rotation="auto"``: PCA order where it shortlists better)."""
    from funnel.indexes.index import Index

    path = workdir / name
    shutil.rmtree(path, ignore_errors=True)
    started = time.perf_counter()
    common.index_from_vectors(
        path, common.vector_batches(docs, texts), dim=docs.shape[1], shortlists=specs, rotation="auto", overwrite=True, lexical=lexical
    )
    index = Index.load(path)
    return index, time.perf_counter() - started, path


def _funnel_built(family: str, index: Index, seconds: float, configs: Configs, dim: int, notes: str = "", compiled: bool = False) -> Built:
    """A funnel family: one shortlist (at ``dim``) of the loaded index, run by ``run_funnel``;
    two-stage plans as one FAISS call (``compiled``, :mod:`funnel.search.compiled`, what searches
    do by default) or through the Python stages (``run_funnel(..., compiled=False)``)."""
    from funnel.evaluation.compute import shortlist_bytes
    from funnel.search.plan import Plan
    from funnel.search.run import run_funnel

    plans: dict[str, Plan] = {}

    def search(queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
        if "nprobe" in params:
            for segment in index.segments:
                segment.shortlists[params["dim"]][1].nprobe = params["nprobe"]
        # A shortlist shorter than k (n=40 with k=100 for recall@100) passes on k instead.
        text = params["stages"].replace("N", str(max(params.get("n", 0), k))).replace("K", str(k))
        plan = plans.get(text) or plans.setdefault(text, Plan.parse(text))
        return run_funnel(index, queries, plan, k, compiled=compiled).positions

    vectors = sum(p.stat().st_size for p in index.path.rglob("vectors.*"))
    # Compiled plans read a resident copy of the vectors; the Python stages their memory map.
    codes = shortlist_bytes(index, dim)
    ram, mapped = codes + (vectors if compiled else 0), 0 if compiled else vectors
    disk = vectors + codes + sum(p.stat().st_size for p in index.path.rglob("documents.arrow"))
    return Built(family, "funnel", search, configs, seconds, ram, mapped, disk, notes)


def _both_paths(family: str, index: Index, seconds: float, configs: Configs, dim: int, notes: str = "") -> list[Built]:
    """The family's two-stage plans through the Python stages and compiled into one FAISS call."""
    return [
        _funnel_built(family, index, seconds, configs, dim, notes),
        _funnel_built(f"{family}, compiled (IndexRefine)", index, seconds, configs, dim, notes, compiled=True),
    ]


def _two(dim: int, n: int) -> dict[str, Any]:
    return {"stages": f"{dim}:N,full:K", "dim": dim, "n": n}


def _tuned(setup: Setup, index: Index, dim: int, longest: int) -> Configs:
    """The plan ``funnel tune`` chooses on the setup's calibration queries, when there are some
    and it finds one within ``max(longest, 2000)`` candidates."""
    found = tuned_plan(index, dim, setup.calibration, max(longest, 2000)) if setup.calibration is not None else None
    return [found] if found else []


def funnel_flat(setup: Setup) -> list[Built]:
    out = []
    for dim in (64, 128):
        index, seconds = setup.family("flat", dim)
        configs = [(f"n={n}", _two(dim, n)) for n in (100, 300, 1000)]
        out += _both_paths(f"funnel flat-{dim} → {setup.full}", index, seconds, configs, dim)
    three: Configs = [("64:3000→128:300", {"stages": "64:3000,128:300,full:K"})]
    out.append(_funnel_built(f"funnel 3-stage flat-64 → 128 → {setup.full}", index, seconds, three, 64))
    return out


def funnel_exact(setup: Setup) -> list[Built]:
    """``full:K`` on funnel's index: the exact scan every index runs (Panorama over the rotated
    vectors where :func:`funnel.search.exact.choose_scan` says it pays), built on the first search."""
    from funnel.search.plan import Plan
    from funnel.search.run import exact_scan, run_funnel

    index, written = setup.funnel_index()
    started = time.perf_counter()
    scan = exact_scan(index)
    seconds = written + time.perf_counter() - started

    def search(queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
        return run_funnel(index, queries, Plan.parse(f"full:{k}"), k).positions

    ram = scan.count * scan.dim * 4
    return [Built(f"funnel exact scan ({scan.scan.name})", "funnel", search, [("full:K", {})], seconds, ram, 0, ram)]


def funnel_lexical(setup: Setup) -> list[Built]:
    """The suite's fastest funnel family (OPQ fast-scan codes over all dims, rescored exactly)
    with BM25's best 50 for the query text added before the rescoring: the lexical stage's cost
    per query. An index of its own, written with its BM25 index (the shared one has none)."""
    from funnel.evaluation.compute import shortlist_bytes
    from funnel.indexes.shortlist import make_spec
    from funnel.search.plan import Plan
    from funnel.search.run import run_funnel

    if not setup.query_texts:
        return []
    spec = make_spec(setup.full, "opq-fastscan", pq_m=setup.full // 4)
    index, seconds, _ = funnel_index(setup.docs, setup.workdir, "funnel-lexical", (spec,), setup.texts, lexical=True)
    plans: dict[str, Plan] = {}

    def search(queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
        text = params["stages"].replace("N", str(max(params["n"], k))).replace("K", str(k))
        plan = plans.get(text) or plans.setdefault(text, Plan.parse(text))
        texts = [setup.query_texts[row.tobytes()] for row in np.asarray(queries, dtype=np.float32)]
        return run_funnel(index, queries, plan, k, texts=texts).positions

    configs: Configs = [
        (f"n={n}, +bm25:50", {"stages": "384:N+bm25:50,full:K".replace("384", str(setup.full)), "n": n}) for n in (160, 640)
    ]
    vectors = sum(p.stat().st_size for p in index.path.rglob("vectors.*"))
    lexical = sum(p.stat().st_size for p in index.path.glob("lexical-*/*"))
    codes = shortlist_bytes(index, setup.full)
    return [Built("funnel opq-fastscan + bm25:50", "funnel", search, configs, seconds, codes + lexical, vectors, vectors + codes + lexical)]


# HNSW graphs: M=32, efConstruction=40 at every scale, as FAISS's full-dimension HNSW below.
FUNNEL_GRAPH = {"m": 32, "ef_construction": 40, "ef_search": 16}  # efSearch follows the shortlist size


def funnel_hnsw(kind: str, dim: int, sizes: Callable[[Setup], tuple[int, ...]]) -> Callable[[Setup], list[Built]]:
    def build(setup: Setup) -> list[Built]:
        index, seconds = setup.family(kind, dim, **FUNNEL_GRAPH)
        # Not tuned: where no shortlist within the sweep meets 0.99 the tuner falls back to
        # "shortlist everything", which on a graph is a walk of the whole graph per query.
        configs = [(f"n=ef={n}", _two(dim, n)) for n in sizes(setup)]
        notes = f"HNSW M={FUNNEL_GRAPH['m']}, efConstruction={FUNNEL_GRAPH['ef_construction']}"
        return _both_paths(f"funnel {kind}-{dim} → {setup.full}", index, seconds, configs, dim, notes)

    return build


def funnel_scan(
    kind: str, dim: Callable[[Setup], int], sizes: Callable[[Setup], tuple[int, ...]], tune_it: bool = True, quarter_parts: bool = False
) -> Callable[[Setup], list[Built]]:
    """An exhaustive shortlist (``kind`` at ``dim(setup)`` dims); ``quarter_parts``: PQ with one
    4-bit part per 4 dims of the full vectors."""

    def build(setup: Setup) -> list[Built]:
        at = dim(setup)
        params = {"pq_m": setup.full // 4} if quarter_parts else {}
        index, seconds = setup.family(kind, at, **params)
        configs = [(f"n={n}", _two(at, n)) for n in sizes(setup)] + (_tuned(setup, index, at, max(sizes(setup))) if tune_it else [])
        parts = f" ({params['pq_m']}×4-bit parts)" if "pq_m" in params else ""
        return _both_paths(f"funnel {kind}-{at}{parts} → {setup.full}", index, seconds, configs, at)

    return build


def funnel_ivf_pq(setup: Setup) -> list[Built]:
    dim = 128
    params = {"nlist": 1024} if setup.large else {}  # default 4·sqrt(n) = 4000 at 1M: slow to train here
    index, seconds = setup.family("ivf-pq-fastscan", dim, **params)
    nlist = index.segments[0].shortlists[dim][1].nlist
    configs = [(f"nprobe={p} n={n}", {**_two(dim, n), "nprobe": p}) for p in (32, 128, 256) for n in (1000, 3000)]
    notes = f"IVF nlist={nlist}, PQ {dim // 2}×4 bits fast-scan"
    return _both_paths(f"funnel ivf-pq-fastscan-{dim} → {setup.full}", index, seconds, configs, dim, notes)


def funnel_binary(setup: Setup) -> list[Built]:
    full = setup.full
    index, seconds = setup.family("binary", full)
    return [_funnel_built(f"funnel binary-{full} → {full}", index, seconds, [(f"n={n}", _two(full, n)) for n in (200, 1000, 4000)], full)]


def fetch_timing(index: Index, positions: np.ndarray, rounds: int = 5) -> float:
    """Median ms to fetch the documents (id, title, text, metadata) of each row of ``positions``
    (q, k) from the index's Arrow files, as ``Retriever`` does for its hits."""
    times = []
    for _ in range(rounds):
        for row in positions:
            began = time.perf_counter()
            index.documents([int(p) for p in row if p >= 0])
            times.append(time.perf_counter() - began)
    return float(np.median(times) * 1000)


def tuned_plan(
    index: Index, dim: int, calibration: np.ndarray, max_candidates: int, target: float = 0.99
) -> tuple[str, dict[str, Any]] | None:
    """``funnel tune`` on the family's shortlist (given calibration query vectors, none of them
    among the measured queries; shortlists up to ``max_candidates`` examined): the config label
    and params of the plan it chose; None when no shortlist that long met the target (the tuner
    then falls back to exact search, which the exact row already measures)."""
    from funnel.search.plan import Plan
    from funnel.tuning import TuneOptions, tune

    options = TuneOptions(seed=0, dims=(dim,), max_stages=2, max_candidates=max_candidates)
    plan = tune(index, None, target, 10, calibration, options)
    if plan.is_exact:
        print(
            f"  tune: no {dim}-dim plan within {max_candidates} candidates met {target} ({plan.notes[0] if plan.notes else ''})", flush=True
        )
        return None
    stages = str(Plan.of(plan.stages))
    return f"tuned {stages}", {"stages": stages.rsplit(",", 1)[0] + ",full:K", "dim": dim, "n": plan.stages[0].candidates}


# ---------------------------------------------------------------- FAISS refine


def faiss_refine(docs: np.ndarray, workdir: Path, base: str, use_gpu: bool, k_factors: tuple[int, ...] = (4, 16, 64)) -> Built:
    """``IndexRefineFlat`` over a PQ or IVF-PQ base: FAISS's own shortlist-and-rerank."""
    faiss = common.faiss_untyped()

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
        for f in k_factors
    ]

    def search(queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
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
    faiss = common.faiss_untyped()

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

    def search(queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
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


def st_quantized(docs: np.ndarray, workdir: Path, precision: Literal["uint8", "ubinary"], multipliers: tuple[int, ...]) -> Built:
    """``semantic_search_faiss`` with a uint8 or ubinary corpus and rescoring (its own exact index)."""
    faiss = common.faiss_untyped()
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

    def search(queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
        results = semantic_search_faiss(
            queries,
            corpus_index=index,
            corpus_precision=precision,
            top_k=k,
            ranges=ranges,
            rescore=True,
            rescore_multiplier=params["rescore_multiplier"],
        )[0]
        out = np.full((len(queries), k), -1, dtype=np.int64)
        for row, hits in enumerate(results):
            out[row, : len(hits)] = [hit["corpus_id"] for hit in hits]
        return out

    configs = [(f"rescore×{m}", {"rescore_multiplier": m}) for m in multipliers]
    notes = "exact index (faiss IndexFlatIP over uint8 codes)" if precision == "uint8" else "exact index (faiss IndexBinaryFlat, 384 bits)"
    return Built(f"sentence-transformers {precision} + rescore", "st-quantized", search, configs, seconds, ram, 0, ram, notes)


# ---------------------------------------------------------------- HNSW over full vectors


def hnsw_full(docs: np.ndarray, workdir: Path, m: int = 32, ef_construction: int = 40, efs: tuple[int, ...] = (16, 64, 256, 1024)) -> Built:
    faiss = common.faiss_untyped()

    started = time.perf_counter()
    index = faiss.IndexHNSWFlat(docs.shape[1], m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    for start in range(0, len(docs), 65_536):
        index.add(np.asarray(docs[start : start + 65_536], dtype=np.float32))
    seconds = time.perf_counter() - started
    ram = faiss_bytes(index, workdir / "hnsw.faiss")

    def search(queries: np.ndarray, k: int, params: dict[str, Any]) -> np.ndarray:
        return index.search(queries, k, params=faiss.SearchParametersHNSW(efSearch=max(params["ef"], k)))[1]

    configs = [(f"ef={ef}", {"ef": ef}) for ef in efs]
    return Built(
        f"faiss HNSW {docs.shape[1]}-d", "hnsw-full", search, configs, seconds, ram, 0, ram, f"M={m}, efConstruction={ef_construction}"
    )


# ---------------------------------------------------------------- the registry

# HNSW over full vectors (hnsw-full, and the HNSW-SQ8 base under FAISS's refine), and funnel's
# 64-dim HNSW shortlist: one graph setting at every scale. Measured at 100k on 2 idle cores: 18 s
# for either full-dimension graph, 9 s for funnel's; extrapolated to 1M (×10 documents, ×~1.25 for
# the deeper graph) about 4 and 2 minutes, which fits the 30-minute budget for both 1M runs, so no
# lighter graph is needed there.
FULL_HNSW_BUILD = {"m": 32, "ef_construction": 40}


def _not_large(setup: Setup) -> bool:
    return not setup.large


def _nlist(setup: Setup) -> int:
    return 1024 if setup.large else (64 if setup.scale <= 10_000 else 256)


# FAISS's refine depth for the PQ fast-scan families, as finely stepped around 0.99 as funnel's
# shortlist sizes (k_factor 12-24 is 120-240 candidates for k=10).
PQFS_K_FACTORS = (4, 12, 16, 24, 64)


def _pq(setup: Setup) -> int:
    return setup.full // 8  # PQ48 for MiniLM's 384 dims, PQ32 for the static model's 256: 8 dims a byte


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        # At 1M the graph and PQ families that can approach recall 0.99 within the 30-minute budget;
        # IVF (coarse lists cap recall near 0.96 on these queries), exhaustive float/8-bit scans
        # (25+ ms, far from exact/30) and the other graphs are measured at 10k and 100k.
        Method("funnel-pq", funnel_scan("pq-fastscan", lambda s: 128, lambda s: (1000, 3000, 6000) if s.large else (300, 1000, 3000))),
        Method("funnel-hnsw", funnel_hnsw("hnsw", 64, lambda s: (100, 200, 400, 800, 1600) + ((3200,) if s.large else ()))),
        Method("funnel-binary", funnel_binary),
        # PQ fast-scan over all dims, 4 dims a part: the codes of FAISS's IndexRefineFlat(PQ…x4fs),
        # as a funnel shortlist (a prefix is not always the best use of the bytes: see summary.md).
        Method(
            "funnel-pq-full",
            funnel_scan("pq-fastscan", lambda s: s.full, lambda s: (40, 160, 640, 2000), tune_it=False, quarter_parts=True),
        ),
        # The same codes after OPQ's rotation, which gives every part a fair share of the variance
        # that funnel's own rotation put first: FAISS's configuration, as a funnel kind.
        Method(
            "funnel-opq-full",
            funnel_scan(
                "opq-fastscan",
                lambda s: s.full,
                lambda s: (160, 640, 2000, 6000) if s.large else (40, 80, 160, 320, 640),
                quarter_parts=True,
            ),
        ),
        # The same codes in the model's own basis (funnel's rotation undone in front of them): the
        # compiled plan takes the model's query, so they need no matrix product at all.
        Method(
            "funnel-mpq-full",
            funnel_scan(
                "model-pq-fastscan",
                lambda s: s.full,
                lambda s: (160, 640, 2000, 6000) if s.large else (80, 120, 160, 320, 640),
                quarter_parts=True,
            ),
        ),
        Method("funnel-exact", funnel_exact),
        Method("funnel-lexical", funnel_lexical, _not_large),  # BM25 over 1M texts: minutes of the 1M budget
        Method("funnel-hnsw128", funnel_hnsw("hnsw", 128, lambda s: (100, 200, 400, 800)), _not_large),
        Method("funnel-hnsw-sq8", funnel_hnsw("hnsw-sq8", 128, lambda s: (100, 200, 400, 800)), _not_large),
        Method("funnel-ivf-pq", funnel_ivf_pq, _not_large),
        Method("funnel-flat", funnel_flat, _not_large),
        Method("funnel-sq8", funnel_scan("sq8", lambda s: 128, lambda s: (100, 300, 1000)), _not_large),
        Method("faiss-refine-ivfpq", lambda s: [faiss_refine(s.docs, s.workdir, f"IVF{_nlist(s)},PQ{_pq(s)}", s.use_gpu)]),
        Method("faiss-refine-sq8", lambda s: [faiss_refine(s.docs, s.workdir, "SQ8", s.use_gpu)]),
        # PQ fast-scan over the full vectors, 4 dims a part (as many bytes as funnel's 128-dim PQ shortlist of 2-dim parts at 256 dims)
        Method("faiss-refine-pqfs", lambda s: [faiss_refine(s.docs, s.workdir, f"PQ{s.full // 4}x4fs", s.use_gpu, PQFS_K_FACTORS)]),
        # The same with 128-vector blocks, as funnel's fast-scan kinds store them (FAISS's default
        # is 32): the fastest FAISS configuration of this kind found here, one query per call.
        Method(
            "faiss-refine-pqfs128",
            lambda s: [faiss_refine(s.docs, s.workdir, f"PQ{s.full // 4}x4fs_{FAST_SCAN_BLOCK}", s.use_gpu, PQFS_K_FACTORS)],
        ),
        Method(
            "faiss-refine-hnsw",
            lambda s: [faiss_refine_hnsw(s.docs, s.workdir, **FULL_HNSW_BUILD, efs=(16, 64, 256, 1024), k_factors=(1, 2, 8))],
        ),
        # An exhaustive PQ scan at 1M costs about as much as IVF-PQ's whole sweep; IVF-PQ stands for FAISS there.
        Method("faiss-refine-pq", lambda s: [faiss_refine(s.docs, s.workdir, f"PQ{_pq(s)}", s.use_gpu)], _not_large),
        Method("st-ubinary", lambda s: [st_quantized(s.docs, s.workdir, "ubinary", (1, 4, 16))]),
        # uint8 search runs on a flat float index as big as the exact one: at 1M one setting shows the cost.
        Method("st-uint8", lambda s: [st_quantized(s.docs, s.workdir, "uint8", (4,) if s.large else (1, 4))]),
        Method(
            "hnsw-full",
            lambda s: [hnsw_full(s.docs, s.workdir, **FULL_HNSW_BUILD, efs=(16, 64, 256, 1024, 2048) if s.large else (16, 64, 256, 1024))],
            lambda s: s.hnsw_full,
        ),
    )
}
"""Every method a run can build, by the name ``--only`` gives, in the order a run measures them."""


def methods_for(setup: Setup, only: list[str] | None = None) -> list[Method]:
    """The methods that run on ``setup`` (all of them, or those named in ``only``), in registry order."""
    unknown = sorted(set(only or ()) - set(METHODS))
    if unknown:
        raise SystemExit(f"unknown methods {', '.join(unknown)}: choose from {', '.join(METHODS)}")
    return [method for name, method in METHODS.items() if method.runs_at(setup) and (not only or name in only)]
