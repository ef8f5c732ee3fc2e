"""Organization stats over outcomes on the real ClickHouse engine (chDB, schema from the real
migrations; no Ray): ``ClickHouseStore.outcome_stats`` with events/stats.py around it."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from typing import Any

import pytest

from events.rows import Outcome, outcomes_table
from events.stats import MAX_STATS_ROWS, StatsQueryError, parse_stats_query, stats_response
from storage.clickhouse import ClickHouseStore

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 28, 13, 37, tzinfo=dt.UTC)
#: Organization ids of this module: the engine is shared by the whole pytest process.
_ORG_IDS = itertools.count(7_100_000, 2)


@pytest.fixture(scope="module")
def store(chdb_store: ClickHouseStore) -> ClickHouseStore:
    return chdb_store


@pytest.fixture
def org() -> int:
    """A fresh organization (rows of ``org + 1`` play another tenant)."""
    return next(_ORG_IDS)


def at(hour: int, minute: int = 0, day: int = 28) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=dt.UTC)


def outcome(org: int, project: int, when: dt.datetime, name: str = "accepted",
            category: str = "error", quantity: int = 1, reason: str = "", key_id: int = 1
            ) -> Outcome:
    return Outcome(org, project, key_id, when, name, reason, category, quantity)


def stats(store: ClickHouseStore, org: int, projects: Sequence[int], *pairs: tuple[str, str]
          ) -> dict[str, Any]:
    window = [] if any(k == "start" for k, _ in pairs) else [("statsPeriod", "6h")]
    query = parse_stats_query([("field", "sum(quantity)"), *window, *pairs], now=NOW)
    return stats_response(query, store.outcome_stats(org, projects, query))


def by_totals(body: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
    return [(g["by"], g["totals"]["sum(quantity)"]) for g in body["groups"]]


def test_grouped_by_outcome_and_category_with_default_counted_as_error(
        store: ClickHouseStore, org: int) -> None:
    store.insert("outcomes", outcomes_table([
        outcome(org, 1, at(10, 5), quantity=3), outcome(org, 1, at(10, 50), "accepted",
                                                         "default", 2),
        outcome(org, 2, at(12), "filtered", "error", 4, "discarded_hash"),
        outcome(org, 1, at(11), "accepted", "transaction", 1),
        outcome(org, 2, at(13), "rate_limited", "error", 6, "usage_exceeded"),
    ]))
    body = stats(store, org, [1, 2], ("groupBy", "outcome"), ("groupBy", "category"))
    assert by_totals(body) == [
        ({"outcome": "rate_limited", "category": "error"}, 6),
        ({"outcome": "accepted", "category": "error"}, 5),
        ({"outcome": "filtered", "category": "error"}, 4),
        ({"outcome": "accepted", "category": "transaction"}, 1),
    ]
    assert body["start"] == "2026-11-28T07:00:00Z" and body["end"] == "2026-11-28T14:00:00Z"
    accepted_errors = body["groups"][1]["series"]["sum(quantity)"]
    assert accepted_errors == [0, 0, 0, 5, 0, 0, 0]


def test_duplicate_rows_before_merges_add_up(store: ClickHouseStore, org: int) -> None:
    for _ in range(3):  # separate inserts: separate parts, not yet summed by a merge
        store.insert("outcomes", outcomes_table([outcome(org, 1, at(12, 30), quantity=2)]))
    body = stats(store, org, [1], ("category", "error"))
    assert by_totals(body) == [({}, 6)]
    assert body["groups"][0]["series"]["sum(quantity)"][5] == 6


def test_grouped_by_project_reason_and_key_id(store: ClickHouseStore, org: int) -> None:
    store.insert("outcomes", outcomes_table([
        outcome(org, 1, at(9), "filtered", reason="discarded_hash", key_id=7),
        outcome(org, 1, at(9), "filtered", reason="discarded_hash", key_id=8, quantity=2),
        outcome(org, 2, at(10), "invalid", reason="timestamp", key_id=7, quantity=5),
    ]))
    body = stats(store, org, [1, 2], ("groupBy", "project"), ("groupBy", "reason"),
                 ("groupBy", "key_id"), ("category", "error"))
    assert by_totals(body) == [
        ({"project": 2, "reason": "timestamp", "key_id": 7}, 5),
        ({"project": 1, "reason": "discarded_hash", "key_id": 8}, 2),
        ({"project": 1, "reason": "discarded_hash", "key_id": 7}, 1),
    ]


def test_filters_by_outcome_category_reason_project_and_key(store: ClickHouseStore, org: int
                                                             ) -> None:
    store.insert("outcomes", outcomes_table([
        outcome(org, 1, at(10), "accepted", "default", 1, key_id=1),
        outcome(org, 1, at(10), "accepted", "security", 2, key_id=2),
        outcome(org, 2, at(10), "accepted", "error", 4, key_id=1),
        outcome(org, 2, at(10), "filtered", "error", 8, "discarded_hash", key_id=1),
        outcome(org, 2, at(10), "accepted", "attachment", 1000, key_id=1),
    ]))

    def total(*pairs: tuple[str, str]) -> int:
        groups = stats(store, org, [1, 2], *pairs)["groups"]
        return sum(g["totals"]["sum(quantity)"] for g in groups)

    assert total(("category", "error")) == 15
    assert total(("category", "default")) == 1
    assert total(("category", "attachment")) == 1000
    assert total(("category", "error"), ("outcome", "accepted")) == 7
    assert total(("category", "error"), ("reason", "discarded_hash")) == 8
    assert total(("category", "error"), ("project", "1")) == 3
    assert total(("category", "error"), ("project", "-1")) == 15
    assert total(("category", "error"), ("key_id", "2")) == 2


def test_other_tenants_never_appear(store: ClickHouseStore, org: int) -> None:
    other_org = org + 1
    store.insert("outcomes", outcomes_table([
        outcome(org, 1, at(10), quantity=1),
        outcome(org, 3, at(10), quantity=10),  # this organization, but not visible
        outcome(other_org, 1, at(10), quantity=100),  # another organization, same project id
    ]))
    assert by_totals(stats(store, org, [1], ("groupBy", "project"), ("category", "error"))) == [
        ({"project": 1}, 1)]
    asked_for_hidden = stats(store, org, [1], ("groupBy", "project"), ("category", "error"),
                             ("project", "3"))
    assert asked_for_hidden["groups"] == []
    ungrouped = stats(store, org, [1], ("category", "error"), ("project", "1"), ("project", "3"))
    assert by_totals(ungrouped) == [({}, 1)]


def test_window_is_start_inclusive_end_exclusive_and_daily_buckets(
        store: ClickHouseStore, org: int) -> None:
    store.insert("outcomes", outcomes_table([
        outcome(org, 1, at(23, 59, day=25), quantity=1),  # before start
        outcome(org, 1, at(0, 0, day=26), quantity=2),
        outcome(org, 1, at(23, 10, day=26), quantity=3),
        outcome(org, 1, at(5, 0, day=27), quantity=4),
        outcome(org, 1, at(0, 0, day=28), quantity=5),  # at end
    ]))
    body = stats(store, org, [1], ("category", "error"), ("interval", "1d"),
                 ("start", "2026-11-26T00:00:00Z"), ("end", "2026-11-28T00:00:00Z"))
    assert body["intervals"] == ["2026-11-26T00:00:00Z", "2026-11-27T00:00:00Z"]
    assert body["groups"][0]["series"]["sum(quantity)"] == [5, 4]


def test_no_visible_project_answers_nothing(store: ClickHouseStore, org: int) -> None:
    store.insert("outcomes", outcomes_table([outcome(org, 1, at(10))]))
    query = parse_stats_query([("field", "sum(quantity)"), ("category", "error")], now=NOW)
    assert store.outcome_stats(org, [], query) == []


def test_too_many_groups_are_refused(store: ClickHouseStore, org: int) -> None:
    store.insert("outcomes", outcomes_table(
        [outcome(org, 1, at(10), key_id=n) for n in range(MAX_STATS_ROWS + 1)]))
    with pytest.raises(StatsQueryError, match=f"more than {MAX_STATS_ROWS}"):
        stats(store, org, [1], ("category", "error"), ("groupBy", "key_id"))
