"""What every benchmark shares: where things are, the command that ran, the machine record.

Paths default to places relative to the repository (``../shared/data`` beside it for datasets,
``benchmarks/results`` for results) or to the user's cache, never to one machine's absolute paths;
and paths written into a result are made relative (:func:`shown`), so result files hold no
machine paths either.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = Path(os.environ["FUNNEL_DATA"]) if "FUNNEL_DATA" in os.environ else REPO.parent / "shared" / "data"
"""The shared BEIR datasets: ``$FUNNEL_DATA``, else ``../shared/data`` beside the repository."""
CACHE = Path(os.environ.get("FUNNEL_CACHE", Path.home() / ".cache" / "funnel"))
"""Cached embeddings, vectors and indexes: ``$FUNNEL_CACHE``, else ``~/.cache/funnel``."""
PACKAGE_LISTS = Path(os.environ.get("FUNNEL_PACKAGE_LISTS", REPO.parent / ".library" / "env" / "packages"))
"""The tool library's package lists (real short texts): ``$FUNNEL_PACKAGE_LISTS``, else ``../.library/env/packages``."""


def command() -> str:
    """The command line that is running, as it is typed from the repository root:
    ``python -m benchmarks.<name> ARGS``."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    program = f"python -m {spec.name}" if spec is not None else "python " + shown(sys.argv[0])
    return " ".join([program, *map(shlex.quote, (shown(arg) for arg in sys.argv[1:]))]).strip()


def shown(path: str | os.PathLike[str] | None) -> str:
    """``path`` as a result file records it: relative to the repository (``../shared/data/…``,
    ``benchmarks/results/…``), ``~/…`` under the home folder, ``$TMPDIR/…`` under the temp folder, else unchanged (a relative path or
    a word that is not a path stays as given)."""
    if path is None:
        return ""
    text = os.fspath(path)
    if not os.path.isabs(text):
        return text
    resolved = Path(text).resolve()
    try:
        return str(resolved.relative_to(REPO))
    except ValueError:
        pass
    if resolved.is_relative_to(REPO.parent):
        return os.path.relpath(resolved, REPO)
    home, temp = Path.home(), Path(tempfile.gettempdir()).resolve()
    if resolved.is_relative_to(home):
        return "~/" + str(resolved.relative_to(home))
    if resolved.is_relative_to(temp):
        return "$TMPDIR/" + str(resolved.relative_to(temp))
    return text


def machine(**extra: Any) -> dict[str, Any]:
    """funnel's machine record (machine, package versions, git commit) with the command line and
    the load average; ``extra`` adds fields (threads, RAM)."""
    from funnel.evaluation.machine import machine_record

    return {**machine_record(command()), "load_average": list(os.getloadavg()), **extra}


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as indented JSON (creating the folder); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    return path
