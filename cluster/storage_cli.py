"""``crashray storage``: sizes per table, the data directory's disk use, and what retention
removes next (storage/sizes.py).

    crashray storage [--data-dir DIR]

PostgreSQL is found as every command finds it (started for the command when the instance
is stopped). ClickHouse: the server of ``CRASHRAY_CLICKHOUSE_URL``; else the embedded engine,
through the running instance's owner actor (chDB lets one process open a data path), or
opened here when the instance is stopped.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from cluster.cli_common import add_data_dir, command, database, settings_from

if TYPE_CHECKING:
    from cluster.settings import Settings
    from storage.retention import RowQueries


@contextmanager
def clickhouse_reader(settings: Settings) -> Iterator[RowQueries]:
    """The instance's ClickHouse for raw reads (see the module docstring)."""
    from cluster.runtime import running_instance
    from storage.clickhouse import ClickHouseStore, clickhouse_dsn

    dsn = clickhouse_dsn(settings.clickhouse_url, settings.data_dir)
    if settings.clickhouse_url or (running_instance(settings.data_dir) is None
                                   and not settings.ray_address):
        store = ClickHouseStore(dsn)
        try:
            if store.is_embedded:
                store.migrate()
            yield store
        finally:
            store.close()
        return
    from cluster.pipelines_cli import join_ray, prepare_ray

    prepare_ray(settings)
    join_ray(settings)
    import ray

    from actors.clickhouse import clickhouse_store

    try:
        yield clickhouse_store(dsn)
    finally:
        ray.shutdown()


def cmd_storage(args: argparse.Namespace) -> None:
    from cluster.runtime import ray_temp_dir
    from storage.retention import Horizons
    from storage.sizes import format_report, storage_report

    settings = settings_from(args)
    horizons = Horizons.from_settings(settings)
    now = dt.datetime.now(dt.UTC)
    with database(args) as conn, clickhouse_reader(settings) as store:
        report = storage_report(conn, store, horizons, now, settings.data_dir,
                                None if settings.ray_address else ray_temp_dir(settings.data_dir))
    print(format_report(report))


def add_parsers(sub: Any) -> None:
    storage = sub.add_parser("storage", help="sizes per table and data dir, and what"
                             " retention removes next")
    add_data_dir(storage)
    command(storage, cmd_storage)
