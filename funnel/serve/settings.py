"""What a server accepts and how it runs: limits on requests, the address, the key."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from funnel.errors import InputError


@dataclass(frozen=True)
class ServeLimits:
    """Bounds on one request; a request past any of them gets a 4xx saying which.

    Args:
        max_k: largest ``k`` a search may ask for.
        max_batch: most queries in one request.
        max_query_chars: longest query, in characters.
        max_body_bytes: largest request body, in bytes.
        workers: searches running at once (threads); more requests wait their turn. 0: the cores.
        max_coalesce: most queries that requests waiting together may share one search batch with
            (1: each request searched on its own).
    """

    max_k: int = 1000
    max_batch: int = 256
    max_query_chars: int = 4096
    max_body_bytes: int = 1_048_576
    workers: int = 0
    max_coalesce: int = 64

    def __post_init__(self) -> None:
        for name in ("max_k", "max_batch", "max_query_chars", "max_body_bytes", "max_coalesce"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, not {getattr(self, name)}")
        if self.workers < 0:
            raise InputError(f"workers must be 0 (one per core) or more, not {self.workers}")

    @property
    def threads(self) -> int:
        """Worker threads: ``workers``, or the cores this process may use."""
        if self.workers:
            return self.workers
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        return max(1, len(cores) if cores else (os.cpu_count() or 1))


DEFAULT_GRACE_SECONDS = 30


@dataclass(frozen=True)
class ServeSettings:
    """Where a server listens, whom it answers and how it stops.

    Args:
        api_key: a bearer key every request but /health must carry (None: no key).
        grace_seconds: on SIGTERM, how long requests in flight may run on; one still running
            then gets 503 with Retry-After.
        show_paths: put the index folder and the corpus's path in /info answers (off: only
            names, so clients learn nothing of the server's file system).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = field(default=None, repr=False)
    limits: ServeLimits = ServeLimits()
    grace_seconds: int = DEFAULT_GRACE_SECONDS
    show_paths: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InputError(f"port must be between 0 and 65535, not {self.port}")
        if self.grace_seconds < 0:
            raise InputError(f"the shutdown grace must be 0 seconds or more, not {self.grace_seconds}")
        if self.api_key is not None and not self.api_key.strip():
            raise InputError("the API key is empty: set a non-empty key")


def api_key_from_env(name: str) -> str:
    """The key held in environment variable ``name``; raises InputError when it is unset or empty."""
    key = os.environ.get(name, "")
    if not key.strip():
        raise InputError(f"--api-key-env {name}: the environment variable {name} is unset or empty; export the key first")
    return key
