"""Moving each served index to the newest version its writers made, without ever failing a request.

A new version that cannot be opened (a manifest another user's umask made private, a directory
where the manifest should be, a damaged file) leaves the version already open serving: its files
stay mapped, so its answers stay whole. The failure is logged once per version on disk, not once
per request, and :meth:`VersionFollower.problems` says which indexes lag, for ``/health``.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from funnel.retriever import Retriever

logger = logging.getLogger("funnel.serve")


class VersionFollower:
    """``follower(name, retriever)`` before each search: reload if a writer changed the index."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._problems: dict[str, str] = {}

    def __call__(self, name: str, retriever: Retriever) -> None:
        try:
            reloaded = retriever.reload_if_changed()
        except Exception as exc:  # noqa: BLE001  (whatever the new version's fault, the open one still answers)
            self._failed(name, retriever, exc)
            return
        if reloaded:
            with self._lock:
                recovered = self._problems.pop(name, None) is not None
            logger.info("index %s: now at version %d%s", name, retriever.index.version, " (recovered)" if recovered else "")

    def problems(self) -> dict[str, str]:
        """Served name → why it still answers from an older version (no paths: clients read it)."""
        with self._lock:
            return dict(self._problems)

    def _failed(self, name: str, retriever: Retriever, exc: Exception) -> None:
        serving = retriever.index.version
        # The retriever skips a version it failed on until the folder changes again, so this
        # runs once per unreadable version on disk, not once per request.
        logger.warning("index %s: could not load its new version (%s); still serving version %d", name, exc, serving)
        with self._lock:
            self._problems[name] = (
                f"a newer version on disk could not be loaded ({type(exc).__name__}); still serving version {serving}; "
                "the server's log says why"
            )
