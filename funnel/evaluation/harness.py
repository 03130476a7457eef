"""``evaluate``: run funnel configurations on a dataset, against exact search, and report it all.

For each configuration: the run (one batched search of every query) scored with
:func:`~funnel.evaluation.metrics.evaluate_run`; the compute per query and stage
(:mod:`~funnel.evaluation.compute`); wall time per query and stage (:mod:`~funnel.evaluation.timing`).
Exact full-dimension search always runs in the same call, as the first row, and every other row
reports quality kept (%) and speed-up (×) against it.

Judged documents that are not in the index (a corpus row skipped as empty, say) stay in the qrels:
they count as relevant and never retrieved, as in trec_eval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from funnel.encoders.choose import QueryEngine, TextEncoder, engine_name, load_query_encoder, parse_engine
from funnel.errors import InputError
from funnel.evaluation.compute import EncoderShape, count_tokens, funnel_costs, shortlist_bytes, visited_per_query
from funnel.evaluation.metrics import Metric, Qrels, evaluate_run, parse_metrics, run_from_arrays
from funnel.evaluation.report import ConfigurationResult, EncodingCost, EvaluationReport, environment
from funnel.evaluation.sweep import DEFAULT_DIMS, DEFAULT_SHORTLISTS, Configuration, grid, pareto_frontier, plan_configuration, reference
from funnel.evaluation.timing import TIMING_THREADS, Timing, sample, time_each, time_funnel, time_layers
from funnel.models import torch_threads
from funnel.search.plan import Plan, Stage

if TYPE_CHECKING:
    from funnel.indexes.index import Index
    from funnel.models import Encoder

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@10", "recall@100", "map@100")
DEFAULT_INDEX_DIR = Path("indexes")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class EvalOptions:
    """Knobs of :func:`evaluate`; the defaults are ``funnel eval``'s.

    Plans: the grid of shortlist ``dims`` × ``shortlists`` sizes (each: shortlist, then rescore at
    full dims; defaults :data:`DEFAULT_DIMS` × :data:`DEFAULT_SHORTLISTS`) plus each plan in
    ``plans`` (e.g. ``"32:500,128:100,full:100"``); given only ``plans``, no grid. ``layers`` adds,
    for each depth L listed, the same grid with the shortlist taken from the model cut after L
    layers (``L:dim:n,full:k``); the index then stores those layers' vectors (a dataset's index is
    built with them). ``k`` (default: the largest metric cutoff, else 100) is how many documents
    the reference ranking returns. Shortlist dims the index lacks are built in memory
    (``shortlist_kind``). ``queries`` (BEIR JSONL) and ``qrels`` (BEIR TSV or TREC) go with an
    existing index; a BEIR folder brings its own (``split``). A dataset's index is built once, or
    reused, under ``index_dir/<dataset>-<model>`` (``rebuild`` forces it). ``embeddings_cache``
    supplies precomputed vectors (see :mod:`funnel.evaluation.embeddings`). Each query's search is
    timed ``repeats`` times; encoding on a seeded sample of ``encode_sample`` queries, on the
    ``query_encoder`` engine (as ``funnel search --query-encoder``; default auto). ``command``
    is recorded in the report.
    """

    dims: tuple[int, ...] | None = None
    shortlists: tuple[int, ...] | None = None
    plans: tuple[str | tuple[Stage, ...], ...] = ()
    layers: tuple[int, ...] = ()
    metrics: tuple[str, ...] = DEFAULT_METRICS
    k: int | None = None
    queries: str | Path | None = None
    qrels: str | Path | None = None
    split: str = "test"
    index_dir: str | Path = DEFAULT_INDEX_DIR
    rebuild: bool = False
    embeddings_cache: str | Path | None = None
    shortlist_kind: str = "flat"
    rotation: str = "auto"
    repeats: int = 3
    encode_sample: int = 50
    query_encoder: QueryEngine = "auto"
    command: str = ""

    def __post_init__(self) -> None:
        parse_engine(self.query_encoder)
        if self.repeats < 1:
            raise InputError(f"repeats={self.repeats}: time each query at least once")
        if self.k is not None and self.k < 1:
            raise InputError(f"k={self.k}: rank at least 1 document per query")


def evaluate(
    source: str | Path | Index,
    *,
    model: str | Encoder | None = None,
    options: EvalOptions = EvalOptions(),
    progress: Progress | None = None,
) -> EvaluationReport:
    """Evaluate funnel plans (see :class:`EvalOptions`) against exact search.

    ``source``: a BEIR folder (its corpus is indexed once with ``model``, default the offline
    all-MiniLM-L6-v2), or an existing index (an :class:`~funnel.indexes.index.Index` or its folder)
    with ``options.queries`` and ``options.qrels`` (``model`` defaults to the index's). A given
    ``Index`` object keeps the shortlists built for the evaluation; nothing is written to disk.
    Each row reports the query encoding it needs: the layers its deepest stage runs, their FLOPs
    and time, per stage with continuation. ``options.rotation`` says how a dataset's index is built (see
    :class:`~funnel.indexes.builder.IndexConfig`); one already there built with another is rebuilt.
    ``progress`` receives a line before each slow step.
    """
    say = progress or (lambda message: None)
    parsed = parse_metrics(options.metrics)
    k = options.k or max((metric.k for metric in parsed if metric.k is not None), default=100)
    plans = [Plan.parse(text).stages if isinstance(text, str) else tuple(text) for text in options.plans]  # fail before the slow part
    layers = tuple(options.layers)
    from funnel.evaluation import inputs
    from funnel.models import Encoder

    dataset = None if inputs.is_index(source) else Path(source)  # type: ignore[arg-type]
    # Read and check the queries and judgements first: a bad file fails before a model loads.
    if dataset is not None:
        if options.queries is not None or options.qrels is not None:
            raise InputError(f"{dataset} is a BEIR folder with its own queries and qrels: give --queries and --qrels with an --index")
        data = inputs.dataset_data(dataset, options.split)
        say("loading the model")
        encoder = model if isinstance(model, Encoder) else Encoder.load(model)
        loaded, notes = inputs.dataset_index(
            dataset, encoder, Path(options.index_dir), options.embeddings_cache, options.rebuild, say, layers, options.rotation
        )
    else:
        loaded, notes = inputs.open_index(source), []
        data = inputs.index_data(loaded, options.queries, options.qrels)
        say("loading the model")
        encoder = model if isinstance(model, Encoder) else Encoder.load(model or loaded.manifest.model)
    if encoder.dim != loaded.dim:
        raise InputError(f"the model gives {encoder.dim}-dim vectors but the index holds {loaded.dim}-dim ones")
    index_ids = loaded.ids()
    warnings = data.warnings + notes + inputs.missing_judged_documents(data.qrels, index_ids)

    query_ids = list(data.queries)
    texts = [data.queries[query_id] for query_id in query_ids]
    queries_on = _query_encoder(encoder, options.query_encoder)
    # Cached query vectors are the model's: an int8 engine's own vectors are what it is evaluated on.
    cache = None if options.query_encoder == "onnx-int8" else options.embeddings_cache
    vectors = inputs.query_vectors(queries_on, query_ids, texts, cache, dataset, say)
    configs = [reference(k), *_configurations(options.dims, options.shortlists, plans, k, loaded.dim, layers)]
    configs += _student_references(loaded, configs, k)
    shallow = sorted({s.layer for c in configs for s in c.stages if s.layer is not None and not loaded.is_full_depth(s.layer)})
    for layer in shallow:
        loaded.check_layer(layer)
    students = _students(loaded, configs)
    _prepare_shortlists(loaded, configs, options.shortlist_kind)
    queries_by_layer: dict[int | str | None, np.ndarray] = {None: vectors}
    if shallow:
        from funnel.layers import LayeredEncoder

        say(f"encoding {len(texts)} queries at layers {', '.join(map(str, shallow))}")
        for layer, at_layer in LayeredEncoder(encoder).encode_layers(texts, shallow).items():
            queries_by_layer[layer] = at_layer
    for name, student in students.items():
        say(f"encoding {len(texts)} queries with the query encoder {name!r}")
        queries_by_layer[name] = student.encode(texts)

    timed = sample(texts, options.encode_sample)
    say(f"timing query encoding ({len(timed)} queries, one at a time)")
    # Per-layer costs come from the torch engine (the only one that stops early): with layers in
    # the sweep, the full model is timed there too, so the layer figures compare like with like.
    encoding = _encoding_cost(encoder, encoder if shallow else queries_on, query_ids, texts, timed, shallow, students)
    rows = []
    exact_top: np.ndarray | None = None  # the reference row's, evaluated first
    for number, config in enumerate(configs, start=1):
        say(f"[{number}/{len(configs)}] {config.name}")
        layered = any(not loaded.is_full_depth(stage.layer) or stage.encoder is not None for stage in config.stages)
        queries = queries_by_layer if layered else vectors
        row, found = _evaluate_configuration(loaded, index_ids, config, queries, texts, query_ids, data.qrels, parsed, options.repeats)
        exact_top = found if exact_top is None else exact_top
        kept = same_top(found, exact_top)
        rescued: list[str] = []
        plan = Plan.of(config.stages)
        if plan.is_lexical and not plan[-1].fusion:  # what the BM25 candidates changed: the same plan without them
            from funnel.search.run import run_funnel

            dense = run_funnel(loaded, queries, plan.dense(), config.k).positions
            rescued = [query_ids[i] for i in np.flatnonzero(kept & ~same_top(dense, exact_top))]
        row = replace(row, exact_kept=float(kept.mean()) if len(kept) else 1.0, rescued=rescued)
        rows.append(_with_encoding(row, config, encoding, loaded))
    rows = _compare(rows, str(parsed[0]))
    return EvaluationReport(
        dataset={
            "name": data.name,
            "path": data.path,
            "split": data.split,
            "queries": len(query_ids),
            "judgements": sum(len(j) for j in data.qrels.values()),
        },
        model={"name": encoder.name, "dim": encoder.dim, **_shape_dict(encoder)},
        index=inputs.index_summary(loaded),
        metrics=[str(metric) for metric in parsed],
        encoding=encoding,
        rows=rows,
        environment=environment(options.repeats, TIMING_THREADS),
        command=options.command,
        warnings=warnings,
    )


def _configurations(
    dims: Sequence[int] | None,
    shortlists: Sequence[int] | None,
    plans: Sequence[tuple[Stage, ...]],
    k: int,
    full_dim: int,
    layers: Sequence[int] = (),
) -> list[Configuration]:
    configs = (
        [] if plans and dims is None and shortlists is None else grid(dims or DEFAULT_DIMS, shortlists or DEFAULT_SHORTLISTS, k, full_dim)
    )
    for layer in layers:
        configs += grid(dims or DEFAULT_DIMS, shortlists or DEFAULT_SHORTLISTS, k, full_dim, layer=layer)
    configs += [plan_configuration(stages, k) for stages in plans]
    names = [config.name for config in configs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InputError(f"configuration {repeated[0]} is asked for twice: drop the repeat")
    return configs


def _student_references(index: Index, configs: Sequence[Configuration], k: int) -> list[Configuration]:
    """Exact search on each query encoder the index stores (``NAME:full:K``), beside the full
    model's, unless a configuration already runs it."""
    names = {config.name for config in configs}
    wanted = [Configuration((Stage(dim=None, candidates=k, encoder=entry.name),), k) for entry in index.manifest.query_encoders]
    return [config for config in wanted if config.name not in names]


def _students(index: Index, configs: Sequence[Configuration]) -> dict[str, TextEncoder]:
    """The stored query encoders the configurations name, opened (InputError for a name the index lacks)."""
    from funnel.indexes.query_encoders import open_query_encoder

    names = sorted({stage.encoder for config in configs for stage in config.stages if stage.encoder is not None})
    for name in names:
        index.check_query_encoder(name)
    return {name: open_query_encoder(index, name) for name in names}


def _prepare_shortlists(index: Index, configs: Sequence[Configuration], kind: str) -> None:
    """Build in memory the shortlists the configurations start from; exact search needs a flat full-dim one."""
    full_spec = index.segments[0].shortlists.get(index.dim) if index.segments else None
    if full_spec is None or full_spec[0].kind != "flat":
        index.add_shortlist(index.dim, "flat")
    for dim, layer in sorted({(c.stages[0].resolved_dim(index.dim), c.stages[0].layer or 0) for c in configs}):
        if not index.has_shortlist(dim, layer or None):
            index.add_shortlist(dim, kind, layer=layer or None)


def _evaluate_configuration(
    index: Index,
    index_ids: list[str],
    config: Configuration,
    vectors: np.ndarray | dict[int | str | None, np.ndarray],
    texts: list[str],
    query_ids: list[str],
    qrels: Qrels,
    metrics: Sequence[Metric],
    repeats: int,
) -> tuple[ConfigurationResult, np.ndarray]:
    """The configuration's row and its top positions (q, k)."""
    from funnel.search.run import run_funnel

    result = run_funnel(index, vectors, config.stages, config.k, texts=texts)
    found = result.positions
    run = run_from_arrays(query_ids, result.positions, result.scores, corpus_ids=index_ids)
    scored = evaluate_run(run, qrels, metrics)
    first = config.stages[0]
    first_dim, first_layer = first.resolved_dim(index.dim), None if index.is_full_depth(first.layer) else first.layer
    first_vectors = vectors[first.encoder or first_layer] if isinstance(vectors, dict) else vectors
    costs = funnel_costs(index, result.trace, visited_per_query(index, first_vectors, first_dim, first.candidates, first_layer))
    timing = time_funnel(index, vectors, config.stages, config.k, repeats, texts=texts)
    return ConfigurationResult(
        name=config.name,
        stages=",".join(map(str, config.stages)),
        k=config.k,
        means=scored.means,
        per_query=scored.per_query,
        costs=costs,
        stage_timings=list(timing.stages),
        search=timing.total,
        search_flops=sum(cost.flops for cost in costs),
        bytes_read=sum(cost.bytes_read for cost in costs),
        shortlist_bytes=shortlist_bytes(index, first_dim, first_layer),
    ), found


def same_top(found: np.ndarray, exact: np.ndarray, n: int = 10) -> np.ndarray:
    """(q,) whether each query's first ``n`` positions (fewer where a row keeps fewer) are the same
    documents as the exact ones."""
    n = min(n, found.shape[1], exact.shape[1])
    return (np.sort(found[:, :n], axis=1) == np.sort(exact[:, :n], axis=1)).all(axis=1)


def _with_encoding(row: ConfigurationResult, config: Configuration, encoding: EncodingCost, index: Index) -> ConfigurationResult:
    """Add the query encoding the configuration needs, stage by stage: each stage runs only the
    layers beyond the deepest one before it (continuation); a stage that names a query encoder
    runs that encoder (once per plan) instead of the model's layers."""

    depth = encoding.layers or 0
    if not depth and not any(stage.encoder for stage in config.stages):
        return row
    reached, steps, flops, student_ms = 0, [], 0.0, 0.0
    ran: set[str] = set()
    for stage in config.stages:
        if stage.encoder is not None:
            ms = 0.0 if stage.encoder in ran else encoding.students.get(stage.encoder, 0.0)
            ran.add(stage.encoder)
            student_ms += ms
            steps.append({"stage": str(stage), "layer": stage.encoder, "layers_added": 0, "flops": 0.0, "ms": ms})
            continue
        layer = max(reached, depth if stage.layer is None or index.is_full_depth(stage.layer) else stage.layer)
        added = layer - reached
        stage_flops = (encoding.flops_mean or 0.0) * added / depth
        flops += stage_flops
        steps.append(
            {
                "stage": str(stage),
                "layer": layer,
                "layers_added": added,
                "flops": stage_flops,
                "ms": max(0.0, encoding.layer_ms.get(layer, 0.0) - encoding.layer_ms.get(reached, 0.0)) if added else 0.0,
            }
        )
        reached = layer
    model_ms = encoding.layer_ms.get(reached) if reached else 0.0
    return replace(
        row,
        encode_layers=reached,
        encode_flops=flops,
        encode_ms=None if model_ms is None else model_ms + student_ms,
        stage_encoding=steps,
    )


def _compare(rows: list[ConfigurationResult], primary: str) -> list[ConfigurationResult]:
    """Fill in quality kept, speed-up and the Pareto frontier against the reference (rows[0])."""

    exact = rows[0]
    compared = []
    for row in rows:
        retained = {name: (100.0 * value / exact.means[name] if exact.means[name] else 100.0) for name, value in row.means.items()}
        compared.append(
            replace(
                row,
                retained=retained,
                speedup=exact.search.median_ms / row.search.median_ms if row.search.median_ms else float("inf"),
                flops_reduction=exact.search_flops / row.search_flops if row.search_flops else float("inf"),
            )
        )
    frontier = set(pareto_frontier([row.search.median_ms for row in compared], [row.means[primary] for row in compared]))
    return [replace(row, pareto=number in frontier) for number, row in enumerate(compared)]


def _query_encoder(encoder: Encoder, engine: QueryEngine) -> TextEncoder:
    """The engine the evaluation's queries run on: ``encoder`` itself for torch, else the
    model's ONNX graph (``auto`` falls back to ``encoder`` where the model has none)."""
    if engine == "torch":
        return encoder
    from funnel.encoders.choose import prepare_query_graph

    if engine == "auto" and prepare_query_graph(encoder) is None:
        return encoder
    return load_query_encoder(encoder.name, engine)


def _encoding_cost(
    encoder: Encoder,
    timed_on: TextEncoder,
    query_ids: list[str],
    texts: list[str],
    timed: list[str],
    shallow: Sequence[int] = (),
    students: dict[str, TextEncoder] | None = None,
) -> EncodingCost:
    shape = EncoderShape.of(encoder)
    tokens = count_tokens(encoder, texts) if shape is not None else np.zeros(len(texts), dtype=np.int64)
    flops = float(np.mean([shape.flops(int(n)) for n in tokens])) if shape is not None and len(tokens) else None
    with torch_threads(TIMING_THREADS):
        wall = Timing.of(time_each(lambda text: timed_on.encode([text]), timed))
        layer_ms = median_layer_ms(encoder, timed, shallow) if shallow and shape is not None else {}
        student_ms = {name: Timing.of(time_each(_one_query(student), timed)).median_ms for name, student in (students or {}).items()}
    if shape is not None:
        layer_ms.setdefault(shape.layers, wall.median_ms)
    return EncodingCost(
        model=encoder.name,
        engine=engine_name(timed_on),
        layers=shape.layers if shape else None,
        hidden=shape.hidden if shape else None,
        ffn=shape.ffn if shape else None,
        tokens_mean=float(np.mean(tokens)) if len(tokens) else 0.0,
        tokens_max=int(np.max(tokens)) if len(tokens) else 0,
        flops_mean=flops,
        wall=wall,
        timed_queries=len(timed),
        tokens=dict(zip(query_ids, map(int, tokens))),
        layer_ms=layer_ms,
        students=student_ms,
    )


def _one_query(encoder: TextEncoder) -> Callable[[str], object]:
    return lambda text: encoder.encode([text])


def median_layer_ms(encoder: Encoder, timed: list[str], layers: Sequence[int]) -> dict[int, float]:
    """Median ms for one query to reach each of ``layers`` and the full depth (continuation)."""
    from funnel.layers import LayeredEncoder

    layered = LayeredEncoder(encoder)
    wanted = sorted(set(layers) | {layered.num_layers})
    ms = time_layers(layered, timed, wanted)
    return {layer: float(np.median(ms[:, column])) for column, layer in enumerate(wanted)} if timed else {}


def _shape_dict(encoder: Encoder) -> dict[str, int]:
    shape = EncoderShape.of(encoder)
    return {} if shape is None else {"layers": shape.layers, "hidden": shape.hidden, "ffn": shape.ffn, "max_tokens": shape.max_tokens}
