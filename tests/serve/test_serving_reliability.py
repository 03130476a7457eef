"""A served index under trouble, over real HTTP on 127.0.0.1: a new version that cannot be read,
a folder removed under the server, a request past the shutdown grace, the port already taken,
and the API's own description (schema, HEAD /health, the docs page offline)."""

from __future__ import annotations

import logging
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from serving import running, running_server
from test_serve_cli import funnel

from funnel import Retriever
from funnel.indexes.index import Index
from funnel.serve import ServeLimits, create_app
from funnel.serve.runner import finish_abandoned_searches

LIMITS = ServeLimits(max_k=50, max_batch=64, max_query_chars=5_000, max_body_bytes=1_000_000, workers=1)
QUERY = {"query": "play a puzzle game over the network", "k": 5}


def test_an_unreadable_new_version_keeps_the_open_one_serving_logs_once_and_shows_in_health(tmp_path, sample_index, encoder, caplog):
    folder = Path(shutil.copytree(sample_index, tmp_path / "live"))
    live = Retriever(Index.load(folder), encoder)
    manifest = folder / "manifest.json"
    saved = manifest.read_bytes()
    with running(create_app({"live": live}, LIMITS, warm=False)) as base, httpx.Client(base_url=base, timeout=60) as c:
        before = c.post("/search", json=QUERY).json()["results"]
        # A writer's new version that cannot be read: a directory where the manifest should be.
        manifest.unlink()
        manifest.mkdir()
        with caplog.at_level(logging.WARNING, logger="funnel.serve"):
            answers = [c.post("/search", json=QUERY) for _ in range(3)]
            info = c.get("/info")
        assert [a.status_code for a in answers] == [200, 200, 200] and info.status_code == 200
        assert all(a.json()["results"] == before and a.json()["version"] == 0 for a in answers)
        warnings = [r for r in caplog.records if "could not load its new version" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
        health = c.get("/health").json()
        assert health["status"] == "degraded" and set(health["lagging"]) == {"live"}
        assert "still serving version 0" in health["lagging"]["live"] and str(tmp_path) not in health["lagging"]["live"]

        manifest.rmdir()  # the writer repairs it: the next request loads it and health recovers
        manifest.write_bytes(saved)
        assert c.post("/search", json=QUERY).json()["results"] == before
        assert c.get("/health").json() == {"status": "ok", "indexes": ["live"], "lagging": {}}


def test_info_answers_from_the_loaded_version_and_shows_no_paths_unless_asked(tmp_path, sample_index, encoder):
    folder = Path(shutil.copytree(sample_index, tmp_path / "doomed"))
    doomed = Retriever(Index.load(folder), encoder)
    with running(create_app({"doomed": doomed}, LIMITS, warm=False)) as base, httpx.Client(base_url=base, timeout=60) as c:
        shutil.rmtree(folder)
        info = c.get("/info")
        assert info.status_code == 200, info.text
        assert info.json()["documents"] == 300 and info.json()["loaded_version"] == 0
        assert str(tmp_path) not in info.text and str(Path.cwd()) not in info.text and "examples/" not in info.text
    shown = Retriever(Index.load(sample_index), encoder)
    with running(create_app({"shown": shown}, LIMITS, warm=False, show_paths=True)) as base:
        info = httpx.get(f"{base}/info", timeout=60).json()
    assert info["index"] == str(sample_index) and info["source"]["path"].endswith("examples/debian-300.parquet")


def test_a_request_past_the_shutdown_grace_gets_503_with_retry_after(sample_index, encoder):
    retriever = Retriever(Index.load(sample_index), encoder)
    long_queries = [" ".join(["network puzzle game archive compression"] * 50)] * 64  # seconds of encoding
    app = create_app({"debian": retriever}, LIMITS, warm=False, grace_seconds=0)
    answer: dict[str, httpx.Response] = {}
    with running_server(app, timeout_graceful_shutdown=0) as (base, server):

        def ask() -> None:
            answer["response"] = httpx.post(f"{base}/search", json={"queries": long_queries, "k": 3}, timeout=120)

        asker = threading.Thread(target=ask)
        asker.start()
        deadline = time.monotonic() + 60
        while not server.server_state.tasks:  # the request is in flight
            assert time.monotonic() < deadline, "the request never reached the server"
            time.sleep(0.01)
        server.should_exit = True  # what uvicorn does on SIGTERM
        asker.join(timeout=120)
    finish_abandoned_searches()  # as `funnel serve` does: exiting mid-encode would abort the process
    response = answer["response"]
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["detail"].startswith("the server is shutting down and this request ran past its 0 s grace")


def test_health_answers_head_and_the_schema_says_one_of_query_or_queries(sample_index, encoder):
    retriever = Retriever(Index.load(sample_index), encoder)
    with running(create_app({"debian": retriever}, LIMITS, warm=False)) as base, httpx.Client(base_url=base, timeout=60) as c:
        head = c.head("/health")
        assert head.status_code == 200 and head.content == b""
        schema = c.get("/openapi.json").json()["paths"]["/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert [option["required"] for option in schema["oneOf"]] == [["query"], ["queries"]]
        both = c.post("/search", json={"query": "fonts", "queries": ["fonts"]})
        assert both.status_code == 400 and "not both" in both.json()["detail"]


def test_the_docs_page_loads_everything_from_this_server(sample_index, encoder):
    retriever = Retriever(Index.load(sample_index), encoder)
    with running(create_app({"debian": retriever}, LIMITS, warm=False)) as base, httpx.Client(base_url=base, timeout=60) as c:
        page = c.get("/docs")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        linked = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert len(linked) == 3 and not [url for url in linked if not url.startswith("/")], linked  # nothing from a CDN
        for url in linked:
            asset = c.get(url)
            assert asset.status_code == 200 and len(asset.content) > 500, url
        assert "SwaggerUIBundle" in c.get("/docs/assets/swagger-ui-bundle.js").text
        assert '"/openapi.json"' in page.text and c.get("/openapi.json").status_code == 200


def test_serve_on_a_port_in_use_fails_before_loading_the_model(sample_index):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = funnel("serve", sample_index, "--port", port, timeout=60)
    assert result.returncode == 2
    assert result.stderr == f"error: port {port} on 127.0.0.1 is in use: stop what listens there or pass --port N (0: any free port)\n"


@pytest.mark.parametrize("grace", ["-1", "soon"])
def test_serve_refuses_a_bad_grace(sample_index, grace):
    result = funnel("serve", sample_index, "--grace", grace, "--port", "0", timeout=60)
    assert result.returncode == 2 and "grace" in result.stderr and "Traceback" not in result.stderr
