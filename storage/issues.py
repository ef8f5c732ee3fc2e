"""Issues (Sentry's "groups") in PostgreSQL: hash → issue, and their counters.

Grouping hashes point to issues (``group_hashes``), so a later merge only re-points hashes
and never rewrites ClickHouse. Counters are updated once per batch and per issue, and only
for events not counted before (``processed_events``), so a re-delivered event never counts
twice.

Tenant scope: what the API reads or changes takes the project as a ``ProjectScope``
(organization and project, resolved within the caller's organization) or, for lists over
several projects, the organization id and its project ids; the SQL keeps to them. The
consumers' batch functions (``issue_ids_for``, ``record_events``, ``settled_issues``,
``hash_owners``) take each item's project as ingest fixed it from the DSN key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from events.ownership import Owner
from events.search import IssueFilters
from storage.errors import IssueGone
from storage.scope import ProjectScope
from storage.search_sql import SearchViewer, issue_where

#: Namespace of the advisory locks that serialize creating the issue of one new hash.
_ISSUE_LOCK_NAMESPACE = 0x6973


@dataclass(frozen=True)
class IssueCandidate:
    """An event's grouping result and what a new issue for it would look like."""

    project_id: int
    hashes: tuple[str, ...]
    grouping_config: str
    title: str
    culprit: str
    type: str
    level: str
    platform: str
    timestamp: dt.datetime
    release: str | None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: Hashes under the project's previous grouping version during a transition: they only
    #: find an existing issue (which the event's own hashes then join), never create one.
    secondary_hashes: tuple[str, ...] = ()
    #: Who the project's ownership rules name (a new issue is assigned to them).
    owner: Owner | None = None


def issue_ids_for(conn: psycopg.Connection[Any], candidates: Sequence[IssueCandidate]
                  ) -> list[int | None]:
    """The issue of every candidate, creating issues for hashes never seen before; None for
    a candidate with a hash of a deleted issue (its event is to be discarded).

    An event joins the issue of the first of its hashes that already exists, else of the
    first of its secondary hashes (its own hashes then join that issue). New hashes are
    created under a per-hash advisory lock, so concurrent consumers create exactly one
    issue for a new hash."""
    known, tombstoned = _hash_states(conn, candidates)
    result: list[int | None] = []
    unlinked: list[tuple[int, str, int, str]] = []
    for candidate in candidates:
        project = candidate.project_id
        if any((project, h) in tombstoned
               for h in (*candidate.hashes, *candidate.secondary_hashes)):
            result.append(None)
            continue
        issue_id = next((known[(project, h)] for h in
                         (*candidate.hashes, *candidate.secondary_hashes)
                         if (project, h) in known), None)
        if issue_id is None:
            issue_id = _create_issue(conn, candidate)
        else:
            # Its other hashes (say, a new app hash beside a known system one, or the new
            # version's hashes of an issue found by its old ones) join the issue too, so
            # later events with only those hashes find it.
            unlinked.extend((project, h, issue_id, candidate.grouping_config)
                            for h in candidate.hashes if (project, h) not in known)
        for h in candidate.hashes:
            known.setdefault((project, h), issue_id)
        result.append(issue_id)
    _link_hashes(conn, unlinked)
    return result


def _link_hashes(conn: psycopg.Connection[Any], rows: Sequence[tuple[int, str, int, str]]
                 ) -> None:
    if not rows:
        return
    projects, hashes, issues, configs = (list(c) for c in zip(*rows, strict=True))
    with conn.transaction():
        conn.execute(
            "INSERT INTO group_hashes (project_id, hash, issue_id, grouping_config)"
            " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bigint[], %s::text[])"
            " ON CONFLICT DO NOTHING", (projects, hashes, issues, configs))


def _hash_states(conn: psycopg.Connection[Any], candidates: Sequence[IssueCandidate]
                 ) -> tuple[dict[tuple[int, str], int], set[tuple[int, str]]]:
    """For every (project, hash) of the candidates: the issue it belongs to, if any, and
    whether it is tombstoned (its issue was deleted) — one query for both."""
    pairs = {(c.project_id, h) for c in candidates for h in (*c.hashes, *c.secondary_hashes)}
    if not pairs:
        return {}, set()
    projects, hashes = zip(*pairs, strict=True)
    with conn.transaction():
        rows = conn.execute(
            "SELECT k.project_id, k.hash, g.issue_id, t.hash IS NOT NULL"
            " FROM unnest(%s::bigint[], %s::text[]) AS k(project_id, hash)"
            " LEFT JOIN group_hashes g ON g.project_id = k.project_id AND g.hash = k.hash"
            " LEFT JOIN group_tombstones t ON t.project_id = k.project_id AND t.hash = k.hash"
            " WHERE g.issue_id IS NOT NULL OR t.hash IS NOT NULL",
            (list(projects), list(hashes))).fetchall()
    known = {(int(r[0]), str(r[1])): int(r[2]) for r in rows if r[2] is not None}
    return known, {(int(r[0]), str(r[1])) for r in rows if r[3]}


def _create_issue(conn: psycopg.Connection[Any], c: IssueCandidate) -> int:
    with conn.transaction():
        # Every hash of the event is locked, in one order: an event whose hashes overlap
        # another's only partly (app+system vs system) must wait for it, too.
        for h in sorted(c.hashes):
            conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                         (_ISSUE_LOCK_NAMESPACE, f"{c.project_id}:{h}"))
        row = conn.execute("SELECT issue_id FROM group_hashes WHERE project_id = %s AND"
                           " hash = ANY(%s) LIMIT 1", (c.project_id, list(c.hashes))).fetchone()
        if row is not None:  # another consumer created it while we waited for the lock
            _insert_hashes(conn, c, int(row[0]))
            return int(row[0])
        created = conn.execute(
            "INSERT INTO issues (project_id, title, culprit, type, metadata, level, platform,"
            " first_seen, last_seen, times_seen, first_release, last_release, substatus)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 0, %s, %s, 'new') RETURNING id",
            (c.project_id, c.title, c.culprit, c.type, Jsonb(dict(c.metadata)), c.level,
             c.platform, c.timestamp, c.timestamp, c.release, c.release)).fetchone()
        assert created is not None  # INSERT ... RETURNING always returns the row
        issue_id = int(created[0])
        _insert_hashes(conn, c, issue_id)
        if c.owner is not None:
            _assign_to_owner(conn, c.project_id, issue_id, c.owner)
    return issue_id


def _assign_to_owner(conn: psycopg.Connection[Any], project_id: int, issue_id: int,
                     owner: Owner) -> None:
    """Auto-assign a new issue to its owner: a member (by e-mail or username) or team (by
    slug) of the project's organization; an owner who left it assigns nobody."""
    org = "(SELECT organization_id FROM projects WHERE id = %(project)s)"
    if owner.kind == "team":
        target = ("assignee_team_id = (SELECT id FROM teams WHERE organization_id = "
                  f"{org} AND slug = %(name)s)")
    else:
        target = ("assignee_user_id = (SELECT u.id FROM users u JOIN organization_members m"
                  f" ON m.user_id = u.id WHERE m.organization_id = {org} AND (u.username ="
                  " %(name)s OR lower(u.email) = lower(%(name)s)) ORDER BY u.username ="
                  " %(name)s DESC LIMIT 1)")
    row = conn.execute(
        f"UPDATE issues SET {target} WHERE id = %(issue)s RETURNING"
        " coalesce(assignee_user_id, assignee_team_id)",
        {"project": project_id, "name": owner.name, "issue": issue_id}).fetchone()
    if row is None or row[0] is None:
        return
    add_activity(conn, issue_id, project_id, "assigned",
                 {"assignee": str(row[0]), "assigneeType": owner.kind,
                  "assigneeName": owner.name, "rule": "ownership"}, "crashray")
    if owner.kind == "user":
        conn.execute("INSERT INTO issue_subscriptions (issue_id, user_id, is_active, reason)"
                     " VALUES (%s, %s, true, 'assigned') ON CONFLICT DO NOTHING",
                     (issue_id, row[0]))


def _insert_hashes(conn: psycopg.Connection[Any], c: IssueCandidate, issue_id: int) -> None:
    conn.execute(
        "INSERT INTO group_hashes (project_id, hash, issue_id, grouping_config)"
        " SELECT %s, h, %s, %s FROM unnest(%s::text[]) AS h ON CONFLICT DO NOTHING",
        (c.project_id, issue_id, c.grouping_config, list(c.hashes)))


@dataclass(frozen=True)
class CountedEvent:
    project_id: int
    event_id: str
    issue_id: int
    timestamp: dt.datetime
    level: str
    release: str | None


def record_events(conn: psycopg.Connection[Any], events: Sequence[CountedEvent]
                  ) -> dict[int, list[CountedEvent]]:
    """Count events into their issues, skipping events counted before; call inside the
    transaction that also acknowledges the queue items. Returns the new events per issue."""
    if not events:
        return {}
    new = {
        (int(r[0]), str(r[1])) for r in conn.execute(
            "INSERT INTO processed_events (project_id, event_id)"
            " SELECT * FROM unnest(%s::bigint[], %s::text[]) ON CONFLICT DO NOTHING"
            " RETURNING project_id, event_id",
            ([e.project_id for e in events], [e.event_id for e in events])).fetchall()
    }
    totals: dict[int, list[Any]] = {}
    counted: dict[int, list[CountedEvent]] = {}
    for e in sorted(events, key=lambda e: e.timestamp):
        if (e.project_id, e.event_id) not in new:
            continue
        new.discard((e.project_id, e.event_id))  # the same event twice in one batch
        counted.setdefault(e.issue_id, []).append(e)
        t = totals.setdefault(e.issue_id, [0, e.timestamp, e.timestamp, None, e.level])
        t[0] += 1
        t[2], t[4] = e.timestamp, e.level
        t[3] = e.release or t[3]
    if totals:
        # Sorted, so that two consumers updating the same issues lock them in the same
        # order and never deadlock.
        ids = sorted(totals)
        updated = conn.execute(
            "UPDATE issues SET times_seen = issues.times_seen + v.n,"
            " first_seen = least(issues.first_seen, v.first_ts),"
            " last_seen = greatest(issues.last_seen, v.last_ts),"
            " last_release = coalesce(v.release, issues.last_release),"
            " first_release = coalesce(issues.first_release, v.release), level = v.level"
            " FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::timestamptz[],"
            " %s::text[], %s::text[]) AS v(id, n, first_ts, last_ts, release, level)"
            " WHERE issues.id = v.id RETURNING issues.id",
            (ids, [totals[i][0] for i in ids], [totals[i][1] for i in ids],
             [totals[i][2] for i in ids], [totals[i][3] for i in ids],
             [totals[i][4] for i in ids])).fetchall()
        gone = set(ids) - {int(r[0]) for r in updated}
        if gone:
            # Never count (and store) events into an issue that is gone: the caller's
            # transaction is rolled back and the batch retried, grouped afresh.
            raise IssueGone(f"issues {sorted(gone)} were deleted after these events were"
                            " grouped into them; the batch is retried and grouped again")
    return counted


@dataclass(frozen=True)
class IssueStatus:
    id: int
    project_id: int
    status: str
    status_details: Mapping[str, Any]
    times_seen: int


def settled_issues(conn: psycopg.Connection[Any], issue_ids: Sequence[int]
                   ) -> list[IssueStatus]:
    """The resolved or ignored issues among ``issue_ids`` (those new events may reopen)."""
    rows = conn.execute(
        "SELECT id, project_id, status, status_details, times_seen FROM issues"
        " WHERE id = ANY(%s) AND status <> 'unresolved' ORDER BY id",
        (sorted(issue_ids),)).fetchall()
    return [IssueStatus(int(r[0]), int(r[1]), str(r[2]), r[3], int(r[4])) for r in rows]


def bump_grouping_epoch(conn: psycopg.Connection[Any], project_id: int) -> None:
    """Tell grouping caches that hashes of ``project_id`` may point elsewhere now."""
    conn.execute("UPDATE projects SET grouping_epoch = grouping_epoch + 1 WHERE id = %s",
                 (project_id,))


def add_activity(conn: psycopg.Connection[Any], issue_id: int, project_id: int, kind: str,
                 data: Mapping[str, Any], actor: str) -> None:
    conn.execute("INSERT INTO issue_activity (issue_id, project_id, type, data, actor)"
                 " VALUES (%s, %s, %s, %s, %s)", (issue_id, project_id, kind, Jsonb(dict(data)),
                                                 actor))


#: Keeps a statement to the scope's organization (``issues`` rows carry only the project).
_IN_ORGANIZATION = " AND project_id IN (SELECT id FROM projects WHERE organization_id = %s)"


def get_issue(conn: psycopg.Connection[Any], project: ProjectScope, issue_id: int
              ) -> IssueRow | None:
    row = conn.execute(f"SELECT {_ISSUE_COLUMNS} FROM issues WHERE project_id = %s AND id = %s"
                       + _IN_ORGANIZATION, (project.id, issue_id, project.organization_id)
                       ).fetchone()
    return None if row is None else IssueRow(*row)


def set_status(conn: psycopg.Connection[Any], project: ProjectScope, issue_id: int,
               status: str, substatus: str | None, details: Mapping[str, Any], activity: str,
               data: Mapping[str, Any], actor: str) -> None:
    """Move an issue to ``status`` and record who did it (call inside a transaction)."""
    conn.execute("UPDATE issues SET status = %s, substatus = %s, status_details = %s"
                 " WHERE project_id = %s AND id = %s",
                 (status, substatus, Jsonb(dict(details)), project.id, issue_id))
    add_activity(conn, issue_id, project.id, activity, data, actor)


@dataclass(frozen=True)
class Activity:
    id: int
    type: str
    data: Mapping[str, Any]
    actor: str
    date_added: dt.datetime
    #: The user who wrote it (notes), when a user did.
    user_id: int | None = None


ACTIVITY_COLUMNS = "id, type, data, actor, date_added, user_id"


def activity_of_row(r: Sequence[Any]) -> Activity:
    return Activity(int(r[0]), str(r[1]), r[2], str(r[3]), r[4],
                    None if r[5] is None else int(r[5]))


def issue_activity(conn: psycopg.Connection[Any], project: ProjectScope, issue_id: int,
                   kind: str | None = None) -> list[Activity]:
    """An issue's activity, newest first; only entries of type ``kind`` when given."""
    rows = conn.execute(f"SELECT {ACTIVITY_COLUMNS} FROM issue_activity"
                        " WHERE project_id = %s AND issue_id = %s"
                        " AND (%s::text IS NULL OR type = %s) ORDER BY id DESC",
                        (project.id, issue_id, kind, kind)).fetchall()
    return [activity_of_row(r) for r in rows]


def prune_processed_events(conn: psycopg.Connection[Any], older_than_s: float,
                           max_rows: int) -> int:
    """Forget up to ``max_rows`` event ids counted more than ``older_than_s`` ago; returns
    how many. A re-delivery comes within a lease or a consumer-group rebalance, so the
    de-duplication window only has to outlast those, and the table stays bounded."""
    with conn.transaction():
        cur = conn.execute(
            "DELETE FROM processed_events WHERE (project_id, event_id) IN ("
            " SELECT project_id, event_id FROM processed_events"
            " WHERE processed_at < now() - make_interval(secs => %s) LIMIT %s)",
            (older_than_s, max_rows))
    return cur.rowcount


@dataclass(frozen=True)
class IssueRow:
    id: int
    project_id: int
    title: str
    culprit: str
    type: str
    metadata: Mapping[str, Any]
    level: str
    platform: str
    status: str
    substatus: str | None
    status_details: Mapping[str, Any]
    last_release: str | None
    first_seen: dt.datetime
    last_seen: dt.datetime
    times_seen: int
    merged_into: int | None
    assignee_user_id: int | None = None
    assignee_team_id: int | None = None


_ISSUE_COLUMNS = ("id, project_id, title, culprit, type, metadata, level, platform, status,"
                  " substatus, status_details, last_release,"
                  " first_seen, last_seen, times_seen, merged_into, assignee_user_id,"
                  " assignee_team_id")


def issue_project(conn: psycopg.Connection[Any], organization_id: int, issue_id: int
                  ) -> int | None:
    """The project of issue ``issue_id`` if it belongs to ``organization_id`` (tenant scope)."""
    row = conn.execute(
        "SELECT i.project_id FROM issues i JOIN projects p ON p.id = i.project_id"
        " WHERE i.id = %s AND p.organization_id = %s", (issue_id, organization_id)).fetchone()
    return None if row is None else int(row[0])


def issue_hashes(conn: psycopg.Connection[Any], project: ProjectScope, issue_id: int
                 ) -> list[tuple[str, str]]:
    """The grouping hashes (and their config) that point to an issue."""
    rows = conn.execute(
        "SELECT hash, grouping_config FROM group_hashes WHERE project_id = %s AND issue_id = %s"
        " ORDER BY hash", (project.id, issue_id)).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def merge_issues(conn: psycopg.Connection[Any], project: ProjectScope,
                 issue_ids: Sequence[int], actor: str) -> tuple[int, list[int]] | None:
    """Merge issues of one project into the one with the most events (ties: the oldest);
    returns (survivor, merged) or None when fewer than two live issues were named. Their
    hashes, counters and earlier merges move to the survivor (call inside a transaction)."""
    project_id = project.id
    rows = conn.execute(
        "SELECT id, times_seen FROM issues WHERE project_id = %s AND id = ANY(%s)"
        " AND merged_into IS NULL ORDER BY id FOR UPDATE", (project_id, sorted(issue_ids))
    ).fetchall()
    if len(rows) < 2:
        return None
    survivor = int(max(rows, key=lambda r: (r[1], -r[0]))[0])
    merged = [int(r[0]) for r in rows if int(r[0]) != survivor]
    conn.execute("UPDATE group_hashes SET issue_id = %s WHERE project_id = %s"
                 " AND issue_id = ANY(%s)", (survivor, project_id, merged))
    conn.execute(
        "UPDATE issues s SET times_seen = s.times_seen + m.n, first_seen = least(s.first_seen,"
        " m.first_seen), last_seen = greatest(s.last_seen, m.last_seen) FROM (SELECT"
        " sum(times_seen) AS n, min(first_seen) AS first_seen, max(last_seen) AS last_seen"
        " FROM issues WHERE id = ANY(%s)) m WHERE s.id = %s", (merged, survivor))
    conn.execute("UPDATE issues SET merged_into = %s WHERE project_id = %s AND"
                 " (id = ANY(%s) OR merged_into = ANY(%s))",
                 (survivor, project_id, merged, merged))
    add_activity(conn, survivor, project_id, "merge", {"issues": [str(m) for m in merged]},
                 actor)
    bump_grouping_epoch(conn, project_id)
    return survivor, merged


def merged_into(conn: psycopg.Connection[Any], project: ProjectScope, issue_ids: Sequence[int]
                ) -> dict[int, int]:
    """Where each of ``issue_ids`` lives now (itself, or the issue it was merged into)."""
    rows = conn.execute("SELECT id, coalesce(merged_into, id) FROM issues WHERE project_id = %s"
                        " AND id = ANY(%s)", (project.id, list(issue_ids))).fetchall()
    return {int(r[0]): int(r[1]) for r in rows}


def delete_issue(conn: psycopg.Connection[Any], project: ProjectScope, issue_id: int,
                 actor: str) -> bool:
    """Delete an issue (and issues merged into it), tombstoning its hashes so that new events
    with them are discarded; call inside a transaction. False when there was no such issue."""
    project_id = project.id
    doomed = [int(r[0]) for r in conn.execute(
        "SELECT id FROM issues WHERE project_id = %s AND (id = %s OR merged_into = %s)"
        " FOR UPDATE", (project_id, issue_id, issue_id)).fetchall()]
    if issue_id not in doomed:
        return False
    conn.execute("INSERT INTO group_tombstones (project_id, hash, issue_id, actor)"
                 " SELECT project_id, hash, %s, %s FROM group_hashes WHERE project_id = %s"
                 " AND issue_id = ANY(%s) ON CONFLICT DO NOTHING",
                 (issue_id, actor, project_id, doomed))
    conn.execute("DELETE FROM issues WHERE project_id = %s AND id = ANY(%s)",
                 (project_id, doomed))
    bump_grouping_epoch(conn, project_id)
    return True


def hashes_of_issues(conn: psycopg.Connection[Any], project: ProjectScope,
                     issue_ids: Sequence[int]) -> dict[str, int]:
    """Every grouping hash of the given issues, with the issue it belongs to."""
    rows = conn.execute("SELECT hash, issue_id FROM group_hashes WHERE project_id = %s"
                        " AND issue_id = ANY(%s)", (project.id, list(issue_ids))).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def issues_of_hashes(conn: psycopg.Connection[Any], project: ProjectScope,
                     hashes: Sequence[str]) -> dict[str, int]:
    """The issue each grouping hash belongs to now (merges and unmerges move hashes)."""
    return hash_owners(conn, project.id, hashes)


def hash_owners(conn: psycopg.Connection[Any], project_id: int, hashes: Sequence[str]
                ) -> dict[str, int]:
    """``issues_of_hashes`` for the consumers' grouping cache (project fixed at ingest)."""
    rows = conn.execute("SELECT hash, issue_id FROM group_hashes WHERE project_id = %s"
                        " AND hash = ANY(%s)", (project_id, list(hashes))).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


@dataclass(frozen=True)
class MovedEvents:
    """The events an unmerge moves, as ClickHouse counts them, and their latest naming."""

    count: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    title: str
    culprit: str


def unmerge_hashes(conn: psycopg.Connection[Any], project: ProjectScope, issue_id: int,
                   hashes: Sequence[str], moved: MovedEvents, actor: str) -> int:
    """Move ``hashes`` of an issue into a new issue that takes the moved events' count
    (call inside a transaction); returns the new issue's id."""
    project_id = project.id
    moved_events = moved.count
    created = conn.execute(
        "INSERT INTO issues (project_id, title, culprit, type, metadata, level, platform,"
        " first_seen, last_seen, times_seen, first_release, last_release, substatus)"
        " SELECT project_id, %s, %s, type, metadata, level, platform, %s, %s, %s,"
        " first_release, last_release, 'new' FROM issues WHERE project_id = %s AND id = %s"
        " RETURNING id", (moved.title, moved.culprit, moved.first_seen, moved.last_seen,
                          moved_events, project_id, issue_id)).fetchone()
    assert created is not None  # the caller checked the issue exists
    new_id = int(created[0])
    conn.execute("UPDATE group_hashes SET issue_id = %s WHERE project_id = %s AND issue_id = %s"
                 " AND hash = ANY(%s)", (new_id, project_id, issue_id, list(hashes)))
    conn.execute("UPDATE issues SET times_seen = greatest(times_seen - %s, 0) WHERE id = %s",
                 (moved_events, issue_id))
    add_activity(conn, issue_id, project_id, "unmerge_source",
                 {"hashes": list(hashes), "issue": str(new_id)}, actor)
    add_activity(conn, new_id, project_id, "unmerge_destination",
                 {"hashes": list(hashes), "issue": str(issue_id)}, actor)
    bump_grouping_epoch(conn, project_id)
    return new_id


#: ``sort`` of the issue stream → ORDER BY (Sentry's names; ``user`` is sorted by the
#: caller, from ClickHouse user counts, over the issues this returns by date).
ISSUE_SORTS = {"date": "last_seen DESC, id DESC", "new": "first_seen DESC, id DESC",
               "freq": "times_seen DESC, id DESC", "user": "last_seen DESC, id DESC"}


def search_issues(conn: psycopg.Connection[Any], organization_id: int,
                  project_ids: Sequence[int], filters: IssueFilters,
                  issue_ids: Sequence[int] | None, seen_since: dt.datetime | None, sort: str,
                  limit: int, offset: int, user_id: int | None = None) -> list[IssueRow]:
    """Live issues of the organization's ``project_ids`` matching ``filters``, restricted
    to ``issue_ids`` when given and to issues seen since ``seen_since``; one page in
    ``sort`` order. ``user_id`` is who searches (``assigned:me``; None: a token of the
    organization)."""
    where, args = issue_where(filters, SearchViewer(organization_id, user_id))
    sql = (f"SELECT {_ISSUE_COLUMNS} FROM issues WHERE project_id = ANY(%s)" + _IN_ORGANIZATION
           + " AND times_seen > 0 AND merged_into IS NULL AND (" + where + ")")
    params: list[Any] = [list(project_ids), organization_id, *args]
    if issue_ids is not None:
        sql += " AND id = ANY(%s)"
        params.append(list(issue_ids))
    if seen_since is not None:
        sql += " AND last_seen >= %s"
        params.append(seen_since)
    sql += f" ORDER BY {ISSUE_SORTS[sort]} LIMIT %s OFFSET %s"
    params += [limit, offset]
    return [IssueRow(*r) for r in conn.execute(sql, params).fetchall()]


def merged_group_ids(conn: psycopg.Connection[Any], organization_id: int,
                     project_ids: Sequence[int], issue_ids: Sequence[int]) -> dict[int, int]:
    """Every group id whose rows count for ``issue_ids``: the issues themselves and the
    issues merged into them (ClickHouse rows keep the group id they were stored with)."""
    rows = conn.execute("SELECT id, coalesce(merged_into, id) FROM issues WHERE"
                        " project_id = ANY(%s)" + _IN_ORGANIZATION +
                        " AND (id = ANY(%s) OR merged_into = ANY(%s))",
                        (list(project_ids), organization_id, list(issue_ids),
                         list(issue_ids))).fetchall()
    return {int(r[0]): int(r[1]) for r in rows}


def issues_with_hashes(conn: psycopg.Connection[Any], organization_id: int,
                       project_ids: Sequence[int], hashes: Sequence[str]) -> list[int]:
    """The issues (after merges and unmerges) that ``hashes`` of the organization's
    ``project_ids`` belong to."""
    rows = conn.execute("SELECT DISTINCT issue_id FROM group_hashes WHERE project_id = ANY(%s)"
                        + _IN_ORGANIZATION + " AND hash = ANY(%s)",
                        (list(project_ids), organization_id, list(hashes))).fetchall()
    return [int(r[0]) for r in rows]
