"""``ApiAnswer`` (serve_apps/api/app.py): on one node the ingest deployment answers ``/api/0``
by handing the request to the API app, as Serve would hand it to the API's own application.
Driven here as Serve drives a returned Response (``await response(scope, receive, send)``),
with the real API app and no Ray."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from serve_apps.api.app import ApiAnswer, create_app


def answer(app: Any, method: str, path: str) -> list[Message]:
    """What the server would be sent for ``method path`` (a request without a body)."""
    sent: list[Message] = []
    scope: Scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                    "method": method, "scheme": "http", "path": path,
                    "raw_path": path.encode(), "root_path": "", "query_string": b"",
                    "headers": [(b"host", b"crashray.test")],
                    "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    asyncio.run(ApiAnswer(app)(scope, receive, send))
    return sent


def starts(sent: list[Message]) -> list[int]:
    return [m["status"] for m in sent if m["type"] == "http.response.start"]


def body(sent: list[Message]) -> Any:
    return json.loads(b"".join(m.get("body", b"") for m in sent
                               if m["type"] == "http.response.body"))


def test_the_api_routes_paths_below_api_0_as_its_own_application_would() -> None:
    app = FastAPI()

    @app.get("/projects/{org}/")
    def projects(org: str) -> dict[str, str]:
        return {"org": org}

    sent = answer(app, "GET", "/api/0/projects/acme/")
    assert starts(sent) == [200]
    assert body(sent) == {"org": "acme"}
    assert starts(answer(app, "GET", "/api/0/nothing-here/")) == [404]


def test_an_unexpected_error_is_answered_once_with_a_500_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    """The real app, without its services: the access chain fails inside a route's
    dependencies. Starlette answers 500 and raises the error again; raised on to Serve, it
    would be answered a second time."""
    with caplog.at_level(logging.ERROR, logger="crashray.api"):
        sent = answer(create_app(), "GET", "/api/0/organizations/")
    assert starts(sent) == [500]
    [logged] = [r for r in caplog.records if r.name == "crashray.api"]
    assert logged.getMessage() == "API request GET /api/0/organizations/ failed after its" \
        " answer began"
    assert logged.exc_info is not None  # the error itself, with its traceback


def test_an_error_before_any_answer_is_left_to_serve() -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("broken before answering")

    with pytest.raises(RuntimeError, match="broken before answering"):
        answer(broken, "GET", "/api/0/")
