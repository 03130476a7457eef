"""The LangChain retriever with the real langchain-core: Documents carrying funnel's top-k."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from funnel.integrations.langchain import FunnelLangChainRetriever


def test_documents_carry_the_same_top_k_as_retriever(searcher, local, queries):
    retriever = FunnelLangChainRetriever(retriever=searcher, k=5)
    assert isinstance(retriever, BaseRetriever)
    for query in queries:
        documents = retriever.invoke(query)
        hits = local.search(query, k=5)
        assert all(isinstance(doc, Document) for doc in documents)
        assert [doc.id for doc in documents] == [hit.id for hit in hits]
        assert [doc.page_content for doc in documents] == [hit.text for hit in hits]
        assert [doc.metadata for doc in documents] == [
            {"source": "debian-12-bookworm", "id": hit.id, "score": hit.score, "rank": hit.rank, "title": None} for hit in hits
        ]


def test_async_and_batch_give_what_sync_gives(searcher, queries):
    retriever = FunnelLangChainRetriever(retriever=searcher, k=3, stages="64:100,full:3")
    sync = [retriever.invoke(query) for query in queries]

    async def ask_all():
        return await asyncio.gather(*(retriever.ainvoke(query) for query in queries))

    # Concurrent calls may share one encoder batch on a server: same documents, scores to float32 rounding.
    for answers in (asyncio.run(ask_all()), retriever.batch(queries)):
        assert [[doc.id for doc in docs] for docs in answers] == [[doc.id for doc in docs] for docs in sync]
        assert [[doc.page_content for doc in docs] for docs in answers] == [[doc.page_content for doc in docs] for docs in sync]
        for docs, wanted in zip(answers, sync):
            assert [doc.metadata["score"] for doc in docs] == pytest.approx([doc.metadata["score"] for doc in wanted], abs=1e-5)
