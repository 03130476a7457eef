"""`funnel add INDEX CORPUS`: encode more documents and add them to an index as a new segment."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from funnel.cli.output import emit_json, writing


def add_command(
    index: Path = typer.Argument(..., help="An index folder."),
    corpus: Path = typer.Argument(..., help="A .parquet file, a .jsonl file or a BEIR folder with the documents to add."),
    model: Optional[str] = typer.Option(None, help="Model folder.", show_default="the model the index was built with"),
    id_column: Optional[str] = typer.Option(None, help="Id column.", show_default="id, else _id"),
    text_column: Optional[str] = typer.Option(None, help="Text column.", show_default="text"),
    title_column: Optional[str] = typer.Option(None, help="Optional title column.", show_default="title if present"),
    batch_size: int = typer.Option(64, help="Encoding batch size."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip rows with no text or a repeated id instead of stopping."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Add the documents of CORPUS to INDEX (ids must be new); searches see all or none of them."""
    from funnel.corpus import CorpusColumns, open_corpus
    from funnel.indexes.lock import IndexBusyError, lock_is_free
    from funnel.indexes.manifest import read_manifest
    from funnel.indexes.updates import add_corpus
    from funnel.models import Encoder

    started = time.perf_counter()
    before = read_manifest(index)
    source = open_corpus(corpus, CorpusColumns(id=id_column, text=text_column, title=title_column), skip_invalid=skip_invalid)
    # Everything cheap is checked before the model loads (seconds) and encoding starts.
    source.validate()
    if not lock_is_free(index):
        raise IndexBusyError(f"another writer is changing {index}: wait for it to finish, then try again")
    encoder = Encoder.load(model or before.model)
    with writing(index):
        manifest = add_corpus(index, source, encoder, batch_size=batch_size, show_progress=not quiet and not json_output)
    summary = {
        "index": str(index),
        "added": manifest.count - before.count,
        "documents": manifest.count,
        "segments": len(manifest.segments),
        "version": manifest.generation,
        "seconds": round(time.perf_counter() - started, 2),
        "skipped": dict(source.skipped),
    }
    if json_output:
        emit_json(summary)
        return
    typer.echo(
        f"added {summary['added']} documents to {index}: {manifest.count} documents in {len(manifest.segments)} segments ({summary['seconds']} s)"
    )


def register(app: typer.Typer) -> None:
    app.command("add")(add_command)
