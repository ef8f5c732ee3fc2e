"""The user's address: ingest takes it from the peer or a trusted proxy's X-Forwarded-For
(serve_apps/ingest_request.client_ip), and processing puts it where an SDK asked for it
with ``{{auto}}`` (events/process.with_client_ip)."""

from __future__ import annotations

import datetime as dt

import orjson
import pytest
from starlette.requests import Request

from events.process import EventProcessor, ItemContext, with_client_ip
from serve_apps.ingest_request import client_ip

LOOPBACK = ("127.0.0.1", "::1")


def request_from(peer: str, forwarded: list[str]) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "method": "POST", "path": "/api/1/envelope/",
                    "headers": headers, "client": (peer, 50000), "query_string": b""})


@pytest.mark.parametrize(("peer", "forwarded", "expected"), [
    ("127.0.0.1", ["203.0.113.9, 127.0.0.2"], "127.0.0.2"),  # HAProxy appended the peer
    ("127.0.0.1", ["198.51.100.7, 127.0.0.1"], "198.51.100.7"),  # a trusted local proxy
    ("203.0.113.5", ["10.9.8.7"], "203.0.113.5"),  # an untrusted peer's header is ignored
    ("127.0.0.1", ["1.2.3.4", "unknown"], None),  # a proxy's "unknown" is no address
    ("127.0.0.1", [], "127.0.0.1"),
])
def test_the_client_address_is_believed_only_from_trusted_proxies(
        peer: str, forwarded: list[str], expected: str | None) -> None:
    assert client_ip(request_from(peer, forwarded), LOOPBACK) == expected


def test_auto_becomes_the_client_address_in_user_and_request_env() -> None:
    event = {"user": {"ip_address": "{{auto}}", "sentry_user": "ip:{{auto}}"},
             "request": {"url": "https://a/", "env": {"REMOTE_ADDR": "{{auto}}", "X": "1"}}}
    filled = with_client_ip(event, "203.0.113.9")
    assert filled["user"] == {"ip_address": "203.0.113.9", "sentry_user": "ip:203.0.113.9"}
    assert filled["request"]["env"] == {"REMOTE_ADDR": "203.0.113.9", "X": "1"}
    assert with_client_ip(event, None)["user"] == {}
    kept = {"user": {"id": "7", "ip_address": "{{auto}}", "sentry_user": "id:7"}}
    assert with_client_ip(kept, "10.0.0.1")["user"] == {
        "id": "7", "ip_address": "10.0.0.1", "sentry_user": "id:7"}


def test_a_processed_event_carries_the_address_ingest_saw() -> None:
    payload = orjson.dumps({"message": "hi", "user": {"ip_address": "{{auto}}"}})
    ctx = ItemContext(project_id=1, key_id=1, received_at=dt.datetime.now(dt.UTC),
                      client_ip="198.51.100.7")
    processed = EventProcessor().process(payload, ctx)
    assert processed.event["user"]["ip_address"] == "198.51.100.7"
