"""Anomalies detectors found, and the detectors' checkpoints (PostgreSQL, migration 0025).

An anomaly is one episode: ``record`` opens it, or extends the open one of the same
(project, issue, detector, kind, direction); ``close_quiet`` closes the episodes a detector
stopped reporting. Reads are tenant-scoped (organization and project).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

from events.anomaly import Anomaly
from storage.scope import ProjectScope

STATUSES: Final = ("open", "closed")


@dataclass(frozen=True)
class StoredAnomaly:
    id: int
    organization_id: int
    project_id: int
    issue_id: int | None
    scope: str
    detector: str
    kind: str
    direction: str
    status: str
    start: dt.datetime
    end: dt.datetime
    score: float
    explanation: str
    evidence: Mapping[str, Any]
    date_created: dt.datetime
    date_closed: dt.datetime | None


@dataclass(frozen=True)
class Recorded:
    id: int
    #: The episode was opened by this call (not an extension of an open one).
    opened: bool
    anomaly: Anomaly


def record(conn: psycopg.Connection[Any], detector: str, found: Sequence[Anomaly]
           ) -> list[Recorded]:
    """Open or extend an episode per anomaly (call inside a transaction). Anomalies of
    projects that no longer exist are dropped."""
    recorded: list[Recorded] = []
    for a in found:
        row = conn.execute(
            "INSERT INTO anomalies (organization_id, project_id, issue_id, scope, detector,"
            " kind, direction, start_at, end_at, score, explanation, evidence)"
            " SELECT %s, p.id, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s FROM projects p"
            " WHERE p.id = %s AND p.organization_id = %s"
            " ON CONFLICT (project_id, (COALESCE(issue_id, 0)), detector, kind, direction)"
            " WHERE status = 'open' DO UPDATE SET end_at = GREATEST(anomalies.end_at,"
            " excluded.end_at), score = GREATEST(anomalies.score, excluded.score),"
            " explanation = excluded.explanation, evidence = excluded.evidence"
            " RETURNING id, (xmax = 0)",
            (a.organization_id, a.issue_id, a.scope, detector, a.kind, a.direction, a.start,
             a.end, a.score, a.explanation, Jsonb(dict(a.evidence)), a.project_id,
             a.organization_id)).fetchone()
        if row is not None:
            recorded.append(Recorded(int(row[0]), bool(row[1]), a))
    return recorded


def close_quiet(conn: psycopg.Connection[Any], detector: str, project_ids: Sequence[int],
                ended_before: dt.datetime) -> int:
    """Close the open episodes of ``detector`` in ``project_ids`` last reported before
    ``ended_before``; the number closed."""
    cur = conn.execute(
        "UPDATE anomalies SET status = 'closed', closed_at = now() WHERE detector = %s"
        " AND project_id = ANY(%s) AND status = 'open' AND end_at < %s",
        (detector, list(project_ids), ended_before))
    return cur.rowcount


_COLUMNS = ("id, organization_id, project_id, issue_id, scope, detector, kind, direction,"
            " status, start_at, end_at, score, explanation, evidence, created_at, closed_at")


def list_anomalies(conn: psycopg.Connection[Any], project: ProjectScope, limit: int,
                   status: str | None = None, issue_id: int | None = None
                   ) -> list[StoredAnomaly]:
    """The project's anomalies (of one issue, of one status), newest first."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM anomalies WHERE organization_id = %s AND project_id = %s"
        " AND (%s::text IS NULL OR status = %s) AND (%s::bigint IS NULL OR issue_id = %s)"
        " ORDER BY start_at DESC, id DESC LIMIT %s",
        (project.organization_id, project.id, status, status, issue_id, issue_id, limit)
    ).fetchall()
    return [StoredAnomaly(int(r[0]), int(r[1]), int(r[2]), None if r[3] is None else int(r[3]),
                          *r[4:]) for r in rows]


def open_for_alerts(conn: psycopg.Connection[Any], project: ProjectScope,
                    issue_ids: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """Per issue of ``issue_ids``: the open anomalies of the issue and of its project, as
    ``events.alert_rules.AlertIssue.anomalies`` takes them (scope, score, kind, …)."""
    rows = conn.execute(
        "SELECT id, issue_id, scope, detector, kind, direction, score, explanation"
        " FROM anomalies WHERE organization_id = %s AND project_id = %s AND status = 'open'"
        " AND (issue_id IS NULL OR issue_id = ANY(%s)) ORDER BY id",
        (project.organization_id, project.id, list(issue_ids))).fetchall()
    shown = [(r[1], {"id": str(r[0]), "scope": r[2], "detector": r[3], "kind": r[4],
                     "direction": r[5], "score": float(r[6]), "explanation": r[7]})
             for r in rows]
    return {i: [a for owner, a in shown if owner is None or owner == i] for i in issue_ids}


def save_checkpoint(conn: psycopg.Connection[Any], detector: str, shard: int, shards: int,
                    state: bytes) -> None:
    conn.execute(
        "INSERT INTO detector_checkpoints (detector, shard, shards, state) VALUES"
        " (%s, %s, %s, %s) ON CONFLICT (detector, shard) DO UPDATE SET shards ="
        " excluded.shards, state = excluded.state, saved_at = now()",
        (detector, shard, shards, state))


def load_checkpoint(conn: psycopg.Connection[Any], detector: str, shard: int, shards: int
                    ) -> bytes | None:
    """The shard's last checkpoint; None when there is none or it was taken with another
    number of shards (its projects were other projects)."""
    row = conn.execute("SELECT state FROM detector_checkpoints WHERE detector = %s"
                       " AND shard = %s AND shards = %s", (detector, shard, shards)).fetchone()
    return None if row is None else bytes(row[0])


# --- what the detector host reads -----------------------------------------------------------
def shard_projects(conn: psycopg.Connection[Any], shards: int, shard: int) -> list[ProjectScope]:
    """The active projects of detector shard ``shard`` of ``shards`` (project id modulo)."""
    rows = conn.execute(
        "SELECT organization_id, id FROM projects WHERE status = 'active'"
        " AND id %% %s = %s ORDER BY id", (shards, shard)).fetchall()
    return [ProjectScope(int(r[0]), int(r[1])) for r in rows]


def issues_of_groups(conn: psycopg.Connection[Any], organization_id: int,
                     project_ids: Sequence[int], group_ids: set[int]
                     ) -> dict[int, tuple[int, bool]]:
    """Group id → (the issue it counts for now, that issue is ignored until it
    escalates)."""
    if not group_ids:
        return {}
    rows = conn.execute(
        "SELECT g.id, s.id, s.status = 'ignored' AND (s.substatus IS NOT DISTINCT FROM"
        " 'archived_until_escalating' OR s.status_details->'ignoreUntilEscalating'"
        " = 'true'::jsonb) FROM issues g"
        " JOIN issues s ON s.id = coalesce(g.merged_into, g.id)"
        " JOIN projects p ON p.id = s.project_id AND p.organization_id = %s"
        " WHERE g.id = ANY(%s) AND g.project_id = ANY(%s)",
        (organization_id, sorted(group_ids), list(project_ids))).fetchall()
    return {int(r[0]): (int(r[1]), bool(r[2])) for r in rows}


def lock_if_until_escalating(conn: psycopg.Connection[Any], project: ProjectScope,
                             issue_id: int) -> bool:
    """Lock the issue (in the caller's transaction) and say whether it is ignored until it
    escalates."""
    row = conn.execute(
        "SELECT i.status, i.substatus, i.status_details FROM issues i JOIN projects p"
        " ON p.id = i.project_id WHERE i.id = %s AND i.project_id = %s"
        " AND p.organization_id = %s FOR UPDATE OF i",
        (issue_id, project.id, project.organization_id)).fetchone()
    return row is not None and row[0] == "ignored" and (
        row[1] == "archived_until_escalating"
        or (row[2] or {}).get("ignoreUntilEscalating") is True)
