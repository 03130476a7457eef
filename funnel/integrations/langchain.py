"""A LangChain retriever over funnel: ``FunnelLangChainRetriever(retriever=Retriever.load(...), k=4)``.

Each hit becomes a ``Document`` whose ``page_content`` is the hit's text and whose metadata holds
``id``, ``score``, ``rank``, ``title`` and the row's own metadata columns.
"""

from __future__ import annotations

import asyncio
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from funnel.integrations import hit_metadata


class FunnelLangChainRetriever(BaseRetriever):
    """LangChain ``BaseRetriever`` that searches a funnel ``Retriever`` or ``RemoteRetriever``.

    Args:
        retriever: anything with ``search(query, k, stages)`` returning funnel ``Hit``s.
        k: documents per query.
        stages: a funnel plan such as ``"64:200,full:10"`` [default: the index's plan].

    Example:
        >>> docs = FunnelLangChainRetriever(retriever=Retriever.load("indexes/docs"), k=4).invoke("a query")
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Any
    k: int = 10
    stages: str | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = self.retriever.search(query, k=self.k, stages=self.stages)
        return [Document(page_content=hit.text, metadata=hit_metadata(hit), id=hit.id) for hit in hits]

    async def _aget_relevant_documents(self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun) -> list[Document]:
        # Searching is blocking (torch, faiss or a socket): a worker thread keeps the event loop free.
        return await asyncio.to_thread(self._get_relevant_documents, query, run_manager=run_manager.get_sync())
