"""The SDK ingest edge against hostile input, in a running Crashray (real Ray, Serve with its
HAProxy, PostgreSQL, chDB): one organization's poisoned envelope never fails another's
requests, nothing is read or decompressed for a request whose key is unknown, the client
address is only taken from trusted proxies, and every odd request is a 4xx that says why."""

from __future__ import annotations

import gzip
import os
import socket
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from actors.clickhouse import clickhouse_store
from events.access import ROLE_SCOPES
from events.grouping import DEFAULT_GROUPING_CONFIG
from storage import postgres
from storage.bootstrap import ensure_project
from tests.integration.conftest import RunningCrashray
from tests.support import envelope_bytes, gzip_bytes, python_sdk_headers, wait_until

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
#: A client address that is not one of the trusted proxies (loopback 127.0.0.1 and ::1).
UNTRUSTED_ADDRESS = "127.0.0.2"


@dataclass(frozen=True)
class Tenant:
    org_id: int
    org_slug: str
    project_id: int
    key: str
    token: str


def new_tenant(c: RunningCrashray, prefix: str) -> Tenant:
    """A new organization with one project, its DSN key and an owner token."""
    slug = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with postgres.connect(c.runtime.postgres_url) as conn:
        row = conn.execute("INSERT INTO organizations (slug, name) VALUES (%s, %s)"
                           " RETURNING id", (slug, slug)).fetchone()
        assert row is not None
        project_id, key = ensure_project(conn, int(row[0]), "default", DEFAULT_GROUPING_CONFIG)
        token = postgres.create_api_token(conn, int(row[0]), "guard",
                                          sorted(ROLE_SCOPES["owner"]))
        conn.commit()
    tenant = Tenant(int(row[0]), slug, project_id, key, token)
    with httpx.Client(timeout=10) as client:  # by every ingest replica's key cache
        wait_until(lambda: all(send(client, c, tenant, {"message": "hello"}).status_code == 200
                               for _ in range(8)), 15, "the new key accepted")
    return tenant


def envelope_url(c: RunningCrashray, project_id: int | str, endpoint: str = "envelope") -> str:
    return f"{c.base_url}/api/{project_id}/{endpoint}/"


def send(client: httpx.Client, c: RunningCrashray, tenant: Tenant, event: dict[str, Any],
         event_id: str | None = None) -> httpx.Response:
    return client.post(envelope_url(c, tenant.project_id),
                       content=gzip_bytes(envelope_bytes(event, event_id)),
                       headers=python_sdk_headers(tenant.key))


def stored_event_ids(c: RunningCrashray, tenant: Tenant) -> set[str]:
    store = clickhouse_store(c.runtime.clickhouse_dsn)
    return {e.event_id for e in store.list_events(tenant.org_id, tenant.project_id, 5000)}


def assert_printable_error(response: httpx.Response) -> str:
    header = str(response.headers.get("x-sentry-error", ""))
    assert header and header.isascii() and header.isprintable(), header
    return header


# --- 1. one organization's poison never fails another's requests --------------------------

EVENT_ID = "9f1c0de5a1b24e46b9d3cf0d2b6f7a10"
POISONS = {
    'envelope item 1 header "x": integer above 64 bits':
        b'{"event_id":"%s"}\n{"type":"event","x":123456789012345678901234567890}\n{}\n',
    'envelope item 1 header "x": NUL character':
        b'{"event_id":"%s"}\n{"type":"event","x":"a\\u0000b"}\n{}\n',
    'envelope header "sent_at": NUL character':
        b'{"event_id":"%s","sent_at":"2026\\u0000"}\n{"type":"event"}\n{}\n',
}


def test_a_poisoned_envelope_is_refused_alone_and_another_organization_loses_nothing(
        crashray: RunningCrashray) -> None:
    victim = new_tenant(crashray, "victim")
    attacker = new_tenant(crashray, "attacker")
    valid_ids = [uuid.uuid4().hex for _ in range(96)]
    poisons = [(field, body % uuid.uuid4().hex.encode()) for _ in range(4)
               for field, body in POISONS.items()]

    def send_valid(client: httpx.Client, event_id: str) -> int:
        return send(client, crashray, victim, {"message": f"neighbour {event_id}"},
                    event_id).status_code

    def send_poison(client: httpx.Client, body: bytes) -> httpx.Response:
        return client.post(envelope_url(crashray, attacker.project_id), content=body,
                           headers=python_sdk_headers(attacker.key, gzipped=False))

    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=32)) as client, \
            ThreadPoolExecutor(32) as pool:
        poisoned = [pool.submit(send_poison, client, body) for _, body in poisons]
        statuses = list(pool.map(lambda e: send_valid(client, e), valid_ids))
        refused = [f.result() for f in poisoned]
    assert statuses == [200] * len(valid_ids)
    for (field, _), response in zip(poisons, refused, strict=True):
        assert response.status_code == 400, response.text
        assert assert_printable_error(response) == field
        assert response.json()["detail"] == field
    wait_until(lambda: set(valid_ids) <= stored_event_ids(crashray, victim), 60,
               "every neighbour's event stored")


# --- 2. nothing is read for a request whose key is unknown ----------------------------------


def gzip_bomb_prefix(first_line: bytes, wire_bytes: int) -> bytes:
    """The first ``wire_bytes`` of a gzip stream of ``first_line`` followed by zeros: a
    body that inflates about a thousandfold."""
    gz = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    out = [gz.compress(first_line)]
    size = len(out[0])
    block = bytes(MIB)
    while size < wire_bytes:
        piece = gz.compress(block)
        out.append(piece)
        size += len(piece)
    return b"".join(out)[:wire_bytes]


def answer_while_still_sending(c: RunningCrashray, path: str, headers: dict[str, str],
                               body_start: bytes, declared_bytes: int) -> tuple[int, bytes]:
    """POST announcing ``declared_bytes`` of body but sending only ``body_start``, then wait
    for the answer: the server must answer without the rest of the body. ``body_start``
    must exceed HAProxy's 16 KiB buffer, which it fills before it passes a request on
    (``option http-buffer-request``, cluster/haproxy.py)."""
    port = c.settings.port
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
             f"Content-Length: {declared_bytes}", "Connection: close",
             *(f"{k}: {v}" for k, v in headers.items())]
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body_start)
        received = b""
        try:
            while b"\r\n\r\n" not in received or not _complete(received):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except TimeoutError:
            pytest.fail(f"no answer within 15 s while {declared_bytes - len(body_start)}"
                        " bytes of the body were still unsent")
        except ConnectionResetError:
            pass
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), received[:200]
    return int(head.split()[1]), body


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


BOMB_DECLARED_BYTES = 50 * 1000 * 1000
BOMB_SENT_BYTES = 256 * 1024
GZIP_ENVELOPE = {"Content-Type": "application/x-sentry-envelope", "Content-Encoding": "gzip"}


def test_a_bomb_with_an_unknown_key_in_the_header_is_refused_before_its_body(
        crashray: RunningCrashray) -> None:
    bomb = gzip_bomb_prefix(b'{"event_id":"%s"}\n' % EVENT_ID.encode(), BOMB_SENT_BYTES)
    headers = {**GZIP_ENVELOPE, "X-Sentry-Auth": f"Sentry sentry_key={'0' * 32}"}
    status, body = answer_while_still_sending(crashray, "/api/1/envelope/", headers, bomb,
                                              BOMB_DECLARED_BYTES)
    assert status == 403
    assert orjson.loads(body)["detail"] == "event submission rejected with_reason: ProjectId"


def test_a_bomb_with_an_unknown_key_in_its_envelope_header_is_refused_after_that_line(
        crashray: RunningCrashray) -> None:
    header = b'{"dsn":"http://%s@127.0.0.1/1"}\n' % (b"0" * 32)
    bomb = gzip_bomb_prefix(header, BOMB_SENT_BYTES)
    status, body = answer_while_still_sending(crashray, "/api/1/envelope/", GZIP_ENVELOPE,
                                              bomb, BOMB_DECLARED_BYTES)
    assert status == 403, body


def test_a_bomb_without_credentials_is_refused_after_the_unauthenticated_limit(
        crashray: RunningCrashray) -> None:
    bomb = gzip_bomb_prefix(b"", BOMB_SENT_BYTES)
    status, body = answer_while_still_sending(crashray, "/api/1/envelope/", GZIP_ENVELOPE,
                                              bomb, BOMB_DECLARED_BYTES)
    assert status == 401, body
    answer = orjson.loads(body)
    assert answer["detail"] == "missing authorization information"
    assert "CRASHRAY_MAX_UNAUTHENTICATED_BODY_BYTES" in " ".join(answer["causes"])


def test_a_store_body_without_credentials_is_refused_before_it_is_read(
        crashray: RunningCrashray) -> None:
    status, body = answer_while_still_sending(
        crashray, "/api/1/store/", {"Content-Type": "application/json"}, b"{" * (64 * 1024),
        BOMB_DECLARED_BYTES)
    assert status == 401 and orjson.loads(body)["detail"] == "missing authorization information"


def test_a_tunnelled_envelope_with_its_dsn_inside_is_accepted_whole(
        crashray: RunningCrashray) -> None:
    """The browser SDK's tunnel style: no credentials outside the body; the envelope header
    names the DSN, and the envelope is larger than what is read before the key is known."""
    tenant = new_tenant(crashray, "tunnel")
    event_id = uuid.uuid4().hex
    event = orjson.dumps({"event_id": event_id, "message": "through the tunnel",
                          "platform": "javascript"})
    attachment = os.urandom(300 * 1024)
    dsn = f"http://{tenant.key}@127.0.0.1:{crashray.settings.port}/{tenant.project_id}"
    body = b"\n".join([
        orjson.dumps({"event_id": event_id, "dsn": dsn}),
        orjson.dumps({"type": "event", "length": len(event)}), event,
        orjson.dumps({"type": "attachment", "length": len(attachment),
                      "filename": "blob.bin"}), attachment])
    for encoding, content in (("identity", body), ("gzip", gzip.compress(body))):
        response = httpx.post(envelope_url(crashray, tenant.project_id), content=content,
                              headers={"Content-Type": "text/plain;charset=UTF-8",
                                       "Content-Encoding": encoding}, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json() == {"id": event_id}
    wait_until(lambda: event_id in stored_event_ids(crashray, tenant), 30, "the event stored")


# --- 3. the client address comes from trusted proxies only ---------------------------------


def test_the_client_address_is_taken_from_x_forwarded_for_only_behind_a_trusted_proxy(
        crashray: RunningCrashray) -> None:
    tenant = new_tenant(crashray, "address")
    settings = httpx.put(f"{crashray.base_url}/api/0/projects/{tenant.org_slug}/default/",
                         json={"dataScrubber": False, "scrubIPAddresses": False},
                         headers={"Authorization": f"Bearer {tenant.token}"}, timeout=10)
    assert settings.status_code == 200, settings.text
    time.sleep(1.0)  # consumers re-read project settings every 0.5 s in this suite
    sent = {}
    for source, forged, expected in ((UNTRUSTED_ADDRESS, "203.0.113.9", UNTRUSTED_ADDRESS),
                                     ("127.0.0.1", "198.51.100.7", "198.51.100.7")):
        event_id = uuid.uuid4().hex
        transport = httpx.HTTPTransport(local_address=source)
        with httpx.Client(transport=transport, timeout=10) as client:
            response = client.post(
                envelope_url(crashray, tenant.project_id),
                content=gzip_bytes(envelope_bytes(
                    {"message": "where from", "user": {"ip_address": "{{auto}}"}}, event_id)),
                headers={**python_sdk_headers(tenant.key), "X-Forwarded-For": forged})
        assert response.status_code == 200
        sent[event_id] = expected
    store = clickhouse_store(crashray.runtime.clickhouse_dsn)
    for event_id, expected in sent.items():
        body = wait_until(lambda e=event_id: store.event_body(  # type: ignore[misc]
            tenant.org_id, tenant.project_id, e), 30, "the stored event")
        assert orjson.loads(body)["user"]["ip_address"] == expected


# --- 4. every odd request is a 4xx that says why --------------------------------------------


def odd_requests(c: RunningCrashray) -> list[tuple[str, str, str, bytes, dict[str, str], int]]:
    """(what, method, path, body, headers, status)."""
    auth = python_sdk_headers(c.public_key, gzipped=False)
    body = envelope_bytes({"message": "odd"})
    query_auth = f"sentry_key={c.public_key}&sentry_version=7"
    return [
        ("a snowman for a project", "POST", "/api/%E2%98%83/envelope/", body, auth, 400),
        ("letters for a project", "POST", "/api/abc/envelope/", body, auth, 400),
        ("a project id above 64 bits", "POST", "/api/123456789012345678901234567890/envelope/",
         body, auth, 400),
        ("an unknown endpoint", "POST", "/api/1/nothing/", body, auth, 400),
        ("a NUL in the path", "POST", "/api/1/envelope/%00", body, auth, 400),
        ("an empty body", "POST", "/api/1/envelope/", b"", auth, 400),
        ("GET", "GET", "/api/1/envelope/", b"", auth, 405),
        ("PUT", "PUT", "/api/1/store/", body, auth, 405),
        ("an unknown content encoding", "POST", "/api/1/envelope/", body,
         {**auth, "Content-Encoding": "snappy"}, 400),
        ("a truncated gzip body", "POST", "/api/1/envelope/", gzip.compress(body)[:-12],
         {**auth, "Content-Encoding": "gzip"}, 400),
        ("gzip that is not", "POST", "/api/1/envelope/", b"\x1f\x8bnot gzip",
         {**auth, "Content-Encoding": "gzip"}, 400),
        ("a NUL key in the query", "POST", "/api/1/envelope/?sentry_key=%00&sentry_version=7",
         body, {"Content-Type": "application/x-sentry-envelope"}, 400),
        ("a NUL client in the query", "POST",
         f"/api/1/envelope/?{query_auth}&sentry_client=sdk%00", body,
         {"Content-Type": "application/x-sentry-envelope"}, 400),
        ("non-ASCII in the query", "POST", f"/api/1/envelope/?{query_auth}&x=%E2%98%83%FF",
         b"{" + body, {"Content-Type": "application/x-sentry-envelope"}, 400),
        ("a security report for a snowman", "POST", "/api/%E2%98%83/security/?sentry_key=x",
         b"{}", {"Content-Type": "application/csp-report"}, 400),
    ]


def test_odd_requests_are_4xx_with_a_printable_reason(crashray: RunningCrashray) -> None:
    failures = []
    with httpx.Client(timeout=10) as client:
        for what, method, path, body, headers, status in odd_requests(crashray):
            try:
                response = client.request(method, f"{crashray.base_url}{path}",
                                          content=body, headers=headers)
            except httpx.TransportError as exc:
                failures.append(f"{what}: {exc!r}")
                continue
            reason = response.headers.get("x-sentry-error", "")
            if (response.status_code != status or not reason.isascii()
                    or not reason.isprintable() or not response.json().get("detail")):
                failures.append(f"{what}: {response.status_code} {response.text[:200]!r}")
    assert failures == []


def test_a_wrong_method_names_the_allowed_ones(crashray: RunningCrashray) -> None:
    response = httpx.get(envelope_url(crashray, 1), timeout=10)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST, OPTIONS"
    assert "POST" in response.json()["detail"]


def test_oversized_request_headers_are_refused_and_the_server_still_answers(
        crashray: RunningCrashray) -> None:
    headers = {**python_sdk_headers(crashray.public_key), "X-Padding": "p" * (64 * 1024)}
    with httpx.Client(timeout=10) as client:
        response = client.post(envelope_url(crashray, 1),
                               content=gzip_bytes(envelope_bytes({"message": "big"})),
                               headers=headers)
        assert 400 <= response.status_code < 500
        ok = client.post(envelope_url(crashray, 1),
                         content=gzip_bytes(envelope_bytes({"message": "small"})),
                         headers=python_sdk_headers(crashray.public_key))
    assert ok.status_code == 200
