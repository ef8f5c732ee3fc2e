"""``GET /healthz`` and ``GET /readyz`` of the running instance, and the readiness checks
against stores that do not answer (a closed port; a ClickHouse ping that hangs). The
probe's answer while the instance's own PostgreSQL is stopped is in
tests/e2e/test_faults.py.

Real parts: the integration suite's running Crashray (Serve, PostgreSQL, chDB through its
owner actor), PostgreSQL."""

from __future__ import annotations

import time

import httpx
import pytest

from serve_apps.health import HealthConfig, ReadinessProbe, check_readiness
from tests.integration.conftest import RunningCrashray

pytestmark = pytest.mark.integration

DEAD_POSTGRES = "postgresql://postgres@127.0.0.1:1/postgres"


def test_the_instance_is_healthy_and_ready_and_says_nothing_of_its_tenants(
        crashray: RunningCrashray) -> None:
    health = httpx.get(f"{crashray.base_url}/healthz", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = httpx.get(f"{crashray.base_url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"postgres", "clickhouse", "queue"}
    assert all(check["ok"] for check in body["checks"].values())
    assert body["checks"]["queue"]["oldest_age_s"] >= 0
    assert set(body["checks"]["queue"]) == {"ok", "oldest_age_s", "backlog"}
    assert ready.headers["cache-control"] == "no-store"
    # Unauthenticated, and the same for any caller: no cookie, no token, no tenant data.
    assert "organization" not in ready.text and "project" not in ready.text


def test_a_store_that_does_not_answer_makes_it_unready_with_the_reason(
        crashray: RunningCrashray) -> None:
    config = HealthConfig(DEAD_POSTGRES, "", 300.0, 1.0, 0.0)
    found = check_readiness(config, lambda: True)
    assert not found.ready
    assert found.checks["postgres"]["ok"] is False
    assert "OperationalError" in found.checks["postgres"]["detail"]
    assert found.checks["clickhouse"] == {"ok": True}

    live = HealthConfig(crashray.runtime.postgres_url, "", 300.0, 1.0, 0.0)
    assert check_readiness(live, lambda: True).ready
    down = check_readiness(live, lambda: False)
    assert not down.ready and "did not answer" in down.checks["clickhouse"]["detail"]
    # A queue whose oldest item waited longer than the setting allows (0 s here, when the
    # queue holds anything, or never: an empty queue is fresh).
    aged = check_readiness(HealthConfig(crashray.runtime.postgres_url, "", 1e-9, 1.0, 0.0),
                           lambda: True)
    assert aged.checks["queue"]["ok"] == (aged.checks["queue"]["backlog"] == 0)


def test_a_check_that_hangs_is_answered_unready_in_bounded_time(
        crashray: RunningCrashray) -> None:
    def hanging_ping() -> bool:
        time.sleep(5)
        return True

    probe = ReadinessProbe(HealthConfig(crashray.runtime.postgres_url, "", 300.0, 0.5, 0.0),
                           hanging_ping)
    started = time.monotonic()
    first = probe()
    assert not first.ready and "did not answer within 1 s" in first.checks["checks"]["detail"]
    second = probe()  # the stuck check is waited for again, not started a second time
    assert not second.ready
    assert time.monotonic() - started < 3.5
