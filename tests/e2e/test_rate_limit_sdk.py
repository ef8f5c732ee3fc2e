"""The real sentry-sdk against a rate-limited key of a running ``crashray up``: it backs off
after a 429 exactly as it does against Sentry, and its client report of what it dropped is
recorded as outcomes. The limit is set with the CLI while the instance runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from events.quotas import window_at
from tests.e2e.conftest import CrashrayProcess
from tests.support import wait_until

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
WINDOW_S = 30


def cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "cluster.cli", *args],
                            capture_output=True, text=True, timeout=120, cwd=HERE.parents[1])
    assert result.returncode == 0, result.stderr
    return result.stdout


def outcomes(c: CrashrayProcess) -> dict[tuple[str, str], int]:
    response = httpx.get(f"{c.base_url}/api/0/organizations/crashray/stats_v2/", params=[
        ("field", "sum(quantity)"), ("groupBy", "outcome"), ("groupBy", "reason"),
        ("category", "error"), ("statsPeriod", "1h")],
        headers={"Authorization": f"Bearer {c.token}"}, timeout=10)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return {(g["by"]["outcome"], g["by"]["reason"]): g["totals"]["sum(quantity)"]
            for g in body["groups"]}


def test_the_python_sdk_backs_off_after_a_429_and_reports_what_it_dropped(
        crashray_up: CrashrayProcess) -> None:
    c = crashray_up
    before = outcomes(c)
    out = cli("key", "rate-limit", "--data-dir", str(c.data_dir), "--project", "default",
              "--window", str(WINDOW_S), "--count", "2")
    assert "2 events per 30 s" in out
    time.sleep(6)  # the rate limiter re-reads quotas every 5 s by default
    left = window_at(1, WINDOW_S, time.time()).expires_at - time.time()
    if left < 20:  # start early in a window, so that it cannot end in the middle
        time.sleep(left + 0.5)
    try:
        subprocess.run([sys.executable, str(HERE / "send_rate_limited.py"),
                        uuid.uuid4().hex[:8], "3", "5"],
                       env={**os.environ, "CRASHRAY_DSN": c.dsn}, capture_output=True,
                       text=True, timeout=60, check=True)

        # Two accepted, the third refused by the key's limit, and the five after it never
        # sent: the SDK dropped them itself and said so in its client report.
        expected = {("accepted", ""): 2, ("rate_limited", "key_quota"): 1,
                    ("client_discard", "ratelimit_backoff"): 5}

        def changed() -> dict[tuple[str, str], int]:
            now = outcomes(c)
            return {k: v - before.get(k, 0) for k, v in now.items() if v != before.get(k, 0)}

        wait_until(lambda: changed() == expected or None, 30, "the outcomes of the run")
        time.sleep(3)  # nothing more arrives: the SDK did not send during its back-off
        assert changed() == expected
    finally:
        cli("key", "rate-limit", "--data-dir", str(c.data_dir), "--project", "default",
            "--clear")
        # Ingest replicas remember the refusal until its window ends; let it end, so the
        # other tests of this instance send freely.
        time.sleep(max(window_at(1, WINDOW_S, time.time()).expires_at - time.time(), 0) + 6)
