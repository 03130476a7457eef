"""Query encoders stored with an index: cheap students trained into the model's space.

A student encodes queries only; the documents keep the vectors of the model the index was built
with, so storing one re-encodes nothing, and a plan's stages name it (``static:full:10``, see
:mod:`funnel.search.plan`). Its engine files — a static student's token table, or the ONNX graph
of a transformer cut from the model (:mod:`funnel.encoders.graph_cache`) — are written into the
index folder as ``query-NAME-GGGGGG/`` and then the manifest names them, under the writer lock,
like every change: a crash leaves the old manifest and an unreferenced folder, removed by the next
change. Each file is listed with its checksum and checked when the student is opened.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from funnel.errors import IndexFormatError, InputError, ModelError
from funnel.indexes.lock import writer_lock
from funnel.indexes.manifest import Manifest, QueryEncoderEntry, check_encoder_name, file_entry, read_manifest

if TYPE_CHECKING:
    from funnel.encoders.choose import TextEncoder
    from funnel.indexes.index import Index


def query_encoder_folder(name: str, generation: int) -> str:
    return f"query-{name}-{generation:06d}"


def check_new_name(manifest: Manifest, name: str, *, overwrite: bool) -> None:
    """InputError unless ``name`` may be stored: a valid name, new to the index or ``overwrite``."""
    check_encoder_name(name)
    if manifest.query_encoder(name) is not None and not overwrite:
        raise InputError(f"this index already has a query encoder named {name!r}: choose another --name, or pass --overwrite to replace it")


def store_query_encoder(
    index_path: str | Path,
    name: str,
    kind: str,
    export: Callable[[Path], Any],
    training: dict[str, Any],
    *,
    overwrite: bool = False,
) -> Manifest:
    """Write a query encoder into the index at ``index_path`` and name it in the manifest;
    returns the new manifest. ``export(folder)`` writes the engine files into ``folder`` (it must
    create it, whole or not at all: :func:`funnel.encoders.graph_cache.staged`). A name already
    stored is replaced only with ``overwrite``."""
    folder = Path(index_path).expanduser()
    read_manifest(folder)  # an index, before the lock file is made in it
    from funnel.indexes.updates import publish_manifest

    with writer_lock(folder):
        old = read_manifest(folder)
        check_new_name(old, name, overwrite=overwrite)
        generation = old.generation + 1
        target = folder / query_encoder_folder(name, generation)
        if target.exists():  # left by a store that died before its manifest: never referenced
            shutil.rmtree(target)
        export(target)
        files = {path.name: file_entry(path) for path in sorted(target.iterdir()) if path.is_file()}
        entry = QueryEncoderEntry(name=name, folder=target.name, kind=kind, files=files, training=training)
        kept = tuple(other for other in old.query_encoders if other.name != name)
        return publish_manifest(folder, old, replace(old, query_encoders=(*kept, entry), generation=generation))


def open_query_encoder(index: Index, name: str, integrity: str | None = None) -> TextEncoder:
    """The engine of the query encoder ``name`` stored in ``index`` (the version loaded), its
    files checked against the manifest first (``integrity`` as for :meth:`Index.load`)."""
    from funnel.encoders.choose import open_graph
    from funnel.indexes.integrity import check_files, resolve_integrity

    index.check_query_encoder(name)
    entry = index.manifest.query_encoder(name)
    assert entry is not None  # checked just above
    folder = index.path / entry.folder
    check_files([(folder / file, expected) for file, expected in entry.files.items()], resolve_integrity(integrity))
    try:
        encoder = open_graph(folder)
    except ModelError as exc:
        raise IndexFormatError(f"the query encoder {name!r} of {index.path} cannot be opened ({exc}); train it again") from None
    if encoder.dim != index.dim:
        raise IndexFormatError(
            f"the query encoder {name!r} gives {encoder.dim}-dim vectors but the index holds {index.dim}: train it again"
        )
    return encoder
