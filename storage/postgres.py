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

from storage.errors import MigrationError

#: Arbitrary constant for pg_advisory_xact_lock: "crashray" migrations.
_MIGRATION_LOCK_ID = 0x63726173


def connect(url: str, *, autocommit: bool = False, durable_commits: bool = True
            ) -> psycopg.Connection[Any]:
    """A connection to ``url``. ``durable_commits=False`` turns off ``synchronous_commit``
    for it: its commits are atomic but may be lost in an OS crash (for writers whose work
    is re-done or bounded then: consumers, the rate limiter; never the ingest hand-off)."""
    conn = psycopg.connect(url, autocommit=autocommit)
    if not durable_commits:
        conn.execute("SET synchronous_commit = off")
        if not autocommit:
            conn.commit()
    return conn


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


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_api_token(conn: psycopg.Connection[Any], org_id: int | None, name: str,
                     scopes: list[str], user_id: int | None = None) -> str:
    """A new API token of an organization or a user (shown once; only its sha256 is
    stored). ``storage.tenancy.create_token`` checks the owner and the scopes first."""
    token = "crs_" + secrets.token_hex(32)
    conn.execute("INSERT INTO api_tokens (organization_id, user_id, token_hash, name, scopes)"
                 " VALUES (%s, %s, %s, %s, %s)", (org_id, user_id, hash_token(token), name, scopes))
    return token
