"""Run a server: load each index with its model once, warm it, and serve until SIGTERM or Ctrl+C."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from funnel.errors import InputError
from funnel.serve.settings import ServeSettings

if TYPE_CHECKING:
    import uvicorn

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


def load_retrievers(paths: dict[str, Path], model: str | None = None) -> dict[str, Retriever]:
    """One Retriever per index; indexes built with the same model share one loaded copy of it."""
    from funnel.indexes.index import Index
    from funnel.models import Encoder
    from funnel.retriever import Retriever

    encoders: dict[str, Encoder] = {}
    retrievers = {}
    for name, path in paths.items():
        index = Index.load(path)
        model_name = model or index.manifest.model
        if model_name not in encoders:
            encoders[model_name] = Encoder.load(model_name)
        retrievers[name] = Retriever(index, encoders[model_name])
    return retrievers


def make_server(retrievers: dict[str, Retriever], settings: ServeSettings, log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for ``retrievers`` (not started): ``server.run()`` serves in this thread."""
    import uvicorn

    from funnel.serve.app import create_app

    app = create_app(retrievers, settings.limits, api_key=settings.api_key)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        lifespan="on",
    )
    return uvicorn.Server(config)


def serve(retrievers: dict[str, Retriever], settings: ServeSettings, log_level: str = "info") -> None:
    """Serve until SIGTERM or SIGINT, then stop taking connections, finish the requests in
    flight and return (exit status 0 for a requested stop)."""
    server = make_server(retrievers, settings, log_level)
    # uvicorn handles SIGTERM itself and, once shut down, raises the signal again so that the
    # previous handler runs: a handler that ignores it makes a requested stop a clean return.
    previous = signal.signal(signal.SIGTERM, _ignore)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise InputError(f"could not serve on {settings.host}:{settings.port} (see the log above; is the port in use?)")


def _ignore(signum: int, frame: FrameType | None) -> None:
    """Stands in for the default SIGTERM action (exit by signal) once uvicorn has shut down."""
