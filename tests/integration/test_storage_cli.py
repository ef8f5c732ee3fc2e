"""``crashray storage`` prints the sizes of both databases, the data dir's use and what
retention removes next (the instance stopped: the command opens the embedded ClickHouse in
its own process)."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path

import psycopg

from tests.integration.conftest import RunningCrashray
from tests.integration.test_backup import _crashray, _env, _python, _two_tenants
from tests.support import scratch_database


def _row(output: str, *words: str) -> list[str]:
    """The printed line whose first words are ``words``, split."""
    for line in output.splitlines():
        parts = line.split()
        if parts[:len(words)] == list(words):
            return parts
    raise AssertionError(f"no line starting {' '.join(words)!r} in:\n{output}")


def test_storage_prints_table_sizes_disk_use_and_what_retention_removes_next(
        tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with scratch_database("storage_cli") as url:
        events = _two_tenants(url)
        with psycopg.connect(url) as conn:
            issue = conn.execute("SELECT min(id), min(project_id) FROM issues").fetchone()
            assert issue is not None
            for days_ago in (400, 366, 10):  # activity keeps a year: two are past it
                conn.execute("INSERT INTO issue_activity (issue_id, project_id, type, actor,"
                             " date_added) VALUES (%s, %s, 'note', 'x',"
                             " now() - make_interval(days => %s))", (*issue, days_ago))
            conn.execute("INSERT INTO processed_events VALUES (1, %s, now() - interval '2 days')",
                         (uuid.uuid4().hex,))
        _python("from tests.integration.test_backup import populate_clickhouse as p;"
                f" p({str(data_dir)!r}, {json.dumps(json.dumps(events))})", _env(url))
        (data_dir / "ray" / "session_2026-01-01_1").mkdir(parents=True)

        done = _crashray(["storage", "--data-dir", str(data_dir)], _env(url))

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"^PostgreSQL \(\d", out, re.M) and re.search(r"^ClickHouse \(", out, re.M)
    assert _row(out, "issues")[1] == "4"
    assert _row(out, "issue_activity")[1] == "3"
    assert _row(out, "events")[1] == str(len(events))
    assert _row(out, "issue_counts_hourly")[1] == str(len(events))
    assert f"Data dir {data_dir}" in out
    assert _row(out, "clickhouse")[0] == "clickhouse"  # the data dir's folder is listed
    assert _row(out, "postgres", "issue_activity")[2] == "2"
    assert _row(out, "postgres", "processed_events")[2] == "1"
    assert _row(out, "postgres", "issues")[2] == "0"
    # No live Ray session is known (no session_latest): no directory is due.
    assert _row(out, "ray", "session_dirs")[2] == "0"


def test_storage_report_of_a_running_instance_reads_clickhouse_through_its_owner(
        crashray: RunningCrashray) -> None:
    """The running instance set its TTLs from the settings at start, and the report reads
    its embedded ClickHouse through the owner actor (this process may not open it)."""
    from actors.clickhouse import clickhouse_store
    from cluster.runtime import ray_temp_dir
    from storage.retention import Horizons
    from storage.sizes import storage_report

    settings = crashray.settings
    store = clickhouse_store(crashray.runtime.clickhouse_dsn)
    ttl = store.query_rows("SELECT engine_full FROM system.tables WHERE database ="
                           " currentDatabase() AND name = 'issue_counts_hourly'", {})
    assert f"toIntervalDay({settings.rollup_retention_days})" in ttl[0][0]
    with psycopg.connect(crashray.runtime.postgres_url) as conn:
        report = storage_report(conn, store, Horizons.from_settings(settings),
                                dt.datetime.now(dt.UTC), settings.data_dir,
                                ray_temp_dir(settings.data_dir))
    assert ("clickhouse", "schema_migrations") in {(t.store, t.table) for t in report.tables}
    assert ("postgres", "issues") in {(t.store, t.table) for t in report.tables}
    assert {d.rule for d in report.due if d.store == "clickhouse"} == {
        "events", "envelope_items", "outcomes", "sessions_raw", "issue_counts_hourly"}
    assert report.ray_sessions_expired == 0  # the live session is never due
    assert "clickhouse" in report.data_dir_bytes
