"""The README's serving and RAG snippets run as written, against the quick start's index."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def snippet(name: str) -> str:
    """The python block that follows ``<!-- snippet: NAME -->`` in the README."""
    found = re.search(rf"<!-- snippet: {name} -->\s*```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert found, f"README has no snippet {name!r}"
    return found.group(1)


@pytest.fixture()
def quick_start(tmp_path, sample_index, monkeypatch):
    """A working folder holding indexes/debian-300, as after the README's quick start."""
    (tmp_path / "indexes").mkdir()
    (tmp_path / "indexes" / "debian-300").symlink_to(sample_index, target_is_directory=True)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    "name, question, expected",
    [
        ("langchain", "Which package is a networked puzzle game?", "netris"),
        ("llamaindex", "Which package reads e-mail in a terminal?", None),
    ],
)
def test_rag_snippet_retrieves_and_builds_the_prompt(quick_start, local, capsys, name, question, expected):
    exec(compile(snippet(name), f"README:{name}", "exec"), {})  # noqa: S102  (running the README is the test)
    prompt = capsys.readouterr().out
    assert prompt.startswith("Answer from these package descriptions:") and prompt.rstrip().endswith(f"Question: {question}")
    hits = local.search(question, k=3)
    assert all(f"[{hit.id}] {hit.text}" in prompt for hit in hits)
    assert expected is None or hits[0].id == expected


def test_remote_snippet(remote, local):
    scope: dict = {}
    exec(compile(snippet("remote").replace("http://127.0.0.1:8000", remote.url), "README:remote", "exec"), scope)  # noqa: S102
    assert scope["hits"] == local.search("play a puzzle game over the network", k=3)
