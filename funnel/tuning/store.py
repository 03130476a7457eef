"""Store a tuned plan in an index's manifest, the one place the tuner writes to an index."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from funnel.indexes.lock import writer_lock
from funnel.indexes.manifest import Manifest, read_manifest, write_manifest_atomically


def save_plan(index_path: str | Path, plan: dict[str, Any] | None) -> Manifest:
    """Replace the manifest's default plan (None clears it); returns the new manifest.

    A read-modify-write of manifest.json, so it takes the index's writer lock like every other
    change (a concurrent `funnel add` either lands before it or waits).
    """
    folder = Path(index_path)
    with writer_lock(folder):
        manifest = replace(read_manifest(folder), plan=plan)
        write_manifest_atomically(folder, manifest)
    return manifest
