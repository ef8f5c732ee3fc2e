"""Ingest's DSN key cache (serve_apps/ingest_request.KeyCache) against the real PostgreSQL
server while it does not answer (another session holds the keys table's ACCESS EXCLUSIVE
lock, so the reload waits, as on a frozen server) and while it refuses (a closed port).
No Ray needed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from events.errors import Overloaded
from serve_apps.ingest_request import KeyCache
from tests.support import free_port, migrated_project_database

LOAD_TIMEOUT_S = 0.5
#: Generous for a loaded 2-core CI machine: what is tested is "not waiting for the server".
PROMPT_S = 0.4


@pytest.fixture
def keys_url() -> Iterator[tuple[str, str]]:
    """A migrated database with one active key: its URL and the key."""
    with migrated_project_database("crashray_keys") as (url, scope):
        key = uuid.uuid4().hex
        with psycopg.connect(url) as conn:
            conn.execute("INSERT INTO project_keys (project_id, public_key, secret_key)"
                         " VALUES (%s, %s, 'x')", (scope.id, key))
        yield url, key


def test_a_known_key_is_answered_while_the_server_hangs_and_an_unknown_one_gets_503(
        keys_url: tuple[str, str]) -> None:
    url, key = keys_url

    async def scenario() -> None:
        cache = KeyCache(url, refresh_s=0.0, miss_reload_s=0.0, load_timeout_s=LOAD_TIMEOUT_S)
        assert (found := await cache.get(key)) is not None and found.public_key == key
        with psycopg.connect(url) as held:
            held.execute("LOCK TABLE project_keys IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            assert await cache.get(key) is not None  # stale, a reload under way beside it
            assert await cache.get(key) is not None
            assert time.monotonic() - started < PROMPT_S
            with pytest.raises(Overloaded) as refused:
                await cache.get(uuid.uuid4().hex)
            assert refused.value.status == 503
            assert "CRASHRAY_HANDOFF_TIMEOUT_S" in " ".join(refused.value.causes)
            held.rollback()
        await asyncio.sleep(0.2)  # the reload that waited for the lock finishes

    asyncio.run(scenario())


def test_an_unknown_key_while_the_server_refuses_is_a_503_not_a_403() -> None:
    """Unknown because PostgreSQL could not be asked is not unknown: a new project's SDK
    would drop its events on a 403."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/crashray"

    async def scenario() -> None:
        cache = KeyCache(url, refresh_s=5.0, miss_reload_s=1.0, load_timeout_s=LOAD_TIMEOUT_S)
        for _ in range(2):  # the second within miss_reload_s: no new attempt, same answer
            with pytest.raises(Overloaded, match="cannot be checked now"):
                await cache.get(uuid.uuid4().hex)

    asyncio.run(scenario())
