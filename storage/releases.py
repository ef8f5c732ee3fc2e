"""Releases of an organization (minimal, as sentry-cli uses them): a version, its projects,
when it was finalized. Every query names the organization; listings also the projects the
caller sees."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import psycopg


@dataclass(frozen=True)
class Release:
    id: int
    version: str
    url: str | None
    date_added: dt.datetime
    date_released: dt.datetime | None
    #: (slug, name) of its projects, among those asked for.
    projects: tuple[tuple[str, str], ...]


_SELECT: Final = (
    "SELECT r.id, r.version, r.url, r.date_added, r.date_released,"
    " coalesce(array_agg(p.slug ORDER BY p.slug) FILTER (WHERE p.id IS NOT NULL), '{}'),"
    " coalesce(array_agg(p.name ORDER BY p.slug) FILTER (WHERE p.id IS NOT NULL), '{}')"
    " FROM releases r LEFT JOIN release_projects rp ON rp.release_id = r.id"
    " AND rp.project_id = ANY(%s) LEFT JOIN projects p ON p.id = rp.project_id"
    " WHERE r.organization_id = %s")


def _release(row: Any) -> Release:
    return Release(int(row[0]), row[1], row[2], row[3], row[4], tuple(zip(row[5], row[6],
                                                                          strict=True)))


def find_release(conn: psycopg.Connection[Any], organization_id: int, version: str,
                 visible: Iterable[int]) -> Release | None:
    """The release, with those of its projects in ``visible``; None unless one of its
    projects is visible (another team's release is not shown, as Sentry)."""
    row = conn.execute(_SELECT + " AND r.version = %s GROUP BY r.id",
                       (sorted(visible), organization_id, version)).fetchone()
    return None if row is None or not row[5] else _release(row)


def list_releases(conn: psycopg.Connection[Any], organization_id: int,
                  visible: Iterable[int], limit: int, project: int | None = None
                  ) -> list[Release]:
    """Newest first, releases of the visible projects (or of ``project`` only)."""
    ids = sorted(visible) if project is None else [project]
    rows = conn.execute(_SELECT + " GROUP BY r.id HAVING count(p.id) > 0"
                        " ORDER BY r.date_added DESC, r.id DESC LIMIT %s",
                        (ids, organization_id, limit)).fetchall()
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
