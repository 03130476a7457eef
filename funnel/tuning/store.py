"""Store a tuned plan in an index's manifest, the one place the tuner writes to an index."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from funnel.indexes.manifest import Manifest, read_manifest, write_manifest_atomically


def save_plan(index_path: str | Path, plan: dict[str, Any] | None) -> Manifest:
    """Replace the manifest's default plan (None clears it); returns the new manifest.

    Read-modify-write of manifest.json: callers that may race with other writers should hold the
    index's writer lock around this call.
    """
    folder = Path(index_path)
    manifest = replace(read_manifest(folder), plan=plan)
    write_manifest_atomically(folder, manifest)
    return manifest
