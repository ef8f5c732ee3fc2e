"""PostgreSQL: connections, versioned migrations, and the metadata Crashray bootstraps.

Migrations are the numbered ``migrations/postgres/NNNN_name.sql`` files, applied in order
inside one transaction each and recorded in ``schema_migrations``; an advisory lock makes
concurrent starters (several ``crashray up``, test workers) apply each exactly once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row

from storage.errors import MigrationError

#: Arbitrary constant for pg_advisory_xact_lock: "crashray" migrations.
_MIGRATION_LOCK_ID = 0x63726173


def connect(url: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=autocommit)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(kind: str) -> list[Migration]:
    """The migrations shipped for ``kind`` ("postgres" or "clickhouse"), in order."""
    folder = resources.files("storage") / "migrations" / kind
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        number, _, rest = entry.name.partition("_")
        if not number.isdigit():
            raise MigrationError(f"migration file {entry.name!r} does not start with NNNN_")
        found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate {kind} migration numbers: {versions}")
    return found


def migrate(url: str) -> list[int]:
    """Apply pending PostgreSQL migrations; returns the versions applied now."""
    applied_now: list[int] = []
    with connect(url) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.commit()
        for migration in load_migrations("postgres"):
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_ID,))
                done = conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,)
                ).fetchone()
                if done:
                    continue
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied_now.append(migration.version)
    return applied_now


def new_public_key() -> str:
    """A DSN public key in the shape real Sentry keys have: 32 lowercase hex chars."""
    return secrets.token_hex(16)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ProjectKey:
    id: int
    project_id: int
    organization_id: int
    public_key: str
    is_active: bool
    project_active: bool


def load_project_keys(conn: psycopg.Connection[Any]) -> dict[str, ProjectKey]:
    """Every DSN key with its project's state, for the ingest key cache."""
    rows = conn.execute(
        "SELECT k.id, k.project_id, p.organization_id, k.public_key, k.is_active,"
        " p.status = 'active' FROM project_keys k JOIN projects p ON p.id = k.project_id"
    ).fetchall()
    return {row[3]: ProjectKey(*row) for row in rows}


@dataclass(frozen=True)
class BootstrapResult:
    organization_slug: str
    project_slug: str
    project_id: int
    public_key: str
    api_token: str | None


def bootstrap(conn: psycopg.Connection[Any], *, org_slug: str = "crashray",
              project_slug: str = "default", grouping_config: str) -> BootstrapResult:
    """On first start: organization ``crashray``, project ``default``, a DSN key and an
    admin API token. Later starts find them and create nothing (``api_token`` is None)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_ID + 1,))
        org = conn.execute("SELECT id FROM organizations WHERE slug = %s", (org_slug,)).fetchone()
        token: str | None = None
        if org is None:
            org_id = _insert_id(conn, "INSERT INTO organizations (slug, name) VALUES (%s, %s)"
                                " RETURNING id", (org_slug, org_slug.capitalize()))
            token = create_api_token(conn, org_id, "admin (created by crashray up)",
                                     list(ADMIN_SCOPES))
        else:
            org_id = int(org[0])
        project_id, public_key = ensure_project(conn, org_id, project_slug, grouping_config)
    return BootstrapResult(org_slug, project_slug, project_id, public_key, token)


def ensure_project(conn: psycopg.Connection[Any], org_id: int, slug: str,
                   grouping_config: str) -> tuple[int, str]:
    """The project ``slug`` of ``org_id`` and its first active key, created if missing (a new
    project groups with ``grouping_config``, the newest version)."""
    row = conn.execute("SELECT id FROM projects WHERE organization_id = %s AND slug = %s",
                       (org_id, slug)).fetchone()
    if row is None:
        project_id = _insert_id(
            conn, "INSERT INTO projects (organization_id, slug, name, grouping_config)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            (org_id, slug, slug, grouping_config))
    else:
        project_id = int(row[0])
    key = conn.execute("SELECT public_key FROM project_keys WHERE project_id = %s"
                       " AND is_active ORDER BY id LIMIT 1", (project_id,)).fetchone()
    if key is not None:
        return project_id, str(key[0])
    return project_id, add_project_key(conn, project_id)


def add_project_key(conn: psycopg.Connection[Any], project_id: int, label: str = "Default"
                    ) -> str:
    """A new DSN key of ``project_id``; returns its public key."""
    public_key = new_public_key()
    conn.execute("INSERT INTO project_keys (project_id, public_key, secret_key, label)"
                 " VALUES (%s, %s, %s, %s)",
                 (project_id, public_key, secrets.token_hex(16), label))
    return public_key


ADMIN_SCOPES = ("org:admin", "org:read", "org:write", "project:admin", "project:read",
                "project:write", "event:admin", "event:read", "event:write", "member:read")


def create_api_token(conn: psycopg.Connection[Any], org_id: int | None, name: str,
                     scopes: list[str], user_id: int | None = None) -> str:
    """A new API token of an organization or a user (shown once; only its sha256 is
    stored). ``storage.tenancy.create_token`` checks the owner and the scopes first."""
    token = "crs_" + secrets.token_hex(32)
    conn.execute("INSERT INTO api_tokens (organization_id, user_id, token_hash, name, scopes)"
                 " VALUES (%s, %s, %s, %s, %s)", (org_id, user_id, hash_token(token), name, scopes))
    return token


@dataclass(frozen=True)
class ProjectRef:
    id: int
    organization_id: int
    slug: str
    organization_slug: str


def find_project(conn: psycopg.Connection[Any], org_id: int, project_slug: str) -> ProjectRef | None:
    """The project ``project_slug`` within organization ``org_id`` only (tenant scope)."""
    row = conn.execute(
        "SELECT p.id, p.organization_id, p.slug, o.slug FROM projects p JOIN organizations o"
        " ON o.id = p.organization_id WHERE p.organization_id = %s AND p.slug = %s",
        (org_id, project_slug),
    ).fetchone()
    return None if row is None else ProjectRef(int(row[0]), int(row[1]), str(row[2]), str(row[3]))


def project_by_id(conn: psycopg.Connection[Any], org_id: int, project_id: int
                  ) -> ProjectRef | None:
    """Project ``project_id`` if it belongs to organization ``org_id`` (tenant scope)."""
    row = conn.execute(
        "SELECT p.id, p.organization_id, p.slug, o.slug FROM projects p JOIN organizations o"
        " ON o.id = p.organization_id WHERE p.organization_id = %s AND p.id = %s",
        (org_id, project_id),
    ).fetchone()
    return None if row is None else ProjectRef(int(row[0]), int(row[1]), str(row[2]), str(row[3]))


def scrubbing_configs(conn: psycopg.Connection[Any], project_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Sentry's legacy data-scrubbing options per project, in sentry-relay's input shape
    (``convert_datascrubbing_config``)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT id, scrub_data, scrub_defaults, scrub_ip_addresses, sensitive_fields,"
            " exclude_fields FROM projects WHERE id = ANY(%s)", (project_ids,)
        ).fetchall()
    return {
        int(r["id"]): {
            "scrubData": r["scrub_data"],
            "scrubDefaults": r["scrub_defaults"],
            "scrubIpAddresses": r["scrub_ip_addresses"],
            "sensitiveFields": list(r["sensitive_fields"]),
            "excludeFields": list(r["exclude_fields"]),
        }
        for r in rows
    }


def _insert_id(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...]) -> int:
    row = conn.execute(sql, params).fetchone()
    assert row is not None  # INSERT ... RETURNING always returns the row
    return int(row[0])
