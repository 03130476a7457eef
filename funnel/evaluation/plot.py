"""Plot a report: quality against search time and against search FLOPs, Pareto frontier marked.

matplotlib is imported here only, with the Agg backend, so nothing needs a display and
``import funnel`` never pays for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from funnel.errors import InputError
from funnel.evaluation.sweep import pareto_frontier

if TYPE_CHECKING:
    from funnel.evaluation.report import EvaluationReport


def plot_report(report: EvaluationReport, path: str | Path) -> Path:
    """Write a two-panel PNG to ``path``; returns the path."""
    try:
        import matplotlib
    except ImportError:
        raise InputError("plots need matplotlib: pip install 'funnel[eval]' (or matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter, FuncFormatter, NullFormatter

    metric = report.primary_metric
    rows = report.rows
    quality = [row.means[metric] for row in rows]
    axes_data = [
        ("search ms / query (median, one thread)", [row.search.median_ms for row in rows]),
        ("search FLOPs / query (shortlist + rescoring)", [row.search_flops for row in rows]),
    ]
    dims = sorted({_dim(row.stages) for row in rows[1:]}, key=lambda d: (not d.isdigit(), int(d) if d.isdigit() else 0, d))
    colors = {dim: plt.get_cmap("viridis")(i / max(len(dims) - 1, 1)) for i, dim in enumerate(dims)}
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    for axis, (label, cost) in zip(axes, axes_data):
        for dim in dims:
            chosen = [i for i, row in enumerate(rows[1:], start=1) if _dim(row.stages) == dim]
            name = f"shortlist {dim}-d" if dim != "plan" else "plans of 3+ stages"
            axis.scatter([cost[i] for i in chosen], [quality[i] for i in chosen], color=colors[dim], label=name, s=28, zorder=3)
        frontier = pareto_frontier(cost, quality)
        axis.step(
            [cost[i] for i in frontier],
            [quality[i] for i in frontier],
            where="post",
            color="tab:red",
            lw=1.2,
            label="Pareto frontier",
            zorder=2,
        )
        axis.scatter([cost[0]], [quality[0]], marker="*", s=180, color="black", label="exact (reference)", zorder=4)
        axis.axhline(quality[0], color="black", lw=0.6, ls=":")
        axis.set_xscale("log")
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel(label)
        axis.set_ylabel(_pretty(metric))
        axis.grid(True, which="both", alpha=0.25)
    axes[0].xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes[1].xaxis.set_major_formatter(EngFormatter())
    axes[0].legend(fontsize=8, loc="lower right")
    figure.suptitle(
        f"{report.dataset['name']} ({report.dataset['split']}, {report.dataset['queries']} queries), "
        f"{report.model['name']}: {_pretty(metric)} against search cost"
    )
    versions = report.environment.get("versions", {})
    footer = (
        f"{report.command}\nfunnel {versions.get('funnel', '?')}, faiss {versions.get('faiss-cpu', versions.get('faiss-gpu', '?'))}, "
        f"torch {versions.get('torch', '?')}; {report.environment.get('cores', '?')} cores; search timed on 1 thread, "
        f"median of {report.environment.get('repeats', 1)} repeats per query"
    )
    figure.text(0.5, -0.01, footer, ha="center", va="top", fontsize=7, wrap=True, color="dimgray")
    target = Path(path)
    figure.savefig(target, dpi=120, bbox_inches="tight")
    plt.close(figure)
    return target


def _dim(stages: str) -> str:
    """The shortlist dim of a two-stage configuration; "plan" for longer plans."""
    parts = stages.split(",")
    return parts[0].split(":")[-2] if len(parts) <= 2 else "plan"


def _pretty(metric: str) -> str:
    name, _, k = metric.partition("@")
    return {"ndcg": "NDCG", "mrr": "MRR", "map": "MAP", "recall": "Recall"}.get(name, name) + (f"@{k}" if k else "")
