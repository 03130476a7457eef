"""`funnel serve`'s app over real HTTP on 127.0.0.1: same answers as Retriever, one-line 4xx for
every bad request, the bearer key, and an index that follows add/delete without a restart."""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pyarrow as pa
import pytest
from serving import running

from funnel import Retriever
from funnel.errors import InputError
from funnel.indexes.index import Index
from funnel.indexes.manifest import read_manifest
from funnel.indexes.summary import manifest_summary, without_paths
from funnel.serve import ServeLimits, create_app
from funnel.serve.batching import Coalescer

QUERIES = [
    "play a puzzle game over the network",
    "read e-mail in a terminal",
    "compress files into an archive",
    "fonts for writing Chinese",
    "a library to parse XML documents",
]
LIMITS = ServeLimits(max_k=50, max_batch=4, max_query_chars=200, max_body_bytes=2_000, workers=2)


@pytest.fixture(scope="module")
def retriever(sample_index, encoder) -> Retriever:
    return Retriever(Index.load(sample_index), encoder)


@pytest.fixture(scope="module")
def url(retriever):
    with running(create_app({"debian": retriever, "other": retriever}, LIMITS)) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, timeout=60) as session:
        yield session


def test_search_answers_the_same_ids_and_scores_as_retriever(client, retriever):
    for query in QUERIES:
        response = client.post("/search", json={"query": query, "k": 10})
        assert response.status_code == 200, response.text
        hits = response.json()["results"][0]["hits"]
        expected = retriever.search(query, k=10)
        assert [h["id"] for h in hits] == [h.id for h in expected]
        assert [h["score"] for h in hits] == pytest.approx([h.score for h in expected], abs=1e-6)
        assert hits[0]["text"] == expected[0].text and hits[0]["metadata"] == expected[0].metadata
        assert [h["rank"] for h in hits] == list(range(1, 11))


def test_batch_keeps_order_and_reports_plan_and_stage_timings(client, retriever):
    body = client.post("/search", json={"queries": QUERIES[:3], "stages": "64:100,full:5"}).json()
    assert body["k"] == 5 and body["plan"] == "64:100,full:5" and body["index"] == "debian"
    assert [r["query"] for r in body["results"]] == QUERIES[:3]
    for result, query in zip(body["results"], QUERIES[:3]):
        assert [h["id"] for h in result["hits"]] == [h.id for h in retriever.search(query, k=5, stages="64:100,full:5")]
    stages = body["timings"]["stages"]
    assert [(s["stage"], s["dim"], s["scored"], s["kept"]) for s in stages] == [("64:100", 64, 300, 100), ("full:5", 384, 100, 5)]
    timings = body["timings"]
    assert 0 < timings["encode_ms"] < timings["search_ms"] <= timings["total_ms"]


def test_default_plan_and_named_indexes(client):
    body = client.post("/search", json={"query": QUERIES[0], "index": "other"}).json()
    assert body["index"] == "other" and body["plan"] == "64:200,full:10" and len(body["results"][0]["hits"]) == 10


@pytest.mark.parametrize(
    "body, status, detail",
    [
        ({"query": ""}, 400, "query 1 is empty: give some text to search for"),
        ({"queries": ["fonts", "   "]}, 400, "query 2 is empty: give some text to search for"),
        ({"queries": []}, 400, '"queries" is empty: give at least one query'),
        ({}, 400, 'give "query" (one string) or "queries" (a list of strings), not both and not neither'),
        (
            {"query": "fonts", "queries": ["fonts"]},
            400,
            'give "query" (one string) or "queries" (a list of strings), not both and not neither',
        ),
        ({"query": "fonts", "k": 0}, 400, "k must be between 1 and 50 (max_k), not 0"),
        ({"query": "fonts", "k": 51}, 400, "k must be between 1 and 50 (max_k), not 51"),
        (
            {"query": "fonts", "stages": "64-200"},
            400,
            "stage '64-200' is not DIM:CANDIDATES, LAYER:DIM:CANDIDATES or ENCODER:DIM:CANDIDATES, optionally with +bm25:N or +rrf "
            "(e.g. 64:200, full:10, 2:64:200, static:full:10, 64:400+bm25:50 or full:10+rrf)",
        ),
        (
            {"query": "fonts", "stages": "32:100,full:10"},
            400,
            "the first stage scores at 32 dims but this index has shortlists at: 64 (or start at full dims, an exact scan)",
        ),
        (
            {"query": "fonts", "stages": "64:100,full:5", "k": 10},
            400,
            "k=10 but the last stage keeps only 5: raise its candidates or lower k",
        ),
        ({"query": "fonts", "index": "nope"}, 404, "no index named 'nope'; this server has: debian, other"),
        ({"queries": ["a", "b", "c", "d", "e"]}, 413, "5 queries is over the limit of 4 per request (max_batch)"),
        ({"query": "x" * 201}, 413, "query 1 has 201 characters, over the limit of 200 (max_query_chars)"),
        ({"query": 5}, 422, "query: Input should be a valid string"),
        ({"query": "fonts", "k": "ten"}, 422, "k: Input should be a valid integer, unable to parse string as an integer"),
        ({"query": "fonts", "top": 3}, 422, "top: Extra inputs are not permitted"),
        (["fonts"], 422, "the body: Input should be an object"),
    ],
)
def test_bad_requests_get_a_4xx_with_one_line(client, body, status, detail):
    response = client.post("/search", json=body)
    assert response.status_code == status, response.text
    assert response.json() == {"detail": detail}


def test_malformed_json_and_oversized_bodies(url, client):
    for malformed in (b'{"query": "fonts"', b""):
        response = client.post("/search", content=malformed, headers={"content-type": "application/json"})
        assert response.status_code == 422 and response.json()["detail"].startswith("the body is not valid JSON")
    big = json.dumps({"query": "fonts", "pad": "x" * 3_000}).encode()
    response = client.post("/search", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json() == {"detail": f"the request body ({len(big):,} bytes) is over the limit of 2,000 bytes (max_body_bytes)"}
    # Chunked, with no Content-Length: counted as it arrives.
    response = client.post("/search", content=iter([big[:1500], big[1500:]]), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "bytes or more) is over the limit of 2,000 bytes" in response.json()["detail"]
    raw = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=30)
    raw.request("POST", "/search", body=b"{}", headers={"Content-Length": "abc"})
    answer = raw.getresponse()  # the HTTP parser refuses it before the app: a one-line 400
    assert answer.status == 400 and len(answer.read().decode().splitlines()) == 1
    raw.close()
    # The server is still there.
    assert client.post("/search", json={"query": "fonts", "k": 1}).status_code == 200


def test_health_info_and_docs(client, sample_index):
    assert client.get("/health").json() == {"status": "ok", "indexes": ["debian", "other"], "lagging": {}}
    info = client.get("/info").json()
    summary = manifest_summary(read_manifest(sample_index))
    assert info == {"name": "debian", "loaded_version": 0, **without_paths(summary)}
    assert info["source"]["path"] == "debian-300.parquet" and "index" not in info and "disk_bytes" not in info
    assert client.get("/info", params={"index": "other"}).json()["name"] == "other"
    assert client.get("/info", params={"index": "nope"}).status_code == 404
    search = client.get("/openapi.json").json()["paths"]["/search"]["post"]
    assert set(search["requestBody"]["content"]["application/json"]["schema"]["properties"]) == {"query", "queries", "k", "stages", "index"}
    assert client.get("/docs").status_code == 200


def test_concurrent_requests_all_answer_like_serial_ones(client, url):
    serial = [[h["id"] for h in client.post("/search", json={"query": q, "k": 5}).json()["results"][0]["hits"]] for q in QUERIES]

    def ask(query):
        with httpx.Client(base_url=url, timeout=60) as own:
            return [h["id"] for h in own.post("/search", json={"query": query, "k": 5}).json()["results"][0]["hits"]]

    with ThreadPoolExecutor(max_workers=16) as pool:
        parallel = list(pool.map(ask, QUERIES * 4))
    assert parallel == serial * 4


def test_api_key_guards_everything_but_health(retriever):
    with (
        running(create_app({"debian": retriever}, LIMITS, api_key="s3cret-key", warm=False)) as base,
        httpx.Client(base_url=base, timeout=60) as c,
    ):
        body = {"query": "fonts", "k": 2}
        missing = c.post("/search", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.json() == {"detail": "missing API key: send the header 'Authorization: Bearer <key>'"}
        wrong = c.post("/search", json=body, headers={"Authorization": "Bearer s3cret-kez"})
        assert wrong.status_code == 401 and wrong.json()["detail"].startswith("wrong API key")
        assert c.get("/info").status_code == 401 and c.get("/docs").status_code == 401
        assert c.get("/health").status_code == 200
        good = c.post("/search", json=body, headers={"Authorization": "Bearer s3cret-key"})
        assert good.status_code == 200 and len(good.json()["results"][0]["hits"]) == 2


def test_index_follows_add_and_delete_without_restart(tmp_path, sample_index, encoder):
    from funnel.corpus import DOCUMENT_SCHEMA
    from funnel.indexes.updates import add_documents, delete_documents

    folder = shutil.copytree(sample_index, tmp_path / "live")
    live = Retriever(Index.load(folder), encoder)
    query = "an accordion tuning assistant for street musicians"
    with running(create_app({"live": live}, LIMITS, warm=False)) as base, httpx.Client(base_url=base, timeout=60) as c:
        first = c.post("/search", json={"query": query, "k": 3}).json()
        assert first["version"] == 0 and first["results"][0]["hits"][0]["id"] != "accordion-helper"

        text = "Accordion tuning assistant: helps street musicians tune accordion reeds by ear."
        batch = pa.RecordBatch.from_arrays(
            [pa.array(["accordion-helper"]), pa.array([None], pa.string()), pa.array([text]), pa.array([None], pa.string())],
            schema=DOCUMENT_SCHEMA,
        )
        add_documents(folder, [(batch, encoder.encode([text]))])
        added = c.post("/search", json={"query": query, "k": 3}).json()
        assert added["version"] == 1 and added["results"][0]["hits"][0]["id"] == "accordion-helper"
        assert c.get("/info").json()["documents"] == 301

        delete_documents(folder, ["accordion-helper"])
        deleted = c.post("/search", json={"query": query, "k": 3}).json()
        assert deleted["version"] == 2 and "accordion-helper" not in [h["id"] for h in deleted["results"][0]["hits"]]


def test_an_index_that_vanishes_keeps_serving_its_loaded_version(tmp_path, sample_index, encoder):
    folder = shutil.copytree(sample_index, tmp_path / "doomed")
    doomed = Retriever(Index.load(folder), encoder)
    with running(create_app({"doomed": doomed}, LIMITS, warm=False)) as base, httpx.Client(base_url=base, timeout=60) as c:
        before = c.post("/search", json={"query": "fonts", "k": 3}).json()["results"]
        shutil.rmtree(folder)
        after = c.post("/search", json={"query": "fonts", "k": 3})
        assert after.status_code == 200 and after.json()["results"] == before
        assert c.get("/health").status_code == 200


def test_requests_waiting_together_share_one_batch_with_the_same_answers(retriever):
    async def all_at_once(stages):
        coalescer = Coalescer(slots=1, max_queries=64, before_search=lambda name, r: None)  # one per event loop
        return await asyncio.gather(
            *(coalescer.search("debian", retriever, [query], 5, stages, time.perf_counter()) for query in QUERIES), return_exceptions=True
        )

    answers = [json.loads(payload) for payload in asyncio.run(all_at_once(None))]
    # The first runs alone on the only worker; the four that queued behind it run as one batch.
    assert [answer["timings"]["batched_queries"] for answer in answers] == [1, 4, 4, 4, 4]
    for answer, query in zip(answers, QUERIES):
        expected = retriever.search(query, k=5)
        assert [h["id"] for h in answer["results"][0]["hits"]] == [h.id for h in expected]
        assert [h["score"] for h in answer["results"][0]["hits"]] == pytest.approx([h.score for h in expected], abs=1e-5)

    failures = asyncio.run(all_at_once("32:100,full:5"))
    assert all(isinstance(f, InputError) and "shortlists at: 64" in str(f) for f in failures)
