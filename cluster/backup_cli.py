"""``crashray backup DIR`` / ``crashray restore DIR``: both databases to a folder and back
(storage/backup.py).

    crashray backup DIR [--data-dir D]     PostgreSQL dump + every ClickHouse table
    crashray restore DIR [--data-dir D]    into a fresh data dir (or empty databases)

The embedded ClickHouse engine (chDB) opens its data path in one process only, so with it
both commands need the instance stopped; with ``CRASHRAY_CLICKHOUSE_URL`` and
``CRASHRAY_POSTGRES_URL`` (the server setup) ``backup`` runs beside a live instance (each
database is consistent in itself; events stored during the backup may be in one and not
the other).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.cli_common import add_data_dir, command, settings_from
from events.errors import Conflict

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

    from cluster.runtime import Runtime
    from cluster.settings import Settings


class InstanceRunning(Conflict):
    code = "instance_running"


def _check_stopped(settings: Settings, verb: str) -> None:
    from cluster.runtime import running_instance

    instance = running_instance(settings.data_dir)
    if instance is None:
        return
    if verb == "backup" and settings.clickhouse_url:
        return
    raise InstanceRunning(
        f"Crashray runs on {settings.data_dir} (pid {instance.pid}); stop it first: its"
        f" embedded ClickHouse can be opened by one process only" if verb == "backup" else
        f"Crashray runs on {settings.data_dir} (pid {instance.pid}); restore into a fresh"
        " data dir with no instance running")


@contextmanager
def _databases(settings: Settings) -> Iterator[tuple[Runtime, Client]]:
    """The instance's PostgreSQL (started if private) and a ClickHouse client on a
    migrated schema."""
    import clickhouse_connect

    from cluster.runtime import Runtime
    from storage.clickhouse import ClickHouseStore

    runtime = Runtime(settings)
    try:
        runtime.start_databases()
        store = ClickHouseStore(runtime.clickhouse_dsn)
        store.migrate()
        store.close()
        client = clickhouse_connect.get_client(dsn=runtime.clickhouse_dsn)
        try:
            yield runtime, client
        finally:
            client.close()
    finally:
        runtime.stop()


def cmd_backup(args: argparse.Namespace) -> None:
    from storage.backup import backup

    settings = settings_from(args)
    _check_stopped(settings, "backup")
    folder = Path(args.dir).expanduser().resolve()
    with _databases(settings) as (runtime, client):
        manifest = backup(runtime.postgres_url, client, folder)
    rows = sum(t.rows for t in manifest.clickhouse_tables.values())
    print(f"backed up PostgreSQL ({folder / manifest.postgres_file}) and"
          f" {len(manifest.clickhouse_tables)} ClickHouse tables ({rows:,} rows) to {folder}")


def cmd_restore(args: argparse.Namespace) -> None:
    from storage.backup import Manifest, restore

    settings = settings_from(args)
    _check_stopped(settings, "restore")
    folder = Path(args.dir).expanduser().resolve()
    Manifest.read(folder)  # a wrong folder is refused before any database starts
    with _databases(settings) as (runtime, client):
        manifest = restore(runtime.postgres_url, client, folder)
    print(f"restored the backup of {manifest.created_at} from {folder} into"
          f" {settings.data_dir}")


def add_parsers(sub: Any) -> None:
    made = sub.add_parser("backup", help="PostgreSQL and ClickHouse into a new folder")
    made.add_argument("dir", help="a new (or empty) folder for the backup")
    add_data_dir(made)
    command(made, cmd_backup)
    back = sub.add_parser("restore", help="a backup into a fresh data dir")
    back.add_argument("dir", help="the folder `crashray backup` wrote")
    add_data_dir(back)
    command(back, cmd_restore)
