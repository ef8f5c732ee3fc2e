"""Backups of the two databases into one folder, and their restore.

    DIR/crashray-backup.json          what the backup holds (``Manifest``)
    DIR/postgres.dump                 pg_dump's custom format (the whole database)
    DIR/clickhouse/<table>/<partition>.native.zst
                                      each partition of each table, ClickHouse's Native
                                      format, zstd-compressed

PostgreSQL: ``pg_dump``/``pg_restore`` of a version at least the server's (``pg_tool``:
the private PostgreSQL's own binaries from the ``pgserver`` wheel, or those on PATH).
ClickHouse: chDB has no backup destination configured (``BACKUP … TO File``/``Disk`` need
``backups.allowed_path``/``allowed_disk`` in a server config), so each table is read
partition by partition as Native blocks through clickhouse-connect, streamed into a zstd
file, and inserted back as Native blocks: the same for the embedded engine and a server,
every column kept as stored (types, codecs' input, ``row_version``), memory bounded by the
stream. ``schema_migrations`` is not copied: the restore target runs the same migrations.

Restore goes into a fresh instance only: it refuses a PostgreSQL that holds organizations or
a ClickHouse whose backed-up tables hold rows, so nothing there is overwritten.

Errors: ``BackupError`` (a StorageError, 500; a refusal the user can fix is
``events.errors.Conflict``/``BadRequest``), each naming the step and what to do.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import psycopg
import zstandard
from clickhouse_connect.driver.client import Client

from events.errors import BadRequest, Conflict
from storage.errors import StorageError

MANIFEST_FILE: Final = "crashray-backup.json"
POSTGRES_FILE: Final = "postgres.dump"
CLICKHOUSE_DIR: Final = "clickhouse"
FORMAT_VERSION: Final = 1
#: Tables never copied: the target's own migrations make them.
SKIPPED_TABLES: Final = frozenset({"schema_migrations"})
ZSTD_LEVEL: Final = 3
#: Seconds pg_dump or pg_restore may run.
PG_TOOL_TIMEOUT_S: Final = 6 * 3600


class BackupError(StorageError):
    code = "backup_failed"


class RestoreTargetNotEmpty(Conflict):
    code = "restore_target_not_empty"


class NotABackup(BadRequest):
    code = "not_a_backup"


@dataclass(frozen=True)
class TableBackup:
    rows: int
    files: list[str]


@dataclass(frozen=True)
class Manifest:
    created_at: str
    postgres_file: str
    postgres_server_version: int
    clickhouse_tables: dict[str, TableBackup] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST_FILE
        try:
            raw = json.loads(path.read_text())
            tables = {name: TableBackup(int(t["rows"]), list(t["files"]))
                      for name, t in raw["clickhouse_tables"].items()}
            manifest = cls(str(raw["created_at"]), str(raw["postgres_file"]),
                           int(raw["postgres_server_version"]), tables, int(raw["format"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NotABackup(f"{path}: not a Crashray backup ({exc}); give the folder"
                             " `crashray backup` wrote") from exc
        if manifest.format != FORMAT_VERSION:
            raise NotABackup(f"{path}: backup format {manifest.format}, this Crashray reads"
                             f" {FORMAT_VERSION}")
        return manifest


# --- PostgreSQL ---------------------------------------------------------------------------
def server_major_version(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.info.server_version) // 10_000


def _tool_major(path: str) -> int:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30,
                         check=False).stdout
    found = re.search(r"(\d+)(?:\.\d+)?", out)
    return int(found.group(1)) if found else 0


def pg_tool(name: str, server_major: int) -> str:
    """``pg_dump``/``pg_restore`` of a major version at least ``server_major`` (pg_dump
    refuses newer servers): the pgserver wheel's (the private PostgreSQL's own), else the
    one on PATH."""
    candidates = []
    try:
        import pgserver

        bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / name
        if bundled.is_file():
            candidates.append(str(bundled))
    except ImportError:
        pass
    on_path = shutil.which(name)
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        if _tool_major(candidate) >= server_major:
            return candidate
    raise BackupError(f"no {name} of PostgreSQL {server_major} or newer found (tried"
                      f" {', '.join(candidates) or 'pgserver and PATH'}); install the"
                      f" PostgreSQL {server_major} client tools")


def _run(argv: list[str], step: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=PG_TOOL_TIMEOUT_S,
                          check=False)
    if done.returncode != 0:
        raise BackupError(f"{step} failed (exit {done.returncode}): "
                          f"{' '.join(done.stderr.split())[:2000]}")


def dump_postgres(url: str, path: Path) -> int:
    """The whole database into ``path`` (custom format); returns the server's major."""
    major = server_major_version(url)
    _run([pg_tool("pg_dump", major), "--format=custom", "--no-owner", "--no-privileges",
          f"--file={path}", f"--dbname={url}"], "pg_dump")
    return major


def check_postgres_empty(url: str) -> None:
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('organizations') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return
        row = conn.execute("SELECT count(*) FROM organizations").fetchone()
    if row and row[0]:
        raise RestoreTargetNotEmpty(
            f"the target PostgreSQL holds {row[0]} organization(s); restore into a fresh"
            " data dir (or an empty database): nothing there is overwritten")


def restore_postgres(url: str, path: Path) -> None:
    """``path`` into the database of ``url`` (its objects replaced: ``--clean``), in one
    transaction: a failed restore leaves the database as it was."""
    major = server_major_version(url)
    _run([pg_tool("pg_restore", major), "--clean", "--if-exists", "--no-owner",
          "--no-privileges", "--single-transaction", f"--dbname={url}", str(path)],
         "pg_restore")


# --- ClickHouse ---------------------------------------------------------------------------
def backed_up_tables(client: Client) -> list[str]:
    rows = client.query("SELECT name FROM system.tables WHERE database = currentDatabase()"
                        " AND engine LIKE '%MergeTree' ORDER BY name").result_rows
    return [str(r[0]) for r in rows if str(r[0]) not in SKIPPED_TABLES]


def dump_clickhouse(client: Client, folder: Path) -> dict[str, TableBackup]:
    """Every table, partition by partition, as zstd-compressed Native files."""
    tables = {}
    for table in backed_up_tables(client):
        partitions = client.query(
            "SELECT partition_id, sum(rows) FROM system.parts WHERE active"
            " AND database = currentDatabase() AND table = {t:String}"
            " GROUP BY partition_id ORDER BY partition_id", parameters={"t": table}
        ).result_rows
        (folder / table).mkdir(parents=True, exist_ok=True)
        files, rows = [], 0
        for partition_id, part_rows in partitions:
            name = f"{table}/{partition_id}.native.zst"
            with open(folder / name, "wb") as out, \
                    zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(out) as packed, \
                    client.raw_stream(f"SELECT * FROM {table} WHERE _partition_id = {{p:String}}",
                                      parameters={"p": str(partition_id)}, fmt="Native") as s:
                for chunk in s:
                    packed.write(chunk)
            files.append(name)
            rows += int(part_rows)
        tables[table] = TableBackup(rows, files)
    return tables


def check_clickhouse_empty(client: Client, tables: list[str]) -> None:
    for table in tables:
        rows = client.query(f"SELECT count() FROM {table}").result_rows
        if rows and rows[0][0]:
            raise RestoreTargetNotEmpty(
                f"the target ClickHouse table {table} holds {rows[0][0]} rows; restore into"
                " a fresh data dir (or an empty database)")


def restore_clickhouse(client: Client, folder: Path, tables: dict[str, TableBackup]) -> int:
    """Insert every file back (each under a deduplication token of its own: tables that
    deduplicate inserts must not drop a file whose rows equal another's); returns the
    tables' rows after."""
    existing = set(backed_up_tables(client))
    missing = sorted(set(tables) - existing)
    if missing:
        raise BackupError(f"the backup holds tables this schema lacks: {', '.join(missing)};"
                          " restore with the Crashray version that made it")
    for table, backup in tables.items():
        for name in backup.files:
            # One file is one partition (a week of a table), decompressed whole.
            with open(folder / CLICKHOUSE_DIR / name, "rb") as packed:
                data = zstandard.ZstdDecompressor().stream_reader(packed).read()
            if data:
                client.raw_insert(table, insert_block=data, fmt="Native",
                                  settings={"insert_deduplication_token": uuid.uuid4().hex})
    total = 0
    for table in tables:
        rows = client.query(f"SELECT count() FROM {table}").result_rows
        total += int(rows[0][0]) if rows else 0
    return total


# --- both ----------------------------------------------------------------------------------
def backup(postgres_url: str, client: Client, folder: Path,
           now: dt.datetime | None = None) -> Manifest:
    """Both databases into ``folder`` (created; must be empty or absent)."""
    if folder.exists() and any(folder.iterdir()):
        raise RestoreTargetNotEmpty(f"{folder} is not empty; give a new folder for the"
                                    " backup")
    folder.mkdir(parents=True, exist_ok=True)
    major = dump_postgres(postgres_url, folder / POSTGRES_FILE)
    tables = dump_clickhouse(client, folder / CLICKHOUSE_DIR)
    manifest = Manifest((now or dt.datetime.now(dt.UTC)).isoformat(), POSTGRES_FILE, major,
                        tables)
    (folder / MANIFEST_FILE).write_text(manifest.to_json())
    return manifest


def restore(postgres_url: str, client: Client, folder: Path) -> Manifest:
    """A backup of ``folder`` into a fresh instance's databases (migrated ClickHouse)."""
    manifest = Manifest.read(folder)
    check_postgres_empty(postgres_url)
    check_clickhouse_empty(client, list(manifest.clickhouse_tables))
    restore_postgres(postgres_url, folder / manifest.postgres_file)
    restore_clickhouse(client, folder, manifest.clickhouse_tables)
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    return asdict(Manifest.read(folder))
