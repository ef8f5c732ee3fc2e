"""PostgreSQL's side of ``crashray reprocess`` (pipelines/reprocess.py): the job row that
makes a reprocess resumable, and what the job does to issues when it ends (issues emptied
by the move are merged into the one issue that took their events, or resolved; activity
entries for every issue that gained or lost events).

Tenant scope: every function takes a ``ProjectScope``; the SQL names the project and, for
``reprocess_jobs``, the organization (``issues`` rows are kept to the organization
through ``projects``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from events.errors import Conflict
from storage.issues import add_activity, bump_grouping_epoch
from storage.scope import ProjectScope

#: Who the activity entries of a reprocess name as their actor.
REPROCESS_ACTOR = "crashray reprocess"


class ReprocessConflict(Conflict):
    """Another reprocess of the project is unfinished with other options."""

    code = "reprocess_unfinished"


@dataclass(frozen=True)
class ReprocessJob:
    id: int
    options: Mapping[str, Any]
    #: (start_us, end_us) of each planned slice, in order.
    slices: list[tuple[int, int]]
    finished_slices: frozenset[int]
    max_issue_id: int
    events_read: int
    events_changed: int
    events_moved: int
    #: old issue id → new issue id → events moved.
    moves: Mapping[int, Mapping[int, int]]


_JOB_COLUMNS = ("id, options, slices, finished_slices, max_issue_id, events_read,"
                " events_changed, events_moved, moves")


def _job(r: Sequence[Any]) -> ReprocessJob:
    moves = {int(old): {int(new): int(n) for new, n in to.items()}
             for old, to in (r[8] or {}).items()}
    return ReprocessJob(int(r[0]), r[1], [(int(a), int(b)) for a, b in r[2]],
                        frozenset(int(i) for i in r[3]), int(r[4]), int(r[5]), int(r[6]),
                        int(r[7]), moves)


def running_job(conn: psycopg.Connection[Any], project: ProjectScope) -> ReprocessJob | None:
    """The project's unfinished job, if any."""
    row = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM reprocess_jobs WHERE organization_id = %s"
        " AND project_id = %s AND status = 'running'",
        (project.organization_id, project.id)).fetchone()
    return None if row is None else _job(row)


def start_or_resume_job(conn: psycopg.Connection[Any], project: ProjectScope,
                        options: Mapping[str, Any], slices: Sequence[tuple[int, int]]
                        ) -> tuple[ReprocessJob, bool]:
    """The project's unfinished job with the same ``options`` (resumed: True), else a new
    job over ``slices``; an unfinished job with other options is a ``ReprocessConflict``.
    Call inside a transaction."""
    conn.execute("SELECT id FROM projects WHERE id = %s AND organization_id = %s FOR UPDATE",
                 (project.id, project.organization_id))
    running = running_job(conn, project)
    if running is not None:
        if dict(running.options) != dict(options):
            raise ReprocessConflict(
                f"reprocess job {running.id} of this project is unfinished with options"
                f" {dict(running.options)}; re-run it with those to finish it, or give"
                " --abandon to drop it and start this one")
        return running, True
    max_issue = conn.execute(
        "SELECT coalesce(max(i.id), 0) FROM issues i JOIN projects p ON p.id = i.project_id"
        " WHERE i.project_id = %s AND p.organization_id = %s",
        (project.id, project.organization_id)).fetchone()
    row = conn.execute(
        "INSERT INTO reprocess_jobs (organization_id, project_id, options, slices,"
        f" max_issue_id) VALUES (%s, %s, %s, %s, %s) RETURNING {_JOB_COLUMNS}",
        (project.organization_id, project.id, Jsonb(dict(options)),
         Jsonb([list(s) for s in slices]), int(max_issue[0]) if max_issue else 0)).fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    return _job(row), False


def abandon_job(conn: psycopg.Connection[Any], project: ProjectScope) -> int | None:
    """Mark the project's unfinished job abandoned (its rows stay as they are: each event
    has one row, the old or the replacement); returns its id."""
    row = conn.execute(
        "UPDATE reprocess_jobs SET status = 'abandoned', updated_at = now()"
        " WHERE organization_id = %s AND project_id = %s AND status = 'running'"
        " RETURNING id", (project.organization_id, project.id)).fetchone()
    return None if row is None else int(row[0])


@dataclass(frozen=True)
class SliceDone:
    """What the job did in one slice."""

    index: int
    events_read: int
    events_changed: int
    events_moved: int
    moves: Mapping[int, Mapping[int, int]]


def record_slice(conn: psycopg.Connection[Any], project: ProjectScope, job_id: int,
                 done: SliceDone) -> None:
    """Add a finished slice to the job (once: a slice recorded already changes nothing).
    Call inside a transaction."""
    row = conn.execute(
        "SELECT moves, %s = ANY(finished_slices) FROM reprocess_jobs WHERE id = %s"
        " AND organization_id = %s AND project_id = %s FOR UPDATE",
        (done.index, job_id, project.organization_id, project.id)).fetchone()
    if row is None or row[1]:
        return
    moves: dict[str, dict[str, int]] = {k: dict(v) for k, v in (row[0] or {}).items()}
    for old, to in done.moves.items():
        into = moves.setdefault(str(old), {})
        for new, n in to.items():
            into[str(new)] = into.get(str(new), 0) + n
    conn.execute(
        "UPDATE reprocess_jobs SET finished_slices = array_append(finished_slices, %s),"
        " events_read = events_read + %s, events_changed = events_changed + %s,"
        " events_moved = events_moved + %s, moves = %s, updated_at = now()"
        " WHERE id = %s AND organization_id = %s AND project_id = %s",
        (done.index, done.events_read, done.events_changed, done.events_moved, Jsonb(moves),
         job_id, project.organization_id, project.id))


def finish_job(conn: psycopg.Connection[Any], project: ProjectScope, job_id: int,
               summary: Mapping[str, Any]) -> None:
    conn.execute(
        "UPDATE reprocess_jobs SET status = 'finished', summary = %s, updated_at = now()"
        " WHERE id = %s AND organization_id = %s AND project_id = %s",
        (Jsonb(dict(summary)), job_id, project.organization_id, project.id))


def live_issue_of(conn: psycopg.Connection[Any], project: ProjectScope,
                  issue_ids: Sequence[int]) -> dict[int, int]:
    """Where each issue lives now (itself, or the issue it was merged into)."""
    rows = conn.execute(
        "SELECT i.id, coalesce(i.merged_into, i.id) FROM issues i"
        " JOIN projects p ON p.id = i.project_id WHERE i.project_id = %s"
        " AND p.organization_id = %s AND i.id = ANY(%s)",
        (project.id, project.organization_id, sorted(issue_ids))).fetchall()
    return {int(r[0]): int(r[1]) for r in rows}


def merge_emptied_issue(conn: psycopg.Connection[Any], project: ProjectScope, source: int,
                        target: int, events: int) -> None:
    """``source`` lost all its events to ``target``: merge it there, as a merge through
    the API does (its hashes and the issues merged into it follow), so its links redirect
    and an event with one of its old hashes lands in ``target``. Call inside a
    transaction; the counters are the rollup rebuild's."""
    conn.execute("UPDATE group_hashes SET issue_id = %s WHERE project_id = %s"
                 " AND issue_id = %s", (target, project.id, source))
    conn.execute(
        "UPDATE issues SET merged_into = %s WHERE project_id = %s AND (id = %s OR"
        " merged_into = %s) AND project_id IN (SELECT id FROM projects WHERE"
        " organization_id = %s)", (target, project.id, source, source,
                                   project.organization_id))
    add_activity(conn, target, project.id, "merge", {"issues": [str(source)]},
                 REPROCESS_ACTOR)
    add_activity(conn, source, project.id, "reprocess",
                 {"emptied": True, "merged_into": str(target), "events": events},
                 REPROCESS_ACTOR)
    bump_grouping_epoch(conn, project.id)


def resolve_emptied_issue(conn: psycopg.Connection[Any], project: ProjectScope, source: int,
                          moved_to: Mapping[int, int]) -> None:
    """``source`` lost all its events to several issues: resolve it, with no events left
    (Sentry deletes such an issue; resolving keeps its history and links). Its hashes stay
    its own, so a later event with one of them reopens it as a regression."""
    conn.execute(
        "UPDATE issues SET status = 'resolved', substatus = NULL, times_seen = 0"
        " WHERE project_id = %s AND id = %s AND project_id IN (SELECT id FROM projects"
        " WHERE organization_id = %s)", (project.id, source, project.organization_id))
    add_activity(conn, source, project.id, "reprocess",
                 {"emptied": True, "moved_to": {str(k): v for k, v in moved_to.items()}},
                 REPROCESS_ACTOR)


def note_events_moved_in(conn: psycopg.Connection[Any], project: ProjectScope, issue_id: int,
                         moved_from: Mapping[int, int], created: bool) -> None:
    """The activity entry of an issue that received events from others (``created``: the
    reprocess created it)."""
    add_activity(conn, issue_id, project.id, "reprocess",
                 {"created": created, "events": sum(moved_from.values()),
                  "moved_from": {str(k): v for k, v in moved_from.items()}},
                 REPROCESS_ACTOR)


def note_events_moved_out(conn: psycopg.Connection[Any], project: ProjectScope,
                          issue_id: int, moved_to: Mapping[int, int]) -> None:
    """The activity entry of an issue that lost some (not all) of its events."""
    add_activity(conn, issue_id, project.id, "reprocess",
                 {"emptied": False, "events": sum(moved_to.values()),
                  "moved_to": {str(k): v for k, v in moved_to.items()}}, REPROCESS_ACTOR)
