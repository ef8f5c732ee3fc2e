"""A detector plugin package, installed with pip, is discovered through its entry point,
deployed as sharded Ray actors with the resources it declares, fed series, and its anomaly
lands in PostgreSQL; killed, its actor comes back with its checkpoint.

Real parts: pip installing ``examples/crashray-detector-example`` into this environment
(uninstalled afterwards), the integration suite's Ray, a scratch PostgreSQL database."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import ray

from actors.detectors import DetectorConfig, discover, start_detectors, stop_detectors
from events.anomaly import Series
from storage import postgres
from storage.bootstrap import ensure_project
from storage.clickhouse import clickhouse_dsn
from storage.scope import ProjectScope
from tests.integration.conftest import RunningCrashray
from tests.integration.test_pipeline import post_envelope
from tests.support import (
    envelope_bytes,
    error_event,
    gzip_bytes,
    migrated_project_database,
    python_sdk_headers,
    wait_until,
)

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "crashray-detector-example"
DISTRIBUTION = "crashray-detector-example"


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                   check=True, timeout=300, env={**os.environ, "PIP_ROOT_USER_ACTION": "ignore"})


@pytest.fixture
def example_installed() -> Iterator[None]:
    # A regular (not editable) install: its files land in site-packages, which this process
    # and Ray's workers already search; an editable one would need a new interpreter. pip
    # builds it in an isolated environment with the build backend its pyproject names.
    pip("install", "--no-deps", str(EXAMPLE))
    importlib.invalidate_caches()
    try:
        yield
    finally:
        pip("uninstall", "-y", DISTRIBUTION)


@pytest.fixture
def project() -> Iterator[tuple[str, ProjectScope]]:
    with migrated_project_database("crashray_detector_plugin") as made:
        yield made


def minute_series(scope: ProjectScope, at: dt.datetime, counts: list[int]) -> Series:
    minutes = tuple(at + dt.timedelta(minutes=i) for i in range(len(counts)))
    return Series("project", scope.organization_id, scope.id, None, minutes, tuple(counts),
                  tuple(0 for _ in counts))


def test_an_installed_plugin_is_discovered_deployed_fed_and_its_anomaly_recorded(
        crashray: RunningCrashray, example_installed: None,
        project: tuple[str, ProjectScope]) -> None:
    url, scope = project
    assert "minute-threshold" in [s.name for s in discover([], entry_points=True)]
    prefix = f"crashray-test-detector-{uuid.uuid4().hex[:6]}"
    config = DetectorConfig(postgres_url=url, clickhouse_dsn=None, detectors=(),
                            entry_points=True, shards=2)
    handles = start_detectors(config, name_prefix=prefix)
    try:
        mine = handles[f"{prefix}-minute-threshold-{scope.id % 2}"]
        other = handles[f"{prefix}-minute-threshold-{(scope.id + 1) % 2}"]
        stats = ray.get(mine.stats.remote(), timeout=120)
        assert stats["class"] == "MinuteThresholdDetector" and stats["detector"] == (
            "minute-threshold")
        # The actor holds what the plugin class declares (num_cpus = 0.01).
        assert stats["resources"] == {"CPU": 0.01}
        at = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
        batch = [minute_series(scope, at, [1, 2, 9])]
        assert ray.get(other.feed.remote(batch, at), timeout=60) == [], (
            "a shard recorded another shard's project")
        [anomaly_id] = ray.get(mine.feed.remote(batch, at + dt.timedelta(minutes=3)),
                               timeout=60)
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT organization_id, project_id, detector, kind, direction,"
                               " status, evidence FROM anomalies WHERE id = %s",
                               (anomaly_id,)).fetchone()
        assert row is not None
        assert row[:6] == (scope.organization_id, scope.id, "minute-threshold", "busy-minute",
                           "up", "open")
        assert row[6] == {"events": 9.0, "threshold": 5.0}

        # Killed, Ray restarts it and it continues from its checkpoint.
        ray.get(mine.checkpoint.remote(), timeout=60)
        ray.kill(mine, no_restart=False)
        restarted = wait_until(lambda: _restarted(mine), 120,
                               "the restarted detector actor, restored from its checkpoint")
        assert restarted.get("observations", 0) == 0  # a new instance, which loaded the checkpoint
    finally:
        stop_detectors(handles, timeout_s=30)


def test_a_deployed_plugin_watches_the_live_event_stream_in_clickhouse(
        crashray: RunningCrashray, example_installed: None, corpus_dir: Path) -> None:
    """Events sent to the running Crashray reach the plugin through ClickHouse (read by the
    actor's own loop, through the embedded engine's owner actor) within seconds.

    A project of its own: other tests' traffic to the shared instance's default project opens
    a busy-minute episode before this test's minute, and its events would only extend that
    episode (whose start is earlier than this test's), never open one this test can find."""
    url = crashray.runtime.postgres_url
    with postgres.connect(url) as conn:
        project_id, key = ensure_project(conn, 1, f"live-{uuid.uuid4().hex[:8]}", "v2")
        conn.commit()
    prefix = f"crashray-test-live-{uuid.uuid4().hex[:6]}"
    config = DetectorConfig(
        postgres_url=url, clickhouse_dsn=clickhouse_dsn(crashray.settings.clickhouse_url,
                                                        crashray.settings.data_dir),
        detectors=(), entry_points=True, interval_s=1.0, window_minutes=10)
    handles = start_detectors(config, name_prefix=prefix)
    try:
        sent_at = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
        for i in range(10):  # at least 5 of them in one minute
            event = error_event(corpus_dir, f"ValueError: live stream {i}")
            response = post_envelope(crashray, gzip_bytes(envelope_bytes(event)),
                                     python_sdk_headers(key), project=project_id)
            assert response.status_code == 200, response.text

        def recorded() -> tuple[object, ...] | None:
            with psycopg.connect(url) as conn:
                return conn.execute(
                    "SELECT id, evidence FROM anomalies WHERE detector = 'minute-threshold'"
                    " AND project_id = %s AND start_at >= %s", (project_id, sent_at)).fetchone()

        # The shared instance may still be draining other tests' backlog: room for it.
        found = wait_until(recorded, 120, "the plugin's anomaly from the live event stream")
        assert found[1]["events"] >= 5  # type: ignore[index]
    finally:
        stop_detectors(handles, timeout_s=30)


def _restarted(actor: Any) -> dict[str, Any] | None:
    """The actor's stats once it answers as a restored instance."""
    try:
        found: dict[str, Any] = ray.get(actor.stats.remote(), timeout=10)
    except ray.exceptions.RayActorError:  # being restarted
        return None
    return found if found.get("restored") == 1 else None
