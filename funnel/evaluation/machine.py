"""The record of where and how a result was made: machine, package versions, command, git commit.

Every result file funnel writes (evaluation reports) and every benchmark result carries one, so a
figure can be traced to the code and the machine that produced it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = (
    "funnel",
    "numpy",
    "faiss-cpu",
    "faiss-gpu",
    "torch",
    "sentence-transformers",
    "transformers",
    "pyarrow",
    "pytrec-eval-terrier",
    "model2vec",
)


def machine_record(command: str | None = None) -> dict[str, Any]:
    """Python, platform, processor, cores, installed versions of :data:`PACKAGES`, the git commit
    of the checkout funnel runs from (None outside one; ``dirty`` when it has uncommitted changes)
    and, when given, the ``command`` that made the result."""
    from importlib import metadata

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    record: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "physical_cores": physical,
        "versions": versions,
        **git_commit(),
    }
    if command is not None:
        record["command"] = command
    return record


def git_commit(folder: Path | None = None) -> dict[str, Any]:
    """``{"git_commit": sha or None, "git_dirty": bool or None}`` of the checkout holding ``folder``
    (default: funnel's own source)."""
    where = folder or Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": sha, "git_dirty": bool(status.strip())}
