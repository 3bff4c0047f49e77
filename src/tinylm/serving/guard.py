"""An ASGI guard in front of the app: request bodies over the size limit get 413, non-JSON bodies get 415
(a missing Content-Type counts as not JSON).

It runs before FastAPI reads anything, so an oversized body is never parsed: a declared Content-Length over the
limit is refused at once, and a body without one (chunked) is counted as it arrives and refused the moment it
passes the limit. The body it has read is handed on to the app unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_METHODS = {"POST", "PUT", "PATCH"}


def is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def send_error(send: Send, status: int, message: str, *, close: bool = False) -> None:
    """A JSON error answer in the same shape as the app's (schemas.ErrorResponse)."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:  # the rest of the body was not read, so this connection cannot carry another request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    def __init__(self, app: ASGIApp, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes
        # An oversized body is still read (and dropped) up to this size before the 413, so that a client that is
        # busy sending gets to read the answer rather than a reset connection; beyond it the connection is closed.
        self.drain_bytes = 4 * max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if not is_json_type(content_type):  # a missing type too: FastAPI versions differ on reading it as JSON
            what = f"content type {content_type!r}" if content_type else "a body without a content type"
            await send_error(send, 415, f"unsupported {what}; send application/json", close=True)
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._refuse(receive, send, int(declared), declared=True)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                await self._refuse(receive, send, size, declared=False, more=more)
                return
            chunks.append(chunk)
            if not more:
                break
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, receive: Receive, send: Send, size: int, *, declared: bool, more: bool = True) -> None:
        message = (f"request body of {size if declared else f'at least {size}'} bytes is over the limit of "
                   f"{self.max_body_bytes} bytes")
        read = 0 if declared else size
        while more and read <= self.drain_bytes and (not declared or size <= self.drain_bytes):
            received = await receive()
            if received["type"] == "http.disconnect":
                return
            read += len(received.get("body", b""))
            more = received.get("more_body", False)
        await send_error(send, 413, message, close=more)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive() that first yields the body read so far as one message, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
