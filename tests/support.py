"""Helpers shared by the integration and e2e suites (no fixtures here)."""

from __future__ import annotations

import contextlib
import gzip
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import orjson
import psycopg

from storage.scope import ProjectScope

#: The machine's PostgreSQL server (trust auth); .ci/run starts it when it is down.
ADMIN_POSTGRES_URL = os.environ.get("CRASHRAY_TEST_POSTGRES_ADMIN_URL",
                                    "postgresql://postgres@127.0.0.1:5432/postgres")

T = TypeVar("T")


def free_port() -> int:
    """A free port outside the kernel's ephemeral range, which Ray's own servers draw from
    while Crashray starts (a port picked there could be taken before HAProxy binds it)."""
    from cluster.runtime import free_side_port

    return free_side_port()


@contextlib.contextmanager
def scratch_database(prefix: str, admin_url: str = ADMIN_POSTGRES_URL) -> Iterator[str]:
    """A fresh database on the PostgreSQL server of ``admin_url`` (the machine's), dropped
    afterwards."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def migrated_project_database(prefix: str) -> Iterator[tuple[str, ProjectScope]]:
    """A scratch database with Crashray's schema, one organization ``acme`` and its project
    ``backend``: its URL and the project's scope."""
    from storage import postgres

    with scratch_database(prefix) as url:
        postgres.migrate(url)
        with psycopg.connect(url) as conn:
            org = conn.execute("INSERT INTO organizations (slug, name) VALUES ('acme', 'Acme')"
                               " RETURNING id").fetchone()
            assert org is not None
            made = conn.execute("INSERT INTO projects (organization_id, slug, name)"
                                " VALUES (%s, 'backend', 'Backend') RETURNING id",
                                (org[0],)).fetchone()
            assert made is not None
        yield url, ProjectScope(int(org[0]), int(made[0]))


def wait_until(check: Callable[[], T | None], timeout_s: float, what: str,
               interval_s: float = 0.1) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


def corpus_event(corpus_dir: Path, name: str = "python-sdk-2.75.0-exception") -> dict[str, object]:
    """The event payload of a captured SDK envelope, timestamped now as a live SDK would."""
    lines = (corpus_dir / f"{name}.envelope").read_bytes().split(b"\n")
    event: dict[str, object] = orjson.loads(lines[2])
    event["timestamp"] = time.time()
    return event


def error_event(corpus_dir: Path, title: str) -> dict[str, object]:
    """The corpus event turned into an error titled ``title`` ("Type: value")."""
    error_type, _, value = title.partition(": ")
    return {**corpus_event(corpus_dir),
            "exception": {"values": [{"type": error_type, "value": value}]}}


def envelope_bytes(event: dict[str, object], event_id: str | None = None,
                   extra_items: list[tuple[dict[str, object], bytes]] = ()) -> bytes:  # type: ignore[assignment]
    """An envelope as the Python SDK frames it (item headers with length)."""
    event_id = event_id or uuid.uuid4().hex
    payload = orjson.dumps({**event, "event_id": event_id})
    parts = [orjson.dumps({"event_id": event_id, "sent_at": "2026-11-28T16:05:56.437301Z"}),
             orjson.dumps({"type": "event", "length": len(payload)}), payload]
    for headers, body in extra_items:
        parts += [orjson.dumps({**headers, "length": len(body)}), body]
    return b"\n".join(parts) + b"\n"


def python_sdk_headers(public_key: str, gzipped: bool = True) -> dict[str, str]:
    headers = {"Content-Type": "application/x-sentry-envelope",
               "User-Agent": "sentry.python/2.75.0",
               "X-Sentry-Auth": f"Sentry sentry_key={public_key}, sentry_version=7,"
                                " sentry_client=sentry.python/2.75.0"}
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    return headers


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data)
