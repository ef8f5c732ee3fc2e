"""PostgreSQL's side of ``crashray rollups rebuild`` and ``crashray export``: which issue
each grouping hash of a project belongs to, and issue counters set from a recount.

Tenant scope: every function takes a ``ProjectScope`` and its SQL names the project (and,
for ``issues``, joins the organization through ``projects``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from events.search import IssueFilters
from storage.scope import ProjectScope
from storage.search_sql import issue_where


@dataclass(frozen=True)
class IssueTotals:
    """An issue's counters as its stored events say."""

    times_seen: int
    first_seen: dt.datetime
    last_seen: dt.datetime


def hash_issues(conn: psycopg.Connection[Any], project: ProjectScope) -> dict[str, int]:
    """Every grouping hash of the project with the issue it belongs to now."""
    rows = conn.execute(
        "SELECT h.hash, h.issue_id FROM group_hashes h JOIN projects p ON p.id = h.project_id"
        " WHERE h.project_id = %s AND p.organization_id = %s",
        (project.id, project.organization_id)).fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


def lock_live_issues(conn: psycopg.Connection[Any], project: ProjectScope) -> list[int]:
    """The project's issues not merged into another, locked until the transaction ends
    (consumers counting events into them wait), in id order as consumers lock them."""
    rows = conn.execute(
        "SELECT i.id FROM issues i JOIN projects p ON p.id = i.project_id"
        " WHERE i.project_id = %s AND p.organization_id = %s AND i.merged_into IS NULL"
        " ORDER BY i.id FOR UPDATE OF i", (project.id, project.organization_id)).fetchall()
    return [int(r[0]) for r in rows]


def set_issue_totals(conn: psycopg.Connection[Any], project: ProjectScope,
                     totals: Mapping[int, IssueTotals]) -> int:
    """Set the counters of the project's issues in ``totals``; returns the issues whose
    counters changed."""
    if not totals:
        return 0
    ids = sorted(totals)
    changed = conn.execute(
        "UPDATE issues i SET times_seen = v.n, first_seen = v.first_ts, last_seen = v.last_ts"
        " FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[], %s::timestamptz[])"
        " AS v(id, n, first_ts, last_ts), projects p"
        " WHERE i.id = v.id AND i.project_id = %s AND p.id = i.project_id"
        " AND p.organization_id = %s AND (i.times_seen, i.first_seen, i.last_seen)"
        " IS DISTINCT FROM (v.n, v.first_ts, v.last_ts)",
        (ids, [totals[i].times_seen for i in ids], [totals[i].first_seen for i in ids],
         [totals[i].last_seen for i in ids], project.id, project.organization_id))
    return changed.rowcount


def matching_issues(conn: psycopg.Connection[Any], project: ProjectScope,
                    filters: IssueFilters) -> set[int]:
    """The project's live (not merged) issues that ``filters`` (a search query's issue
    part: ``is:``, ``times_seen``, ``age``, ``lastSeen``, ``firstRelease``) match."""
    where, args = issue_where(filters)
    rows = conn.execute(
        "SELECT id FROM issues WHERE project_id = %s AND project_id IN"
        " (SELECT id FROM projects WHERE organization_id = %s) AND merged_into IS NULL"
        " AND (" + where + ")", (project.id, project.organization_id, *args)).fetchall()
    return {int(r[0]) for r in rows}
