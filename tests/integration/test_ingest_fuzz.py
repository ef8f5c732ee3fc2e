"""Fuzzing the whole ingest path of a running Crashray (real Ray, Serve with its HAProxy,
the PostgreSQL queue, consumers, chDB) with hypothesis.

What it proves: whatever one organization sends to the SDK endpoints (random bytes; random
envelopes with random headers and items, wrong lengths, NUL characters, integers beyond 64
bits, lone surrogates, deep nesting, odd Unicode, invalid UTF-8; random JSON bodies; any
content encoding, real or not; credentials or none; odd project ids), the answer is a 2xx or
a 4xx, never a 5xx or a dropped connection; the instance still answers afterwards; and
another organization sending valid envelopes at the same time, into the same hand-off
batches, has every one of them accepted (200) and stored.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import threading
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import brotli
import httpx
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import RunningCrashray
from tests.integration.test_ingest_guard import Tenant, new_tenant, send, stored_event_ids
from tests.support import wait_until

pytestmark = pytest.mark.integration

ITEM_TYPES = ["event", "transaction", "attachment", "session", "sessions", "client_report",
              "user_report", "feedback", "check_in", "security", "integration", "profile", ""]
ENCODERS = {
    "identity": lambda data: data,
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "br": brotli.compress,
    "zstd": zstandard.ZstdCompressor().compress,
}


@dataclass(frozen=True)
class FuzzRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


# --- strategies ----------------------------------------------------------------------------

#: Any code point, lone surrogates and NUL included.
odd_text = st.text(st.characters(exclude_categories=()), max_size=24)
huge_ints = st.integers(min_value=-(2**80), max_value=2**80) | st.sampled_from(
    [2**63, 2**64 - 1, 2**64, -(2**63) - 1, 123456789012345678901234567890])
json_values = st.recursive(
    st.none() | st.booleans() | huge_ints | st.floats() | odd_text,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(odd_text, children, max_size=4),
    max_leaves=12)


def dumps(value: object, ascii_only: bool) -> bytes:
    """JSON as a hostile client writes it: lone surrogates either escaped or as the invalid
    UTF-8 bytes they become, NaN and Infinity as Python writes them."""
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@st.composite
def deep_json(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(min_value=100, max_value=3000))
    opener = draw(st.sampled_from([b"[", b'{"a":']))
    closer = b"]" if opener == b"[" else b"}"
    return opener * depth + b"1" + closer * depth


@st.composite
def header_lines(draw: st.DrawFn, extra: dict[str, Any]) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=40) | deep_json()).replace(b"\n", b" ")
    fields = draw(st.dictionaries(odd_text, json_values, max_size=3))
    return dumps({**fields, **extra}, draw(st.booleans())).replace(b"\n", b" ")


@st.composite
def item_parts(draw: st.DrawFn) -> bytes:
    payload = draw(st.binary(max_size=200) | json_values.map(lambda v: dumps(v, True))
                   | deep_json())
    item_type = draw(st.sampled_from(ITEM_TYPES) | odd_text)
    extra: dict[str, Any] = {"type": item_type}
    length = draw(st.sampled_from(["right", "none", "wrong", "odd"]))
    if length == "right":
        extra["length"] = len(payload)
    elif length == "wrong":
        extra["length"] = draw(st.integers(min_value=0, max_value=10 * len(payload) + 10))
    elif length == "odd":
        extra["length"] = draw(json_values)
    else:
        payload = payload.replace(b"\n", b" ")
    return draw(header_lines(extra)) + b"\n" + payload


@st.composite
def envelopes(draw: st.DrawFn, dsn: str) -> bytes:
    extra: dict[str, Any] = {}
    if draw(st.booleans()):
        extra["event_id"] = draw(st.sampled_from([uuid.uuid4().hex, str(uuid.uuid4())])
                                 | json_values)
    if draw(st.booleans()):
        extra["sent_at"] = draw(st.sampled_from(["2026-01-01T00:00:00Z"]) | json_values)
    if draw(st.booleans()):
        extra["dsn"] = draw(st.sampled_from([dsn, "not a dsn", "http://@x/1"]) | json_values)
    items = draw(st.lists(item_parts(), max_size=4))
    trailer = draw(st.sampled_from([b"", b"\n", b"\n\n", b"\r\n"]))
    return b"\n".join([draw(header_lines(extra)), *items]) + trailer


@st.composite
def fuzz_requests(draw: st.DrawFn, tenant: Tenant, dsn: str) -> FuzzRequest:
    endpoint = draw(st.sampled_from(["envelope", "envelope", "envelope", "store", "security"]))
    body = draw(envelopes(dsn) | st.binary(max_size=300)
                | json_values.map(lambda v: dumps(v, True)) | deep_json())
    project = draw(st.sampled_from([str(tenant.project_id)] * 4 + ["abc", "0", "-1", "\u2603",
               str(2**64), "1" * 40]))
    query = ""
    headers = {"Content-Type": draw(st.sampled_from([
        "application/x-sentry-envelope", "application/json", "application/csp-report",
        "text/plain", "application/reports+json"]))}
    auth = draw(st.sampled_from(["header", "header", "query", "none", "garbage"]))
    if auth == "header":
        headers["X-Sentry-Auth"] = f"Sentry sentry_key={tenant.key}, sentry_version=7"
    elif auth == "query":
        query = f"?sentry_key={tenant.key}&sentry_version=7&sentry_client=" + quote(
            draw(odd_text), safe="", errors="surrogatepass")
    elif auth == "garbage":
        headers["X-Sentry-Auth"] = ("Sentry " + draw(st.text(
            st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60))).strip()
    encoding = draw(st.sampled_from([*ENCODERS, "bogus"]))
    if encoding != "identity":
        headers["Content-Encoding"] = encoding
    encoded = ENCODERS.get(encoding, ENCODERS["identity"])(body)
    if draw(st.integers(0, 7)) == 0:
        encoded = encoded[:draw(st.integers(0, len(encoded)))]  # truncated on the way
    method = draw(st.sampled_from(["POST"] * 12 + ["GET", "PUT"]))
    return FuzzRequest(method, f"/api/{quote(project, safe='')}/{endpoint}/{query}",
                       headers, encoded)


# --- the other tenant ---------------------------------------------------------------------


class NeighbourSender:
    """Sends valid envelopes of another organization, concurrently, until stopped."""

    def __init__(self, c: RunningCrashray, tenant: Tenant) -> None:
        self.c, self.tenant = c, tenant
        self.sent: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(2)]
        self._lock = threading.Lock()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                event_id = uuid.uuid4().hex
                status = send(client, self.c, self.tenant, {"message": "neighbour"},
                              event_id).status_code
                with self._lock:
                    self.sent[event_id] = status
                self._stop.wait(0.02)

    @classmethod
    @contextlib.contextmanager
    def running(cls, c: RunningCrashray, tenant: Tenant) -> Iterator[NeighbourSender]:
        sender = cls(c, tenant)
        for thread in sender._threads:
            thread.start()
        try:
            yield sender
        finally:
            sender._stop.set()
            for thread in sender._threads:
                thread.join()


# --- the test -----------------------------------------------------------------------------


def test_random_requests_get_no_5xx_and_never_cost_another_tenant_an_event(
        crashray: RunningCrashray) -> None:
    fuzzer = new_tenant(crashray, "fuzzer")
    neighbour = new_tenant(crashray, "neighbour")
    dsn = f"http://{fuzzer.key}@127.0.0.1:{crashray.settings.port}/{fuzzer.project_id}"
    answers: dict[int, int] = {}
    server_errors: list[str] = []

    with httpx.Client(base_url=crashray.base_url, timeout=30) as client:

        @settings(max_examples=800, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                         HealthCheck.large_base_example])
        @given(request=fuzz_requests(fuzzer, dsn))
        def post_one(request: FuzzRequest) -> None:
            try:
                response = client.request(request.method, request.path,
                                          headers=request.headers, content=request.body)
            except httpx.TransportError as exc:
                server_errors.append(f"{request!r:.300}: connection failed: {exc!r}")
                return
            answers[response.status_code] = answers.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                server_errors.append(f"{request!r:.300}: {response.status_code}"
                                     f" {response.text[:200]}")

        with NeighbourSender.running(crashray, neighbour) as neighbours:
            post_one()
        still = send(client, crashray, neighbour, {"message": "after the fuzzing"})

    assert server_errors == [], "\n".join(server_errors)
    assert sum(answers.values()) >= 800 and answers.get(200, 0) > 0, answers
    assert still.status_code == 200
    refused = {e: s for e, s in neighbours.sent.items() if s != 200}
    assert refused == {} and len(neighbours.sent) > 20, (refused, len(neighbours.sent))
    wait_until(lambda: set(neighbours.sent) <= stored_event_ids(crashray, neighbour), 60,
               "every neighbour's event stored")
