"""`funnel export INDEX --qdrant URL|FOLDER --collection NAME`: put an index into a Qdrant collection."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from funnel.cli.output import emit_json


def export_command(
    index: Path = typer.Argument(..., help="An index folder."),
    qdrant: str = typer.Option(
        ...,
        "--qdrant",
        help="A Qdrant server's http(s)://HOST:PORT (e.g. http://localhost:6333), or a folder for qdrant-client's embedded mode "
        "(any other scheme is refused).",
    ),
    collection: str = typer.Option(
        ...,
        "--collection",
        help="The collection to create (or continue with --resume): 1-255 letters, digits, _ - or ., not starting with '.'.",
    ),
    quantization: str = typer.Option("none", help="Quantize the shortlist vectors in Qdrant: none, scalar (int8) or binary."),
    rescore_dim: list[int] = typer.Option(
        [], "--rescore-dim", help="Also store this prefix dim, without an index, for middle stages (repeat)."
    ),
    batch_size: int = typer.Option(256, help="Points per upload request."),
    shards: int = typer.Option(0, help="Shards of the collection on a cluster.", show_default="the server's"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing collection of that name."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted export into the same collection."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Upload INDEX's documents and vectors to a Qdrant collection that runs the same funnel server-side."""
    from funnel.backends.qdrant import ExportOptions, connect, export_index
    from funnel.cli.validate import collection_name, qdrant_location
    from funnel.indexes.index import Index

    collection_name(collection)  # before anything is opened or created
    qdrant_location(qdrant)

    options = ExportOptions(
        collection=collection,
        quantization=quantization,
        rescore_dims=tuple(rescore_dim),
        batch_size=batch_size,
        shards=shards or None,
        overwrite=overwrite,
        resume=resume,
    )
    started = time.perf_counter()
    source = Index.load(index, use_gpu=False)
    summary = export_index(source, connect(qdrant), options, location=qdrant, show_progress=not quiet and not json_output)
    layout = summary.layout
    result = {
        "index": str(index),
        "qdrant": qdrant,
        "collection": collection,
        "points": summary.points,
        "uploaded": summary.uploaded,
        "resumed_from": summary.resumed_from,
        "shortlist_dims": list(layout.shortlist_dims),
        "rescore_dims": list(layout.rescore_dims),
        "quantization": layout.quantization,
        "seconds": round(time.perf_counter() - started, 2),
    }
    if json_output:
        emit_json(result)
        return
    resumed = f", resumed after {summary.resumed_from}" if summary.resumed_from else ""
    typer.echo(
        f"exported {summary.points} documents to collection {collection!r} at {qdrant} "
        f"(HNSW at {', '.join(map(str, layout.shortlist_dims))} dims{resumed}; {result['seconds']} s)"
    )


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
