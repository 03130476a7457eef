"""The LlamaIndex retriever with the real llama-index-core: NodeWithScore carrying funnel's top-k."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from funnel.integrations.llamaindex import FunnelLlamaIndexRetriever


def test_nodes_carry_the_same_top_k_as_retriever(searcher, local, queries):
    retriever = FunnelLlamaIndexRetriever(searcher, k=5)
    assert isinstance(retriever, BaseRetriever)
    for query in queries:
        nodes = retriever.retrieve(query)
        hits = local.search(query, k=5)
        assert all(isinstance(node, NodeWithScore) for node in nodes)
        assert [node.node.node_id for node in nodes] == [hit.id for hit in hits]
        assert [node.score for node in nodes] == [hit.score for hit in hits]
        assert [node.node.get_content() for node in nodes] == [hit.text for hit in hits]
        assert nodes[0].node.metadata == {
            "source": "debian-12-bookworm",
            "id": hits[0].id,
            "score": hits[0].score,
            "rank": 1,
            "title": None,
        }


def test_async_retrieve_gives_what_sync_gives(searcher, queries):
    retriever = FunnelLlamaIndexRetriever(searcher, k=3, stages="64:100,full:3")
    sync = [[(n.node.node_id, n.score) for n in retriever.retrieve(QueryBundle(query))] for query in queries]

    async def ask_all():
        return await asyncio.gather(*(retriever.aretrieve(query) for query in queries))

    answers = [[(n.node.node_id, n.score) for n in nodes] for nodes in asyncio.run(ask_all())]
    # Concurrent calls may share one encoder batch on a server: same nodes, scores to float32 rounding.
    assert [[node_id for node_id, _ in nodes] for nodes in answers] == [[node_id for node_id, _ in nodes] for nodes in sync]
    for nodes, wanted in zip(answers, sync):
        assert [score for _, score in nodes] == pytest.approx([score for _, score in wanted], abs=1e-5)
