"""``crashray import`` as a user runs it, against a real ``crashray up``: envelope files
captured from the real SDKs (tests/fixtures/sdk) imported into a project, counted as the
API shows them; a re-run adds nothing; a project of another organization is refused."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.conftest import CrashrayProcess, start_crashray, stop_crashray
from tests.e2e.test_pipelines import ROOT, crashray
from tests.support import free_port

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sdk"
SDK_FILES = ("python-sdk-2.75.0-exception", "node-sdk-11.12.0-exception")
EVENTS = 6


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashrayProcess]:
    instance = start_crashray(tmp_path_factory.mktemp("import"), free_port())
    try:
        data_dir = str(instance.data_dir)
        for argv in (("project", "create", "history", "--org", "crashray"),
                     ("project", "create", "killed", "--org", "crashray"),
                     ("org", "create", "other"),
                     ("project", "create", "theirs", "--org", "other")):
            created = crashray(*argv, "--data-dir", data_dir)
            assert created.returncode == 0, created.stderr
        yield instance
    finally:
        assert stop_crashray(instance) == 0, "".join(instance.output[-40:])


def envelopes(folder: Path) -> None:
    """The SDK captures as envelope files with fresh ids, an hour old (the issue list
    shows issues seen within its period)."""
    folder.mkdir()
    hour_ago = time.time() - 3600
    for n in range(EVENTS):
        lines = (FIXTURES / f"{SDK_FILES[n % 2]}.envelope").read_bytes().split(b"\n")
        event = orjson.loads(lines[2])
        event_id = uuid.uuid4().hex
        event.update(event_id=event_id, timestamp=hour_ago + n)
        payload = orjson.dumps(event)
        (folder / f"{event_id}.envelope").write_bytes(b"\n".join([
            # Sent a second after it happened, as an SDK does (an event stamped later than
            # its envelope was sent would get the envelope's time, as Relay does).
            orjson.dumps({"event_id": event_id, "sent_at": dt.datetime.fromtimestamp(
                hour_ago + n + 1, dt.UTC).isoformat()}),
            orjson.dumps({"type": "event", "length": len(payload)}), payload]))


def summary_of(result: subprocess.CompletedProcess[str]) -> str:
    """The command's summary line (Ray may print notices of its own after it)."""
    return next((line for line in result.stdout.splitlines()
                 if line.startswith("imported ")), result.stdout[-2000:])


def issues(instance: CrashrayProcess, project: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{instance.base_url}/api/0/projects/crashray/{project}/issues/"
                         "?statsPeriod=24h&query=",
                         headers={"Authorization": f"Bearer {instance.token}"})
    response.raise_for_status()
    found: list[dict[str, Any]] = response.json()
    return found


def test_import_of_sdk_envelopes_counts_them_once_and_refuses_another_orgs_project(
        running: CrashrayProcess, tmp_path: Path) -> None:
    folder = tmp_path / "envelopes"
    envelopes(folder)
    data_dir = str(running.data_dir)

    first = crashray("import", "--project", "history", "--data-dir", data_dir, str(folder))
    assert first.returncode == 0, first.stderr
    assert summary_of(first).startswith(
        f"imported {EVENTS} events into 2 issues, skipped 0 already stored, invalid 0;")
    found = issues(running, "history")
    assert sorted(int(i["count"]) for i in found) == [EVENTS // 2, EVENTS // 2]

    again = crashray("import", "--project", "history", "--data-dir", data_dir, str(folder))
    assert again.returncode == 0, again.stderr
    assert summary_of(again).startswith(
        f"imported 0 events into 0 issues, skipped {EVENTS} already stored")
    assert sorted(int(i["count"]) for i in issues(running, "history")) == [3, 3]

    refused = crashray("import", "--project", "theirs", "--data-dir", data_dir, str(folder))
    assert refused.returncode != 0
    assert "no project 'theirs' in organization 'crashray'" in refused.stderr
    assert issues(running, "default") == []


#: Events of the import killed midway, committed in batches of KILL_BATCH_EVENTS.
KILLED_EVENTS = 3000
KILL_BATCH_EVENTS = 100


def test_an_import_killed_midway_and_run_again_counts_every_event_once(
        running: CrashrayProcess, tmp_path: Path) -> None:
    lines = []
    for n in range(KILLED_EVENTS):
        event = orjson.loads((FIXTURES / f"{SDK_FILES[n % 2]}.envelope").read_bytes()
                             .split(b"\n")[2])
        event["exception"]["values"][-1]["type"] = f"KilledImportError{n % 5}"
        event.update(event_id=uuid.uuid4().hex, timestamp=time.time() - 3600 - n)
        lines.append(orjson.dumps(event))
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CRASHRAY_")}
    environment["CRASHRAY_IMPORT_BATCH_EVENTS"] = str(KILL_BATCH_EVENTS)
    argv = [sys.executable, "-m", "cluster.cli", "import", "--project", "killed",
            "--data-dir", str(running.data_dir), str(source)]
    job = subprocess.Popen(argv, cwd=ROOT, env=environment, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while sum(int(i["count"]) for i in issues(running, "killed")) < 2 * KILL_BATCH_EVENTS:
            assert job.poll() is None, "the import ended before it could be killed"
            assert time.monotonic() < deadline, "the import stored nothing in 180 s"
            time.sleep(0.2)
    finally:
        os.killpg(job.pid, signal.SIGKILL)  # the driver and what it started, mid-batch
        job.wait()
    counted_before = sum(int(i["count"]) for i in issues(running, "killed"))
    assert counted_before < KILLED_EVENTS

    resumed = subprocess.run(argv, cwd=ROOT, env=environment, capture_output=True,
                             text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert resumed.returncode == 0, resumed.stderr
    summary = summary_of(resumed)
    imported = int(summary.split()[1])
    skipped = int(summary.split("skipped ")[1].split()[0])
    assert imported + skipped == KILLED_EVENTS, summary
    assert skipped >= counted_before, summary
    # Five error types from two SDKs (their stack traces differ): ten issues.
    assert sorted(int(i["count"]) for i in issues(running, "killed")) == \
        [KILLED_EVENTS // 10] * 10
