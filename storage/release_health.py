"""What ClickHouse knows about releases: their events, and their sessions (release health).

Every query names the organization and the projects the caller sees; a release is read by
its version among them only, so another organization's release of the same name is never
counted. Sentry's definitions (docs.sentry.io, "Release Health"):

* a session is counted when it starts (its ``init`` update; an SDK's aggregate counts its
  sessions as started), and it crashed when an update says ``crashed``;
* crash-free sessions = 100 * (1 - crashed sessions / sessions);
* users are the sessions' distinct ids (``did``); crash-free users = 100 * (1 - users with
  a crashed session / users). Sessions without a ``did`` count no user.

``sessions_raw`` keeps re-delivered rows until it merges them (ReplacingMergeTree by queue
item and row), so sessions are read ``FINAL``; events are counted by distinct id.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from storage.clickhouse import EventStore, as_utc

#: Sentry's release list computes health over the last 14 days unless told otherwise
#: (``summaryStatsPeriod``).
DEFAULT_HEALTH_PERIOD: Final = dt.timedelta(days=14)


@dataclass(frozen=True)
class ReleaseEvents:
    """A release's error events in the projects asked for."""

    count: int
    first: dt.datetime
    last: dt.datetime


@dataclass(frozen=True)
class ReleaseHealth:
    """One project's sessions of one release over the period asked for."""

    sessions: int
    sessions_crashed: int
    sessions_abnormal: int
    users: int
    users_crashed: int

    @property
    def crash_free_sessions(self) -> float | None:
        """Percent of sessions that did not crash; None without sessions (Sentry: null)."""
        return _percent_free(self.sessions_crashed, self.sessions)

    @property
    def crash_free_users(self) -> float | None:
        """Percent of users none of whose sessions crashed; None without users."""
        return _percent_free(self.users_crashed, self.users)


def _percent_free(crashed: int, total: int) -> float | None:
    if total <= 0:
        return None
    return max(0.0, 100.0 * (1 - crashed / total))


def release_events(store: EventStore, organization_id: int, project_ids: Iterable[int],
                   versions: Iterable[str]) -> dict[str, ReleaseEvents]:
    """Per version (of those asked), its events: how many (a re-delivered event once),
    the first and the last. Versions without events are left out."""
    wanted = sorted(set(versions))
    projects = sorted(project_ids)
    if not wanted or not projects:
        return {}
    rows = store.query_rows(
        "SELECT release, uniqExact(event_id), min(timestamp), max(timestamp) FROM events"
        " WHERE organization_id = {org:UInt64} AND project_id IN {projects:Array(UInt64)}"
        " AND release IN {versions:Array(String)} GROUP BY release",
        {"org": organization_id, "projects": projects, "versions": wanted})
    return {str(r[0]): ReleaseEvents(int(r[1]), as_utc(r[2]), as_utc(r[3])) for r in rows}


def release_health(store: EventStore, organization_id: int, project_ids: Iterable[int],
                   versions: Iterable[str], since: dt.datetime
                   ) -> dict[tuple[str, int], ReleaseHealth]:
    """Per (version, project), its sessions received since ``since``; pairs without
    sessions are left out (Sentry's ``hasHealthData`` false)."""
    wanted = sorted(set(versions))
    projects = sorted(project_ids)
    if not wanted or not projects:
        return {}
    rows = store.query_rows(
        "SELECT release, project_id, sumIf(quantity, is_init = 1),"
        " sumIf(quantity, status = 'crashed'), sumIf(quantity, status = 'abnormal'),"
        " uniqExactIf(distinct_id, distinct_id != ''),"
        " uniqExactIf(distinct_id, distinct_id != '' AND status = 'crashed')"
        " FROM sessions_raw FINAL WHERE organization_id = {org:UInt64}"
        " AND project_id IN {projects:Array(UInt64)} AND release IN {versions:Array(String)}"
        " AND received >= {since:DateTime64(3, 'UTC')} GROUP BY release, project_id",
        {"org": organization_id, "projects": projects, "versions": wanted,
         "since": since.astimezone(dt.UTC)})
    return {(str(r[0]), int(r[1])): ReleaseHealth(int(r[2]), int(r[3]), int(r[4]), int(r[5]),
                                                  int(r[6])) for r in rows}

