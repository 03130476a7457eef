"""The writer lock: one writer (build, add, delete, compact) per index folder at a time.

An exclusive ``flock`` on ``NAME/.lock``; readers never take it (they read immutable files and
an atomically replaced manifest). The lock is released when the process dies, so a killed writer
never leaves the index locked.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from funnel.errors import FunnelError

LOCK_FILE = ".lock"


class IndexBusyError(FunnelError):
    """Another writer holds the index's lock."""


class IndexReadOnlyError(FunnelError):
    """The index folder cannot be written (read-only file system or no permission)."""


def lock_is_free(folder: Path) -> bool:
    """Whether no writer holds ``folder``'s lock right now: a cheap early check before slow work
    (the lock itself is taken later, so a writer may still come first). Creates nothing."""
    path = folder / LOCK_FILE
    try:
        handle = path.open("r")
    except OSError:
        return True  # no lock file: nobody has written here yet
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        handle.close()


@contextmanager
def writer_lock(folder: Path) -> Iterator[None]:
    """Hold the writer lock of ``folder`` (which must exist); raises IndexBusyError if it is taken."""
    path = folder / LOCK_FILE
    try:
        handle = path.open("a+")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise IndexReadOnlyError(
            f"cannot change {folder} ({reason.lower()} on {path}): the index is read-only here; copy it somewhere writable"
        ) from None
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
