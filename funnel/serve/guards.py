"""ASGI middleware around the app: a bearer key and a body limit stop a request before it reaches
the app; the shutdown guard answers a request that outlives the server's grace.

Plain ASGI rather than Starlette's BaseHTTPMiddleware: no extra task per request, so the guard
costs microseconds on the search path.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def reject(send: Send, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """Answer ``status`` with ``{"detail": detail}`` and close the exchange."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


class BearerKey:
    """Every HTTP request but those to ``open_paths`` must send ``Authorization: Bearer KEY``;
    others get 401. The key is compared in constant time."""

    def __init__(self, app: ASGIApp, key: str, open_paths: frozenset[str] = frozenset({"/health"})) -> None:
        self.app = app
        self.expected = f"Bearer {key}".encode()
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in self.open_paths:
            given = _header(scope, b"authorization") or b""
            if not hmac.compare_digest(given, self.expected):
                reason = "wrong API key" if given else "missing API key"
                await reject(send, 401, f"{reason}: send the header 'Authorization: Bearer <key>'", ((b"www-authenticate", b"Bearer"),))
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse a request body over ``max_bytes`` with 413, whether it declares its length or is
    chunked; the app receives the body in one piece."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await reject(send, 400, "the Content-Length header is not a number")
                return
            if int(declared) > self.max_bytes:
                await reject(send, 413, self._too_large(f"{int(declared):,} bytes"))
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await reject(send, 413, self._too_large(f"{size:,} bytes or more"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self, size: str) -> str:
        return f"the request body ({size}) is over the limit of {self.max_bytes:,} bytes (max_body_bytes)"


class ShutdownGrace:
    """A request still running when the shutdown grace ends gets 503 and ``Retry-After``.

    On SIGTERM uvicorn stops taking connections and waits ``grace_seconds`` for requests in
    flight; then it cancels them, and a cancelled request would otherwise reach the client as a
    500 (or a dropped connection), which reads as a server fault rather than "ask again".
    """

    def __init__(self, app: ASGIApp, grace_seconds: int) -> None:
        self.app = app
        self.grace_seconds = grace_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:
            if started:
                raise
            detail = (
                f"the server is shutting down and this request ran past its {self.grace_seconds} s grace: "
                "send it again (to another replica, or once the server is back)"
            )
            await reject(send, 503, detail, ((b"retry-after", b"1"), (b"connection", b"close")))
