"""`funnel tune INDEX --recall 0.99`: choose the cheapest plan meeting a recall target, store it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from funnel.cli.output import emit_json


def tune_command(
    index: Path = typer.Argument(..., help="An index folder made by `funnel index`."),
    recall: float = typer.Option(0.99, "--recall", help="Target recall@k against exact full-dimension search, in (0, 1]."),
    k: int = typer.Option(10, "-k", help="The k the plan is tuned for (searches with k up to this use it)."),
    queries: Optional[Path] = typer.Option(
        None, "--queries", help="Calibration queries, one per line.", show_default="made from the corpus"
    ),
    size: int = typer.Option(400, "--calibration-size", help="Documents sampled for corpus-made queries (half fit, half held out)."),
    seed: int = typer.Option(0, help="Seed for sampling and the fit/held-out split."),
    dims: list[int] = typer.Option([], "--dim", help="Shortlist dims to consider (repeat).", show_default="every stored one"),
    stages: int = typer.Option(3, "--max-stages", help="Largest number of stages to consider: 2 or 3."),
    margin: Optional[float] = typer.Option(
        None,
        help="Safety margin added to the target.",
        show_default="a quarter of 1 - target for queries made from the corpus, 0 for --queries",
    ),
    select: str = typer.Option(
        "estimate", help="Pick the cheapest by the latency 'estimate' (reproducible) or the 'measured' ms of the few cheapest."
    ),
    model: Optional[str] = typer.Option(None, help="Model folder.", show_default="the one the index was built with"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report the plan without storing it in the index."),
    json_output: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
) -> None:
    """Calibrate the funnel on INDEX: the cheapest plan whose top-k agrees with exact search at --recall."""
    from dataclasses import asdict

    from funnel.retriever import Retriever

    retriever = Retriever.load(index, model)
    plan = retriever.tune(
        recall,
        k,
        queries,
        save=not dry_run,
        seed=seed,
        calibration_size=size,
        dims=tuple(dims) or None,
        max_stages=stages,
        margin=margin,
        select=select,
    )
    if json_output:
        emit_json({**asdict(plan), "stages": plan.stages_text, "stored": not dry_run})
        return
    for note in plan.notes:
        typer.echo(f"note: {note}", err=True)
    about = plan.calibration
    typer.echo(
        f"calibration: {about['queries']} queries ({about['source']}); fit {about.get('fit')}, held out {about.get('holdout')}, seed {about['seed']}"
    )
    typer.echo(f"selection:   {plan.selection} ({plan.plans_considered} plans considered)")
    exact = plan.exact
    typer.echo(f"{'':<24} {'stages':<22} {'recall fit':>10} {'held-out':>9} {'ms/query':>9} {'× exact':>8} {'MFLOPs':>8} {'× exact':>8}")
    for row in (plan.chosen, *plan.baselines, exact):
        ratio = row.ms_per_query / exact.ms_per_query if row.ms_per_query and exact.ms_per_query else None
        typer.echo(
            f"{row.name:<24.24} {row.stages:<22.22} {_num(row.recall_fit):>10} {_num(row.recall_holdout):>9} "
            f"{_num(row.ms_per_query, 2):>9} {_num(ratio, 2):>8} {row.flops / 1e6:>8.2f} {row.flops / max(exact.flops, 1):>8.2f}"
        )
    verb = "would store" if dry_run else "stored"
    typer.echo(f"{verb} plan {plan.stages_text} for k ≤ {plan.k} in {index} (used by `funnel search` by default)")


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def register(app: typer.Typer) -> None:
    app.command("tune")(tune_command)
