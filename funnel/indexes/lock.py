"""The writer lock: one writer (build, add, delete, compact) per index folder at a time.

An exclusive ``flock`` on ``NAME/.lock``; readers never take it (they read immutable files and
an atomically replaced manifest). The lock is released when the process dies, so a killed writer
never leaves the index locked.
"""
from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from funnel.errors import FunnelError

LOCK_FILE = ".lock"


class IndexBusyError(FunnelError):
    """Another writer holds the index's lock."""


@contextmanager
def writer_lock(folder: Path) -> Iterator[None]:
    """Hold the writer lock of ``folder`` (which must exist); raises IndexBusyError if it is taken."""
    path = folder / LOCK_FILE
    handle = path.open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise IndexBusyError(f"another writer holds the lock on {folder} ({path}): wait for it to finish, then try again") from None
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()
