"""`funnel delete INDEX --ids a,b`: delete documents by id (a tombstone file; `funnel compact` reclaims space)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from funnel.cli.output import emit_json, writing

COMPACT_HINT = 0.2  # suggest compaction once this share of stored rows is deleted


def delete_command(
    index: Path = typer.Argument(..., help="An index folder."),
    ids: list[str] = typer.Option([], "--ids", help="Ids to delete, comma-separated (repeatable); white space around each is dropped."),
    exact_ids: list[str] = typer.Option([], "--id", help="One id, exactly as given (repeatable): for ids holding commas."),
    ids_file: Optional[Path] = typer.Option(
        None, "--ids-file", help='JSON lines, one id per line as a JSON string (e.g. "my id"); any id can be named.'
    ),
    ignore_missing: bool = typer.Option(False, "--ignore-missing", help="Delete the ids that exist instead of refusing when some do not."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Delete documents from INDEX; searches stop returning them at once."""
    from funnel.errors import InputError
    from funnel.indexes.manifest import read_manifest
    from funnel.indexes.updates import delete_documents

    wanted = [part.strip() for text in ids for part in text.split(",") if part.strip()] + list(exact_ids)
    if ids_file is not None:
        wanted += read_ids_file(ids_file)
    if not wanted:
        raise InputError("no ids given: pass --ids a,b, --id ID or --ids-file FILE")
    with writing(index):
        deleted = delete_documents(index, wanted, ignore_missing=ignore_missing)
    manifest = read_manifest(index)
    share = manifest.deleted / max(manifest.rows, 1)
    summary = {
        "index": str(index),
        "deleted": deleted,
        "documents": manifest.count,
        "deleted_rows": manifest.deleted,
        "version": manifest.generation,
    }
    if json_output:
        emit_json(summary)
        return
    typer.echo(f"deleted {deleted} documents from {index}: {manifest.count} remain")
    if manifest.count == 0:
        typer.echo("every document is deleted: add documents with `funnel add`, or build a new index", err=True)
    elif share > COMPACT_HINT:
        typer.echo(f"{share:.0%} of the stored rows are deleted: run `funnel compact {index}` to reclaim space and speed", err=True)


def read_ids_file(path: Path) -> list[str]:
    """Ids from a JSON-lines file: each non-blank line one JSON string (or integer)."""
    from funnel.errors import InputError
    from funnel.readers import read_lines

    out: list[str] = []
    for number, line in read_lines(path):  # the one line reader: UTF-8 checked, blank lines skipped
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise InputError(f'{path}:{number}: not a JSON string; write one id per line as JSON, e.g. "my id"')
        out.append(str(value))
    return out


def register(app: typer.Typer) -> None:
    app.command("delete")(delete_command)
