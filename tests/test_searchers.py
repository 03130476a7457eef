"""One suite for every retriever: the local Retriever, QdrantRetriever over the index exported to
Qdrant (qdrant-client's embedded mode) and RemoteRetriever against a real server on 127.0.0.1.
The same plan gives the same hits, the same default k and the same errors on each; and a plan
written once is parsed once and checked once against the index view, whichever door it enters by."""

from __future__ import annotations

import pytest
from serving import running
from typer.testing import CliRunner

from funnel import Searcher
from funnel.errors import InputError
from funnel.indexes.index import Index
from funnel.remote import RemoteRetriever
from funnel.retriever import Retriever
from funnel.search import plan as plan_module
from funnel.search import run as run_module
from funnel.search.plan import Plan
from funnel.serve import ServeLimits, create_app

QUERIES = ["play a puzzle game over the network", "read e-mail in a terminal", "a library to parse XML documents"]
KINDS = ["local", "qdrant", "remote"]


@pytest.fixture(scope="module")
def local(sample_index, encoder) -> Retriever:
    return Retriever(Index.load(sample_index), encoder)


@pytest.fixture(scope="module")
def qdrant(sample_index, encoder):
    pytest.importorskip("qdrant_client")
    from funnel.backends.qdrant import ExportOptions, connect, export_index
    from funnel.backends.qdrant_retriever import QdrantIndex, QdrantRetriever

    client = connect(":memory:")
    export_index(Index.load(sample_index), client, ExportOptions("debian", rescore_dims=(128,)), location=":memory:")
    return QdrantRetriever(QdrantIndex(client, "debian", ":memory:"), encoder)


@pytest.fixture(scope="module")
def remote(local):
    with running(create_app({"debian-300": local}, ServeLimits(workers=2))) as url:
        client = RemoteRetriever(url, timeout=60)
        yield client
        client.close()


@pytest.fixture(params=KINDS)
def searcher(request) -> Searcher:
    return request.getfixturevalue(request.param)


def test_every_retriever_is_a_searcher(searcher):
    assert isinstance(searcher, Searcher)


@pytest.mark.parametrize("stages", ["64:100,full:10", "64:30,128:12,full:5", "full:10"])
def test_the_same_plan_gives_the_same_hits(searcher, local, stages):
    expected = local.search_batch(QUERIES, stages=stages)
    found = searcher.search_batch(QUERIES, stages=stages)
    assert [[hit.id for hit in hits] for hits in found] == [[hit.id for hit in hits] for hits in expected]
    for hits, wanted in zip(found, expected):
        # float16 precision: a compiled plan scores with a copy of the rows rounded in the model's basis
        assert [hit.score for hit in hits] == pytest.approx([hit.score for hit in wanted], abs=2e-4)
        assert [hit.rank for hit in hits] == list(range(1, len(hits) + 1))
        assert [(hit.text, hit.title) for hit in hits] == [(hit.text, hit.title) for hit in wanted]


def test_bm25_candidates_run_locally_and_remotely_and_qdrant_refuses_them(local, remote, qdrant):
    """A plan with BM25 candidates: the server (over 127.0.0.1) runs it on the request's texts
    and answers with the local hits; a Qdrant collection, which keeps no BM25 index, refuses it."""
    plan = "64:5+bm25:10,full:5"
    expected = local.search_batch(["TclXML event-based parsing"], stages=plan)
    assert expected[0][0].id == "tclxml-dev"
    found = remote.search_batch(["TclXML event-based parsing"], stages=plan)
    assert [[hit.id for hit in hits] for hits in found] == [[hit.id for hit in hits] for hits in expected]
    with pytest.raises(InputError, match="keeps no lexical index"):
        qdrant.search("TclXML event-based parsing", stages=plan)


def test_k_defaults_to_what_the_last_stage_keeps_else_10(searcher):
    assert len(searcher.search(QUERIES[0], stages="64:40,full:7")) == 7
    assert len(searcher.search(QUERIES[0])) == 10
    assert len(searcher.search(QUERIES[0], k=3, stages="64:40,full:7")) == 3


def test_the_same_errors(searcher):
    assert searcher.search_batch([]) == []
    with pytest.raises(InputError, match="takes a list of queries"):
        searcher.search_batch("one string")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="a funnel only narrows"):
        searcher.search(QUERIES[0], stages="64:10,full:20")
    with pytest.raises(InputError, match="k=12 but the last stage keeps only 10"):
        searcher.search(QUERIES[0], k=12, stages="64:40,full:10")
    with pytest.raises(InputError, match="is not DIM:CANDIDATES"):
        searcher.search(QUERIES[0], stages="64-40")


def test_info_says_what_the_store_holds(searcher, local):
    info = searcher.info()
    assert info["documents"] == local.index.count == 300
    assert info["dim"] == 384
    assert [s["dim"] for s in info["shortlists"]] == [64]
    assert info["model"]


@pytest.fixture()
def counted(monkeypatch):
    """Counts of plan parses and of plan checks against an index view, from the real functions."""
    counts = {"parse": 0, "check": 0}
    parse, check = Plan.parse.__func__, plan_module.check_plan  # type: ignore[attr-defined]

    def counting_parse(cls, text):
        counts["parse"] += 1
        return parse(cls, text)

    def counting_check(*args):
        counts["check"] += 1
        return check(*args)

    monkeypatch.setattr(Plan, "parse", classmethod(counting_parse))
    monkeypatch.setattr(run_module, "check_plan", counting_check)
    return counts


def test_the_cli_parses_a_plan_once_and_checks_it_once(counted, sample_index):
    from funnel.cli import app

    result = CliRunner().invoke(app, ["search", str(sample_index), "chess engine", "--stages", "64:45,full:6", "--json"])
    assert result.exit_code == 0, result.output
    assert counted == {"parse": 1, "check": 1}


def test_the_api_and_the_server_parse_a_plan_once(counted, local, remote):
    local.search_batch(QUERIES, stages="64:41,full:9")
    assert counted == {"parse": 1, "check": 1}
    remote.search_batch(QUERIES, stages="64:43,full:8")  # the server, in this process, parses the body's plan once
    assert counted == {"parse": 2, "check": 2}
    local.search_batch(QUERIES, stages=Plan.parse("64:41,full:9"))  # a plan this view has checked already
    assert counted == {"parse": 3, "check": 2}
