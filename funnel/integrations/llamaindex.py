"""A LlamaIndex retriever over funnel: ``FunnelLlamaIndexRetriever(Retriever.load(...), k=4)``.

Each hit becomes a ``NodeWithScore`` around a ``TextNode`` (``id_`` = the hit's id, ``text`` = its
text, metadata = ``id``, ``score``, ``rank``, ``title`` and the row's own metadata columns).
"""

from __future__ import annotations

import asyncio
from typing import Any

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from funnel.integrations import Searcher, hit_metadata


class FunnelLlamaIndexRetriever(BaseRetriever):
    """LlamaIndex ``BaseRetriever`` that searches a funnel ``Retriever`` or ``RemoteRetriever``.

    Args:
        retriever: anything with ``search(query, k, stages)`` returning funnel ``Hit``s.
        k: nodes per query.
        stages: a funnel plan such as ``"64:200,full:10"`` [default: the index's plan].
        **kwargs: passed to LlamaIndex's ``BaseRetriever`` (``callback_manager``, ``verbose``…).

    Example:
        >>> nodes = FunnelLlamaIndexRetriever(Retriever.load("indexes/docs"), k=4).retrieve("a query")
    """

    def __init__(self, retriever: Searcher, k: int = 10, stages: str | None = None, **kwargs: Any) -> None:
        self.retriever = retriever
        self.k = k
        self.stages = stages
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.retriever.search(query_bundle.query_str, k=self.k, stages=self.stages)
        return [NodeWithScore(node=TextNode(id_=hit.id, text=hit.text, metadata=hit_metadata(hit)), score=hit.score) for hit in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        # Searching is blocking (torch, faiss or a socket): a worker thread keeps the event loop free.
        return await asyncio.to_thread(self._retrieve, query_bundle)
