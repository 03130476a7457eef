"""What every benchmark shares: paths, the dataset registry, the result file, the machine record,
building an index from vectors, timing, and recall against a reference.

Paths default to places relative to the repository (``../shared/data`` beside it for datasets,
``benchmarks/results`` for results) or to the user's cache, never to one machine's absolute paths;
and paths written into a result are made relative (:func:`shown`), so result files hold no
machine paths either.

Every result file is one :class:`Result` (benchmark, command, machine, parameters, results),
written by :func:`write_result` and read back by :func:`read_result`, which also reads the files
committed before this schema (one flat object; see :meth:`Result.from_json`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from funnel.evaluation.datasets import BeirDataset
    from funnel.evaluation.embeddings import CachedEmbeddings
    from funnel.evaluation.timing import Timing
    from funnel.indexes.shortlist import ShortlistSpec

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = Path(os.environ["FUNNEL_DATA"]) if "FUNNEL_DATA" in os.environ else REPO.parent / "shared" / "data"
"""The shared BEIR datasets: ``$FUNNEL_DATA``, else ``../shared/data`` beside the repository."""
CACHE = Path(os.environ.get("FUNNEL_CACHE", Path.home() / ".cache" / "funnel"))
"""Cached embeddings, vectors and indexes: ``$FUNNEL_CACHE``, else ``~/.cache/funnel``."""
PACKAGE_LISTS = Path(os.environ.get("FUNNEL_PACKAGE_LISTS", REPO.parent / ".library" / "env" / "packages"))
"""The tool library's package lists (real short texts): ``$FUNNEL_PACKAGE_LISTS``, else ``../.library/env/packages``."""
EMBEDDINGS = CACHE / "embeddings"
"""Where ``python -m benchmarks.embed_cache`` keeps each model's vectors: ``EMBEDDINGS/<model tag>/<dataset>/``."""
MODEL_TAG = "all-MiniLM-L6-v2"
"""The default model's tag in :data:`EMBEDDINGS`."""

T = TypeVar("T")


# ---------------------------------------------------------------- the command line and the machine


def command() -> str:
    """The command line that is running, as it is typed from the repository root:
    ``python -m benchmarks.<name> ARGS``."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    program = f"python -m {spec.name}" if spec is not None else "python " + shown(sys.argv[0])
    return " ".join([program, *map(shlex.quote, (shown(arg) for arg in sys.argv[1:]))]).strip()


def shown(path: str | os.PathLike[str] | None) -> str:
    """``path`` as a result file records it: relative to the repository (``../shared/data/…``,
    ``benchmarks/results/…``), ``~/…`` under the home folder, ``$TMPDIR/…`` under the temp folder, else unchanged (a relative path or
    a word that is not a path stays as given)."""
    if path is None:
        return ""
    text = os.fspath(path)
    if not os.path.isabs(text):
        return text
    resolved = Path(text).resolve()
    try:
        return str(resolved.relative_to(REPO))
    except ValueError:
        pass
    if resolved.is_relative_to(REPO.parent):
        return os.path.relpath(resolved, REPO)
    home, temp = Path.home(), Path(tempfile.gettempdir()).resolve()
    if resolved.is_relative_to(home):
        return "~/" + str(resolved.relative_to(home))
    if resolved.is_relative_to(temp):
        return "$TMPDIR/" + str(resolved.relative_to(temp))
    return text


def machine(packages: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    """funnel's machine record (machine, package versions, git commit) with the command line and
    the load average; ``packages`` adds the versions of more installed packages (None where one
    is not installed), ``extra`` adds fields (threads, RAM)."""
    from importlib.metadata import PackageNotFoundError, version

    from funnel.evaluation.machine import machine_record

    record = {**machine_record(command()), "load_average": list(os.getloadavg())}
    for package in packages:
        try:
            record["versions"][package] = version(package)
        except PackageNotFoundError:
            record["versions"][package] = None
    return {**record, **extra}


def faiss_untyped() -> Any:
    """The ``faiss`` module, typed ``Any``: its stubs lack the search-parameter classes and their
    fields and type SWIG's overloads too narrowly (funnel's own compiled search does the same)."""
    import faiss

    return faiss


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` says."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor())


def ram_gb() -> float:
    """The machine's memory in GiB, to one decimal."""
    import psutil

    return round(psutil.virtual_memory().total / 2**30, 1)


# ---------------------------------------------------------------- datasets


@dataclass(frozen=True)
class Dataset:
    """One shared BEIR dataset under :data:`DATA` and the split whose queries are measured."""

    name: str
    split: str = "test"

    @property
    def folder(self) -> Path:
        return DATA / self.name

    def load(self) -> BeirDataset:
        """Corpus, judged queries and qrels, read by funnel's own reader (:func:`funnel.evaluation.datasets.load_beir`)."""
        from funnel.evaluation.datasets import load_beir

        return load_beir(self.folder, self.split)

    def queries(self) -> dict[str, str]:
        """The queries judged in the split, in file order (what :meth:`load` keeps, without reading the corpus)."""
        from funnel.readers import QUERIES_FILE, load_qrels, load_queries

        judged = load_qrels(self.folder / "qrels" / f"{self.split}.tsv")
        return {query_id: text for query_id, text in load_queries(self.folder / QUERIES_FILE).items() if query_id in judged}

    def embeddings(self, part: str, dim: int | None = None, model_tag: str = MODEL_TAG) -> CachedEmbeddings:
        """The cached vectors of ``part`` ("corpus" or "queries") made by ``benchmarks.embed_cache``."""
        return cached_embeddings(self.folder, part, dim, model_tag)


DATASETS: dict[str, Dataset] = {dataset.name: dataset for dataset in (Dataset("cranfield"), Dataset("scifact"), Dataset("debian"))}
"""The shared datasets by name: Cranfield, SciFact and Debian, each measured on its test split."""


def dataset_path(text: str) -> Path:
    """A dataset as a command line names it: a name of :data:`DATASETS` (its folder under
    :data:`DATA`) or the path of a BEIR folder (as given)."""
    return DATASETS[text].folder if text in DATASETS else Path(text)


def cached_embeddings(
    dataset: Path, part: str, dim: int | None = None, model_tag: str = MODEL_TAG, root: Path | None = None
) -> CachedEmbeddings:
    """The cached vectors of ``part`` ("corpus" or "queries") of the BEIR folder ``dataset``
    (under ``root/<dataset name>``, default ``EMBEDDINGS/<model tag>``), read by
    :mod:`funnel.evaluation.embeddings`: ids and normalized float32 rows, one per line of the
    file. ``dim``: the dimension the cache must have (None: whatever it holds)."""
    from funnel.evaluation.embeddings import cache_folder, load_part

    folder = cache_folder(root or EMBEDDINGS / model_tag, dataset)
    if dim is None:
        stored = folder / f"{part}.npy"
        dim = int(np.load(stored, mmap_mode="r").shape[1]) if stored.is_file() else 0  # a missing file: load_part says so
    return load_part(folder, part, dim)


# ---------------------------------------------------------------- the result file


@dataclass(frozen=True)
class Result:
    """What every result file holds: the benchmark (its module under ``benchmarks``), the command
    line that ran it, the machine record (:func:`machine`), the parameters it ran with (its
    arguments, paths shown relative: :func:`parameters`) and its results."""

    benchmark: str
    command: str
    machine: dict[str, Any]
    parameters: dict[str, Any]
    results: dict[str, Any]

    @classmethod
    def make(
        cls, benchmark: str, parameters: Mapping[str, Any], results: Mapping[str, Any], machine_record: dict[str, Any] | None = None
    ) -> Result:
        """A result of this process: its command line and, unless given, its machine record now."""
        return cls(benchmark, command(), machine_record if machine_record is not None else machine(), dict(parameters), dict(results))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Result:
        """A result file's contents. Files written before this schema hold one flat object (with
        ``machine`` and usually ``command`` among the figures): those figures become ``results``,
        and ``benchmark`` and ``parameters`` are empty."""
        if {"benchmark", "parameters", "results"} <= set(data):
            return cls(data["benchmark"], data["command"], data["machine"], data["parameters"], data["results"])
        record = dict(data.get("machine") or {})
        flat = {key: value for key, value in data.items() if key not in ("machine", "command")}
        return cls("", str(data.get("command") or record.get("command") or ""), record, {}, flat)


def write_result(path: Path, result: Result) -> Path:
    """Write ``result`` as indented JSON at ``path`` (creating the folder); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False, default=str) + "\n")
    return path


def read_result(path: Path) -> Result:
    """The result file at ``path``, in this schema or the flat one before it."""
    return Result.from_json(json.loads(path.read_text()))


def parameters(args: argparse.Namespace, drop: Iterable[str] = ()) -> dict[str, Any]:
    """A script's parsed arguments as a result records them: paths shown relative (:func:`shown`),
    without the ``drop`` ones (hidden flags of child processes)."""
    dropped = set(drop)

    def value(item: Any) -> Any:
        if isinstance(item, Path):
            return shown(item)
        if isinstance(item, (list, tuple)):
            return [value(part) for part in item]
        return item

    return {name: value(item) for name, item in vars(args).items() if name not in dropped}


# ---------------------------------------------------------------- an index from vectors


def document_batch(
    ids: Sequence[str], vectors: np.ndarray, texts: Sequence[str] | None = None, titles: Sequence[str | None] | None = None
) -> tuple[pa.RecordBatch, np.ndarray]:
    """One batch as ``write_index`` and ``add_documents`` take it: the documents in
    :data:`funnel.corpus.DOCUMENT_SCHEMA` (no title, no metadata and empty texts where not given)
    and their vectors (len(ids), dim) as float32."""
    import pyarrow as pa

    from funnel.corpus import DOCUMENT_SCHEMA

    count = len(ids)
    columns = [
        pa.array(list(ids), pa.string()),
        pa.nulls(count, pa.string()) if titles is None else pa.array(list(titles), pa.string()),
        pa.array(list(texts) if texts is not None else [""] * count, pa.string()),
        pa.nulls(count, pa.string()),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=DOCUMENT_SCHEMA), np.asarray(vectors, dtype=np.float32)


def vector_batches(
    vectors: np.ndarray, texts: Sequence[str] | None = None, *, prefix: str = "d", rows: int = 65_536
) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Batches of :func:`document_batch` over the rows of ``vectors`` (n, dim), which may be
    memory-mapped: ids ``<prefix><row>``, ``texts[row]`` as each text; ``rows`` per batch."""
    for start in range(0, len(vectors), rows):
        stop = min(start + rows, len(vectors))
        ids = [f"{prefix}{row}" for row in range(start, stop)]
        yield document_batch(ids, vectors[start:stop], None if texts is None else texts[start:stop])


def index_from_vectors(
    path: Path,
    batches: Iterable[tuple[Any, ...]],
    *,
    dim: int,
    model: str = "bench-vectors",
    shortlists: tuple[ShortlistSpec, ...] = (),
    rotation: str = "auto",
    vector_dtype: str = "float16",
    model_metadata: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    overwrite: bool = False,
    lexical: bool = False,
) -> Path:
    """Write an index folder at ``path`` from (documents, vectors) batches (:func:`document_batch`,
    :func:`vector_batches`) through funnel's own builder, ``funnel.indexes.builder.write_index``,
    as any caller with vectors made elsewhere would; returns the folder (open it with
    ``funnel.Index.load``). ``model`` names what made the vectors.

    Args:
        path: the index folder to write.
        batches: (documents, vectors) pairs, streamed: a batch is not kept after it is written.
        dim: the vectors' dimension.
        model: the model name the manifest records.
        shortlists: the shortlist specs (``funnel.indexes.shortlist.make_spec``); empty: the default.
        rotation: ``auto``, ``pca`` or ``none`` (see ``funnel index --rotation``).
        vector_dtype: how the vectors are stored, ``float16`` or ``float32``.
        model_metadata: the model's metadata, as an encoder gives it.
        source: what the manifest records as the documents' source.
        overwrite: replace an index already at ``path``.
        lexical: keep the BM25 index beside the vectors (what ``funnel index`` does by default;
            off here, where the vectors are what is measured, unless a method adds BM25 candidates).
    """
    from funnel.indexes.builder import IndexConfig, write_index

    config = IndexConfig(shortlists=shortlists, rotation=rotation, vector_dtype=vector_dtype, lexical=lexical)
    return write_index(
        batches, path, model=model, dim=dim, config=config, model_metadata=model_metadata, source=source, overwrite=overwrite
    )


# ---------------------------------------------------------------- timing


@dataclass(frozen=True)
class Calls:
    """Seconds of every timed call, wall clock (``perf_counter``) and CPU (``thread_time``),
    shape (rounds, inputs)."""

    wall: np.ndarray
    cpu: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def per_input(self) -> Timing:
        """funnel's :class:`~funnel.evaluation.timing.Timing` over inputs, each input's time its
        median over rounds (one-off stalls drop out); ``samples`` counts every call."""
        from funnel.evaluation.timing import Timing

        return Timing.of(np.median(self.wall, axis=0), np.median(self.cpu, axis=0), samples=self.wall.size)

    def every_call(self) -> Timing:
        """funnel's :class:`~funnel.evaluation.timing.Timing` over all calls of all rounds."""
        from funnel.evaluation.timing import Timing

        return Timing.of(self.wall.ravel(), self.cpu.ravel())


def time_calls(
    call: Callable[[T], object],
    inputs: Sequence[T],
    *,
    min_seconds: float = 0.0,
    rounds: int = 1,
    max_rounds: int | None = None,
    warmup: int = 0,
) -> Calls:
    """Call ``call(item)`` for each of ``inputs``, in rounds: first ``warmup`` untimed calls (on
    the first inputs), then at least ``rounds`` rounds, more while the timed calls have taken
    less than ``min_seconds`` in all, up to ``max_rounds`` (default: ``rounds``)."""
    for item in inputs[:warmup]:
        call(item)
    most = max(rounds, max_rounds or rounds)
    wall: list[list[float]] = []
    cpu: list[list[float]] = []
    spent = 0.0
    while len(wall) < max(1, rounds) or (spent < min_seconds and len(wall) < most):
        times, cpu_times = [], []
        for item in inputs:
            began, began_cpu = time.perf_counter(), time.thread_time()
            call(item)
            times.append(time.perf_counter() - began)
            cpu_times.append(time.thread_time() - began_cpu)
        wall.append(times)
        cpu.append(cpu_times)
        spent += sum(times)
    return Calls(
        np.asarray(wall, dtype=np.float64).reshape(len(wall), len(inputs)),
        np.asarray(cpu, dtype=np.float64).reshape(len(wall), len(inputs)),
    )


def percentiles_ms(seconds: np.ndarray | Sequence[float], quantiles: Sequence[int] = (50, 90), digits: int | None = 3) -> dict[str, float]:
    """``{"p50_ms": …, "p90_ms": …}`` of ``seconds``, in milliseconds, rounded to ``digits`` (None: not rounded); empty for no values."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    if ms.size == 0:
        return {}
    values = np.percentile(ms, list(quantiles))
    return {f"p{q}_ms": float(v) if digits is None else round(float(v), digits) for q, v in zip(quantiles, values)}


# ---------------------------------------------------------------- quality


def recall_per_query(found: np.ndarray | Sequence[Sequence[Any]], reference: np.ndarray | Sequence[Sequence[Any]], k: int) -> np.ndarray:
    """Per query (q,): the share of its first ``k`` reference results (positions or ids) found
    among its first ``k`` results, by :func:`funnel.agreement.recall_against`. Rows may be lists
    of ids of different lengths (a short row finds less)."""
    from funnel.agreement import recall_against as overlap

    return overlap(_rows(found, k, _SHORT_FOUND), _rows(reference, k, _SHORT_REFERENCE))


def recall_against(found: np.ndarray | Sequence[Sequence[Any]], reference: np.ndarray | Sequence[Sequence[Any]], k: int) -> float:
    """Recall@k against a reference (exact search, or another method): the mean over queries of
    the share of each query's first ``k`` reference results found among its first ``k`` results."""
    return float(recall_per_query(found, reference, k).mean())


def identical_share(found: np.ndarray | Sequence[Sequence[Any]], reference: np.ndarray | Sequence[Sequence[Any]], k: int) -> float:
    """The share of queries whose first ``k`` results hold all of the reference's first ``k``."""
    return float(np.mean(recall_per_query(found, reference, k) == 1.0))


# Pad short rows of ids; each equals only itself, so a padded found row never matches a padded reference row.
_SHORT_FOUND, _SHORT_REFERENCE = object(), object()


def _rows(rows: np.ndarray | Sequence[Sequence[Any]], k: int, pad: object) -> np.ndarray:
    if isinstance(rows, np.ndarray):
        return rows[:, :k]
    cut = [list(row)[:k] for row in rows]
    width = max((len(row) for row in cut), default=0)
    out = np.empty((len(cut), width), dtype=object)
    for number, row in enumerate(cut):
        out[number, :] = row + [pad] * (width - len(row))
    return out


def ndcg(
    query_ids: Sequence[str],
    positions: np.ndarray,
    scores: np.ndarray,
    corpus_ids: Sequence[str],
    qrels: Mapping[str, Mapping[str, int]],
    k: int = 10,
) -> float:
    """Mean nDCG@k of a ranking (positions (q, n) into ``corpus_ids``, their scores), by
    :mod:`funnel.evaluation.metrics` (trec_eval's conventions, checked against pytrec_eval)."""
    from funnel.evaluation.metrics import evaluate_run, run_from_arrays

    run = run_from_arrays(query_ids, positions, scores, corpus_ids=corpus_ids)
    return float(evaluate_run(run, qrels, [f"ndcg@{k}"]).means[f"ndcg@{k}"])
