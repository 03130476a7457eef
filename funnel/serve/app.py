"""The HTTP app: ``create_app({"docs": retriever}, limits)`` gives a FastAPI app serving
``POST /search``, ``GET /health``, ``GET /info`` and OpenAPI docs at ``/docs`` (Swagger UI from
the swagger-ui-bundle package, so the page works offline; without it, only ``/openapi.json``).

Searches run in a pool of worker threads sized by ``limits.threads``, never in the event loop,
so a slow encode does not hold up other requests; requests that queue for a worker with the same
index, k and plan are searched as one batch (:mod:`funnel.serve.batching`). Each search first
moves its retriever to the newest version of the index (:class:`~funnel.serve.follow.VersionFollower`:
a stat when nothing changed; a version that cannot be read leaves the open one serving).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ValidationError

from funnel.errors import FunnelError, InputError
from funnel.search.plan import Plan, resolve_k
from funnel.serve.batching import Coalescer
from funnel.serve.follow import VersionFollower
from funnel.serve.guards import BearerKey, BodyLimit, ShutdownGrace
from funnel.serve.schemas import ErrorOut, Health, SearchRequest, SearchResponse
from funnel.serve.settings import DEFAULT_GRACE_SECONDS, ServeLimits

if TYPE_CHECKING:
    from funnel.retriever import Retriever

logger = logging.getLogger("funnel.serve")

ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": ErrorOut} for code in (400, 401, 404, 413, 422)}


def create_app(
    retrievers: Mapping[str, Retriever],
    limits: ServeLimits | None = None,
    *,
    api_key: str | None = None,
    warm: bool = True,
    show_paths: bool = False,
    grace_seconds: int = DEFAULT_GRACE_SECONDS,
) -> FastAPI:
    """An app serving ``retrievers`` by name (the first is the default index).

    Args:
        retrievers: name → loaded Retriever; the names are what requests put in ``index``.
        limits: bounds on each request and the number of worker threads [default: ServeLimits()].
        api_key: when set, every request but ``GET /health`` must send ``Authorization: Bearer KEY``.
        warm: at startup, run one search per worker thread so the first requests pay no warm-up.
        show_paths: let ``/info`` show the index folder and the corpus's path.
        grace_seconds: the server's shutdown grace, named in the 503 a request past it gets.
    """
    if not retrievers:
        raise InputError("give at least one index to serve")
    limits = limits or ServeLimits()
    served = dict(retrievers)
    default = next(iter(served))
    limiter = anyio.CapacityLimiter(limits.threads)
    follow = VersionFollower()
    coalescer = Coalescer(limits.threads, limits.max_coalesce, follow)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm:
            async with anyio.create_task_group() as group:
                for _ in range(limits.threads):  # one search per thread, so each worker has run torch once
                    group.start_soon(_in_worker, limiter, _warm, served)
        yield

    app = FastAPI(
        title="funnel",
        summary="Two-stage retrieval on nested (Matryoshka) embeddings.",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,  # the CDN page FastAPI serves is blank offline: see _add_offline_docs
        redoc_url=None,
    )
    _add_offline_docs(app)

    def pick(name: str | None) -> tuple[str, Retriever]:
        name = default if name is None else name
        if name not in served:
            raise HTTPException(404, f"no index named {name!r}; this server has: {', '.join(served)}")
        return name, served[name]

    # The body is validated here, by pydantic's JSON parser, rather than by a FastAPI body
    # parameter: measured here, 0.1 ms less per request, of the ~1.9 ms that serving adds.
    @app.post("/search", response_model=SearchResponse, responses=ERRORS, openapi_extra=_json_body(SearchRequest))
    async def search(request: Request) -> Response:
        """Top-``k`` hits for ``query`` (or each of ``queries``), with the plan run and per-stage timings."""
        started = time.perf_counter()
        try:
            body = SearchRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        name, retriever = pick(body.index)
        texts = _check_queries(body, limits)
        plan = Plan.parse(body.stages) if body.stages is not None else None  # the one parse of the body's plan
        k = _check_k(resolve_k(body.k, plan), limits)
        payload = await coalescer.search(name, retriever, texts, k, plan, started)
        return Response(payload, media_type="application/json")

    @app.head("/health", include_in_schema=False)  # load balancers probe with HEAD
    @app.get("/health", response_model=Health)
    async def health() -> dict[str, Any]:
        """Liveness: answers without a key once the models are loaded. ``status`` is "degraded"
        while an index answers from an older version because its newest cannot be read
        (``lagging`` says which and why)."""
        lagging = follow.problems()
        return {"status": "degraded" if lagging else "ok", "indexes": list(served), "lagging": lagging}

    @app.get("/info", responses=ERRORS)
    async def info(index: str | None = Query(None, description="Which served index [default: the first].")) -> dict[str, Any]:
        """The index's `funnel info --json` for the version loaded, plus the name it is served
        under; no filesystem paths unless the server runs with --show-paths."""
        name, retriever = pick(index)
        await _in_worker(limiter, follow, name, retriever)
        return _info(name, retriever, show_paths)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc.errors())}, status_code=422)

    @app.exception_handler(InputError)
    async def bad_input(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(FunnelError)
    async def funnel_failed(request: Request, exc: FunnelError) -> JSONResponse:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=500)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); the server logged it"}, status_code=500)

    # Each add wraps the ones before: the key is checked before a body is read, and the grace
    # guard, outermost, answers whatever runs past the shutdown grace.
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if api_key is not None:
        app.add_middleware(BearerKey, key=api_key)
    app.add_middleware(ShutdownGrace, grace_seconds=grace_seconds)
    return app


async def _in_worker(limiter: anyio.CapacityLimiter, function: Any, *args: Any) -> Any:
    return await anyio.to_thread.run_sync(function, *args, limiter=limiter)


def _check_queries(body: SearchRequest, limits: ServeLimits) -> list[str]:
    if (body.query is None) == (body.queries is None):
        raise InputError('give "query" (one string) or "queries" (a list of strings), not both and not neither')
    texts = [body.query] if body.query is not None else list(body.queries or [])
    if not texts:
        raise InputError('"queries" is empty: give at least one query')
    if len(texts) > limits.max_batch:
        raise HTTPException(413, f"{len(texts)} queries is over the limit of {limits.max_batch} per request (max_batch)")
    for number, text in enumerate(texts, start=1):
        if not text.strip():
            raise InputError(f"query {number} is empty: give some text to search for")
        if len(text) > limits.max_query_chars:
            raise HTTPException(
                413, f"query {number} has {len(text):,} characters, over the limit of {limits.max_query_chars:,} (max_query_chars)"
            )
    return texts


def _check_k(k: int, limits: ServeLimits) -> int:
    if not 1 <= k <= limits.max_k:
        raise InputError(f"k must be between 1 and {limits.max_k} (max_k), not {k}")
    return k


def _info(name: str, retriever: Retriever, show_paths: bool) -> dict[str, Any]:
    """From the version loaded, never the folder: it answers while the folder is gone."""
    from funnel.indexes.summary import manifest_summary, without_paths

    index = retriever.index
    summary = manifest_summary(index.manifest)
    shown = {"index": str(index.path), **summary} if show_paths else without_paths(summary)
    return {"name": name, "loaded_version": index.version, **shown}


def _add_offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs with its script and style served by this server, from the
    swagger-ui-bundle package; without the package there is no page (the schema stays at
    /openapi.json) rather than one that loads from a CDN and shows nothing offline."""
    try:
        import swagger_ui_bundle
    except ImportError:
        return
    from fastapi.staticfiles import StaticFiles

    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")
    page = _DOCS_PAGE.replace("OPENAPI_URL", app.openapi_url or "/openapi.json")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page)


# The core bundle and its BaseLayout only: FastAPI's own page also names the standalone preset,
# which the bundled Swagger UI 4 keeps in another file.
_DOCS_PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>funnel API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
<link rel="icon" href="/docs/assets/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
SwaggerUIBundle({url: "OPENAPI_URL", dom_id: "#swagger-ui", presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout", deepLinking: true});
</script>
</body>
</html>
"""


def _warm(served: Mapping[str, Retriever]) -> None:
    for retriever in served.values():
        retriever.search("warm up", k=1)


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI entry for a JSON body that the handler validates itself."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _one_line(errors: Sequence[Any]) -> str:
    """Pydantic's list of errors as one line: where, then what, for the first few."""
    parts = []
    for error in errors[:3]:
        if error.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})")
            continue
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        message = error.get("msg", "invalid")
        parts.append(f"{where or 'the body'}: {message}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(parts) + more


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("funnel")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"
