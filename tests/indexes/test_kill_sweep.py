"""The kill sweep: each writing command (index, index --overwrite, add, delete, compact, tune,
export) is killed with SIGKILL at every fsync and rename it makes, one run per point, each on its
own copy of the state before. After every kill the index loads as exactly the version before or
the version after (never a mix, never an error, never another version), and the command's recovery
(run again; --resume for a build and an export) reaches the version after. An export leaves no
collection, an incomplete one (which a retriever refuses and --resume completes), or exactly the
index's live documents.

The runs are forked, each from a child process (sweep_child.py) that has imported everything once
for the module; the test prepares every target first, then checks and recovers each as soon as its
run has ended, while the child runs the next."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sweep_ops

from funnel.errors import IndexFormatError
from funnel.indexes.index import Index
from funnel.search.plan import Plan
from funnel.search.run import run_funnel

CHILD = Path(__file__).resolve().parent / "sweep_child.py"
REPO = Path(__file__).resolve().parents[2]
PLAN = Plan.parse("64:40,full:10")

pytestmark = pytest.mark.slow


class Sweeper:
    """The sweep's child process, started on first use and again after a request was left unread
    (a failed test) or the child died, so that a test never reads another's answers."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.process: subprocess.Popen | None = None
        self.unread = 0

    def start(self) -> subprocess.Popen:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            "OMP_NUM_THREADS": "1",
            # pyarrow's bundled jemalloc starts a background thread when it loads, and the child
            # must have none when it forks.
            "JE_ARROW_MALLOC_CONF": "background_thread:false",
        }
        with self.log.open("ab") as log:
            # A session of its own: closing it stops the grandchild that a failed test left running too.
            return subprocess.Popen(
                [sys.executable, str(CHILD)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                text=True,
                start_new_session=True,
            )

    def runs(self, operation: str, workdir: Path, runs: list[tuple[Path, int]]) -> Iterator[dict[str, Any]]:
        """Each run's answer (see sweep_child.py), in order, as soon as it has ended."""
        if self.process is None or self.unread or self.process.poll() is not None:
            self.close()
            self.process = self.start()
        assert self.process.stdin is not None
        self.process.stdin.write(
            json.dumps({"operation": operation, "workdir": str(workdir), "runs": [(str(t), k) for t, k in runs]}) + "\n"
        )
        self.process.stdin.flush()
        self.unread = len(runs)
        return self.answers(self.process)

    def answers(self, process: subprocess.Popen) -> Iterator[dict[str, Any]]:
        assert process.stdout is not None
        while self.unread:
            line = process.stdout.readline()
            assert line, f"the sweep child died: {self.log.read_text(errors='replace')[-3000:]}"
            self.unread -= 1
            yield json.loads(line)

    def close(self) -> None:
        if self.process is None:
            return
        if self.unread or self.process.poll() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        else:
            assert self.process.stdin is not None
            self.process.stdin.close()  # the child's end of the requests
        self.process.wait(timeout=60)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self.process, self.unread = None, 0


@pytest.fixture(scope="module")
def sweeper(tmp_path_factory) -> Iterator[Sweeper]:
    child = Sweeper(tmp_path_factory.mktemp("sweep-child") / "stderr.log")
    yield child
    child.close()


def killed(result: dict[str, Any], points: int) -> None:
    """The run died of the sweep's SIGKILL, at the point it was asked to."""
    where = f"killed at point {result['kill_at']} of {points}"
    assert os.waitstatus_to_exitcode(result["status"]) == -signal.SIGKILL, f"{where}: not killed: {result['output']}"
    assert result["calls"] == result["kill_at"], f"{where}: a SIGKILL at another point ({result['calls']})"


def state(target: Path, queries: np.ndarray) -> Any:
    """What a reader gets from the folder: its version, stored rows, live ids, answers and plan
    (None: no index)."""
    try:
        index = Index.load(target, use_gpu=False)
    except IndexFormatError as exc:
        assert "does not exist" in str(exc), f"a kill left an index that does not load: {exc}"
        return None
    found = run_funnel(index, queries, PLAN, 10)
    ids = index.ids()
    answers = tuple(tuple(ids[p] for p in row if p >= 0) for row in found.positions)
    plan = index.manifest.plan or {}
    return (
        index.version,
        index.rows,
        tuple(index.live_ids()),
        answers,
        (plan.get("stages"), plan.get("k")),
    )  # a tune's timings differ run to run


def prepare(operation: str, workdir: Path, target: Path) -> None:
    """The state before ``operation``."""
    if operation == "build":
        return
    sweep_ops.build(workdir, target)
    if operation == "compact":
        sweep_ops.delete(workdir, target)


def copy(before: Path, target: Path) -> Path:
    """A private copy of the prepared state ``before`` at ``target`` (nothing for a build): much
    quicker than preparing it again for every kill point."""
    target.parent.mkdir(parents=True)
    if before.exists():
        shutil.copytree(before, target, symlinks=True)
    return target


def recover(operation: str, workdir: Path, target: Path, before: Any, now: Any) -> None:
    if operation in ("build", "overwrite"):
        getattr(sweep_ops, operation)(workdir, target, resume=True)
    elif now == before:
        sweep_ops.OPERATIONS[operation](workdir, target)


@pytest.fixture
def queries(crash_workdir: Path) -> np.ndarray:
    return np.load(crash_workdir / "vectors.npy")[[3, 77, 140]]


def sweep_points(sweeper: Sweeper, operation: str, workdir: Path, before: Path, place: Path) -> int:
    """How many fsyncs and renames an uninterrupted run makes, from a copy of ``before`` at place/count."""
    (result,) = sweeper.runs(operation, workdir, [(copy(before, place / "count" / "index"), 0)])
    assert os.waitstatus_to_exitcode(result["status"]) == 0, result["output"]
    return result["calls"]


def kill_runs(sweeper: Sweeper, operation: str, workdir: Path, before: Path, place: Path, points: int) -> Iterator[tuple[Path, int]]:
    """One run killed at each point, each on its own copy of ``before``; yields each target as soon as
    its run died of its kill."""
    runs = [(copy(before, place / f"kill-{kill_at}" / "index"), kill_at) for kill_at in range(1, points + 1)]
    for result in sweeper.runs(operation, workdir, runs):
        killed(result, points)
        yield Path(result["target"]), result["kill_at"]


@pytest.mark.parametrize("operation", ["build", "overwrite", "add", "delete", "compact", "tune"])
def test_a_kill_at_any_fsync_or_rename_leaves_the_old_or_the_new_index(tmp_path, crash_workdir, queries, sweeper, operation):
    reference = tmp_path / "reference" / "index"
    reference.parent.mkdir()
    prepare(operation, crash_workdir, reference)
    before = state(reference, queries)
    sweep_ops.OPERATIONS[operation](crash_workdir, reference)
    after = state(reference, queries)
    assert before != after
    prepared = tmp_path / "before" / "index"
    prepared.parent.mkdir()
    prepare(operation, crash_workdir, prepared)
    points = sweep_points(sweeper, operation, crash_workdir, prepared, tmp_path)
    assert points >= 3, "the operation makes its changes durable"
    outcomes = {"before": 0, "after": 0}
    for target, kill_at in kill_runs(sweeper, operation, crash_workdir, prepared, tmp_path, points):
        now = state(target, queries)
        assert now in (before, after), f"killed at point {kill_at} of {points}: a version that is neither the old nor the new"
        outcomes["before" if now == before else "after"] += 1
        recover(operation, crash_workdir, target, before, now)
        assert state(target, queries) == after, f"killed at point {kill_at}: the recovery did not reach the new version"
        assert not list(target.parent.glob(".index.old-*")), "a retired index left behind"
        shutil.rmtree(target.parent)
    # A fresh build's last step is the rename into place, so no kill comes after it; every other
    # command still flushes the folder after its commit point.
    assert outcomes["before"] >= 1 and (outcomes["after"] >= 1 or operation == "build"), outcomes
    assert sum(outcomes.values()) == points, "a kill point left unchecked"


def collection_state(workdir: Path, target: Path) -> Any:
    """None (no collection), "incomplete", or the sorted ids of a complete collection."""
    from funnel.backends.qdrant import connect, read_layout

    client = connect(sweep_ops.qdrant_location(workdir, target))
    try:
        if not client.collection_exists(sweep_ops.COLLECTION):
            return None
        layout = read_layout(client, sweep_ops.COLLECTION, "sweep")
        if not layout.complete:
            return "incomplete"
        points, ids, offset = [], [], None
        while True:
            points, offset = client.scroll(sweep_ops.COLLECTION, limit=256, offset=offset, with_payload=True)
            ids += [point.payload["id"] for point in points]
            if offset is None:
                return sorted(ids)
    finally:
        client.close()


def test_a_kill_at_any_fsync_or_rename_of_an_export_leaves_no_wrong_collection(tmp_path, crash_workdir, sweeper):
    pytest.importorskip("qdrant_client")
    prepared = tmp_path / "before" / "index"
    prepared.parent.mkdir()
    prepare("export", crash_workdir, prepared)
    points = sweep_points(sweeper, "export", crash_workdir, prepared, tmp_path)
    live = sorted(Index.load(tmp_path / "count" / "index").live_ids())
    assert collection_state(crash_workdir, tmp_path / "count" / "index") == live
    assert points >= 7, "a kill before each request that writes to Qdrant"
    checked = 0
    for target, kill_at in kill_runs(sweeper, "export", crash_workdir, prepared, tmp_path, points):
        now = collection_state(crash_workdir, target)
        assert now in (None, "incomplete", live), f"killed at point {kill_at} of {points}: a collection with other documents"
        if now != live:
            sweep_ops.export(crash_workdir, target, resume=now == "incomplete")
        assert collection_state(crash_workdir, target) == live
        shutil.rmtree(target.parent)
        checked += 1
    assert checked == points, "a kill point left unchecked"


def test_an_export_resumed_after_the_index_changed_is_refused(tmp_path, crash_workdir, sweeper):
    """A delete between the interruption and --resume would leave a collection that serves the
    deleted ids and lacks live ones, marked complete: refused, and --overwrite exports it right."""
    pytest.importorskip("qdrant_client")
    from funnel.errors import InputError

    target = tmp_path / "index"
    sweep_ops.build(crash_workdir, target)
    (result,) = sweeper.runs("export", crash_workdir, [(target, 4)])  # killed before the third upload
    killed(result, 4)
    assert collection_state(crash_workdir, target) == "incomplete"
    sweep_ops.delete(crash_workdir, target)
    with pytest.raises(InputError, match=r"started from version 0 of the index, which is now version 1 .*--overwrite"):
        sweep_ops.export(crash_workdir, target, resume=True)
    assert collection_state(crash_workdir, target) == "incomplete", "the refused resume changed nothing"
    from funnel.backends.qdrant import ExportOptions, connect, export_index

    client = connect(sweep_ops.qdrant_location(crash_workdir, target))
    try:
        export_index(Index.load(target), client, ExportOptions(sweep_ops.COLLECTION, batch_size=32, overwrite=True))
    finally:
        client.close()
    assert collection_state(crash_workdir, target) == sorted(Index.load(target).live_ids())
