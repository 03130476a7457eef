"""RemoteRetriever against a real server on 127.0.0.1: the same Hits as the in-process Retriever."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from serving import free_port, running

from funnel import Retriever, Stage
from funnel.errors import InputError
from funnel.indexes.index import Index
from funnel.remote import RemoteError, RemoteRetriever
from funnel.serve import ServeLimits, create_app

QUERIES = ["play a puzzle game over the network", "read e-mail in a terminal", "a library to parse XML documents"]


@pytest.fixture(scope="module")
def local(sample_index, encoder) -> Retriever:
    return Retriever(Index.load(sample_index), encoder)


@pytest.fixture(scope="module")
def url(local):
    with running(create_app({"debian-300": local}, ServeLimits(workers=2), api_key="k3y")) as base:
        yield base


@pytest.fixture()
def remote(url):
    remote = RemoteRetriever(url, api_key="k3y", timeout=60)
    yield remote
    remote.close()


def test_remote_hits_equal_local_hits(remote, local):
    for query in QUERIES:
        assert remote.search(query, k=7) == local.search(query, k=7)
    plan = [Stage(64, 100), Stage(None, 5)]
    assert remote.search_batch(QUERIES, k=5, stages=plan) == local.search_batch(QUERIES, k=5, stages=plan)
    assert remote.search_batch(QUERIES, k=4, stages="64:50,full:4") == local.search_batch(QUERIES, k=4, stages="64:50,full:4")
    assert remote.search_batch([]) == []


def test_remote_is_thread_safe(remote, local):
    expected = [local.search(q, k=3) for q in QUERIES] * 4
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda q: remote.search(q, k=3), QUERIES * 4))
    # Concurrent requests may share one encoder batch on the server: the same hits, scores equal
    # to float32 rounding (padding changes the arithmetic's order, not the ranking).
    assert [[h.id for h in hits] for hits in answers] == [[h.id for h in hits] for hits in expected]
    for hits, wanted in zip(answers, expected):
        assert [h.score for h in hits] == pytest.approx([h.score for h in wanted], abs=1e-5)


def test_remote_errors_read_like_local_ones(remote, url):
    with pytest.raises(InputError, match=r"^query 1 is empty: give some text to search for \(HTTP 400 from http://127\.0\.0\.1:\d+\)$"):
        remote.search("  ")
    with pytest.raises(InputError, match=r"takes a list of queries"):
        remote.search_batch("one query")
    with pytest.raises(InputError, match=r"no index named 'nope'; this server has: debian-300 \(HTTP 404"):
        RemoteRetriever(url, "nope", api_key="k3y").search("fonts")
    with pytest.raises(InputError, match=r"missing API key.*\(HTTP 401"):
        RemoteRetriever(url).search("fonts")
    assert RemoteRetriever(url).health()["status"] == "ok"
    assert remote.info()["documents"] == 300


def test_unreachable_server_and_bad_urls():
    with pytest.raises(RemoteError, match=r"cannot reach the server at http://127\.0\.0\.1:\d+"):
        RemoteRetriever(f"http://127.0.0.1:{free_port()}", timeout=10).search("fonts")
    with pytest.raises(InputError, match=r"is not http://HOST:PORT"):
        RemoteRetriever("127.0.0.1:8000")
