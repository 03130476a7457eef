"""Run an ASGI app on 127.0.0.1 in a background thread for a test, over real HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

STARTUP_SECONDS = 60


@contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` on a free loopback port; yields its base URL and stops the server after."""
    with running_server(app) as (url, _):
        yield url


@contextmanager
def running_server(app, **config) -> Iterator[tuple[str, uvicorn.Server]]:
    """:func:`running`, also yielding the uvicorn server (to stop it as SIGTERM would)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", **config))
    thread = threading.Thread(target=server.run, name="test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)  # waiting for readiness, not timing anything
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "the test server did not stop"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
