"""machine_record: the machine, versions, git commit and command every result file carries."""

from __future__ import annotations

import subprocess
from pathlib import Path

from funnel.evaluation.machine import git_commit, machine_record


def test_the_record_names_the_machine_the_packages_and_the_command() -> None:
    record = machine_record("python -m benchmarks.example --flag")
    assert record["cores"] >= 1 and record["python"].count(".") == 2
    assert "numpy" in record["versions"] and record["command"] == "python -m benchmarks.example --flag"
    assert "command" not in machine_record()


def test_git_commit_of_a_checkout_and_outside_one(tmp_path: Path) -> None:
    assert git_commit(tmp_path) == {"git_commit": None, "git_dirty": None}
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "a.txt").write_text("a\n")
    subprocess.run(["git", "-C", str(tmp_path), "add", "a.txt"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a"], check=True)
    clean = git_commit(tmp_path)
    assert len(clean["git_commit"]) == 40 and clean["git_dirty"] is False
    (tmp_path / "a.txt").write_text("b\n")
    assert git_commit(tmp_path)["git_dirty"] is True
