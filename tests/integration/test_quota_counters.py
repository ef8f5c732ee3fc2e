"""The rate limiter's counters in PostgreSQL (storage/quotas.py ``add_to_counters``).

Real parts: a scratch PostgreSQL database with Crashray's schema."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from storage.quotas import add_to_counters
from tests.support import migrated_project_database

pytestmark = pytest.mark.integration


@pytest.fixture
def url() -> Iterator[str]:
    with migrated_project_database("crashray_quota_counters") as (made, _):
        yield made


def test_window_ends_given_as_int_and_float_are_stored_in_one_statement(url: str) -> None:
    # A rate limiter restarted with a lease hand-back pending gives that counter the float
    # ``now`` as its window end, beside the int ends of the windows it decided: before the
    # fix every check of that batch, and of each batch after it, failed (ingest answered 503).
    with psycopg.connect(url, autocommit=True) as conn:
        add_to_counters(conn, {("key:1", 100): 3, ("key:2", 100): -2},
                        {("key:1", 100): 1_900_000_060, ("key:2", 100): 1_900_000_012.5})
        add_to_counters(conn, {("key:1", 100): 1}, {("key:1", 100): 1_900_000_060})
        rows = conn.execute("SELECT counter, count, extract(epoch FROM expires_at)::float8"
                            " FROM quota_counters ORDER BY counter").fetchall()
    assert rows == [("key:1", 4, 1_900_000_060.0), ("key:2", -2, 1_900_000_012.5)]


