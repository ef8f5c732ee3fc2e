"""Retention removes exactly what is past its horizon, in both stores, for every tenant,
and nothing else (real PostgreSQL with the real migrations, the real ClickHouse engine)."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from storage import postgres
from storage.clickhouse import ClickHouseStore
from storage.errors import IssueGone
from storage.issues import CountedEvent, record_events
from storage.retention import (
    Horizons,
    RetentionSweeper,
    SweepConfig,
    apply_ttls,
    clickhouse_ttls,
    current_ttls,
    due_clickhouse,
    due_postgres,
    expired_ray_sessions,
    prune_postgres,
)
from tests.support import scratch_database

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
#: Short horizons so the boundaries are easy to place.
H = Horizons(issue_days=10, issue_activity_days=20, anomaly_days=5, reprocess_job_days=7,
             dead_letter_days=3, notify_days=2, notify_failed_days=4, dedup_window_s=3600,
             login_window_s=600)
#: Just inside and just outside a horizon.
MARGIN = dt.timedelta(seconds=5)


def _ago(seconds: float) -> dt.datetime:
    return NOW - dt.timedelta(seconds=seconds)


@pytest.fixture
def db() -> Iterator[tuple[psycopg.Connection[Any], list[tuple[int, int]]]]:
    """A migrated scratch database with two organizations, a project each."""
    with scratch_database("retention") as url:
        postgres.migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            tenants = []
            for slug in ("acme", "globex"):
                org = conn.execute("INSERT INTO organizations (slug, name) VALUES (%s, %s)"
                                   " RETURNING id", (slug, slug)).fetchone()
                assert org is not None
                project = conn.execute("INSERT INTO projects (organization_id, slug, name)"
                                       " VALUES (%s, 'app', 'App') RETURNING id",
                                       (org[0],)).fetchone()
                assert project is not None
                tenants.append((int(org[0]), int(project[0])))
            yield conn, tenants


def _issue(conn: psycopg.Connection[Any], project: int, last_seen: dt.datetime,
           merged_into: int | None = None) -> int:
    row = conn.execute("INSERT INTO issues (project_id, title, first_seen, last_seen,"
                       " merged_into) VALUES (%s, 't', %s, %s, %s) RETURNING id",
                       (project, last_seen, last_seen, merged_into)).fetchone()
    assert row is not None
    conn.execute("INSERT INTO group_hashes VALUES (%s, %s, %s, 'v1')",
                 (project, uuid.uuid4().hex, row[0]))
    return int(row[0])


def _seed(conn: psycopg.Connection[Any], org: int, project: int) -> dict[str, list[Any]]:
    """For each rule, a row just past its horizon (to go) and one just inside (to stay)."""
    kept: dict[str, list[Any]] = {}
    gone: dict[str, list[Any]] = {}

    def pair(name: str, horizon_s: float, insert: Any) -> None:
        gone.setdefault(name, []).append(insert(_ago(horizon_s) - MARGIN))
        kept.setdefault(name, []).append(insert(_ago(horizon_s) + MARGIN))

    def one(sql: str, *params: Any, column: int = 0) -> Any:
        row = conn.execute(sql + " RETURNING *", params).fetchone()
        assert row is not None
        return row[column]

    pair("processed_events", H.dedup_window_s, lambda at: one(
        "INSERT INTO processed_events VALUES (%s, %s, %s)", project, uuid.uuid4().hex, at,
        column=1))
    pair("login_failures", H.login_window_s, lambda at: one(
        "INSERT INTO login_failures (username, client_ip, at) VALUES (%s, '1.2.3.4', %s)",
        f"user{org}", at))
    user = one("INSERT INTO users (username) VALUES (%s)", f"u{org}")
    pair("user_sessions", 0, lambda at: one(
        "INSERT INTO user_sessions VALUES (%s, %s, 'csrf', %s)", uuid.uuid4().hex, user, at))
    live = _issue(conn, project, NOW)
    pair("issue_activity", H.issue_activity_days * 86_400, lambda at: one(
        "INSERT INTO issue_activity (issue_id, project_id, type, actor, date_added)"
        " VALUES (%s, %s, 'note', 'x', %s)", live, project, at))
    pair("anomalies", H.anomaly_days * 86_400, lambda at: one(
        "INSERT INTO anomalies (organization_id, project_id, scope, detector, kind,"
        " direction, status, start_at, end_at, score, explanation, closed_at) VALUES"
        " (%s, %s, 'project', 'd', 'k', 'up', 'closed', %s, %s, 1, 'e', %s)",
        org, project, at, at, at))
    pair("reprocess_jobs", H.reprocess_job_days * 86_400, lambda at: one(
        "INSERT INTO reprocess_jobs (organization_id, project_id, options, status, slices,"
        " max_issue_id, updated_at) VALUES (%s, %s, '{}', 'finished', '[]', 0, %s)",
        org, project, at))
    pair("notifications_delivered", H.notify_days * 86_400, lambda at: one(
        "INSERT INTO notification_deliveries (organization_id, project_id, action,"
        " destination, payload, status, delivered_at) VALUES (%s, %s, '{}', 'webhook:x',"
        " '{}', 'delivered', %s)", org, project, at))
    pair("notifications_failed", H.notify_failed_days * 86_400, lambda at: one(
        "INSERT INTO notification_deliveries (organization_id, project_id, action,"
        " destination, payload, status, created_at) VALUES (%s, %s, '{}', 'webhook:x',"
        " '{}', 'failed', %s)", org, project, at))
    pair("dead_letters", H.dead_letter_days * 86_400, lambda at: one(
        "INSERT INTO ingest_dead_letters (id, project_id, organization_id, item_type,"
        " received_at, meta, payload, attempts, error, failed_at) VALUES"
        " ((SELECT coalesce(max(id), 0) + 1 FROM ingest_dead_letters), %s, %s, 'event', %s,"
        " '{}', '', 20, 'e', %s)", project, org, at, at))
    pair("alert_issue_counts", 61 * 86_400, lambda at: one(
        "INSERT INTO alert_issue_counts VALUES (%s, 3600, '', %s, 1)", live, at, column=3))
    rule = one("INSERT INTO alert_rules (organization_id, project_id, name,"
               " frequency_minutes, body) VALUES (%s, %s, 'r', 60, '{}')", org, project)
    pair("alert_rule_fires", 86_400 + 3_600, lambda at: one(
        "INSERT INTO alert_rule_fires VALUES (%s, %s, %s)", rule, _issue(conn, project, NOW),
        at, column=1))
    pair("issues", H.issue_days * 86_400, lambda at: _issue(conn, project, at))
    # Pending notifications, open anomalies and running jobs stay, however old.
    old = _ago(365 * 86_400)
    kept["notifications_pending"] = [one(
        "INSERT INTO notification_deliveries (organization_id, project_id, action,"
        " destination, payload, created_at) VALUES (%s, %s, '{}', 'webhook:x', '{}', %s)",
        org, project, old)]
    kept["reprocess_running"] = [one(
        "INSERT INTO reprocess_jobs (organization_id, project_id, options, slices,"
        " max_issue_id, updated_at) VALUES (%s, %s, '{}', '[]', 0, %s)", org, project, old)]
    # An old issue merged into a live one stays; one merged into an expired one goes.
    survivor = _issue(conn, project, NOW)
    kept["merged_into_live"] = [_issue(conn, project, old, merged_into=survivor)]
    gone["merged_into_expired"] = [_issue(conn, project, NOW,
                                          merged_into=gone["issues"][0])]
    return {"kept": [*kept.items()], "gone": [*gone.items()]}


def _present(conn: psycopg.Connection[Any]) -> set[tuple[str, Any]]:
    """Every seeded row by (kind, id)."""
    queries = {
        "processed_events": "SELECT event_id FROM processed_events",
        "login_failures": "SELECT id FROM login_failures",
        "user_sessions": "SELECT session_hash FROM user_sessions",
        "issue_activity": "SELECT id FROM issue_activity",
        "anomalies": "SELECT id FROM anomalies",
        "reprocess_jobs": "SELECT id FROM reprocess_jobs",
        "notifications": "SELECT id FROM notification_deliveries",
        "dead_letters": "SELECT id FROM ingest_dead_letters",
        "alert_issue_counts": "SELECT bucket FROM alert_issue_counts",
        "alert_rule_fires": "SELECT issue_id FROM alert_rule_fires",
        "issues": "SELECT id FROM issues",
    }
    return {(kind, r[0]) for kind, sql in queries.items()
            for r in conn.execute(sql).fetchall()}


def test_postgres_pruning_removes_exactly_the_rows_past_each_horizon_of_every_tenant(
        db: tuple[psycopg.Connection[Any], list[tuple[int, int]]]) -> None:
    conn, tenants = db
    seeded = [_seed(conn, org, project) for org, project in tenants]
    epochs_before = dict(conn.execute("SELECT id, grouping_epoch FROM projects").fetchall())

    due = due_postgres(conn, H, NOW)
    assert due["issue_activity"] == 2 and due["notifications_failed"] == 2
    assert due["issues"] == 2  # the expired issue of each tenant (merged ones go along)

    deleted = prune_postgres(conn, H, NOW, batch_rows=1, max_batches=10)

    assert deleted["issues"] == 4  # per tenant: the expired issue and the one merged into it
    present = _present(conn)
    gone_rows = {(_kind(name), v) for s in seeded for name, values in s["gone"]
                 for v in values}
    kept_rows = {(_kind(name), v) for s in seeded for name, values in s["kept"]
                 for v in values}
    assert not gone_rows & present
    assert kept_rows <= present
    assert due_postgres(conn, H, NOW)["issue_activity"] == 0
    # Hashes of deleted issues went with them; the projects' grouping caches move on.
    assert conn.execute("SELECT count(*) FROM group_hashes h LEFT JOIN issues i"
                        " ON i.id = h.issue_id WHERE i.id IS NULL").fetchone() == (0,)
    epochs_after = dict(conn.execute("SELECT id, grouping_epoch FROM projects").fetchall())
    assert all(epochs_after[p] > epochs_before[p] for _, p in tenants)
    # A second sweep finds nothing more.
    assert sum(prune_postgres(conn, H, NOW, batch_rows=100, max_batches=10).values()) == 0


def _kind(name: str) -> str:
    if name.startswith("notifications"):
        return "notifications"
    if name in ("issues", "merged_into_live", "merged_into_expired"):
        return "issues"
    if name == "reprocess_running":
        return "reprocess_jobs"
    return name


def test_dead_letters_are_kept_unless_a_horizon_is_set(
        db: tuple[psycopg.Connection[Any], list[tuple[int, int]]]) -> None:
    conn, tenants = db
    org, project = tenants[0]
    conn.execute("INSERT INTO ingest_dead_letters (id, project_id, organization_id, item_type,"
                 " received_at, meta, payload, attempts, error, failed_at) VALUES"
                 " (1, %s, %s, 'event', now(), '{}', '', 20, 'e', %s)",
                 (project, org, _ago(10 * 365 * 86_400)))
    keep_all = Horizons()  # dead_letter_days 0
    assert "dead_letters" not in prune_postgres(conn, keep_all, NOW, 100, 1)
    assert conn.execute("SELECT count(*) FROM ingest_dead_letters").fetchone() == (1,)


def test_sweeper_runs_once_per_interval_and_prunes_old_ray_sessions(
        db: tuple[psycopg.Connection[Any], list[tuple[int, int]]], tmp_path: Path) -> None:
    conn, _ = db
    temp = tmp_path / "ray"
    old, older_live, fresh = (temp / f"session_2026-0{n}" for n in (1, 2, 3))
    for session in (old, older_live, fresh):
        (session / "logs").mkdir(parents=True)
        (session / "logs" / "raylet.out").write_text("x" * 100)
    (temp / "session_latest").symlink_to(older_live)
    long_ago = time.time() - 30 * 86_400
    for session in (old, older_live):
        for path in (session / "logs" / "raylet.out", session / "logs", session):
            os.utime(path, (long_ago, long_ago))
    sweeper = RetentionSweeper(SweepConfig(Horizons(ray_session_days=7), interval_s=60,
                                           ray_temp_dir=str(temp)))
    assert [s.path for s in expired_ray_sessions(temp, 7, time.time())] == [old]

    assert sweeper.claim_if_due(1000.0)
    assert not sweeper.claim_if_due(1059.0)
    assert sweeper.claim_if_due(1060.0)
    result = sweeper.sweep(conn, dt.datetime.now(dt.UTC))
    assert result.ray_sessions == 1
    assert not old.exists() and older_live.exists() and fresh.exists()


def test_no_ray_session_is_removed_while_no_live_one_is_known(tmp_path: Path) -> None:
    (tmp_path / "session_old").mkdir()
    os.utime(tmp_path / "session_old", (0, 0))
    assert expired_ray_sessions(tmp_path, 1, time.time()) == []


# --- ClickHouse ---------------------------------------------------------------------------
#: Seconds after their insert the rows to go expire, and the rows to stay.
SOON_S = 3
STAY_S = 120


def _org() -> int:
    return 7_000_000 + uuid.uuid4().int % 1_000_000


def _ch_count(store: ClickHouseStore, table: str, org_column: str, org: int) -> int:
    return int(store.query_rows(f"SELECT count() FROM {table} WHERE {org_column} = {{o:UInt64}}",
                                {"o": org})[0][0])


def test_clickhouse_ttls_remove_exactly_the_rows_past_each_horizon_of_every_tenant(
        chdb_store: ClickHouseStore) -> None:
    """ClickHouse drops rows already expired when they are inserted, so the rows to go
    expire ``SOON_S`` after their insert, and those to stay ``STAY_S`` after it."""
    client = chdb_store._client
    orgs = [_org(), _org()]
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for org in orgs:
        for days in (1, 3):
            for offset in (SOON_S, STAY_S):
                # timestamp + retention_days is ``offset`` after now.
                at = now - dt.timedelta(days=days) + dt.timedelta(seconds=offset)
                client.command(
                    "INSERT INTO events (organization_id, project_id, event_id, timestamp,"
                    " received, retention_days) VALUES ({o:UInt64}, {o:UInt64}, {e:UUID},"
                    " {t:DateTime64(6, 'UTC')}, {t:DateTime64(6, 'UTC')}, {d:UInt16})",
                    parameters={"o": org, "e": str(uuid.uuid4()), "t": at, "d": days})
                client.command(
                    "INSERT INTO envelope_items (queue_id, organization_id, project_id,"
                    " item_type, received, retention_days) VALUES ({q:UInt64}, {o:UInt64},"
                    " {o:UInt64}, 'attachment', {t:DateTime64(3, 'UTC')}, {d:UInt16})",
                    parameters={"q": uuid.uuid4().int % 2**63, "o": org, "t": at, "d": days})
        for offset in (SOON_S, STAY_S):
            client.command(
                "INSERT INTO outcomes (organization_id, project_id, key_id, hour, outcome,"
                " reason, category, quantity) VALUES ({o:UInt64}, {o:UInt64}, 0,"
                " {h:DateTime('UTC')}, 'accepted', '', 'error', 1)",
                parameters={"o": org, "h": now - dt.timedelta(days=90, seconds=-offset)},
                settings={"insert_deduplication_token": uuid.uuid4().hex})
    for org in orgs:
        assert _ch_count(chdb_store, "events", "organization_id", org) == 4
    soon = due_clickhouse(chdb_store, Horizons(), now + dt.timedelta(seconds=SOON_S))
    assert soon["events"] >= 4 and soon["envelope_items"] >= 4 and soon["outcomes"] >= 2
    time.sleep(SOON_S + 1)
    later = dt.datetime.now(dt.UTC)
    for table in ("events", "envelope_items", "outcomes"):
        client.command(f"OPTIMIZE TABLE {table} FINAL")  # the merge that applies TTLs
    for org in orgs:
        assert _ch_count(chdb_store, "events", "organization_id", org) == 2
        assert _ch_count(chdb_store, "envelope_items", "organization_id", org) == 2
        assert _ch_count(chdb_store, "outcomes", "organization_id", org) == 1
        left = chdb_store.query_rows(
            "SELECT min(toDateTime(timestamp) + toIntervalDay(retention_days)) FROM events"
            " WHERE organization_id = {o:UInt64}", {"o": org})[0][0]
        assert left.replace(tzinfo=dt.UTC) > later  # what stayed is inside its horizon


def test_clickhouse_ttls_follow_the_settings_and_are_set_once(
        chdb_store: ClickHouseStore) -> None:
    client = chdb_store._client
    defaults = clickhouse_ttls(Horizons())
    assert "hour + toIntervalDay(365)" in current_ttls(client)["issue_counts_hourly"]
    assert apply_ttls(client, defaults) == []  # migrations' TTLs are the defaults
    org = _org()
    hour = (dt.datetime.now(dt.UTC) - dt.timedelta(days=40)).replace(minute=0, second=0,
                                                                       microsecond=0)
    client.command("INSERT INTO issue_counts_hourly VALUES ({o:UInt64}, 1, {h:DateTime('UTC')},"
                   " 90, 1)", parameters={"o": org, "h": hour},
                   settings={"insert_deduplication_token": uuid.uuid4().hex})
    shorter = clickhouse_ttls(Horizons(rollup_days=30))
    try:
        assert apply_ttls(client, shorter) == ["issue_counts_hourly"]
        assert apply_ttls(client, shorter) == []
        client.command("OPTIMIZE TABLE issue_counts_hourly FINAL")
        assert _ch_count(chdb_store, "issue_counts_hourly", "project_id", org) == 0
    finally:
        assert apply_ttls(client, defaults) == ["issue_counts_hourly"]


# --- soak: under constant load with a short retention, sizes level off ----------------------
SOAK_S = 12.0
SOAK_TICK_S = 0.5
#: The short retention of the soak: rows live this long.
SOAK_LIFE_S = 2


def test_sizes_level_off_under_constant_load_with_a_short_retention(
        chdb_store: ClickHouseStore,
        db: tuple[psycopg.Connection[Any], list[tuple[int, int]]]) -> None:
    """Each tick writes the same load into both stores: 300 events of ~2 KB into
    ClickHouse (their TTL reached ``SOAK_LIFE_S`` after the insert) and 300 event ids, 50
    failed logins and 50 activity rows into PostgreSQL, swept by a ``RetentionSweeper``
    whose horizons are ``SOAK_LIFE_S``. What is kept stays about one life's worth of load,
    in rows and in ClickHouse's bytes on disk, while the load keeps coming."""
    conn, tenants = db
    _, project = tenants[0]
    issue = _issue(conn, project, dt.datetime.now(dt.UTC))
    life_days = SOAK_LIFE_S / 86_400
    sweeper = RetentionSweeper(SweepConfig(
        Horizons(dedup_window_s=SOAK_LIFE_S, login_window_s=SOAK_LIFE_S,
                 issue_activity_days=life_days), interval_s=SOAK_TICK_S, batch_rows=1000))
    client = chdb_store._client
    ch_org = _org()
    samples: list[tuple[int, int, int]] = []  # (ClickHouse rows, bytes, PostgreSQL rows)
    started = time.monotonic()
    while time.monotonic() - started < SOAK_S:
        now = dt.datetime.now(dt.UTC)
        client.command(
            "INSERT INTO events (organization_id, project_id, event_id, timestamp, received,"
            " retention_days, body) SELECT {o:UInt64}, {o:UInt64}, generateUUIDv4(),"
            " {t:DateTime64(6, 'UTC')}, now64(6), 1, randomPrintableASCII(2000)"
            " FROM numbers(300)",
            parameters={"o": ch_org, "t": now - dt.timedelta(days=1, seconds=-SOAK_LIFE_S)})
        conn.execute("INSERT INTO processed_events SELECT %s, md5(random()::text), now()"
                     " FROM generate_series(1, 300)", (project,))
        conn.execute("INSERT INTO login_failures (username, client_ip)"
                     " SELECT 'u', '1.2.3.4' FROM generate_series(1, 50)")
        conn.execute("INSERT INTO issue_activity (issue_id, project_id, type, actor)"
                     " SELECT %s, %s, 'note', 'x' FROM generate_series(1, 50)",
                     (issue, project))
        if sweeper.claim_if_due():
            sweeper.sweep(conn, now)
        counted = conn.execute(
            "SELECT (SELECT count(*) FROM processed_events) + (SELECT count(*) FROM"
            " login_failures) + (SELECT count(*) FROM issue_activity)").fetchone()
        assert counted is not None
        pg_rows = int(counted[0])
        parts = chdb_store.query_rows(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE active"
            " AND database = currentDatabase() AND table = 'events'", {})
        samples.append((_ch_count(chdb_store, "events", "organization_id", ch_org),
                        int(parts[0][0]), pg_rows))
        time.sleep(SOAK_TICK_S)
    ticks = len(samples)
    first, second = samples[: ticks // 2], samples[ticks // 2:]
    # PostgreSQL: swept every tick, so what is kept is one life's worth of load and a tick.
    assert max(s[2] for s in second) <= 1.5 * max(s[2] for s in first), samples
    assert max(s[2] for s in second) <= 400 * (SOAK_LIFE_S / SOAK_TICK_S + 2), samples
    # ClickHouse: expired rows go in background merges, which a busy machine delays by
    # seconds; still never more than a few lives' worth while the load goes on.
    cap_ticks = 3 * SOAK_LIFE_S / SOAK_TICK_S
    assert ticks > cap_ticks + 4  # the cap is well below what was written
    assert max(s[0] for s in second) <= 300 * cap_ticks, samples
    assert max(s[1] for s in second) <= 1.5 * max(s[1] for s in first) + 300 * 2_000 * 4, \
        samples


def test_the_metrics_sampler_runs_the_retention_sweep_once_per_interval() -> None:
    from actors.metrics_sampler import MetricsSampler, SamplerConfig

    with scratch_database("retention_sampler") as url:
        postgres.migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO login_failures (username, client_ip, at) VALUES"
                         " ('a', '1.2.3.4', now() - interval '1 hour'), ('b', '1.2.3.4', now())")
            sampler = MetricsSampler(SamplerConfig(
                url, 15.0, 100, retention=SweepConfig(Horizons(login_window_s=600),
                                                      interval_s=3600)))
            result = sampler.sweep_retention_if_due()
            assert result is not None and result.postgres["login_failures"] == 1
            assert sampler.sweep_retention_if_due() is None  # not again within the hour
            assert conn.execute("SELECT username FROM login_failures").fetchall() == [("b",)]


def test_events_grouped_into_an_issue_retention_deleted_meanwhile_are_not_counted_into_it(
        db: tuple[psycopg.Connection[Any], list[tuple[int, int]]]) -> None:
    """The race of an issue unseen for its horizon getting an event during the sweep: the
    consumer grouped the event into the issue, the sweep deleted it, then the consumer
    counts. Counting raises (the batch is retried and grouped afresh) and nothing of it is
    kept: the event is not marked as processed, so the retry stores and counts it."""
    conn, tenants = db
    _, project = tenants[0]
    expired = _issue(conn, project, _ago(H.issue_days * 86_400) - MARGIN)
    live = _issue(conn, project, NOW)
    assert prune_postgres(conn, H, NOW, batch_rows=100, max_batches=10)["issues"] == 1
    events = [CountedEvent(project, uuid.uuid4().hex, issue, NOW, "error", None)
              for issue in (expired, live)]
    with pytest.raises(IssueGone, match=rf"issues \[{expired}\] were deleted"), \
            conn.transaction():
        record_events(conn, events)
    assert conn.execute("SELECT count(*) FROM processed_events").fetchone() == (0,)
    assert conn.execute("SELECT times_seen FROM issues WHERE id = %s",
                        (live,)).fetchone() == (0,)
    # Grouped again (a new issue for the hash), the same events count once.
    fresh = _issue(conn, project, NOW)
    with conn.transaction():
        counted = record_events(conn, [CountedEvent(project, e.event_id,
                                                    fresh if e.issue_id == expired else live,
                                                    NOW, "error", None) for e in events])
    assert sorted(counted) == sorted([fresh, live])
