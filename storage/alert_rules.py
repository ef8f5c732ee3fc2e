"""Issue alert rules and the counts their conditions read (issue 13; migration 0024).

A rule is stored as the Sentry API body ``events.alert_rules.parse_rule`` accepted; the API
(serve_apps/api/alert_rules.py) reads and writes it within the caller's project. The
consumers read the rules of their batch's projects, count the batch's events into
per-issue time buckets (only for projects whose rules have frequency conditions), read the
window counts, and claim a (rule, issue) notification slot, all inside the batch's
transaction: a rule fires at most once per ``frequency_minutes`` per issue however many
consumers run, and a batch that rolls back neither counts nor fires.

Buckets: ``FINE_WIDTH_S`` (10 s) for windows that end within ``FINE_SPAN_S`` (two hours
back: the 1m/5m/15m/1h intervals and their comparisons), hourly beyond (a day, a week,
30 days). A window ``[now - offset - seconds, now - offset)`` counts the buckets that start
inside it, so its oldest edge is exact to one bucket width.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

from events.notify import NotifiedProject
from storage.scope import ProjectScope

FINE_WIDTH_S: Final = 10
COARSE_WIDTH_S: Final = 3600
#: Windows ending no further back than this (offset + length) use the fine buckets.
FINE_SPAN_S: Final = 2 * 3600
#: How long buckets are kept: the longest window (30 days) and its comparison (30 days).
FINE_KEEP_S: Final = FINE_SPAN_S + 600
COARSE_KEEP_S: Final = 61 * 86_400


@dataclass(frozen=True)
class StoredRule:
    id: int
    organization_id: int
    project_id: int
    name: str
    environment: str | None
    frequency_minutes: int
    body: Mapping[str, Any]
    created_by: str | None
    date_created: dt.datetime
    date_updated: dt.datetime


_COLUMNS: Final = ("id, organization_id, project_id, name, environment, frequency_minutes,"
                   " body, created_by, date_created, date_updated")


def _rule(row: Sequence[Any]) -> StoredRule:
    return StoredRule(int(row[0]), int(row[1]), int(row[2]), str(row[3]), row[4], int(row[5]),
                      dict(row[6]), row[7], row[8], row[9])


def create_rule(conn: psycopg.Connection[Any], scope: ProjectScope, name: str,
                environment: str | None, frequency_minutes: int, body: Mapping[str, Any],
                created_by: str | None) -> StoredRule:
    row = conn.execute(
        f"INSERT INTO alert_rules (organization_id, project_id, name, environment,"
        f" frequency_minutes, body, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        f" RETURNING {_COLUMNS}", (scope.organization_id, scope.id, name, environment,
                                   frequency_minutes, Jsonb(dict(body)), created_by)).fetchone()
    assert row is not None  # RETURNING of an INSERT
    return _rule(row)


def update_rule(conn: psycopg.Connection[Any], scope: ProjectScope, rule_id: int, name: str,
                environment: str | None, frequency_minutes: int, body: Mapping[str, Any]
                ) -> StoredRule | None:
    row = conn.execute(
        f"UPDATE alert_rules SET name = %s, environment = %s, frequency_minutes = %s,"
        f" body = %s, date_updated = now() WHERE id = %s AND organization_id = %s"
        f" AND project_id = %s RETURNING {_COLUMNS}",
        (name, environment, frequency_minutes, Jsonb(dict(body)), rule_id,
         scope.organization_id, scope.id)).fetchone()
    return None if row is None else _rule(row)


def get_rule(conn: psycopg.Connection[Any], scope: ProjectScope, rule_id: int
             ) -> StoredRule | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM alert_rules WHERE id = %s"
                       " AND organization_id = %s AND project_id = %s",
                       (rule_id, scope.organization_id, scope.id)).fetchone()
    return None if row is None else _rule(row)


def list_rules(conn: psycopg.Connection[Any], scope: ProjectScope, limit: int
               ) -> list[StoredRule]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM alert_rules WHERE organization_id = %s"
                        " AND project_id = %s ORDER BY id LIMIT %s",
                        (scope.organization_id, scope.id, limit)).fetchall()
    return [_rule(r) for r in rows]


def delete_rule(conn: psycopg.Connection[Any], scope: ProjectScope, rule_id: int) -> bool:
    return conn.execute("DELETE FROM alert_rules WHERE id = %s AND organization_id = %s"
                        " AND project_id = %s",
                        (rule_id, scope.organization_id, scope.id)).rowcount > 0


def rules_of_projects(conn: psycopg.Connection[Any], scopes: Iterable[ProjectScope]
                      ) -> dict[int, list[StoredRule]]:
    """The rules of each project (by project id; each named with its organization)."""
    pairs = sorted({(s.organization_id, s.id) for s in scopes})
    if not pairs:
        return {}
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM alert_rules WHERE (organization_id, project_id) IN"
        " (SELECT * FROM unnest(%s::bigint[], %s::bigint[])) ORDER BY id",
        ([p[0] for p in pairs], [p[1] for p in pairs])).fetchall()
    found: dict[int, list[StoredRule]] = {p[1]: [] for p in pairs}
    for row in rows:
        rule = _rule(row)
        found[rule.project_id].append(rule)
    return found


# --- notification slots --------------------------------------------------------------------
def claim_fires(conn: psycopg.Connection[Any], wanted: Sequence[tuple[int, int, int]],
                now: dt.datetime) -> set[tuple[int, int]]:
    """Of the (rule id, issue id, frequency minutes) wanted, those whose rule has not
    notified about the issue within its frequency; their slot is taken as of ``now``.
    Call inside the batch's transaction: the slots' rows stay locked until it ends, so a
    concurrent claim of the same pair waits for it and then sees the slot taken."""
    frequency = {(r, i): f for r, i, f in wanted}
    pairs = sorted(frequency)
    if not pairs:
        return set()
    rules, issues = [p[0] for p in pairs], [p[1] for p in pairs]
    conn.execute(
        "INSERT INTO alert_rule_fires (rule_id, issue_id, last_fired_at)"
        " SELECT r, i, 'epoch' FROM unnest(%s::bigint[], %s::bigint[]) AS v(r, i)"
        " ON CONFLICT DO NOTHING", (rules, issues))
    rows = conn.execute(
        "SELECT rule_id, issue_id, last_fired_at FROM alert_rule_fires"
        " WHERE (rule_id, issue_id) IN (SELECT * FROM unnest(%s::bigint[], %s::bigint[]))"
        " ORDER BY rule_id, issue_id FOR UPDATE", (rules, issues)).fetchall()
    due = sorted((int(r), int(i)) for r, i, last in rows
                 if last <= now - dt.timedelta(minutes=frequency[(int(r), int(i))]))
    if due:
        conn.execute(
            "UPDATE alert_rule_fires SET last_fired_at = %s WHERE (rule_id, issue_id) IN"
            " (SELECT * FROM unnest(%s::bigint[], %s::bigint[]))",
            (now, [d[0] for d in due], [d[1] for d in due]))
    return set(due)


# --- window counts -------------------------------------------------------------------------
@dataclass(frozen=True)
class CountedForAlerts:
    issue_id: int
    timestamp: dt.datetime
    user_key: str | None
    environment: str | None


#: The environment key of a window over every event.
ALL_ENVIRONMENTS: Final = ""


def _bucket(ts: dt.datetime, width_s: int) -> dt.datetime:
    epoch = int(ts.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % width_s, dt.UTC)


def count_for_alerts(conn: psycopg.Connection[Any], events: Sequence[CountedForAlerts],
                     with_users: bool) -> None:
    """Add ``events`` to their issues' buckets (both widths; every event under
    ``ALL_ENVIRONMENTS`` and under its environment); users too when a rule counts them.
    Inside the batch's transaction, in one lock order (no deadlocks between consumers)."""
    counts: dict[tuple[int, int, str, dt.datetime], int] = {}
    users: set[tuple[int, int, str, dt.datetime, str]] = set()
    for e in events:
        environments = {ALL_ENVIRONMENTS, e.environment or ALL_ENVIRONMENTS}
        for width in (FINE_WIDTH_S, COARSE_WIDTH_S):
            for environment in environments:
                key = (e.issue_id, width, environment, _bucket(e.timestamp, width))
                counts[key] = counts.get(key, 0) + 1
                if with_users and e.user_key:
                    users.add((*key, e.user_key))
    if counts:
        keys = sorted(counts)
        conn.execute(
            "INSERT INTO alert_issue_counts (issue_id, width_s, environment, bucket, events)"
            " SELECT * FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::timestamptz[],"
            " %s::bigint[]) ON CONFLICT (issue_id, width_s, environment, bucket) DO UPDATE"
            " SET events = alert_issue_counts.events + EXCLUDED.events",
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
             [k[3] for k in keys], [counts[k] for k in keys]))
    if users:
        rows = sorted(users)
        conn.execute(
            "INSERT INTO alert_issue_users (issue_id, width_s, environment, bucket, user_key)"
            " SELECT * FROM unnest(%s::bigint[], %s::int[], %s::text[], %s::timestamptz[],"
            " %s::text[]) ON CONFLICT DO NOTHING",
            ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows],
             [r[3] for r in rows], [r[4] for r in rows]))


def width_for(seconds: int, offset_seconds: int) -> int:
    return FINE_WIDTH_S if seconds + offset_seconds <= FINE_SPAN_S else COARSE_WIDTH_S


#: A window as storage counts it: (kind, seconds, offset seconds, environment or None).
WindowKey = tuple[str, int, int, str | None]


def window_counts(conn: psycopg.Connection[Any], issue_ids: Sequence[int],
                  windows: Iterable[WindowKey], now: dt.datetime
                  ) -> dict[int, dict[WindowKey, int]]:
    """For each issue, the events (``kind`` "events") or distinct users ("users") of the
    environment (None: all) in each window ending ``offset`` seconds before ``now``."""
    wanted = sorted(set(windows), key=lambda w: (w[0], w[1], w[2], w[3] or ""))
    found: dict[int, dict[WindowKey, int]] = {i: dict.fromkeys(wanted, 0) for i in issue_ids}
    if not issue_ids or not wanted:
        return found
    for kind, seconds, offset, environment in wanted:
        width = width_for(seconds, offset)
        end = now - dt.timedelta(seconds=offset)
        start = end - dt.timedelta(seconds=seconds)
        if kind == "users":
            sql = ("SELECT issue_id, count(DISTINCT user_key) FROM alert_issue_users"
                   " WHERE issue_id = ANY(%s) AND width_s = %s AND environment = %s"
                   " AND bucket >= %s AND bucket < %s GROUP BY issue_id")
        else:
            sql = ("SELECT issue_id, sum(events) FROM alert_issue_counts"
                   " WHERE issue_id = ANY(%s) AND width_s = %s AND environment = %s"
                   " AND bucket >= %s AND bucket < %s GROUP BY issue_id")
        # A bucket that started before ``end`` holds events up to ``end`` (for offset 0:
        # the current, partial bucket is in).
        upper = end if offset else end + dt.timedelta(seconds=width)
        rows = conn.execute(sql, (list(issue_ids), width, environment or ALL_ENVIRONMENTS,
                                  start, upper)).fetchall()
        for issue_id, n in rows:
            found[int(issue_id)][(kind, seconds, offset, environment)] = int(n)
    return found


def prune_alert_counts(conn: psycopg.Connection[Any], now: dt.datetime) -> int:
    """Forget buckets no window reaches any more; how many rows went."""
    fine = now - dt.timedelta(seconds=FINE_KEEP_S)
    coarse = now - dt.timedelta(seconds=COARSE_KEEP_S)
    gone = 0
    for table in ("alert_issue_counts", "alert_issue_users"):
        gone += conn.execute(
            f"DELETE FROM {table} WHERE (width_s = %s AND bucket < %s)"
            " OR (width_s = %s AND bucket < %s)",
            (FINE_WIDTH_S, fine, COARSE_WIDTH_S, coarse)).rowcount
    return gone


# --- what the consumers' rule evaluation reads ------------------------------------------
def issue_ages(conn: psycopg.Connection[Any], issue_ids: Sequence[int]
            ) -> dict[int, tuple[dt.datetime, int]]:
    rows = conn.execute("SELECT id, first_seen, times_seen FROM issues WHERE id = ANY(%s)",
                        (list(issue_ids),)).fetchall()
    return {int(r[0]): (r[1], int(r[2])) for r in rows}


def latest_releases(conn: psycopg.Connection[Any], scopes: Sequence[ProjectScope]
                     ) -> dict[int, str]:
    """Each project's latest release (the newest created), for the latest-release filter."""
    rows = conn.execute(
        "SELECT DISTINCT ON (rp.project_id) rp.project_id, r.version FROM release_projects rp"
        " JOIN releases r ON r.id = rp.release_id"
        " WHERE (r.organization_id, rp.project_id) IN"
        " (SELECT * FROM unnest(%s::bigint[], %s::bigint[]))"
        " ORDER BY rp.project_id, r.date_added DESC, r.id DESC",
        ([s.organization_id for s in scopes], [s.id for s in scopes])).fetchall()
    return {int(r[0]): str(r[1]) for r in rows}


def notified_projects(conn: psycopg.Connection[Any], scopes: Sequence[ProjectScope]
              ) -> dict[int, NotifiedProject]:
    rows = conn.execute(
        "SELECT p.id, p.slug, p.name, o.slug FROM projects p JOIN organizations o"
        " ON o.id = p.organization_id WHERE (p.organization_id, p.id) IN"
        " (SELECT * FROM unnest(%s::bigint[], %s::bigint[]))",
        ([s.organization_id for s in scopes], [s.id for s in scopes])).fetchall()
    return {int(r[0]): NotifiedProject(int(r[0]), str(r[1]), str(r[2] or r[1]), str(r[3]))
            for r in rows}
