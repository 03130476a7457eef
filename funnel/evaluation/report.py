"""An evaluation's results, and how they are written: JSON for machines, a markdown table for people.

Every report records what is needed to reproduce it: the dataset and split, the model, the index
settings, package versions, the machine (cores), the git commit and the exact command. This module
writes data only; the plot is :func:`funnel.evaluation.plot.plot_report`, called by the CLI.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from funnel.evaluation.compute import StageCost
from funnel.evaluation.machine import machine_record
from funnel.evaluation.timing import Timing
from funnel.formatting import human_bytes


@dataclass(frozen=True)
class EncodingCost:
    """Query encoding, the same for every configuration that uses the full model."""

    model: str
    layers: int | None
    hidden: int | None
    ffn: int | None
    tokens_mean: float
    tokens_max: int
    flops_mean: float | None  # None: the model is not a transformer the formula covers
    wall: Timing
    timed_queries: int = 0  # how many queries the wall time was measured on
    tokens: dict[str, int] = field(default_factory=dict)  # per query id (in per_query.json)
    layer_ms: dict[int, float] = field(default_factory=dict)
    """Median ms for one query to reach each layer the configurations use (with continuation)."""
    engine: str = "torch"
    """The engine the wall time was measured on: torch, onnx-fp32 or onnx-int8."""
    students: dict[str, float] = field(default_factory=dict)
    """Median ms of one query on each query encoder a configuration names, on its own engine."""


@dataclass(frozen=True)
class ConfigurationResult:
    """One configuration's quality, cost and speed, with ratios against the exact reference."""

    name: str
    stages: str
    k: int
    means: dict[str, float]
    per_query: dict[str, dict[str, float]]
    costs: list[StageCost]
    stage_timings: list[Timing]
    search: Timing
    search_flops: float
    bytes_read: float
    shortlist_bytes: int
    retained: dict[str, float] = field(default_factory=dict)  # % of the reference, per metric
    speedup: float = 1.0  # reference median search ms / this median search ms
    flops_reduction: float = 1.0  # reference search FLOPs / this search FLOPs
    pareto: bool = False
    encode_layers: int | None = None  # the model's transformer layers a query runs (its deepest stage; 0: query encoders only)
    encode_flops: float | None = None  # query-encoding FLOPs per query
    encode_ms: float | None = None  # median ms to encode one query that deep
    stage_encoding: list[dict[str, Any]] = field(default_factory=list)  # per stage: layers added, FLOPs, ms
    exact_kept: float = 1.0  # share of queries whose top 10 is the exact row's (the same documents)
    rescued: list[str] = field(default_factory=list)
    """Queries whose exact top 10 this plan keeps and the same plan without its BM25 candidates
    does not (plans that add them and rank by cosine; a fused ranking is not the exact one)."""


@dataclass
class EvaluationReport:
    """What ``funnel.evaluation.evaluate`` returns: the reference row first, then every configuration."""

    dataset: dict[str, Any]
    model: dict[str, Any]
    index: dict[str, Any]
    metrics: list[str]
    encoding: EncodingCost
    rows: list[ConfigurationResult]
    environment: dict[str, Any]
    command: str
    warnings: list[str] = field(default_factory=list)

    @property
    def reference(self) -> ConfigurationResult:
        return self.rows[0]

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    def to_json(self, per_query: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not per_query:
            data["encoding"].pop("tokens")
            for row in data["rows"]:
                row.pop("per_query")
        return data

    def write(self, folder: str | Path) -> dict[str, Path]:
        """Write into ``folder``: ``report.json`` (everything but per-query values), ``per_query.json``
        (each configuration's value of each metric for each query) and ``report.md``."""
        target = Path(folder)
        target.mkdir(parents=True, exist_ok=True)
        paths = {"json": target / "report.json", "per_query": target / "per_query.json", "markdown": target / "report.md"}
        paths["json"].write_text(json.dumps(self.to_json(per_query=False), indent=1, default=str) + "\n")
        per_query = {
            "dataset": self.dataset,
            "model": self.model,
            "index": self.index,
            "environment": self.environment,
            "command": self.command,
            "metrics": self.metrics,
            "encoding_tokens": self.encoding.tokens,
            "rows": {
                row.name: {q: {m: round(v, 6) for m, v in values.items()} for q, values in row.per_query.items()} for row in self.rows
            },
        }
        paths["per_query"].write_text(json.dumps(per_query, separators=(",", ":")) + "\n")
        paths["markdown"].write_text(self.markdown())
        return paths

    def table(self) -> str:
        """The results as a markdown table, reference row first; * marks the Pareto frontier."""
        metric_names = [_label(name) for name in self.metrics]
        layered = self.layered
        header = [
            "config",
            *metric_names,
            f"{_label(self.primary_metric)} kept",
            "exact top-10 kept",
            "search ms (p50 / p95)",
            "speed-up",
            "search MFLOPs",
            "FLOPs cut",
            "bytes read",
        ]
        if layered:
            header += ["query layers", "encode MFLOPs", "encode ms"]
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        for row in self.rows:
            cells = [
                f"{row.name}{' *' if row.pareto else ''}",
                *(f"{row.means[name]:.4f}" for name in self.metrics),
                f"{row.retained[self.primary_metric]:.1f}%",
                f"{100 * row.exact_kept:.1f}%",
                f"{row.search.median_ms:.3f} / {row.search.p95_ms:.3f}",
                f"{row.speedup:.2f}×",
                f"{row.search_flops / 1e6:.3f}",
                f"{row.flops_reduction:.1f}×",
                human_bytes(row.bytes_read),
            ]
            if layered:
                flops = f"{row.encode_flops / 1e6:.1f}" if row.encode_flops is not None else "—"
                ms = f"{row.encode_ms:.2f}" if row.encode_ms is not None else "—"
                cells += [_query_layers(row), flops, ms]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def terminal_table(self, metrics: int = 2) -> str:
        """A narrow summary for a terminal: each configuration with its first ``metrics`` metrics,
        the share of the primary one kept, search ms and speed-up (and the query encoding's ms
        where rows differ in it); * marks the Pareto frontier.
        The full table, with costs and every metric, is :meth:`table` (report.md)."""
        shown = self.metrics[:metrics]
        encode = self.layered  # rows whose queries cost different encodings show each one's
        header = ["config", *(_label(name) for name in shown), "kept", "ms p50", "speed-up", *(["encode ms"] if encode else [])]
        rows = [
            [
                f"{row.name}{' *' if row.pareto else ''}",
                *(f"{row.means[name]:.4f}" for name in shown),
                f"{row.retained[self.primary_metric]:.1f}%",
                f"{row.search.median_ms:.3f}",
                f"{row.speedup:.2f}×",
                *([f"{row.encode_ms:.2f}" if row.encode_ms is not None else "—"] if encode else []),
            ]
            for row in self.rows
        ]
        widths = [max(len(line[column]) for line in [header, *rows]) for column in range(len(header))]
        lines = [
            "  ".join(cell.ljust(width) if column == 0 else cell.rjust(width) for column, (cell, width) in enumerate(zip(line, widths)))
            for line in [header, *rows]
        ]
        return "\n".join(lines) + "\n"

    @property
    def layered(self) -> bool:
        """Whether some configuration stops its query encoding before the model's last layer, or
        encodes its queries with a query encoder."""
        depth = self.encoding.layers
        return (
            any(row.encode_layers is not None and depth is not None and row.encode_layers < depth for row in self.rows)
            or any(len({step["layer"] for step in row.stage_encoding}) > 1 for row in self.rows)
            or bool(self.encoding.students)
        )

    def stage_table(self) -> str:
        """Per configuration and stage: what was scored, its cost per query and its wall time."""
        layered = self.layered
        lines = [
            "| config | stage | role | kind | dims | vectors / query | MFLOPs / query | bytes read / query | ms (p50 / p95) |"
            + (" query layers (+added) | encode MFLOPs | encode ms |" if layered else ""),
            "|---|---|---|---|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if layered else ""),
        ]
        for row in self.rows:
            # A row without stage encoding (nothing layered) shows dashes in the encoding columns.
            encoding: Sequence[dict[str, Any] | None] = row.stage_encoding if row.stage_encoding else [None] * len(row.costs)
            for cost, timing, step in zip(row.costs, row.stage_timings, encoding):
                line = (
                    f"| {row.name} | {cost.stage} | {cost.role} | {cost.kind} | {cost.dim} | {cost.vectors:,.0f} | "
                    f"{cost.flops / 1e6:.3f} | {human_bytes(cost.bytes_read)} | {timing.median_ms:.3f} / {timing.p95_ms:.3f} |"
                )
                if layered:
                    line += (
                        f" {step['layer']} (+{step['layers_added']}) | {step['flops'] / 1e6:.1f} | {step['ms']:.2f} |"
                        if step
                        else " — | — | — |"
                    )
                lines.append(line)
        return "\n".join(lines) + "\n"

    def markdown(self) -> str:
        dataset, index, encoding = self.dataset, self.index, self.encoding
        flops = f"{encoding.flops_mean / 1e6:.1f} MFLOPs" if encoding.flops_mean is not None else "FLOPs not modelled"
        lines = [
            f"# {dataset['name']} ({dataset['split']}): {len(self.rows) - 1} funnel configurations against exact search",
            "",
            f"- dataset: `{dataset['path']}`, {dataset['queries']} queries, {dataset['judgements']} judgements",
            f"- model: {self.model['name']} ({self.model['dim']} dims); index: {index['count']} documents, "
            f"vectors stored as {index['vector_dtype']}, {human_bytes(index['disk_bytes'])} on disk",
            f"- query encoding (every row): {encoding.tokens_mean:.1f} tokens, {flops}, "
            f"{encoding.wall.median_ms:.2f} ms median / {encoding.wall.p95_ms:.2f} ms p95 "
            f"({encoding.engine}{' on one thread' if encoding.engine == 'torch' else ''}, {encoding.timed_queries} queries)",
            *(f"- query encoder {name!r}: {ms:.3f} ms median a query on its own engine" for name, ms in encoding.students.items()),
            f"- search times: each query alone, FAISS on 1 thread, median of {self.environment.get('repeats', 1)} repeats per query; "
            f"machine: {self.environment['cores']} cores ({self.environment.get('processor', '')})",
            "- kept, speed-up (wall time) and FLOPs cut are against the exact row; * marks the Pareto frontier of "
            f"{_label(self.primary_metric)} against search time; FLOPs and bytes read are per query (see "
            "funnel/evaluation/compute.py for the formulas)",
            *(f"- note: {warning}" for warning in self.warnings),
            "",
            self.table(),
            *(
                f"- {row.name}: its BM25 candidates rescued the exact top 10 of {len(row.rescued)} queries: {', '.join(row.rescued)}"
                for row in self.rows
                if row.rescued
            ),
            "",
            f"Command: `{self.command}`",
            "",
            "## Per stage",
            "",
            self.stage_table(),
        ]
        return "\n".join(lines)


def _query_layers(row: ConfigurationResult) -> str:
    """The model layers a row's queries run, and the query encoders they run instead or besides."""
    encoders = sorted({str(step["layer"]) for step in row.stage_encoding if isinstance(step["layer"], str)})
    layers = str(row.encode_layers) if row.encode_layers else ""
    return " + ".join([part for part in (layers, *encoders) if part]) or "—"


def environment(repeats: int, threads: int) -> dict[str, Any]:
    """The machine record (:func:`~funnel.evaluation.machine.machine_record`) and the timing settings."""
    return {**machine_record(), "timing_threads": threads, "repeats": repeats}


def _label(metric: str) -> str:
    name, _, k = metric.partition("@")
    pretty = {"ndcg": "NDCG", "mrr": "MRR", "map": "MAP", "recall": "R", "precision": "P", "hit_rate": "Hit"}.get(name, name)
    return f"{pretty}@{k}" if k else pretty
