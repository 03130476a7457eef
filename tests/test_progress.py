"""`Retriever.build` and `add` show a progress bar as the CLI does, where a person watches: on a
terminal, not in a pipe or a log (unless asked)."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pyarrow.parquet as pq
from helpers import SAMPLE

REPO = Path(__file__).resolve().parents[1]
BUILD = "import sys; from funnel import Retriever; Retriever.build(sys.argv[1], sys.argv[2])"


def build_output(corpus: Path, target: Path, on_terminal: bool) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", BUILD, str(corpus), str(target)]
    if not on_terminal:
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stderr
    main, other = os.openpty()
    fcntl.ioctl(other, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a new pty is 0 columns wide
    try:
        process = subprocess.Popen(command, stdout=other, stderr=other, env=env)
        os.close(other)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=300) == 0, b"".join(chunks)[-2000:]
    finally:
        os.close(main)
    return b"".join(chunks).decode("utf-8", "replace")


def test_build_shows_progress_on_a_terminal_and_not_in_a_pipe(tmp_path):
    corpus = tmp_path / "debian-20.parquet"
    pq.write_table(pq.read_table(SAMPLE).slice(0, 20), corpus)
    shown = build_output(corpus, tmp_path / "on-terminal", on_terminal=True)
    assert "encoding" in shown and "20/20" in shown, shown[-2000:]
    assert "encoding" not in build_output(corpus, tmp_path / "in-pipe", on_terminal=False)
