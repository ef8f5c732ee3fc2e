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

#: A refused body is still read (and dropped) up to this many bytes before the answer, so
#: the connection can close cleanly: closing a socket with unread data makes the kernel
#: reset it, and the reset can destroy the 413 on its way to the client (nginx reads on for
#: the same reason, its ``lingering_close``). Beyond this the connection is just closed.
#: Above Relay's 20 MB request limit, so an SDK-sized mistake gets its answer.
DRAIN_LIMIT_BYTES = 32 * 1024 * 1024


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
            await _drain(receive, DRAIN_LIMIT_BYTES)
            await _refuse(too_large(limit, f"{declared.strip()[:20]} bytes (Content-Length)"),
                          scope, receive, send)
            return
        messages, size, ended = await _read_body(receive, limit)
        if size > limit:
            if not ended:
                await _drain(receive, DRAIN_LIMIT_BYTES)
            await _refuse(too_large(limit, f"more than {limit} bytes"), scope, receive, send)
            return
        await self.app(scope, _replay(messages, receive), send)


async def _read_body(receive: Receive, limit: int) -> tuple[list[Message], int, bool]:
    """The body's messages until its end, or until more than ``limit`` bytes came; and
    whether it ended."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, size, True
        size += len(message.get("body", b""))
        ended = not message.get("more_body", False)
        if size > limit or ended:
            return messages, size, ended


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()
    return replayed


async def _refuse(error: PayloadTooLarge, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(error.api_body(), status_code=error.status,
                            headers={"Connection": "close"})
    await response(scope, receive, send)


async def _drain(receive: Receive, limit_bytes: int) -> None:
    """Reads and drops the rest of a body that has not ended, up to ``limit_bytes``."""
    drained = 0
    while drained <= limit_bytes:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        drained += len(message.get("body", b""))
