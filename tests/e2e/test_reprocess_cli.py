"""``crashray reprocess`` as a user runs it, against a real ``crashray up`` fed by the real
sentry-sdk: a fingerprint rule saved after the events came in, then the command, then the
issues as the API shows them."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import CrashrayProcess, start_crashray, stop_crashray
from tests.e2e.test_pipelines import crashray, send
from tests.support import free_port, wait_until


def summary(result: subprocess.CompletedProcess[str]) -> str:
    """The command's summary line (Ray may print notices of its own around it)."""
    return next((line for line in result.stdout.splitlines()
                 if line.startswith("reprocess job")), result.stdout)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashrayProcess]:
    started = start_crashray(tmp_path_factory.mktemp("reprocess"), free_port())
    try:
        yield started
    finally:
        assert stop_crashray(started) == 0, "".join(started.output[-40:])


def issue_counts(c: CrashrayProcess) -> dict[str, int]:
    response = httpx.get(f"{c.base_url}/api/0/projects/crashray/default/issues/"
                         "?statsPeriod=24h&query=", timeout=30,
                         headers={"Authorization": f"Bearer {c.token}"})
    response.raise_for_status()
    return {i["title"]: int(i["count"]) for i in response.json()}


def test_reprocess_after_a_fingerprint_rule_merges_the_stored_issues(
        running: CrashrayProcess, tmp_path: Path) -> None:
    data_dir = str(running.data_dir)
    send(running.dsn, "a", 3, "ReprocessCardError")
    send(running.dsn, "b", 2, "ReprocessStockError")
    wait_until(lambda: len(issue_counts(running)) == 2 or None, 60, "two issues")
    saved = httpx.put(f"{running.base_url}/api/0/projects/crashray/default/",
                      json={"fingerprintingRules": 'type:Reprocess* -> shop title="Shop"'},
                      headers={"Authorization": f"Bearer {running.token}"}, timeout=30)
    assert saved.status_code == 200, saved.text

    result = crashray("reprocess", "--project", "default", "--data-dir", data_dir)

    assert result.returncode == 0, result.stderr
    assert summary(result).startswith(
        "reprocess job 1 of crashray/default: 5 events read, 5 changed, 5 moved to another"
        " issue; issues: 1 created, 2 merged, 0 emptied (resolved); 5 events in")
    assert issue_counts(running) == {"Shop": 5}
    again = crashray("reprocess", "--project", "default", "--data-dir", data_dir)
    assert "5 events read, 0 changed, 0 moved" in summary(again), again.stderr
    refused = crashray("reprocess", "--org", "nope", "--project", "default", "--data-dir",
                       data_dir)
    assert refused.returncode != 0 and "nope" in refused.stderr
