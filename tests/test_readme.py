"""The README's Python section, run exactly as written, in a folder laid out like a checkout."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def readme_block(heading: str, number: int = 0) -> str:
    """The ``number``-th python code block under the README's ``## heading``."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[number]


@pytest.mark.slow
def test_python_section_builds_searches_adds_deletes_and_compacts(tmp_path, monkeypatch):
    (tmp_path / "examples").mkdir()
    shutil.copy(REPO / "examples" / "debian-300.parquet", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_block("Python"), "README.md", "exec"), scope)
    retriever, hits = scope["retriever"], scope["hits"]
    assert len(hits) == 3 and "[" + hits[0].id + "]" in scope["prompt"]
    ids = set(retriever.index.live_ids())
    assert "netpuzzle" in ids and hits[-1].id not in ids and len(ids) == 300
    assert len(retriever.index.segments) == 1 and retriever.index.manifest.deleted == 0  # compacted
    assert retriever.search("a puzzle game played with friends over the network", k=1)[0].id == "netpuzzle"
    exec(compile(readme_block("Python", 1), "README.md", "exec"), scope)  # the plan examples run too
    assert sorted(path.name for path in tmp_path.iterdir()) == ["examples", "indexes"]  # nothing left behind in the checkout
