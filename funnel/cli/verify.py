"""`funnel verify INDEX`: check every byte of an index against its manifest, and files against each other."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from funnel.cli.output import emit_json, human_bytes


def verify_command(
    index: Path = typer.Argument(..., help="An index folder."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Full integrity check: sha256 of every file, counts, dims, unique ids, vector norms. Exit 1 on a problem."""
    from funnel.indexes.manifest import read_manifest
    from funnel.indexes.verify import verify_index

    if not index.is_dir():
        read_manifest(index)  # no folder to check: one error line (exit 2), not a report of problems
    report = verify_index(index)
    if json_output:
        emit_json(
            {
                "index": str(index),
                "ok": report.ok,
                "documents": report.documents,
                "files": report.files,
                "bytes": report.bytes,
                "problems": report.problems,
            }
        )
    elif report.ok:
        typer.echo(f"{index}: ok ({report.documents} documents; {report.files} files, {human_bytes(report.bytes)} checked)")
    else:
        for problem in report.problems:
            typer.echo(f"problem: {problem}", err=True)
        typer.echo(f"{index}: {len(report.problems)} problem(s) found", err=True)
    if not report.ok:
        sys.exit(1)


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_command)
