"""The kill sweep: each writing command (index, index --overwrite, add, delete, compact, tune,
export) is killed with SIGKILL at every fsync and rename it makes, one run per point. After every
kill the index loads as exactly the version before or the version after (never a mix, never an
error, never another version), and the command's recovery (run again; --resume for a build and
an export) reaches the version after. An export leaves no collection, an incomplete one (which
a retriever refuses and --resume completes), or exactly the index's live documents."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sweep_ops

from funnel.errors import IndexFormatError
from funnel.indexes.index import Index
from funnel.stages import parse_stages, run_funnel

CHILD = Path(__file__).resolve().parent / "sweep_child.py"
REPO = Path(__file__).resolve().parents[2]
PLAN = parse_stages("64:40,full:10")

pytestmark = pytest.mark.slow


def run_child(operation: str, workdir: Path, target: Path, kill_at: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(CHILD), operation, str(workdir), str(target), str(kill_at)]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


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


def recover(operation: str, workdir: Path, target: Path, before: Any, now: Any) -> None:
    if operation in ("build", "overwrite"):
        getattr(sweep_ops, operation)(workdir, target, resume=True)
    elif now == before:
        sweep_ops.OPERATIONS[operation](workdir, target)


@pytest.fixture
def queries(crash_workdir: Path) -> np.ndarray:
    return np.load(crash_workdir / "vectors.npy")[[3, 77, 140]]


def sweep_points(operation: str, workdir: Path, place: Path) -> int:
    target = place / "count" / "index"
    target.parent.mkdir(parents=True)
    prepare(operation, workdir, target)
    result = run_child(operation, workdir, target, 0)
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stdout.split()[-1])


@pytest.mark.parametrize("operation", ["build", "overwrite", "add", "delete", "compact", "tune"])
def test_a_kill_at_any_fsync_or_rename_leaves_the_old_or_the_new_index(tmp_path, crash_workdir, queries, operation):
    reference = tmp_path / "reference" / "index"
    reference.parent.mkdir()
    prepare(operation, crash_workdir, reference)
    before = state(reference, queries)
    sweep_ops.OPERATIONS[operation](crash_workdir, reference)
    after = state(reference, queries)
    assert before != after
    points = sweep_points(operation, crash_workdir, tmp_path)
    assert points >= 3, "the operation makes its changes durable"
    outcomes = {"before": 0, "after": 0}
    for kill_at in range(1, points + 1):
        target = tmp_path / f"kill-{kill_at}" / "index"
        target.parent.mkdir()
        prepare(operation, crash_workdir, target)
        result = run_child(operation, crash_workdir, target, kill_at)
        assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
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


def test_a_kill_at_any_fsync_or_rename_of_an_export_leaves_no_wrong_collection(tmp_path, crash_workdir):
    pytest.importorskip("qdrant_client")
    points = sweep_points("export", crash_workdir, tmp_path)
    live = sorted(Index.load(tmp_path / "count" / "index").live_ids())
    assert collection_state(crash_workdir, tmp_path / "count" / "index") == live
    assert points >= 7, "a kill before each request that writes to Qdrant"
    for kill_at in range(1, points + 1):
        target = tmp_path / f"kill-{kill_at}" / "index"
        target.parent.mkdir()
        prepare("export", crash_workdir, target)
        result = run_child("export", crash_workdir, target, kill_at)
        assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
        now = collection_state(crash_workdir, target)
        assert now in (None, "incomplete", live), f"killed at point {kill_at} of {points}: a collection with other documents"
        if now != live:
            sweep_ops.export(crash_workdir, target, resume=now == "incomplete")
        assert collection_state(crash_workdir, target) == live
        shutil.rmtree(target.parent)


def test_an_export_resumed_after_the_index_changed_is_refused(tmp_path, crash_workdir):
    """A delete between the interruption and --resume would leave a collection that serves the
    deleted ids and lacks live ones, marked complete: refused, and --overwrite exports it right."""
    pytest.importorskip("qdrant_client")
    from funnel.errors import InputError

    target = tmp_path / "index"
    sweep_ops.build(crash_workdir, target)
    result = run_child("export", crash_workdir, target, 4)  # killed before the third upload
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
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
