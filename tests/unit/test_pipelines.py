"""The pure parts of the bulk jobs: how an export cuts its time slices and shapes its rows,
how a rollup rebuild adds up an issue's hashes, how the commands read times."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import orjson
import pytest

from cluster.cli_common import CliError
from cluster.pipelines_cli import InstanceNotRunning, parse_time, ray_address_of
from cluster.runtime import InstanceAddress, record_instance
from cluster.settings import Settings
from pipelines.export import (
    EXPORT_SCHEMA,
    ExportRefused,
    TimeSlice,
    check_target,
    export_table,
    plan_slices,
)
from pipelines.rollups import issue_totals
from storage.rollups import IssueTotals

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
FAR = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC), dt.datetime(9999, 1, 1, tzinfo=dt.UTC))


def test_hours_are_packed_into_slices_of_at_most_the_limit() -> None:
    hours = {T0: 4, T0 + H: 5, T0 + 2 * H: 3, T0 + 5 * H: 2}
    assert plan_slices(hours, 10, *FAR) == [
        TimeSlice(T0, T0 + 2 * H, 9), TimeSlice(T0 + 2 * H, T0 + 6 * H, 5)]


def test_an_hour_above_the_limit_is_a_slice_of_its_own() -> None:
    hours = {T0: 2, T0 + H: 50, T0 + 2 * H: 2}
    assert plan_slices(hours, 10, *FAR) == [
        TimeSlice(T0, T0 + H, 2), TimeSlice(T0 + H, T0 + 2 * H, 50),
        TimeSlice(T0 + 2 * H, T0 + 3 * H, 2)]


def test_slices_are_clipped_to_the_asked_range_and_none_come_from_no_events() -> None:
    since, until = T0 + dt.timedelta(minutes=20), T0 + H + dt.timedelta(minutes=10)
    assert plan_slices({T0: 3, T0 + H: 1}, 100, since, until) == [
        TimeSlice(since, until, 4)]
    assert plan_slices({}, 100, *FAR) == []


def _stored(event_id: str, body: dict[str, object], primary_hash: str = "a" * 32
            ) -> dict[str, object]:
    row: dict[str, object] = {name: "" for name in (
        "level", "platform", "release", "environment", "dist", "transaction", "logger",
        "server_name", "title", "culprit", "message", "user_id", "user_email",
        "user_username", "user_ip", "sdk_name", "sdk_version")}
    row.update({"event_id": event_id, "primary_hash": primary_hash, "group_id": 7,
                "timestamp": dt.datetime(2026, 3, 1, 12, 0, 0, 123456),
                "received": dt.datetime(2026, 3, 1, 12, 0, 1), "tags": {"b": "2", "a": "1"},
                "body": orjson.dumps(body).decode(), "release": "web@1.2",
                "user_ip": "10.0.0.1"})
    return row


def test_an_event_becomes_a_row_with_nested_exceptions_and_frames() -> None:
    body = {"contexts": {"os": {"name": "Linux"}}, "exception": {"values": [{
        "type": "KeyError", "value": "'sku'", "module": "builtins",
        "mechanism": {"type": "excepthook", "handled": False},
        "stacktrace": {"frames": [
            {"filename": "app.py", "abs_path": "/srv/app.py", "function": "checkout",
             "module": "app", "lineno": 41, "colno": 7, "in_app": True,
             "context_line": "    price = cart['sku']"},
            {"function": "lookup", "lineno": "not a number", "in_app": "yes"}]}}]}}
    table = export_table([_stored("e" * 32, body)], 5, {"a" * 32: 99})
    assert table.schema == EXPORT_SCHEMA
    [row] = table.to_pylist()
    assert (row["event_id"], row["issue_id"], row["project_id"]) == ("e" * 32, 99, 5)
    assert row["timestamp"] == dt.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
    assert row["tags"] == [{"key": "a", "value": "1"}, {"key": "b", "value": "2"}]
    assert orjson.loads(row["contexts"]) == {"os": {"name": "Linux"}}
    assert (row["release"], row["user_ip_address"]) == ("web@1.2", "10.0.0.1")
    [exception] = row["exceptions"]
    assert (exception["type"], exception["mechanism_type"], exception["handled"]) == (
        "KeyError", "excepthook", False)
    first, second = exception["frames"]
    assert first == {"filename": "app.py", "abs_path": "/srv/app.py", "function": "checkout",
                     "module": "app", "lineno": 41, "colno": 7, "in_app": True,
                     "context_line": "    price = cart['sku']"}
    assert (second["function"], second["lineno"], second["in_app"], second["filename"]) == (
        "lookup", None, None, None)


def test_an_event_of_a_deleted_issue_has_no_issue_id_and_a_message_event_no_exceptions(
        ) -> None:
    [row] = export_table([_stored("f" * 32, {"logentry": {"formatted": "hi"}}, "b" * 32)],
                         5, {"a" * 32: 99}).to_pylist()
    assert (row["issue_id"], row["exceptions"], row["contexts"]) == (None, [], "{}")


def test_an_export_target_with_files_in_it_is_refused(tmp_path: Path) -> None:
    check_target(tmp_path / "new")
    check_target(tmp_path)
    (tmp_path / "old.parquet").write_bytes(b"")
    with pytest.raises(ExportRefused, match="exists and is not an empty directory"):
        check_target(tmp_path)


def test_an_issue_adds_up_the_events_of_its_hashes_and_dead_issues_get_none() -> None:
    t1, t2, t3 = T0, T0 + H, T0 + 2 * H
    totals = issue_totals({"h1": (3, t2, t3), "h2": (2, t1, t2), "h3": (4, t1, t3),
                           "orphan": (7, t1, t3)},
                          {"h1": 10, "h2": 10, "h3": 11}, live_issues={10, 12})
    assert totals == {10: IssueTotals(5, t1, t3)}


def test_times_are_iso_8601_and_utc_unless_they_name_a_zone() -> None:
    assert parse_time("--since", "2026-01-31") == dt.datetime(2026, 1, 31, tzinfo=dt.UTC)
    assert parse_time("--until", "2026-01-31T12:00:00+02:00") == dt.datetime(
        2026, 1, 31, 10, tzinfo=dt.UTC)
    assert parse_time("--since", None) is None
    with pytest.raises(CliError, match="--since 'yesterday': not an ISO 8601 date"):
        parse_time("--since", "yesterday")


def test_a_job_runs_on_the_given_cluster_else_the_running_instances(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(InstanceNotRunning, match=f"no running Crashray on {tmp_path}"):
        ray_address_of(settings)
    record_instance(tmp_path, InstanceAddress(os.getpid(), "http://127.0.0.1:9000"))
    with pytest.raises(InstanceNotRunning, match="did not record its Ray cluster's address"):
        ray_address_of(settings)
    record_instance(tmp_path, InstanceAddress(os.getpid(), "http://127.0.0.1:9000",
                                              "127.0.0.1:6380"))
    assert ray_address_of(settings) == "127.0.0.1:6380"
    assert ray_address_of(Settings(data_dir=tmp_path, ray_address="10.0.0.5:6379")) == \
        "10.0.0.5:6379"


def test_an_imported_event_crosses_to_the_write_tasks_with_what_storing_reads() -> None:
    """The import's processing actors pickle ``for_storage()``: the same hashes, rule and
    title, issue, rows and projection as the whole processed event, without the variants'
    component trees."""
    import pickle

    from events.grouping.rules import grouping_rules_from_text
    from events.process import EventProcessor, ItemContext, ProjectGrouping
    from events.rows import EventRow, events_table
    from tests.unit.grouping.helpers import corpus_event

    processor = EventProcessor()
    processor.set_grouping(1, ProjectGrouping(rules=grouping_rules_from_text(
        'type:ZeroDivisionError -> zero title="Zero: {{ function }}"', "")))
    ctx = ItemContext(project_id=1, key_id=None, received_at=T0, organization_id=1)
    whole = processor.process(orjson.dumps(corpus_event("python-sdk-2.75.0-exception.envelope")),
                              ctx)
    crossed = pickle.loads(pickle.dumps(whole.for_storage()))
    assert crossed.grouping.variants == {} != whole.grouping.variants
    assert (crossed.grouping.hashes, crossed.grouping.fingerprint_rule, crossed.grouping.title) \
        == (whole.grouping.hashes, whole.grouping.fingerprint_rule, whole.grouping.title)
    assert whole.grouping.title == "Zero: compute_ratio" and crossed.issue == whole.issue
    rows = [events_table([EventRow(1, 1, 7, 90, p)]).to_pylist() for p in (whole, crossed)]
    assert rows[0] == rows[1]
