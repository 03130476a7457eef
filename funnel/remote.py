"""RemoteRetriever: the ``search``/``search_batch`` of :class:`~funnel.retriever.Retriever`, answered
by a ``funnel serve`` server, so code moves between in-process and served search unchanged.

Standard library only (``http.client``): one kept-alive connection per thread, reopened once if
the server closed it while idle.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import SplitResult, urlencode, urlsplit

from funnel.errors import FunnelError, InputError
from funnel.retriever import Hit, query_batch
from funnel.search.plan import Plan, PlanLike

# Statuses that mean "this request was wrong": the same InputError a local Retriever raises.
_INPUT_STATUSES = {400, 401, 404, 405, 413, 422}


class RemoteError(FunnelError):
    """The server could not be reached or failed (not the request's fault)."""


class RemoteRetriever:
    """Search a served index: ``RemoteRetriever("http://127.0.0.1:8000").search("query", k=10)``.

    Args:
        url: the server's base address, ``http://HOST:PORT`` (``https`` and a path prefix work too).
        index: which of the server's indexes [default: the server's first].
        api_key: the bearer key, for a server started with ``--api-key-env``.
        timeout: seconds to wait for the server on each request.

    Thread-safe: each thread keeps its own connection.
    """

    def __init__(self, url: str, index: str | None = None, *, api_key: str | None = None, timeout: float = 60.0) -> None:
        parts = split_http_url(url, "server URL")
        self.url = url.rstrip("/")
        self.index_name = index
        self.timeout = timeout
        self._https = parts.scheme == "https"
        self._host: str = parts.hostname or ""  # split_http_url refuses a URL without a host
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key is not None:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._local = threading.local()

    def search(self, query: str, k: int | None = None, stages: PlanLike | None = None) -> list[Hit]:
        """Top-``k`` hits for one query, best first."""
        return self.search_batch([query], k, stages)[0]

    def search_batch(self, queries: Sequence[str], k: int | None = None, stages: PlanLike | None = None) -> list[list[Hit]]:
        """Top-``k`` hits for each query, in the order of ``queries`` (one request)."""
        if not query_batch(queries):
            return []
        response = self.search_response(queries, k, stages)
        return [[Hit(**hit) for hit in result["hits"]] for result in response["results"]]

    def search_response(self, queries: Sequence[str], k: int | None = None, stages: PlanLike | None = None) -> dict[str, Any]:
        """The server's whole answer: results, the plan it ran, per-stage timings, index version.
        Without ``k`` the server applies the same rule as a local search (:func:`~funnel.search.plan.resolve_k`)."""
        body: dict[str, Any] = {"queries": list(queries)}
        if k is not None:
            body["k"] = k
        if stages is not None:
            body["stages"] = stages if isinstance(stages, str) else str(Plan.of(stages))
        if self.index_name is not None:
            body["index"] = self.index_name
        return self._request("POST", "/search", body)

    def info(self) -> dict[str, Any]:
        """The served index's ``funnel info --json``."""
        query = f"?{urlencode({'index': self.index_name})}" if self.index_name is not None else ""
        return self._request("GET", f"/info{query}")

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/health")

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        payload = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request(method, self._prefix + path, body=payload, headers=self._headers)
                response = connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                # A kept-alive connection the server closed while idle: reopen once, then give up.
                self.close()
                if attempt == 2:
                    raise RemoteError(f"the server at {self.url} closed the connection: {exc}") from exc
            except OSError as exc:
                self.close()
                raise RemoteError(f"cannot reach the server at {self.url}: {exc}") from exc
        if response.will_close:
            self.close()
        return _answer(self.url, response.status, data)

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            connection = kind(self._host, self._port, timeout=self.timeout)
            self._local.connection = connection
        return connection


def split_http_url(url: str, what: str) -> SplitResult:
    """The parts of ``url`` if it is ``http(s)://HOST[:PORT][/PATH]``; InputError naming ``what``
    and the problem otherwise (never the ValueError that urlsplit raises for ``http://[::1``)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parsed lazily: a bad port raises only when read)
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", a port that is not a number
        raise InputError(f"{what} {url!r} is not a valid URL ({exc}): write http://HOST:PORT or https://HOST:PORT") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{what} {url!r} is not http://HOST:PORT or https://HOST:PORT")
    return parts


def _answer(url: str, status: int, data: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(data) if data else {}
    except ValueError:
        decoded = {"detail": data[:200].decode("utf-8", "replace")}
    if 200 <= status < 300:
        return decoded
    detail = decoded.get("detail", "") if isinstance(decoded, dict) else ""
    message = f"{detail} (HTTP {status} from {url})" if detail else f"HTTP {status} from {url}"
    raise (InputError if status in _INPUT_STATUSES else RemoteError)(message)
