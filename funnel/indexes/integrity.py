"""What loading an index checks, and what it costs: the integrity contract.

Every file an index lists carries its size and sha256 in the manifest, and the manifest carries
the sha256 of its own content. ``Index.load`` checks, before anything is searched:

- ``full`` (the default): every byte of every file against its sha256. A flipped byte anywhere
  (the middle of ``vectors.f16`` included) stops the load with the file's name; no search ever
  reads a byte that was not checked. Files are hashed in parallel threads (hashlib releases the
  GIL), and a file already checked by this process, unchanged since (same inode, size, mtime and
  ctime), is not hashed again, so reloads after an add or delete hash only the new files.
- ``sampled``: sizes and the sha256 of each file's first and last 64 KiB: a truncated, swapped or
  rewritten file is caught, a few bytes changed in the middle are not (``funnel verify`` finds
  them). For very large indexes whose storage is trusted and where open time matters.

Choose with ``Index.load(path, integrity=...)`` or, for every command and server at once, the
environment variable ``FUNNEL_INTEGRITY`` (``full`` or ``sampled``). Tombstones and rotations are
always checked in full (they are small and change what a search returns). The cost at 1M vectors
is measured by ``python -m benchmarks.integrity`` (see the README).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from funnel.errors import InputError
from funnel.indexes.manifest import FileEntry, check_file

INTEGRITY_LEVELS = ("full", "sampled")
DEFAULT_INTEGRITY = "full"
INTEGRITY_VARIABLE = "FUNNEL_INTEGRITY"
MEMO_ENTRIES = 65_536


def resolve_integrity(level: str | None) -> str:
    """The check to run: ``level`` if given, else ``FUNNEL_INTEGRITY``, else full; refuses others."""
    chosen = level if level is not None else os.environ.get(INTEGRITY_VARIABLE, DEFAULT_INTEGRITY)
    if chosen not in INTEGRITY_LEVELS:
        where = f"{INTEGRITY_VARIABLE}={chosen!r}" if level is None else f"integrity {chosen!r}"
        raise InputError(f"{where} is not a check funnel knows: choose {' or '.join(INTEGRITY_LEVELS)}")
    return chosen


class _VerifiedFiles:
    """Files this process has hashed in full and found sound, by identity: an unchanged file
    (segments are immutable) need not be hashed again when a newer version of its index loads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple[object, ...], None] = OrderedDict()

    @staticmethod
    def key(path: Path, expected: FileEntry) -> tuple[object, ...] | None:
        try:
            info = path.stat()
        except OSError:
            return None
        return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, expected.sha256)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._seen

    def add(self, key: tuple[object, ...]) -> None:
        with self._lock:
            self._seen[key] = None
            while len(self._seen) > MEMO_ENTRIES:
                self._seen.popitem(last=False)


_VERIFIED = _VerifiedFiles()


def check_files(files: Iterable[tuple[Path, FileEntry]], level: str) -> None:
    """Check each (path, expected) at ``level`` (see the module's contract); raises
    IndexFormatError naming the first damaged file."""
    files = list(files)
    if level == "sampled":
        for path, expected in files:
            check_file(path, expected)
        return
    for path, expected in files:
        check_file(path, expected)  # missing, truncated or swapped files fail fast, before any hashing
    pending = [(path, expected, key) for path, expected in files if (key := _VERIFIED.key(path, expected)) not in _VERIFIED]
    if not pending:
        return

    def hash_one(item: tuple[Path, FileEntry, tuple[object, ...] | None]) -> None:
        path, expected, key = item
        check_file(path, expected, full=True)
        if key is not None:
            _VERIFIED.add(key)

    workers = min(len(pending), os.cpu_count() or 1, 8)
    if workers == 1:
        for item in pending:
            hash_one(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="funnel-verify") as pool:
        for _ in pool.map(hash_one, sorted(pending, key=lambda item: -item[1].bytes)):
            pass
