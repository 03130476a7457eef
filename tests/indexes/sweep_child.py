"""Child process of the kill sweep: run one writing operation and SIGKILL itself at the N-th
fsync or rename it makes (os.fsync, os.replace, os.rename, and the renameat2 exchange; for an
export also each request that writes to Qdrant), before that call happens. Not a test module (pytest collects only test_*.py).

Usage: python sweep_child.py OPERATION WORKDIR TARGET KILL_AT
OPERATION: build | overwrite | add | delete | compact | tune | export
KILL_AT: 0 runs to the end and prints how many fsyncs and renames it made.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep_ops  # noqa: E402

from funnel.indexes import builder  # noqa: E402


def main() -> None:
    operation, workdir, target, kill_at = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    calls = {"n": 0}

    def counted(call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls["n"] += 1
            if calls["n"] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return call(*args, **kwargs)

        return wrapper

    os.fsync = counted(os.fsync)
    os.replace = counted(os.replace)
    os.rename = counted(os.rename)
    builder._exchange = counted(builder._exchange)  # type: ignore[attr-defined]
    if operation == "export":  # the writes that matter go to Qdrant: a kill before each request too
        from qdrant_client import QdrantClient

        for name in ("create_collection", "upsert", "update_collection"):
            setattr(QdrantClient, name, counted(getattr(QdrantClient, name)))
    sweep_ops.OPERATIONS[operation](workdir, target)
    print(calls["n"])


if __name__ == "__main__":
    main()
