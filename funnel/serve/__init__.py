"""Serve indexes over HTTP (``funnel serve``): a FastAPI app on uvicorn, in the ``[serve]`` extra.

``create_app`` builds the app from loaded retrievers; ``serve`` runs it until SIGTERM. The
settings import without FastAPI; the app and runner load it on first use.
"""

from __future__ import annotations

from typing import Any

from funnel.serve.settings import ServeLimits, ServeSettings, api_key_from_env

_LAZY = {
    "bind_listener": "funnel.serve.runner",
    "create_app": "funnel.serve.app",
    "load_retrievers": "funnel.serve.runner",
    "make_server": "funnel.serve.runner",
    "name_indexes": "funnel.serve.runner",
    "serve": "funnel.serve.runner",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'funnel.serve' has no attribute {name!r}")


__all__ = [
    "ServeLimits",
    "ServeSettings",
    "api_key_from_env",
    "bind_listener",
    "create_app",
    "load_retrievers",
    "make_server",
    "name_indexes",
    "serve",
]
