"""``crashray backup`` → ``crashray restore`` into a fresh data dir gives the same issues and
events (real PostgreSQL through pg_dump/pg_restore, the real ClickHouse engine).

chDB opens one data path per process, so each instance's ClickHouse is written and read in
a process of its own (``python -c`` calling this module's helpers), as the CLI runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import psycopg

from tests.support import scratch_database

ROOT = Path(__file__).resolve().parents[2]


def populate_clickhouse(data_dir: str, events_json: str) -> None:
    """Events (with their issue ids) and rollup rows into the chDB of ``data_dir``."""
    from storage.clickhouse import ClickHouseStore, clickhouse_dsn

    store = ClickHouseStore(clickhouse_dsn(None, Path(data_dir)))
    store.migrate()
    for org, project, issue, event_id, hours_ago in json.loads(events_json):
        store._client.command(
            "INSERT INTO events (organization_id, project_id, event_id, group_id, timestamp,"
            " received, retention_days, title) VALUES ({o:UInt64}, {p:UInt64}, {e:UUID},"
            " {g:UInt64}, now64(6) - toIntervalHour({h:UInt32}), now64(6), 90, 'boom')",
            parameters={"o": org, "p": project, "e": event_id, "g": issue, "h": hours_ago})
        store._client.command(
            "INSERT INTO issue_counts_hourly VALUES ({p:UInt64}, {g:UInt64},"
            " toStartOfHour(now() - toIntervalHour({h:UInt32})), 90, 1)",
            parameters={"p": project, "g": issue, "h": hours_ago},
            settings={"insert_deduplication_token": uuid.uuid4().hex})
    store.close()


def read_clickhouse(data_dir: str) -> None:
    """Print the events (org, project, issue, event id) and the rollup's sum as JSON."""
    from storage.clickhouse import ClickHouseStore, clickhouse_dsn

    store = ClickHouseStore(clickhouse_dsn(None, Path(data_dir)))
    store.migrate()
    events = store.query_rows(
        "SELECT organization_id, project_id, group_id, replaceAll(toString(event_id), '-', '')"
        " FROM events ORDER BY event_id", {})
    rollup = store.query_rows("SELECT sum(count) FROM issue_counts_hourly", {})
    print(json.dumps({"events": [list(map(str, r)) for r in events],
                      "rollup": int(rollup[0][0])}))
    store.close()


def _python(code: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _crashray(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180, check=False)


def _env(postgres_url: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "CRASHRAY_POSTGRES_URL": postgres_url}


def _two_tenants(url: str) -> list[list[Any]]:
    """Two organizations, each a project with two issues; the events of those issues."""
    from storage import postgres

    postgres.migrate(url)
    events: list[list[Any]] = []
    with psycopg.connect(url) as conn:
        for slug in ("acme", "globex"):
            org = conn.execute("INSERT INTO organizations (slug, name) VALUES (%s, %s)"
                               " RETURNING id", (slug, slug)).fetchone()
            assert org is not None
            project = conn.execute("INSERT INTO projects (organization_id, slug, name) VALUES"
                                   " (%s, 'app', 'App') RETURNING id", (org[0],)).fetchone()
            assert project is not None
            for n in range(2):
                issue = conn.execute(
                    "INSERT INTO issues (project_id, title, first_seen, last_seen, times_seen)"
                    " VALUES (%s, %s, now(), now(), 3) RETURNING id",
                    (project[0], f"{slug} error {n}")).fetchone()
                assert issue is not None
                conn.execute("INSERT INTO group_hashes VALUES (%s, %s, %s, 'v1')",
                             (project[0], uuid.uuid4().hex, issue[0]))
                events += [[org[0], project[0], issue[0], uuid.uuid4().hex, hours]
                           for hours in (1, 30, 200)]
    return events


def _issues(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT i.id, p.organization_id, i.project_id, i.title,"
                            " i.times_seen, h.hash FROM issues i JOIN projects p"
                            " ON p.id = i.project_id JOIN group_hashes h ON h.issue_id = i.id"
                            " ORDER BY i.id").fetchall()


def test_backup_restored_into_a_fresh_data_dir_gives_the_same_issues_and_events(
        tmp_path: Path) -> None:
    source_dir, fresh_dir, backup_dir = tmp_path / "a", tmp_path / "b", tmp_path / "backup"
    with scratch_database("backup_src") as source_url, \
            scratch_database("backup_dst") as fresh_url:
        events = _two_tenants(source_url)
        _python("from tests.integration.test_backup import populate_clickhouse as p;"
                f" p({str(source_dir)!r}, {json.dumps(json.dumps(events))})",
                _env(source_url))
        made = _crashray(["backup", str(backup_dir), "--data-dir", str(source_dir)],
                         _env(source_url))
        assert made.returncode == 0, made.stderr
        assert "(24 rows)" in made.stdout  # 12 events and their 12 rollup rows
        restored = _crashray(["restore", str(backup_dir), "--data-dir", str(fresh_dir)],
                             _env(fresh_url))
        assert restored.returncode == 0, restored.stderr

        assert _issues(fresh_url) == _issues(source_url)
        assert len(_issues(fresh_url)) == 4
        read = "from tests.integration.test_backup import read_clickhouse as r; r({!r})"
        before = json.loads(_python(read.format(str(source_dir)), _env(source_url)))
        after = json.loads(_python(read.format(str(fresh_dir)), _env(fresh_url)))
        assert after == before
        assert sorted(e[3] for e in after["events"]) == sorted(e[3] for e in events)
        assert after["rollup"] == len(events)

        again = _crashray(["restore", str(backup_dir), "--data-dir", str(fresh_dir)],
                          _env(fresh_url))
        assert again.returncode == 2
        assert "fresh data dir" in again.stderr
        assert _issues(fresh_url) == _issues(source_url)  # nothing overwritten


def test_restore_of_a_folder_that_is_no_backup_names_it(tmp_path: Path) -> None:
    done = _crashray(["restore", str(tmp_path), "--data-dir", str(tmp_path / "d")],
                     {**os.environ, "PYTHONPATH": str(ROOT),
                      "CRASHRAY_POSTGRES_URL": "postgresql://postgres@127.0.0.1:1/none"})
    assert done.returncode == 2
    assert f"{tmp_path}/crashray-backup.json: not a Crashray backup" in done.stderr
