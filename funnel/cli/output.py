"""Shared printing helpers for the CLI: JSON for programs, short lines for people."""

from __future__ import annotations

import errno
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from funnel.formatting import human_bytes  # noqa: F401  (re-exported for the commands)


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def snippet(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def rotation_lines(manifest: Any) -> list[str]:
    """One line per depth: the basis chosen and why (with the measured prefix agreement)."""
    rotation = manifest.rotation
    if rotation is None:
        return ["rotation   none (index built before rotations: the model's order)"]
    if not rotation.decision:
        return [f"rotation   none ({'--rotation none' if rotation.requested == 'none' else 'not fitted'}: the model's order)"]
    lines = []
    for key, record in rotation.decision.items():
        where = "" if key == "full" else f" (layer {key})"
        method = "pca" if record.get("method") == "pca" else "none (the model's order)"
        lines.append(f"rotation{where}   {method} [{rotation.requested}]: {record.get('reason', '')}")
        agreement = record.get("agreement")
        if agreement:
            dims = sorted(agreement["model_order"], key=int)
            pairs = ", ".join(f"{dim}-d {agreement['model_order'][dim]:.3f} → {agreement['rotated'][dim]:.3f}" for dim in dims)
            lines.append(f"           {agreement['measure']} on {agreement['queries']} corpus queries, model order → rotated: {pairs}")
    return lines


# What the user can do about a file system's refusal, by errno; others get the system's own words.
_OS_ERROR_FIXES = {
    errno.ENOSPC: "free space on that disk (or write somewhere else) and run the command again",
    errno.EDQUOT: "the disk quota is used up: free space within it (or write somewhere else) and run the command again",
    errno.EIO: "the disk reported an I/O error: check the disk (dmesg, fsck or SMART) before trusting files on it",
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.EACCES: "check the owner and permissions of that path, or write somewhere else",
    errno.EPERM: "check the owner and permissions of that path, or write somewhere else",
    errno.ENOENT: "check that the path exists",
}


def os_error_line(exc: OSError) -> str:
    """One line for an OSError: the path (both, for a rename), what the system said, and the fix."""
    paths = [str(name) for name in (exc.filename, exc.filename2) if name is not None]
    where = f"{' -> '.join(paths)}: " if paths else ""
    said = exc.strerror or str(exc)
    fix = _OS_ERROR_FIXES.get(exc.errno) if exc.errno is not None else None
    return f"{where}{said}" + (f": {fix}" if fix else "")


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Name ``path`` in an OSError raised inside that names no file (a write to an open file, the
    usual way a full disk shows itself, reports none), so the one-line error says where."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            exc.filename = str(path)
        raise
