"""Releases of an organization (minimal, as sentry-cli uses them): a version, its projects,
when it was finalized. Every query names the organization; listings also the projects the
caller sees."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import psycopg

from events.search import SearchQuery, uses_latest_release, with_latest_release


@dataclass(frozen=True)
class Release:
    id: int
    version: str
    url: str | None
    date_added: dt.datetime
    date_released: dt.datetime | None
    #: (slug, name) of its projects, among those asked for.
    projects: tuple[tuple[str, str], ...]
    #: Their ids, in the same order.
    project_ids: tuple[int, ...] = ()


_SELECT: Final = (
    "SELECT r.id, r.version, r.url, r.date_added, r.date_released,"
    " coalesce(array_agg(p.slug ORDER BY p.slug) FILTER (WHERE p.id IS NOT NULL), '{}'),"
    " coalesce(array_agg(p.name ORDER BY p.slug) FILTER (WHERE p.id IS NOT NULL), '{}'),"
    " coalesce(array_agg(p.id ORDER BY p.slug) FILTER (WHERE p.id IS NOT NULL), '{}')"
    " FROM releases r LEFT JOIN release_projects rp ON rp.release_id = r.id"
    " AND rp.project_id = ANY(%s) LEFT JOIN projects p ON p.id = rp.project_id"
    " WHERE r.organization_id = %s")


def _release(row: Any) -> Release:
    return Release(int(row[0]), row[1], row[2], row[3], row[4],
                   tuple(zip(row[5], row[6], strict=True)), tuple(int(i) for i in row[7]))


def find_release(conn: psycopg.Connection[Any], organization_id: int, version: str,
                 visible: Iterable[int]) -> Release | None:
    """The release, with those of its projects in ``visible``; None unless one of its
    projects is visible (another team's release is not shown, as Sentry)."""
    row = conn.execute(_SELECT + " AND r.version = %s GROUP BY r.id",
                       (sorted(visible), organization_id, version)).fetchone()
    return None if row is None or not row[5] else _release(row)


def list_releases(conn: psycopg.Connection[Any], organization_id: int,
                  visible: Iterable[int], limit: int, project: int | None = None,
                  containing: str | None = None, offset: int = 0) -> list[Release]:
    """Newest first, releases of the visible projects (or of ``project`` only); with
    ``containing``, those whose version contains it, in any case (Sentry's ``query``);
    ``limit`` of them from ``offset`` (a page)."""
    ids = sorted(visible) if project is None else [project]
    matching, args = "", [ids, organization_id]
    if containing:
        escaped = containing.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        matching = " AND r.version ILIKE %s"
        args.append(f"%{escaped}%")
    rows = conn.execute(_SELECT + matching + " GROUP BY r.id HAVING count(p.id) > 0"
                        " ORDER BY r.date_added DESC, r.id DESC LIMIT %s OFFSET %s",
                        (*args, limit, offset)).fetchall()
    return [_release(r) for r in rows]


def save_release(conn: psycopg.Connection[Any], organization_id: int, version: str,
                 project_ids: Iterable[int], url: str | None = None,
                 date_released: dt.datetime | None = None) -> bool:
    """Creates the release or adds to it (projects; url and date_released when given);
    whether it was created now."""
    with conn.transaction():
        row = conn.execute(
            "INSERT INTO releases (organization_id, version, url, date_released)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (organization_id, version) DO UPDATE SET"
            " url = coalesce(excluded.url, releases.url), date_released ="
            " coalesce(excluded.date_released, releases.date_released)"
            " RETURNING id, (xmax = 0)", (organization_id, version, url, date_released)
        ).fetchone()
        assert row is not None  # INSERT ... RETURNING always returns the row
        conn.execute(
            "INSERT INTO release_projects (release_id, project_id) SELECT %s, p.id"
            " FROM projects p WHERE p.organization_id = %s AND p.id = ANY(%s)"
            " ON CONFLICT DO NOTHING", (row[0], organization_id, sorted(set(project_ids))))
    return bool(row[1])


def new_issue_counts(conn: psycopg.Connection[Any], organization_id: int,
                     project_ids: Iterable[int], versions: Iterable[str]
                     ) -> dict[tuple[str, int], int]:
    """Sentry's ``newGroups``: per (version, project), the issues first seen in that release
    (live ones: an issue merged into another counts there). One index range per project
    (``issues_project_first_release``), never a scan of the projects' issues."""
    rows = conn.execute(
        "SELECT i.first_release, i.project_id, count(*) FROM issues i"
        " JOIN projects p ON p.id = i.project_id WHERE p.organization_id = %s"
        " AND i.project_id = ANY(%s) AND i.first_release = ANY(%s)"
        " AND i.merged_into IS NULL GROUP BY i.first_release, i.project_id",
        (organization_id, sorted(project_ids), sorted(set(versions)))).fetchall()
    return {(str(r[0]), int(r[1])): int(r[2]) for r in rows}


@dataclass(frozen=True)
class NewIssue:
    """An issue first seen in a release (the release page's list)."""

    id: int
    project_id: int
    title: str
    culprit: str
    level: str
    status: str
    times_seen: int
    first_seen: dt.datetime
    last_seen: dt.datetime


def new_issues(conn: psycopg.Connection[Any], organization_id: int,
               project_ids: Iterable[int], version: str, limit: int) -> list[NewIssue]:
    """The live issues first seen in ``version``, most recently seen first."""
    rows = conn.execute(
        "SELECT i.id, i.project_id, i.title, i.culprit, i.level, i.status, i.times_seen,"
        " i.first_seen, i.last_seen FROM issues i JOIN projects p ON p.id = i.project_id"
        " WHERE p.organization_id = %s AND i.project_id = ANY(%s) AND i.first_release = %s"
        " AND i.merged_into IS NULL ORDER BY i.last_seen DESC, i.id DESC LIMIT %s",
        (organization_id, sorted(project_ids), version, limit)).fetchall()
    return [NewIssue(int(r[0]), int(r[1]), r[2], r[3], r[4], r[5], int(r[6]), r[7], r[8])
            for r in rows]


@dataclass(frozen=True)
class SeenRelease:
    """A release an issue was seen in: its version, and the stored release (None for a
    version no release was created for, such as one longer than Sentry allows)."""

    version: str
    release: Release | None


def issue_releases(conn: psycopg.Connection[Any], organization_id: int, project_id: int,
                   issue_id: int) -> tuple[SeenRelease | None, SeenRelease | None]:
    """The first and last release an issue was seen in (Sentry's ``firstRelease`` and
    ``lastRelease``), each None when its events named none."""
    row = conn.execute(
        "SELECT i.first_release, i.last_release FROM issues i JOIN projects p"
        " ON p.id = i.project_id WHERE p.organization_id = %s AND i.project_id = %s"
        " AND i.id = %s", (organization_id, project_id, issue_id)).fetchone()
    if row is None:
        return None, None
    found = {v: SeenRelease(v, find_release(conn, organization_id, v, [project_id]))
             for v in {row[0], row[1]} if v}
    return found.get(row[0]), found.get(row[1])


def latest_versions(conn: psycopg.Connection[Any], organization_id: int,
                    project_ids: Iterable[int]) -> list[str]:
    """What ``release:latest`` means for these projects: each project's newest release by
    date created (Sentry's ``get_latest_release`` for releases not following semver; a
    release first named by an event is created when that event is stored), distinct."""
    rows = conn.execute(
        "SELECT DISTINCT ON (rp.project_id) r.version FROM release_projects rp"
        " JOIN releases r ON r.id = rp.release_id WHERE r.organization_id = %s"
        " AND rp.project_id = ANY(%s) ORDER BY rp.project_id, r.date_added DESC, r.id DESC",
        (organization_id, sorted(project_ids))).fetchall()
    return sorted({str(r[0]) for r in rows})


def resolve_latest(conn: psycopg.Connection[Any], organization_id: int,
                   project_ids: Iterable[int], search: SearchQuery) -> SearchQuery:
    """``search`` with ``release:latest`` and ``firstRelease:latest`` replaced by these
    projects' latest releases (``latest_versions``); unchanged, and no query, when it names
    neither. Every search that takes Sentry's syntax resolves it here first."""
    if not uses_latest_release(search):
        return search
    return with_latest_release(search, latest_versions(conn, organization_id, project_ids))
