"""Run a server: load each index with its model once, warm it, and serve until SIGTERM or Ctrl+C."""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from funnel.errors import InputError
from funnel.serve.settings import ServeSettings

logger = logging.getLogger("funnel.serve")

if TYPE_CHECKING:
    import uvicorn

    from funnel.encoders.choose import QueryEngine
    from funnel.retriever import Retriever


def name_indexes(specs: Sequence[str]) -> dict[str, Path]:
    """``PATH`` or ``NAME=PATH`` for each index → {name: path}; a bare path is named by its folder."""
    named: dict[str, Path] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        folder = Path(path).expanduser()
        name = name.strip() or folder.resolve().name
        if not name or "/" in name:
            raise InputError(f"index {spec!r}: name it as NAME=PATH, with a NAME of letters, digits, '-' or '_'")
        if name in named:
            raise InputError(f"two indexes are named {name!r}: give one of them a name with NAME=PATH")
        named[name] = folder
    if not named:
        raise InputError("give at least one index folder to serve")
    return named


def load_retrievers(paths: dict[str, Path], model: str | None = None, query_encoder: QueryEngine = "auto") -> dict[str, Retriever]:
    """One Retriever per index; indexes built with the same model (whose tuning chose the same
    query precision) share one loaded copy of it."""
    from funnel.encoders.choose import TextEncoder, load_query_encoder, measured_precision
    from funnel.indexes.index import Index
    from funnel.retriever import Retriever

    encoders: dict[tuple[str, str], TextEncoder] = {}
    retrievers = {}
    for name, path in paths.items():
        index = Index.load(path)
        model_name = model or index.manifest.model
        precision = measured_precision(index.manifest.plan)
        if (model_name, precision) not in encoders:
            encoders[model_name, precision] = load_query_encoder(model_name, query_encoder, auto_precision=precision)
        retrievers[name] = Retriever(index, encoders[model_name, precision])
    return retrievers


def make_server(retrievers: dict[str, Retriever], settings: ServeSettings, log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for ``retrievers`` (not started): ``server.run()`` serves in this thread."""
    import uvicorn

    from funnel.serve.app import create_app

    app = create_app(
        retrievers, settings.limits, api_key=settings.api_key, show_paths=settings.show_paths, grace_seconds=settings.grace_seconds
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=settings.grace_seconds,
        lifespan="on",
    )
    return uvicorn.Server(config)


def bind_listener(settings: ServeSettings) -> socket.socket:
    """The listening socket for ``settings``, bound now: a port in use fails in a second, before
    the model loads, and no other process can take the port while it does."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart over TIME_WAIT
    try:
        listener.bind((settings.host, settings.port))
        listener.listen(2048)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise InputError(
                f"port {settings.port} on {settings.host} is in use: stop what listens there or pass --port N (0: any free port)"
            ) from None
        raise InputError(f"cannot listen on {settings.host}:{settings.port} ({exc.strerror}): pass another --host or --port") from None
    listener.set_inheritable(True)
    return listener


def listener_port(listener: socket.socket) -> int:
    return int(listener.getsockname()[1])


def serve(
    retrievers: dict[str, Retriever], settings: ServeSettings, log_level: str = "info", listener: socket.socket | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then stop taking connections, let the requests in flight
    finish within ``settings.grace_seconds`` (a request past it gets 503) and return (exit status
    0 for a requested stop). ``listener``: a socket from :func:`bind_listener` [default: bind now]."""
    listener = listener or bind_listener(settings)
    port = listener_port(listener)
    server = make_server(retrievers, settings, log_level)
    # uvicorn handles SIGTERM itself and, once shut down, raises the signal again so that the
    # previous handler runs: a handler that ignores it makes a requested stop a clean return.
    previous = signal.signal(signal.SIGTERM, _ignore)
    try:
        server.run(sockets=[listener])
    finally:
        signal.signal(signal.SIGTERM, previous)
        listener.close()
        finish_abandoned_searches()
    if not server.started:
        raise InputError(f"could not serve on {settings.host}:{port} (see the log above)")


def finish_abandoned_searches() -> None:
    """Wait for searches that the shutdown grace cut off (their clients got 503) to finish.

    A thread cannot be stopped mid-encode, and exiting while one still runs torch aborts the
    process (exit 134) instead of the clean exit a requested stop promises; a search is bounded
    by the request limits, so this wait is too. The workers are anyio's, named by anyio.
    """
    running = [thread for thread in threading.enumerate() if _is_abandoned_worker(thread)]
    if running:
        logger.info("waiting for %d search(es) cut off by the shutdown grace to finish", len(running))
    for thread in running:
        thread.join()


def _is_abandoned_worker(thread: threading.Thread) -> bool:
    """An anyio worker whose event loop has closed: it exits once its search returns. Workers of
    loops still running (another server in this process) wait for work forever, so are left."""
    loop = getattr(thread, "loop", None)
    return thread.name == "AnyIO worker thread" and thread.is_alive() and loop is not None and loop.is_closed()


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Stands in for the default SIGTERM action (exit by signal) once uvicorn has shut down."""
