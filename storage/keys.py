"""DSN keys (Sentry's "client keys") in PostgreSQL: one type, ``ProjectKey``, for ingest's
key cache, the keys API and the CLI.

A key belongs to one project; every lookup by a caller names the organization and the
project (``ProjectRef``, resolved within the caller's organization), so another tenant's
key is never found.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any, Final

import psycopg

from storage.projects import ProjectRef


@dataclass(frozen=True)
class ProjectKey:
    id: int
    project_id: int
    organization_id: int
    public_key: str
    secret_key: str
    label: str
    #: The key is enabled, and so is its project (both must be for ingest to accept it).
    is_active: bool
    project_active: bool
    rate_limit_window_s: int | None
    rate_limit_count: int | None
    date_added: dt.datetime


_COLUMNS: Final = ("k.id, k.project_id, p.organization_id, k.public_key, k.secret_key,"
                   " k.label, k.is_active, p.status = 'active', k.rate_limit_window_s,"
                   " k.rate_limit_count, k.date_added")
_FROM: Final = " FROM project_keys k JOIN projects p ON p.id = k.project_id"


def new_public_key() -> str:
    """A DSN public key in the shape real Sentry keys have: 32 lowercase hex chars."""
    return secrets.token_hex(16)


def load_project_keys(conn: psycopg.Connection[Any]) -> dict[str, ProjectKey]:
    """Every DSN key with its project's state, for the ingest key cache (ingest serves all
    tenants; the key in the request decides the tenant)."""
    rows = conn.execute(f"SELECT {_COLUMNS}{_FROM}").fetchall()
    return {str(r[3]): ProjectKey(*r) for r in rows}


def add_project_key(conn: psycopg.Connection[Any], project_id: int, label: str = "Default"
                    ) -> str:
    """A new DSN key of ``project_id`` (which the caller created or resolved within its
    organization); returns its public key."""
    public_key = new_public_key()
    conn.execute("INSERT INTO project_keys (project_id, public_key, secret_key, label)"
                 " VALUES (%s, %s, %s, %s)",
                 (project_id, public_key, secrets.token_hex(16), label))
    return public_key


def project_keys(conn: psycopg.Connection[Any], project: ProjectRef) -> list[ProjectKey]:
    rows = conn.execute(f"SELECT {_COLUMNS}{_FROM} WHERE p.organization_id = %s"
                        " AND k.project_id = %s ORDER BY k.id",
                        (project.organization_id, project.id)).fetchall()
    return [ProjectKey(*r) for r in rows]


def find_key(conn: psycopg.Connection[Any], project: ProjectRef, key_ref: str
             ) -> ProjectKey | None:
    """A key of ``project`` by its public key (Sentry's key id in URLs) or numeric id."""
    numeric_id = int(key_ref) if key_ref.isdigit() and len(key_ref) <= 18 else -1
    row = conn.execute(
        f"SELECT {_COLUMNS}{_FROM} WHERE p.organization_id = %s AND k.project_id = %s"
        " AND (k.public_key = %s OR k.id = %s) ORDER BY k.public_key = %s DESC LIMIT 1",
        (project.organization_id, project.id, key_ref, numeric_id, key_ref)).fetchone()
    return None if row is None else ProjectKey(*row)


def update_key(conn: psycopg.Connection[Any], key: ProjectKey, *, label: str | None = None,
               is_active: bool | None = None,
               rate_limit: tuple[int, int] | bool | None = False) -> None:
    """Change a key found by ``find_key``; ``rate_limit`` (window seconds, count), None to
    remove it, False to keep it as it is."""
    if label is not None:
        conn.execute("UPDATE project_keys SET label = %s WHERE id = %s", (label, key.id))
    if is_active is not None:
        conn.execute("UPDATE project_keys SET is_active = %s WHERE id = %s",
                     (is_active, key.id))
    if rate_limit is not False:
        window, count = rate_limit if isinstance(rate_limit, tuple) else (None, None)
        conn.execute("UPDATE project_keys SET rate_limit_window_s = %s, rate_limit_count = %s"
                     " WHERE id = %s", (window, count, key.id))


def delete_key(conn: psycopg.Connection[Any], key: ProjectKey) -> None:
    conn.execute("DELETE FROM project_keys WHERE id = %s AND project_id = %s",
                 (key.id, key.project_id))


def key_ids(conn: psycopg.Connection[Any], organization_id: int, project_ids: list[int]
            ) -> set[int]:
    """Ids of the keys of ``project_ids`` within the organization (what a caller sees)."""
    rows = conn.execute("SELECT k.id" + _FROM + " WHERE p.organization_id = %s"
                        " AND k.project_id = ANY(%s)", (organization_id, project_ids)).fetchall()
    return {int(r[0]) for r in rows}


def rate_limited_keys(conn: psycopg.Connection[Any], organization_id: int
                      ) -> list[tuple[str, ProjectKey]]:
    """The organization's keys with a rate limit, with their project's slug."""
    rows = conn.execute(f"SELECT p.slug, {_COLUMNS}{_FROM} WHERE p.organization_id = %s"
                        " AND k.rate_limit_count IS NOT NULL ORDER BY k.id",
                        (organization_id,)).fetchall()
    return [(str(r[0]), ProjectKey(*r[1:])) for r in rows]
