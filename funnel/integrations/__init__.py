"""Retrievers for RAG frameworks, each in its own optional extra:

- ``funnel.integrations.langchain.FunnelLangChainRetriever`` (``pip install 'funnel[langchain]'``)
- ``funnel.integrations.llamaindex.FunnelLlamaIndexRetriever`` (``pip install 'funnel[llamaindex]'``)

Both take a local :class:`~funnel.retriever.Retriever` or a :class:`~funnel.remote.RemoteRetriever`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from funnel.retriever import Hit
from funnel.search.plan import Stage


class Searcher(Protocol):
    """What the framework retrievers need: ``Retriever`` and ``RemoteRetriever`` both have it."""

    def search(self, query: str, k: int = 10, stages: Sequence[Stage] | str | None = None) -> list[Hit]: ...


def hit_metadata(hit: Hit) -> dict[str, Any]:
    """The row's metadata plus funnel's id, score, rank and title (these win over row columns of
    the same name)."""
    return {**hit.metadata, "id": hit.id, "score": hit.score, "rank": hit.rank, "title": hit.title}
