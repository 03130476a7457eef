"""Training data too small for one step is refused with the reason, and nothing is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from funnel.errors import InputError
from funnel.training import TrainConfig, train

REPO = Path(__file__).resolve().parents[2]
TRAIN_DATA = REPO / "tests" / "data" / "train"


def pairs_file(path: Path, count: int, repeat: bool = False) -> Path:
    with (TRAIN_DATA / "debian-pairs.jsonl").open() as source:
        lines = [line for _, line in zip(range(count), source)]
    path.write_text("".join(lines[:1] * count if repeat else lines))
    return path


def test_fewer_pairs_than_a_batch_are_refused_before_the_model_loads(tmp_path):
    data = pairs_file(tmp_path / "ten.jsonl", 10)
    # A model folder that does not exist: reaching the model load would raise a ModelError instead.
    config = TrainConfig(data=(data,), output=tmp_path / "model", model=str(tmp_path / "no-such-model"), batch_size=32, show_progress=False)
    with pytest.raises(
        InputError, match=r"10 training pairs are fewer than one batch of 32, so training would take 0 steps: give at least 32"
    ):
        train(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ten.jsonl"]


def test_the_cli_says_why_in_one_line_and_writes_nothing(tmp_path):
    data = pairs_file(tmp_path / "ten.jsonl", 10)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "funnel", "train", str(data), "-o", str(tmp_path / "model"), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "10 training pairs are fewer than one batch of 32" in result.stderr and "--batch-size" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ten.jsonl"]


def test_enough_rows_that_make_no_batch_save_no_untrained_model(tmp_path, tiny_model_path):
    """40 copies of one pair: a batch takes no repeated text, so no batch of 16 can be filled."""
    data = pairs_file(tmp_path / "same.jsonl", 40, repeat=True)
    assert len({json.dumps(json.loads(line)) for line in data.read_text().splitlines()}) == 1
    config = TrainConfig(data=(data,), output=tmp_path / "model", model=str(tiny_model_path), batch_size=16, show_progress=False)
    with pytest.raises(InputError, match=r"training ran 0 steps on 40 examples .*: nothing saved"):
        train(config)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.jsonl"]
