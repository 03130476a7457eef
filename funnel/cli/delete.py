"""`funnel delete INDEX --ids a,b`: delete documents by id (a tombstone file; `funnel compact` reclaims space)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from funnel.cli.output import emit_json

COMPACT_HINT = 0.2  # suggest compaction once this share of stored rows is deleted


def delete_command(
    index: Path = typer.Argument(..., help="An index folder."),
    ids: list[str] = typer.Option([], "--ids", help="Ids to delete, comma-separated (repeatable)."),
    ids_file: Optional[Path] = typer.Option(None, "--ids-file", help="A file with one id per line."),
    ignore_missing: bool = typer.Option(False, "--ignore-missing", help="Delete the ids that exist instead of refusing when some do not."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Delete documents from INDEX; searches stop returning them at once."""
    from funnel.errors import InputError
    from funnel.indexes.manifest import read_manifest
    from funnel.indexes.updates import delete_documents

    wanted = [part.strip() for text in ids for part in text.split(",") if part.strip()]
    if ids_file is not None:
        if not ids_file.exists():
            raise InputError(f"ids file {ids_file} does not exist")
        wanted += [line.strip() for line in ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not wanted:
        raise InputError("no ids given: pass --ids a,b or --ids-file FILE")
    deleted = delete_documents(index, wanted, ignore_missing=ignore_missing)
    manifest = read_manifest(index)
    share = manifest.deleted / max(manifest.rows, 1)
    summary = {"index": str(index), "deleted": deleted, "documents": manifest.count, "deleted_rows": manifest.deleted, "version": manifest.generation}
    if json_output:
        emit_json(summary)
        return
    typer.echo(f"deleted {deleted} documents from {index}: {manifest.count} remain")
    if share > COMPACT_HINT:
        typer.echo(f"{share:.0%} of the stored rows are deleted: run `funnel compact {index}` to reclaim space and speed", err=True)


def register(app: typer.Typer) -> None:
    app.command("delete")(delete_command)
