"""One retriever over the sample index, in process and served on 127.0.0.1, for the framework tests."""

from __future__ import annotations

import pytest

from funnel import Retriever
from funnel.indexes.index import Index


@pytest.fixture(scope="package")
def queries() -> list[str]:
    return ["play a puzzle game over the network", "read e-mail in a terminal", "a library to parse XML documents"]


@pytest.fixture(scope="package")
def local(sample_index, encoder) -> Retriever:
    return Retriever(Index.load(sample_index), encoder)


@pytest.fixture(scope="package")
def remote(local):
    from serving import running

    from funnel.remote import RemoteRetriever
    from funnel.serve import ServeLimits, create_app

    with running(create_app({"debian-300": local}, ServeLimits(workers=2))) as url:
        remote = RemoteRetriever(url, timeout=60)
        yield remote
        remote.close()


@pytest.fixture(params=["local", "remote"])
def searcher(request):
    """Each framework retriever is tested over both kinds of funnel retriever."""
    return request.getfixturevalue(request.param)
