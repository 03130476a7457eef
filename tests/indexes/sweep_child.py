"""Child process of the kill sweep, started once and kept for a whole test module. It only imports
(once, instead of once per kill point) and forks: for each run it is asked for, a grandchild counts
the fsyncs and renames of one writing operation (os.fsync, os.replace, os.rename, and the renameat2
exchange; for an export also each request that writes to Qdrant) and SIGKILLs itself at the N-th,
before that call happens. Forking after faiss, OpenMP or any other thread has started is unsafe, so
the child never runs an operation itself and checks it is still single-threaded before each fork.
Not a test module (pytest collects only test_*.py).

Usage: python sweep_child.py, then one JSON request a line on stdin:
    {"operation": OPERATION, "workdir": WORKDIR, "runs": [[TARGET, KILL_AT], ...]}
answered on stdout, one JSON line per run, in order, each as soon as its grandchild has ended:
    {"target": TARGET, "kill_at": KILL_AT, "status": its wait status, "calls": CALLS, "output": the end of its stdout and stderr}
OPERATION: build | overwrite | add | delete | compact | tune | export
KILL_AT: 0 runs to the end. CALLS: how many fsyncs and renames it made (at a kill, up to and
including the one it died at), null if it died any other way.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep_ops  # noqa: E402

from funnel.indexes import builder  # noqa: E402

# What the operations import on first use, imported here on the first request for each so that
# every grandchild inherits it rather than paying for it (seconds for torch and qdrant_client).
PRELOAD = {
    "add": ("pandas",),
    "tune": ("funnel.tuning", "funnel.tuning.store", "torch"),
    "export": ("funnel.backends.qdrant", "qdrant_client", "qdrant_client.local.qdrant_local"),
}
TIMEOUT_S = 120
OUTPUT_TAIL = 3000


def threads() -> list[str]:
    return [(Path("/proc/self/task") / task / "comm").read_text().strip() for task in os.listdir("/proc/self/task")]


def preload(operation: str, loaded: set[str]) -> None:
    if operation in loaded:
        return
    loaded.add(operation)
    for name in ("faiss", *PRELOAD.get(operation, ())):
        with contextlib.suppress(ModuleNotFoundError):  # an optional package: the test that needs it skips
            importlib.import_module(name)


def operate(operation: str, workdir: Path, target: Path, kill_at: int, report: int) -> None:
    """In the grandchild: count the calls that make changes durable and die before the kill_at-th."""
    calls = 0

    def counted(call: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == kill_at:
                # Tells the test that this kill is the sweep's, not some other SIGKILL.
                os.write(report, str(calls).encode())
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
    os.write(report, str(calls).encode())


def run(operation: str, workdir: Path, target: Path, kill_at: int) -> dict[str, Any]:
    running = threads()
    if len(running) != 1:
        raise RuntimeError(f"the sweep child must not fork with threads running: {running}")
    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile() as output:
        sys.stdout.flush()  # else the grandchild inherits unwritten answers
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(read_end)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)  # stdin carries the child's requests
                os.dup2(output.fileno(), 1)  # stdout carries the child's answers
                os.dup2(output.fileno(), 2)
                operate(operation, workdir, target, kill_at, write_end)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)  # never the child's exit path: it would answer, flush and run atexit twice
        os.close(write_end)
        status, timed_out = wait(pid)
        with os.fdopen(read_end, "rb") as report:
            calls = report.read()
        output.seek(0)
        text = output.read().decode(errors="replace")
    if timed_out:
        text += f"\n(stopped after {TIMEOUT_S} s)"
    return {
        "target": str(target),
        "kill_at": kill_at,
        "status": status,
        "calls": int(calls) if calls else None,
        "output": text[-OUTPUT_TAIL:],
    }


def wait(pid: int) -> tuple[int, bool]:
    """The grandchild's wait status, and whether it had to be stopped: a hung grandchild must not
    hang the test. SIGTERM comes first so that a timeout is not taken for one of the sweep's kills
    (and the count a kill reports, which the test checks, never comes from a timeout)."""
    for stop, seconds in ((signal.SIGTERM, TIMEOUT_S), (signal.SIGKILL, 5)):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status, stop is not signal.SIGTERM
            time.sleep(0.002)
        os.kill(pid, stop)
    return os.waitpid(pid, 0)[1], True


def main() -> None:
    loaded: set[str] = set()
    for line in sys.stdin:
        request = json.loads(line)
        operation, workdir = request["operation"], Path(request["workdir"])
        preload(operation, loaded)
        for target, kill_at in request["runs"]:
            print(json.dumps(run(operation, workdir, Path(target), kill_at)), flush=True)
    # Unloading torch and qdrant_client takes seconds, and the child has nothing else to clean up.
    os._exit(0)


if __name__ == "__main__":
    main()
