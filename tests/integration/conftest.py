"""One real Crashray for the integration suite, torn down before the e2e suite starts:
real Ray and Serve, a scratch database on the machine's PostgreSQL, and the real ClickHouse
engine (chDB) under a temp directory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cluster.runtime import Runtime, StartInfo
from cluster.settings import Settings
from storage.clickhouse import ClickHouseStore
from tests.support import free_port, scratch_database


@dataclass
class RunningCrashray:
    runtime: Runtime
    info: StartInfo
    base_url: str
    public_key: str
    settings: Settings


@pytest.fixture(scope="session")
def chdb_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseStore]:
    """The real ClickHouse engine in this process, migrated. chDB runs one engine per
    process and refuses a second data path, so every in-process store of a test session is
    this one; tests keep apart by their own organization ids."""
    clickhouse = ClickHouseStore(f"chdb://{tmp_path_factory.getbasetemp() / 'chdb'}")
    clickhouse.migrate()
    yield clickhouse
    clickhouse.close()


@pytest.fixture(scope="package")
def crashray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCrashray]:
    data_dir: Path = tmp_path_factory.mktemp("crashray-data")
    with scratch_database("crashray_it") as url:
        # A short lease so that a killed consumer's batch is re-claimed within the test;
        # two ingest replicas, so that quotas are shown to hold across replicas; an
        # organization backlog cap a test can fill (no other test queues near 2,000 items).
        settings = Settings(data_dir=data_dir, port=free_port(), postgres_url=url,
                            consumer_lease_s=3.0, key_cache_refresh_s=1.0,
                            project_settings_refresh_s=0.5, quota_settings_refresh_s=0.5,
                            key_cache_miss_reload_s=0.2, ingest_replicas=2,
                            max_queued_items_per_org=2000,
                            # Detectors have tests of their own (test_detectors*.py); here
                            # they would only add processes to the shared instance.
                            detectors=[], detector_entry_points=False,
                            # The raw archive, written often (test_archive.py replays it).
                            archive_dir=data_dir / "archive", archive_flush_s=0.5)
        runtime = Runtime(settings)
        info = runtime.start()
        try:
            public_key = info.dsn.split("//", 1)[1].split("@", 1)[0]
            yield RunningCrashray(runtime, info, settings.base_url(), public_key, settings)
        finally:
            runtime.stop()
