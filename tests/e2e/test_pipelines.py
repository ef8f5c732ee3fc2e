"""``crashray export`` and ``crashray rollups rebuild`` as a user runs them, against a real
``crashray up`` fed by the real sentry-sdk: the Parquet files read back with polars, and
corrupted counts repaired as the API shows them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest

from tests.e2e.conftest import CrashrayProcess, start_crashray, stop_crashray
from tests.support import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
#: Seconds for the sent events to be stored and counted.
STORED_WITHIN_S = 60


def crashray(*argv: str) -> subprocess.CompletedProcess[str]:
    """A ``crashray`` sub-command, as a user types it."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CRASHRAY_")}
    return subprocess.run([sys.executable, "-m", "cluster.cli", *argv], capture_output=True,
                          text=True, cwd=ROOT, env=environment, timeout=300,
                          stdin=subprocess.DEVNULL)


#: A line Ray prints into a driver's output from its own processes: "(raylet) …",
#: "(MapBatches pid=…) …", possibly in color.
RAY_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?\((raylet\)|.*?pid=\d+)")


def last_line(result: subprocess.CompletedProcess[str]) -> str:
    """What the command printed last; Ray's notices from its own processes (a raylet's
    warning that it started many workers, say) may come before or after it."""
    own = [line for line in result.stdout.splitlines() if not RAY_LINE.match(line)]
    return own[-1] if own else ""


def send(dsn: str, marker: str, count: int, error_class: str) -> list[str]:
    """``count`` exceptions of ``error_class`` through the real sentry-sdk; their ids."""
    result = subprocess.run(
        [sys.executable, str(HERE / "send_python_exceptions.py"), marker, str(count),
         error_class], capture_output=True, text=True, check=True, timeout=60,
        env={**os.environ, "CRASHRAY_DSN": dsn})
    return [str(i) for i in json.loads(result.stdout)]


@dataclass
class Instance:
    crashray: CrashrayProcess
    project_id: int
    #: Event ids sent to the default project (crashray/default), per error class.
    sent: dict[str, list[str]]
    #: Event ids sent to another organization's project (other/web).
    other_sent: list[str]

    def api(self, path: str) -> Any:
        response = httpx.get(f"{self.crashray.base_url}/api/0/{path}",
                             headers={"Authorization": f"Bearer {self.crashray.token}"})
        response.raise_for_status()
        return response.json()

    def issues(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.api(
            "projects/crashray/default/issues/?statsPeriod=24h&query=")
        return found


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    running = start_crashray(tmp_path_factory.mktemp("pipelines"), free_port())
    try:
        data_dir = str(running.data_dir)
        assert crashray("org", "create", "other", "--data-dir", data_dir).returncode == 0
        created = crashray("project", "create", "web", "--org", "other", "--data-dir",
                           data_dir)
        assert created.returncode == 0, created.stderr
        other_dsn = created.stdout.split()[-1]
        sent = {"ExportCardError": send(running.dsn, "a", 3, "ExportCardError"),
                "ExportStockError": send(running.dsn, "b", 2, "ExportStockError")}
        other_sent = send(other_dsn, "c", 2, "ExportCardError")
        project_id = int(running.dsn.rsplit("/", 1)[1])
        found = Instance(running, project_id, sent, other_sent)
        wait_for_counts(found, {"ExportCardError": 3, "ExportStockError": 2})
        yield found
    finally:
        assert stop_crashray(running) == 0, "".join(running.output[-40:])


def counts_by_type(instance: Instance) -> dict[str, tuple[int, int]]:
    """Per issue (by its exception type): its ``count`` and its last 24 hours' sum."""
    return {issue["metadata"].get("type", issue["title"]): (
        int(issue["count"]), sum(n for _, n in issue["stats"]["24h"]))
        for issue in instance.issues()}


def wait_for_counts(instance: Instance, expected: dict[str, int]) -> None:
    deadline = time.monotonic() + STORED_WITHIN_S
    want = {t: (n, n) for t, n in expected.items()}
    while counts_by_type(instance) != want:
        assert time.monotonic() < deadline, f"{counts_by_type(instance)} != {want}"
        time.sleep(0.5)


def test_export_writes_the_projects_events_as_parquet_that_polars_reads(
        instance: Instance, tmp_path: Path) -> None:
    target = tmp_path / "export"
    result = crashray("export", "--project", "default", "--data-dir",
                      str(instance.crashray.data_dir), "--to", str(target))
    assert result.returncode == 0, result.stderr
    assert last_line(result).startswith("exported 5 events of crashray/default to")
    events = pl.read_parquet(target)
    sent = {i for ids in instance.sent.values() for i in ids}
    assert events.height == 5
    assert set(events["event_id"]) == sent
    assert not set(events["event_id"]) & set(instance.other_sent)
    assert set(events["project_id"]) == {instance.project_id}
    issue_of_type = {i["metadata"]["type"]: int(i["id"]) for i in instance.issues()}
    card = events.filter(pl.col("event_id").is_in(instance.sent["ExportCardError"]))
    assert set(card["issue_id"]) == {issue_of_type["ExportCardError"]}
    assert set(card["release"]) == {"py-e2e@1.0.0"}
    assert set(card["environment"]) == {"e2e"}
    frames = (card.explode("exceptions").unnest("exceptions")
              .explode("frames").unnest("frames", separator="."))
    raising = frames.filter(pl.col("frames.function") == "charge")
    assert raising.height == 3
    assert set(raising["frames.in_app"]) == {True}
    assert set(raising["frames.filename"]) == {"send_python_exceptions.py"}
    assert set(raising["frames.context_line"]) == {
        '    raise ERROR(f"card {marker} declined")'}
    assert all(isinstance(n, int) and n > 0 for n in raising["frames.lineno"])
    assert set(frames["type"]) == {"ExportCardError"}
    tags = card.explode("tags").unnest("tags")
    assert {"release", "environment"} <= set(tags["key"])
    assert all(json.loads(c)["runtime"]["name"] == "CPython" for c in card["contexts"])


def test_export_of_a_time_range_holds_only_that_range(instance: Instance,
                                                       tmp_path: Path) -> None:
    data_dir = str(instance.crashray.data_dir)
    before = crashray("export", "--project", "default", "--data-dir", data_dir,
                      "--until", "2000-01-01", "--to", str(tmp_path / "before"))
    assert before.returncode == 0, before.stderr
    assert last_line(before).startswith("exported 0 events")
    since = crashray("export", "--project", "default", "--data-dir", data_dir,
                     "--since", "2000-01-01T00:00:00Z", "--to", str(tmp_path / "since"))
    assert pl.read_parquet(tmp_path / "since").height == 5, since.stderr


def test_export_of_another_organizations_project_is_refused(instance: Instance,
                                                            tmp_path: Path) -> None:
    data_dir = str(instance.crashray.data_dir)
    result = crashray("export", "--project", "web", "--data-dir", data_dir,
                      "--to", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr == ("crashray export: no project 'web' in organization"
                             " 'crashray'\n")
    theirs = crashray("export", "--org", "other", "--project", "web", "--data-dir",
                      data_dir, "--to", str(tmp_path / "theirs"))
    assert theirs.returncode == 0, theirs.stderr
    assert sorted(pl.read_parquet(tmp_path / "theirs")["event_id"]) == \
        sorted(instance.other_sent)


def test_export_into_a_directory_with_files_is_refused(instance: Instance,
                                                       tmp_path: Path) -> None:
    (tmp_path / "old.parquet").write_bytes(b"")
    result = crashray("export", "--project", "default", "--data-dir",
                      str(instance.crashray.data_dir), "--to", str(tmp_path))
    assert result.returncode == 2
    assert "exists and is not an empty directory" in result.stderr


def test_rollups_rebuild_repairs_corrupted_counts_as_the_api_shows_them(
        instance: Instance) -> None:
    data_dir = str(instance.crashray.data_dir)
    issue_id = {i["metadata"]["type"]: int(i["id"]) for i in instance.issues()}
    card = issue_id["ExportCardError"]
    subprocess.run([sys.executable, str(HERE / "corrupt_counts.py"), data_dir,
                    str(instance.project_id), str(card), "1000"], check=True, cwd=ROOT,
                   timeout=120, stdin=subprocess.DEVNULL)
    assert counts_by_type(instance)["ExportCardError"] == (1000, 1003)
    first = crashray("rollups", "rebuild", "--project", "default", "--data-dir", data_dir)
    assert first.returncode == 0, first.stderr
    assert last_line(first).startswith("rebuilt the hourly issue counts of crashray/default"
                                   " (5 events); 2 issues recounted, 1 of them corrected")
    assert counts_by_type(instance) == {"ExportCardError": (3, 3), "ExportStockError": (2, 2)}
    again = crashray("rollups", "rebuild", "--project", "default", "--data-dir", data_dir)
    assert "2 issues recounted, 0 of them corrected" in again.stdout
    assert counts_by_type(instance) == {"ExportCardError": (3, 3), "ExportStockError": (2, 2)}


def test_rollups_rebuild_leaves_another_organization_alone(instance: Instance) -> None:
    data_dir = str(instance.crashray.data_dir)
    refused = crashray("rollups", "rebuild", "--project", "web", "--data-dir", data_dir)
    assert refused.returncode == 2
    assert refused.stderr == ("crashray rollups rebuild: no project 'web' in organization"
                              " 'crashray'\n")
    theirs = crashray("rollups", "rebuild", "--org", "other", "--project", "web",
                      "--data-dir", data_dir)
    assert "(2 events); 1 issue recounted" in theirs.stdout, theirs.stderr
    assert sum(n for _, n in counts_by_type(instance).values()) == 5


def test_jobs_without_a_running_instance_say_how_to_start_one(tmp_path: Path) -> None:
    result = crashray("export", "--project", "default", "--data-dir", str(tmp_path),
                      "--to", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.startswith(f"crashray export: no running Crashray on {tmp_path}")


def test_export_with_a_query_holds_only_the_events_it_matches(instance: Instance,
                                                              tmp_path: Path) -> None:
    """``--query`` takes the issue stream's syntax: free text and event fields are matched
    against the stored events, ``is:`` against their issues."""
    data_dir = str(instance.crashray.data_dir)
    text = crashray("export", "--project", "default", "--data-dir", data_dir,
                    "--query", "ExportStockError", "--to", str(tmp_path / "text"))
    assert text.returncode == 0, text.stderr
    assert sorted(pl.read_parquet(tmp_path / "text")["event_id"]) == \
        sorted(instance.sent["ExportStockError"])
    none = crashray("export", "--project", "default", "--data-dir", data_dir,
                    "--query", "environment:production", "--to", str(tmp_path / "none"))
    assert last_line(none).startswith("exported 0 events"), none.stderr

    card = next(i for i in instance.issues() if i["metadata"]["type"] == "ExportCardError")
    path = f"{instance.crashray.base_url}/api/0/issues/{card['id']}/"
    headers = {"Authorization": f"Bearer {instance.crashray.token}"}
    httpx.put(path, json={"status": "resolved"}, headers=headers).raise_for_status()
    try:
        unresolved = crashray("export", "--project", "default", "--data-dir", data_dir,
                              "--query", "is:unresolved level:error", "--to",
                              str(tmp_path / "unresolved"))
        assert unresolved.returncode == 0, unresolved.stderr
        assert sorted(pl.read_parquet(tmp_path / "unresolved")["event_id"]) == \
            sorted(instance.sent["ExportStockError"])
    finally:
        httpx.put(path, json={"status": "unresolved"}, headers=headers).raise_for_status()

    bad = crashray("export", "--project", "default", "--data-dir", data_dir,
                   "--query", "is:bogus", "--to", str(tmp_path / "bad"))
    assert bad.returncode == 2
    assert bad.stderr.startswith("crashray export: query position 3: unknown value"), \
        bad.stderr
    assert not (tmp_path / "bad").exists()
