"""The Web API reads at most ``CRASHRAY_API_MAX_BODY_BYTES`` of a request body.

A pure ASGI middleware in front of every route: a declared ``Content-Length`` above the
limit is refused before anything is read; a body without one (``Transfer-Encoding:
chunked``) is read up to one byte past the limit and refused there. Either way the answer
is a 413 in the API's error shape, naming the setting. A body within the limit is handed
on to the route as it was read (FastAPI reads every body whole before parsing it anyway,
so holding up to the limit costs no more than it would).

Sentry runs on Django, which refuses non-file request bodies above
``DATA_UPLOAD_MAX_MEMORY_SIZE`` (2.5 MiB by default) with a 400; a 413 is the status HTTP
has for it (RFC 9110 §15.5.14).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from events.errors import PayloadTooLarge


def too_large(limit_bytes: int, seen: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body is {seen}; the API takes at most {limit_bytes} bytes"
        f" (CRASHRAY_API_MAX_BODY_BYTES)")


class BodyLimit:
    """Refuses bodies over the limit that ``limit_of(request)`` answers (the replica's
    setting) before any route parses them."""

    def __init__(self, app: ASGIApp, limit_of: Callable[[Request], int]) -> None:
        self.app = app
        self.limit_of = limit_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_of(Request(scope))
        declared = Request(scope).headers.get("content-length")
        if declared is not None and (not declared.strip().isdigit()
                                     or int(declared) > limit):
            await _refuse(too_large(limit, f"{declared.strip()[:20]} bytes (Content-Length)"),
                          scope, receive, send)
            return
        messages, size = await _read_body(receive, limit)
        if size > limit:
            await _refuse(too_large(limit, f"more than {limit} bytes"), scope, receive, send)
            return
        await self.app(scope, _replay(messages, receive), send)


async def _read_body(receive: Receive, limit: int) -> tuple[list[Message], int]:
    """The body's messages until its end, or until more than ``limit`` bytes came."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, size
        size += len(message.get("body", b""))
        if size > limit or not message.get("more_body", False):
            return messages, size


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()
    return replayed


async def _refuse(error: PayloadTooLarge, scope: Scope, receive: Receive, send: Send) -> None:
    # The rest of the body stays unread: the connection is closed after this answer.
    response = JSONResponse(error.api_body(), status_code=error.status,
                            headers={"Connection": "close"})
    await response(scope, receive, send)
