"""An issue's totals within some environments (Sentry's issue details with
``?environment=``): its events, users, first and last event, and its events per hour or
day, read from ClickHouse ``events`` by the issue's grouping hashes. The hourly rollup has
no environment, so these read the events themselves, within the tenant scope (the
organization and the project) and, for the graphs, the period shown."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from storage.clickhouse import DISTINCT_USERS, EventStore, as_utc
from storage.scope import ProjectScope


@dataclass(frozen=True)
class EnvironmentTotals:
    events: int
    users: int
    first_seen: dt.datetime | None
    last_seen: dt.datetime | None


_SCOPE = ("organization_id = {org:UInt64} AND project_id = {project:UInt64}"
          " AND toString(primary_hash) IN {hashes:Array(String)}"
          " AND environment IN {environments:Array(String)}")


def environment_totals(store: EventStore, project: ProjectScope, hashes: Sequence[str],
                       environments: Sequence[str]) -> EnvironmentTotals:
    """The issue's events in ``environments`` (a re-delivered event once), its users as
    Sentry's ``sentry:user`` identifies them, its first and last event there."""
    if not hashes:
        return EnvironmentTotals(0, 0, None, None)
    rows = store.query_rows(
        f"SELECT uniqExact(event_id), {DISTINCT_USERS}, min(timestamp), max(timestamp)"
        f" FROM events WHERE {_SCOPE}", _parameters(project, hashes, environments))
    events = int(rows[0][0]) if rows else 0
    if events == 0:
        return EnvironmentTotals(0, 0, None, None)
    return EnvironmentTotals(events, int(rows[0][1]), as_utc(rows[0][2]), as_utc(rows[0][3]))


def environment_counts(store: EventStore, project: ProjectScope, hashes: Sequence[str],
                       environments: Sequence[str], buckets: Sequence[dt.datetime],
                       daily: bool) -> list[list[int]]:
    """Sentry's ``stats`` series over ``buckets`` (hour or day starts, UTC, ascending):
    [unix time, events in ``environments``] per bucket."""
    counts: dict[dt.datetime, int] = {}
    if hashes and buckets:
        bucket = "toStartOfDay(timestamp)" if daily else "toStartOfHour(timestamp)"
        rows = store.query_rows(
            f"SELECT {bucket} AS b, uniqExact(event_id) FROM events WHERE {_SCOPE}"
            " AND timestamp >= {since:DateTime64(6, 'UTC')} GROUP BY b",
            {**_parameters(project, hashes, environments), "since": buckets[0]})
        counts = {as_utc(r[0]): int(r[1]) for r in rows}
    return [[int(b.timestamp()), counts.get(b, 0)] for b in buckets]


def _parameters(project: ProjectScope, hashes: Sequence[str], environments: Sequence[str]
                ) -> dict[str, object]:
    return {"org": project.organization_id, "project": project.id, "hashes": list(hashes),
            "environments": list(environments)}

