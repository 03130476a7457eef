"""A build killed with SIGKILL at several points leaves nothing that loads, and --resume finishes
it into the same bytes as a build that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import crash_data
import pytest
from index_helpers import folder_files

from funnel.errors import IndexFormatError, InputError
from funnel.indexes.builder import partial_path, write_index
from funnel.indexes.index import Index

CHILD = Path(__file__).resolve().parent / "crash_child.py"
REPO = Path(__file__).resolve().parents[2]


def run_child(workdir: Path, target: Path, point: str, number: int, resume: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = [sys.executable, str(CHILD), str(workdir), str(target), point, str(number)] + (["--resume"] if resume else [])
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def assert_killed(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]


def resume_in_process(workdir: Path, target: Path) -> Path:
    return write_index(crash_data.batches(workdir), target, model="cranfield-vectors", dim=384, config=crash_data.config(), resume=True)


# 150 rows in batches of 16: 10 batches. Each point dies at the given call of the patched step.
POINTS = [
    ("before-checkpoint", 1),  # the first batch written, nothing checkpointed: no segment finished
    ("before-checkpoint", 6),  # mid-build, the 6th batch written but not recorded
    ("mid-vectors", 4),  # half of a batch's vectors on disk
    ("mid-documents", 7),  # a batch's documents on disk, its vectors not
    ("finishing", 2),  # all rows written; documents.arrow and one shortlist written, not the other
    ("before-manifest", 1),  # every file written, no manifest yet
    ("before-swap", 1),  # the manifest written in the partial folder, not renamed into place
]


@pytest.mark.slow
@pytest.mark.parametrize("point,number", POINTS, ids=[f"{p}-{n}" for p, n in POINTS])
def test_killed_build_resumes_to_the_uninterrupted_index(tmp_path, crash_workdir, reference_build, point, number):
    target = tmp_path / "index"
    assert_killed(run_child(crash_workdir, target, point, number))
    assert not target.exists()
    with pytest.raises(IndexFormatError, match="does not exist"):
        Index.load(target)
    assert partial_path(target).exists()
    with pytest.raises(
        InputError, match=r"an interrupted build exists at .*\.index\.partial: pass --resume to continue it or --overwrite to start over"
    ):
        write_index(crash_data.batches(crash_workdir), target, model="cranfield-vectors", dim=384, config=crash_data.config())
    resume_in_process(crash_workdir, target)
    assert folder_files(target) == folder_files(reference_build)
    assert not partial_path(target).exists()
    assert Index.load(target).count == 150


@pytest.mark.slow
def test_killed_twice_then_resumed(tmp_path, crash_workdir, reference_build):
    target = tmp_path / "index"
    assert_killed(run_child(crash_workdir, target, "before-checkpoint", 3))
    # The resumed run starts at batch 3 and dies at its own 4th batch (batch 6 overall).
    assert_killed(run_child(crash_workdir, target, "mid-vectors", 4, resume=True))
    result = run_child(crash_workdir, target, "none", 0, resume=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert folder_files(target) == folder_files(reference_build)


def test_resume_with_other_settings_is_refused(tmp_path, crash_workdir):
    target = tmp_path / "index"
    assert_killed(run_child(crash_workdir, target, "before-checkpoint", 3))
    with pytest.raises(InputError, match="started with other settings or another corpus: pass --overwrite to start over"):
        write_index(crash_data.batches(crash_workdir), target, model="another-model", dim=384, config=crash_data.config(), resume=True)
    assert partial_path(target).exists(), "a refused resume must keep the interrupted build"
    write_index(crash_data.batches(crash_workdir), target, model="another-model", dim=384, config=crash_data.config(), overwrite=True)
    assert Index.load(target).manifest.model == "another-model"
    assert not partial_path(target).exists()


def test_resume_without_an_interrupted_build_builds_from_scratch(tmp_path, crash_workdir, reference_build):
    target = resume_in_process(crash_workdir, tmp_path / "index")
    assert folder_files(target) == folder_files(reference_build)


def test_bad_input_leaves_no_partial(tmp_path, crash_workdir):
    def bad():
        yield from crash_data.batches(crash_workdir)
        raise InputError("row 151 is bad")

    target = tmp_path / "index"
    with pytest.raises(InputError, match="row 151"):
        write_index(bad(), target, model="m", dim=384, config=crash_data.config())
    assert not target.exists() and not partial_path(target).exists()


@pytest.mark.slow
def test_cli_build_killed_while_finishing_resumes_without_encoding_again(tmp_path, cranfield_docs, encoder):
    """The CLI path with a real model: killed while writing shortlists, then `funnel index --resume`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from funnel.corpus import open_corpus
    from funnel.indexes.builder import IndexConfig, build_index
    from funnel.indexes.shortlist import make_spec

    corpus = tmp_path / "cranfield-40.parquet"
    rows = cranfield_docs[:40]
    pq.write_table(
        pa.table({"id": [r["_id"] for r in rows], "title": [r["title"] for r in rows], "text": [r["text"] for r in rows]}), corpus
    )
    reference = build_index(open_corpus(corpus), encoder, tmp_path / "reference", IndexConfig(shortlists=(make_spec(64), make_spec(128))))
    target = tmp_path / "cli-index"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "HF_HUB_OFFLINE": "1"}
    base = ["index", str(corpus), "-o", str(target), "-d", "64", "-d", "128", "--quiet"]
    kill = (
        "import os, signal, sys; from funnel.indexes import shortlist; "
        "shortlist.build_file = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL); "
        "from funnel.cli import main; sys.argv = ['funnel'] + sys.argv[1:]; main()"
    )
    result = subprocess.run([sys.executable, "-c", kill, *base], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert not target.exists()
    refused = subprocess.run([sys.executable, "-m", "funnel", *base], env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "pass --resume to continue it or --overwrite to start over" in refused.stderr
    resumed = subprocess.run(
        [sys.executable, "-m", "funnel", *base, "--resume", "--json"], env=env, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert '"documents": 40' in resumed.stdout
    mine, expected = Index.load(target), Index.load(reference)
    assert mine.segments[0].documents.equals(expected.segments[0].documents)
    np.testing.assert_allclose(mine.all_vectors(), expected.all_vectors(), atol=2e-3)
    assert mine.manifest.shortlists == expected.manifest.shortlists
