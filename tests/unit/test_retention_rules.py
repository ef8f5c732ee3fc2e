"""The retention horizons follow the settings (no database: the rules and TTLs as data)."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from cluster.settings import Settings
from storage.retention import Horizons, clickhouse_ttls, postgres_rules
from storage.sizes import RetentionDue, StorageReport, TableSize, format_report

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def test_issue_retention_follows_the_event_retention_unless_set() -> None:
    assert Horizons.from_settings(Settings(retention_days=30)).issue_days == 30
    assert Horizons.from_settings(Settings(retention_days=30,
                                           issue_retention_days=45)).issue_days == 45


def test_clickhouse_ttls_take_each_tables_setting() -> None:
    ttls = clickhouse_ttls(Horizons.from_settings(Settings(
        outcomes_retention_days=31, sessions_retention_days=32, rollup_retention_days=400)))
    assert ttls["outcomes"] == "hour + toIntervalDay(31)"
    assert ttls["sessions_raw"] == "toDateTime(received) + toIntervalDay(32)"
    assert ttls["issue_counts_hourly"] == "hour + toIntervalDay(400)"
    assert "retention_days" in ttls["events"]  # per row, as written


def test_a_retention_of_zero_days_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValidationError, match="rollup_retention_days"):
        Settings(rollup_retention_days=0)


def test_dead_letters_have_no_rule_unless_a_horizon_is_set() -> None:
    assert "dead_letters" not in {r.name for r in postgres_rules(Horizons(), NOW)}
    rules = {r.name: r for r in postgres_rules(Horizons(dead_letter_days=3), NOW)}
    assert rules["dead_letters"].params["cutoff"] == NOW - dt.timedelta(days=3)


def test_every_rule_cutoff_is_its_horizon_before_now() -> None:
    h = Horizons(issue_activity_days=20, notify_days=2, dedup_window_s=60)
    rules = {r.name: r for r in postgres_rules(h, NOW)}
    assert rules["issue_activity"].params["cutoff"] == NOW - dt.timedelta(days=20)
    assert rules["notifications_delivered"].params["cutoff"] == NOW - dt.timedelta(days=2)
    assert rules["processed_events"].params["cutoff"] == NOW - dt.timedelta(seconds=60)


def test_report_prints_sizes_and_what_is_due() -> None:
    report = StorageReport(
        NOW, [TableSize("postgres", "issues", 12, 65_536),
              TableSize("postgres", "processed_events", 2_000_000, 3 * 2**30, True),
              TableSize("clickhouse", "events", 1_000, 2_048)],
        [RetentionDue("postgres", "issue_activity", "issue_activity", "older than 365 days",
                      7)], "/data", {"clickhouse": 2_048}, 10 * 2**30, 100 * 2**30, 2, 4_096)
    text = format_report(report)
    assert "PostgreSQL (3.0 GiB):" in text
    assert "~2,000,000" in text  # an estimate is marked
    assert "ClickHouse (2.0 KiB):" in text
    assert "postgres   issue_activity                        7  older than 365 days" in text
    assert "disk: 10.0 GiB free of 100.0 GiB" in text
    assert "session_dirs" in text and "(4.0 KiB)" in text
