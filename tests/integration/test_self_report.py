"""Self-reporting (cluster/self_report.py) through Ray's worker setup hook, to a second
project of the integration suite's running Crashray over real HTTP ingest: a Ray worker's
logged exception becomes an issue there; with the DSN pointing at the instance itself,
what the ingest path raises is never sent back into it, a repeating fault sends a bounded
number of reports, and a receiver that is down never makes reporting raise.

Real parts: Ray (a worker started with the runtime environment ``crashray up`` gives its
workers), sentry-sdk, the running Crashray's ingest, consumers, PostgreSQL and API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import pytest
import ray

from cluster.self_report import SelfReportConfig, dsn_points_at, runtime_env
from events.grouping import DEFAULT_GROUPING_CONFIG
from storage import postgres, tenancy
from tests.integration.conftest import RunningCrashray
from tests.support import free_port

pytestmark = pytest.mark.integration

#: Seconds for a report to be ingested, consumed and listed.
REPORTED_TIMEOUT_S = 60
#: Seconds to wait for reports that must never come.
QUIET_S = 8


def second_project(crashray: RunningCrashray) -> tuple[str, str]:
    """A new project in the instance's organization: (slug, DSN)."""
    slug = f"self-{uuid.uuid4().hex[:8]}"
    with postgres.connect(crashray.runtime.postgres_url) as conn:
        org = tenancy.organization_id(conn, crashray.info.organization_slug)
        created = tenancy.create_project(conn, org, slug, slug, DEFAULT_GROUPING_CONFIG)
        conn.commit()
    base = crashray.base_url.replace("://", f"://{created.public_key}@", 1)
    return slug, f"{base}/{created.id}"


def events_of(crashray: RunningCrashray, slug: str) -> dict[str, int]:
    """Issue title → events, as the API lists the project's issues."""
    answer = httpx.get(f"{crashray.base_url}/api/0/projects/"
                       f"{crashray.info.organization_slug}/{slug}/issues/",
                       params={"query": "", "statsPeriod": "24h"}, timeout=30,
                       headers={"Authorization": f"Bearer {crashray.info.api_token}"})
    assert answer.status_code == 200, answer.text
    return {i["title"]: int(i["count"]) for i in answer.json()}


@ray.remote
def fault_in_a_worker(marker: str, ingest_faults: int, other_faults: int) -> dict[str, Any]:
    """What a Crashray actor does on an error: log it with its traceback. First faults of
    the ingest path (raised by ingest's own code, logged on ingest's logger or captured
    while ingesting), then others; returns how long capturing took."""
    import logging
    from types import SimpleNamespace

    import sentry_sdk

    from cluster.self_report import ingesting
    from serve_apps.ingest_request import authorize

    started = time.monotonic()
    for n in range(ingest_faults):
        try:
            authorize(None, SimpleNamespace(public_key="k"), 1)  # type: ignore[arg-type]
        except Exception:
            logging.getLogger("crashray.consumer").exception("IngestFault %s %d", marker, n)
        logging.getLogger("crashray.ingest").error("IngestLogged %s %d", marker, n)
        with ingesting():
            sentry_sdk.capture_exception(RuntimeError(f"IngestContext {marker} {n}"))
    for _ in range(other_faults):
        try:
            raise RuntimeError(f"SelfReported {marker}")
        except RuntimeError:
            logging.getLogger("crashray.notifier").exception("notifier failed")
    captured_s = time.monotonic() - started
    flushed = time.monotonic()
    sentry_sdk.flush(timeout=5)
    return {"initialized": sentry_sdk.get_client().is_active(), "captured_s": captured_s,
            "flush_s": time.monotonic() - flushed}


def run_in_worker(crashray: RunningCrashray, config: SelfReportConfig, marker: str,
                  ingest_faults: int, other_faults: int) -> dict[str, Any]:
    """``fault_in_a_worker`` in a new Ray job on the running instance's cluster, whose
    ``ray.init`` gets the runtime environment ``crashray up`` gives its own when a self
    DSN is set (Ray takes ``worker_process_setup_hook`` only at the job level)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.integration.test_self_report",
         crashray.runtime.ray_gcs_address(), json.dumps(asdict(config)), marker,
         str(ingest_faults), str(other_faults)],
        capture_output=True, text=True, timeout=180, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def main() -> None:
    """The job: ``python -m tests.integration.test_self_report GCS CONFIG MARKER N M``."""
    address, config, marker, ingest_faults, other_faults = sys.argv[1:6]
    ray.init(address=address, namespace=f"self-report-{marker}", log_to_driver=False,
             runtime_env=runtime_env(SelfReportConfig(**json.loads(config))))
    # A runtime environment of its own, as Serve replicas get (cluster/runtime.py): the
    # job's hook and self-report configuration still reach it.
    task = fault_in_a_worker.options(  # type: ignore[attr-defined]
        runtime_env={"env_vars": {"CRASHRAY_TEST_OWN_ENV": "1"}})
    found = ray.get(task.remote(marker, int(ingest_faults), int(other_faults)), timeout=120)
    print(json.dumps(found))


def test_a_workers_exception_is_reported_to_another_project(
        crashray: RunningCrashray) -> None:
    slug, dsn = second_project(crashray)
    marker = uuid.uuid4().hex[:10]
    config = SelfReportConfig(dsn, 1.0, 60, guard_ingest=False)
    assert run_in_worker(crashray, config, marker, 0, 1)["initialized"]
    deadline = time.monotonic() + REPORTED_TIMEOUT_S
    while time.monotonic() < deadline and not events_of(crashray, slug):
        time.sleep(0.5)
    assert events_of(crashray, slug) == {f"RuntimeError: SelfReported {marker}": 1}


def test_reports_to_this_instance_never_loop_through_ingest_and_stay_bounded(
        crashray: RunningCrashray) -> None:
    slug, dsn = second_project(crashray)
    assert dsn_points_at(dsn, [crashray.base_url])  # what config_for decides
    marker = uuid.uuid4().hex[:10]
    config = SelfReportConfig(dsn, 1.0, 3, guard_ingest=True)
    run_in_worker(crashray, config, marker, ingest_faults=20, other_faults=30)
    deadline = time.monotonic() + REPORTED_TIMEOUT_S
    while time.monotonic() < deadline and sum(events_of(crashray, slug).values()) < 3:
        time.sleep(0.5)
    time.sleep(QUIET_S)  # anything more (a loop, a flood) would arrive meanwhile
    # The cap (3 a minute) let the first three notifier errors through, nothing of ingest.
    assert events_of(crashray, slug) == {f"RuntimeError: SelfReported {marker}": 3}


def test_a_receiver_that_is_down_never_makes_reporting_raise_or_hang(
        crashray: RunningCrashray) -> None:
    dead = f"http://key@127.0.0.1:{free_port()}/1"  # nothing listens there
    found = run_in_worker(crashray, SelfReportConfig(dead, 1.0, 60, guard_ingest=False),
                          uuid.uuid4().hex[:10], 0, 20)
    assert found["initialized"] and found["captured_s"] < 2 and found["flush_s"] < 7


if __name__ == "__main__":
    main()
