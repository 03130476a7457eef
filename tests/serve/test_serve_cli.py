"""`funnel serve` as a user runs it: a subprocess on a free loopback port, `funnel search --server`,
and a clean exit on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from serving import free_port

from funnel import Retriever

STARTUP_SECONDS = 180  # the model load takes ~8 s alone; generous for a busy machine


def funnel(*args, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "funnel", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def test_serve_answers_search_server_and_stops_cleanly_on_sigterm(sample_index):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FUNNEL_TEST_KEY": "t0ken"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "funnel",
            "serve",
            sample_index,
            "--port",
            str(port),
            "--api-key-env",
            "FUNNEL_TEST_KEY",
            "--log-level",
            "warning",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            assert server.poll() is None, server.communicate()[1]
            assert time.monotonic() < deadline, "funnel serve did not answer /health in time"
            try:
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)  # not up yet: poll again

        found = funnel(
            "search",
            sample_index.name,
            "play a puzzle game over the network",
            "-k",
            "5",
            "--json",
            "--server",
            url,
            "--api-key-env",
            "FUNNEL_TEST_KEY",
            env={"FUNNEL_TEST_KEY": "t0ken"},
        )
        assert found.returncode == 0, found.stderr
        expected = Retriever.load(sample_index).search("play a puzzle game over the network", k=5)
        assert [hit["id"] for hit in json.loads(found.stdout)["hits"]] == [hit.id for hit in expected]

        refused = funnel("search", sample_index.name, "fonts", "--server", url)
        assert refused.returncode == 2 and refused.stderr.strip().startswith("error: missing API key") and "Traceback" not in refused.stderr

        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=60)
        assert server.returncode == 0, stderr
        assert "Traceback" not in stderr
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--api-key-env", "FUNNEL_UNSET_KEY_FOR_TEST"],
            "error: --api-key-env FUNNEL_UNSET_KEY_FOR_TEST: the environment variable FUNNEL_UNSET_KEY_FOR_TEST is unset or empty; export the key first",
        ),
        (["--max-k", "0"], "error: max_k must be at least 1, not 0"),
    ],
)
def test_serve_refuses_bad_options_in_one_line(sample_index, args, message):
    result = funnel("serve", sample_index, "--port", "0", *args)
    assert result.returncode == 2 and result.stderr.strip() == message


def test_serve_refuses_a_missing_index(tmp_path):
    result = funnel("serve", tmp_path / "nope")
    last = result.stderr.strip().splitlines()[-1]  # after the "loading…" progress line
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert last.startswith("error: ") and "nope does not exist: build it with `funnel index" in last
