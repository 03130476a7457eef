"""`funnel index CORPUS --backend qdrant`: encode straight into a Qdrant collection (no index folder)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional

import typer

from funnel.cli.output import emit_json
from funnel.errors import InputError

if TYPE_CHECKING:
    from funnel.backends.ray_build import RayOptions
    from funnel.corpus import Corpus
    from funnel.indexes.builder import IndexConfig


def index_to_qdrant(
    source: Corpus,
    config: IndexConfig,
    backend: str,
    qdrant: Optional[str],
    collection: str,
    model: Optional[str],
    ray: RayOptions | None,
    overwrite: bool,
    resume: bool,
    quiet: bool,
    json_output: bool,
) -> None:
    """Print what `funnel index --backend qdrant` did; the work is funnel.backends.build's."""
    if backend != "qdrant":
        raise InputError(f"backend {backend!r} is not known: choose local or qdrant")
    if not qdrant:
        raise InputError("--backend qdrant needs --qdrant URL (a Qdrant server) or --qdrant FOLDER (embedded mode)")
    from funnel.backends.build import build_to_qdrant
    from funnel.backends.qdrant import ExportOptions, connect
    from funnel.cli.validate import collection_name, qdrant_location
    from funnel.models import Encoder

    qdrant_location(qdrant)
    collection_name(collection)  # defaults to the corpus file's name, which may not fit the rule

    started = time.perf_counter()
    client = connect(qdrant)  # before the model loads: an unreachable Qdrant costs a second
    source.validate()
    encoder = Encoder.load(model)
    options = ExportOptions(collection=collection, overwrite=overwrite, resume=resume)
    summary = build_to_qdrant(
        source, encoder, config, client, options, location=qdrant, ray=ray, show_progress=not quiet and not json_output
    )
    result = {
        "qdrant": qdrant,
        "collection": collection,
        "points": summary.points,
        "shortlist_dims": list(summary.layout.shortlist_dims),
        "model": encoder.name,
        "seconds": round(time.perf_counter() - started, 2),
        "skipped": dict(source.skipped),
    }
    if json_output:
        emit_json(result)
        return
    typer.echo(f"indexed {summary.points} documents into collection {collection!r} at {qdrant} ({result['seconds']} s)")
