"""`funnel compact INDEX`: rewrite the live documents into one segment, dropping deleted rows."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from funnel.cli.output import emit_json, writing


def compact_command(
    index: Path = typer.Argument(..., help="An index folder."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Merge segments and drop deleted rows; readers keep the old version until they reload."""
    from funnel.indexes.manifest import read_manifest
    from funnel.indexes.updates import compact_index

    before = read_manifest(index)
    started = time.perf_counter()
    with writing(index):
        after = compact_index(index)
    summary = {
        "index": str(index),
        "documents": after.count,
        "segments_before": len(before.segments),
        "rows_dropped": before.rows - after.rows,
        "version": after.generation,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if json_output:
        emit_json(summary)
    elif after is before or after.generation == before.generation:
        typer.echo(f"{index} is already compact ({after.count} documents in one segment)")
    else:
        typer.echo(
            f"compacted {index}: {after.count} documents in 1 segment, {summary['rows_dropped']} deleted rows dropped ({summary['seconds']} s)"
        )


def register(app: typer.Typer) -> None:
    app.command("compact")(compact_command)
