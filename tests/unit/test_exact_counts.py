"""The pure parts of exact counting: which event of an id is kept, what a duplicate counts
as, and the summed counts a finished batch queues for ClickHouse (and their stored form)."""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor

import orjson

from events.consume import (
    DUPLICATE_REASON,
    WorkItem,
    event_outcome,
    first_of_each_event_id,
    plan_batch,
)
from events.process import EventProcessor, ProcessedEvent
from events.rows import (
    Counts,
    EventRow,
    Outcome,
    decode_counts,
    encode_counts,
    hourly_issue_counts,
    summed_outcomes,
)

AT = dt.datetime(2026, 11, 28, 16, 5, 56, tzinfo=dt.UTC)


def item(queue_id: int, event_id: str, title: str = "Boom: x", project_id: int = 7,
         item_type: str = "event") -> WorkItem:
    event = {"event_id": event_id, "timestamp": AT.timestamp(), "platform": "python",
             "exception": {"values": [{"type": title.split(":")[0], "value": "x"}]}}
    return WorkItem(queue_id, 1, 1, project_id, 3, item_type, event_id, AT,
                    orjson.dumps(event), {})


def planned(*items: WorkItem) -> list[tuple[WorkItem, ProcessedEvent]]:
    return list(plan_batch(list(items), EventProcessor()).events)


def test_the_oldest_item_of_an_event_id_is_kept_and_the_rest_are_duplicates() -> None:
    same = uuid.uuid4().hex
    events = planned(item(12, same, "Newer: x"), item(10, same, "Older: x"),
                     item(11, uuid.uuid4().hex))
    kept, duplicates = first_of_each_event_id(events, set())
    assert [w.queue_id for w, _ in kept] == [10, 11]
    assert [w.queue_id for w, _ in duplicates] == [12]


def test_an_id_stored_before_is_a_duplicate_only_in_its_own_project() -> None:
    seen = uuid.uuid4().hex
    events = planned(item(1, seen, project_id=7), item(2, seen, project_id=8))
    kept, duplicates = first_of_each_event_id(events, {(7, seen)})
    assert [w.project_id for w, _ in kept] == [8]
    assert [w.project_id for w, _ in duplicates] == [7]


def test_a_duplicate_counts_as_invalid_in_its_own_category() -> None:
    [(event_item, processed)] = plan_batch([item(1, uuid.uuid4().hex)], EventProcessor()).events
    outcome = event_outcome(event_item, processed, discarded=False, duplicate=True)
    assert (outcome.outcome, outcome.reason, outcome.category) == (
        "invalid", DUPLICATE_REASON, "error")
    assert event_outcome(event_item, processed, discarded=True).outcome == "filtered"
    assert event_outcome(event_item, processed, discarded=False).outcome == "accepted"


def test_outcomes_of_a_plan_are_kept_per_queue_item() -> None:
    report = orjson.dumps({"discarded_events": [
        {"reason": "before_send", "category": "error", "quantity": 3}]})
    client_report = WorkItem(5, 1, 1, 7, 3, "client_report", None, AT, report, {})
    bad = WorkItem(6, 1, 1, 7, 3, "event", None, AT, b"[1]", {})
    plan = plan_batch([client_report, bad], EventProcessor())
    assert sorted(plan.outcomes_of) == [5, 6]
    assert [o.outcome for o in plan.outcomes_of[5]] == ["client_discard"]
    assert [o.outcome for o in plan.outcomes_of[6]] == ["invalid"]
    assert len(plan.outcomes) == 2


def test_outcomes_are_summed_per_hour_and_keys() -> None:
    later = AT + dt.timedelta(hours=1)
    rows = summed_outcomes([
        Outcome(1, 7, 3, AT, "accepted", "", "error", 1),
        Outcome(1, 7, 3, AT.replace(minute=59), "accepted", "", "error", 2),
        Outcome(1, 7, 3, later, "accepted", "", "error", 4),
        Outcome(1, 7, 4, AT, "accepted", "", "error", 8),
        Outcome(1, 7, 3, AT, "invalid", DUPLICATE_REASON, "error", 16)])
    hour = AT.replace(minute=0, second=0)
    assert sorted((o.timestamp, o.key_id, o.outcome, o.quantity) for o in rows) == [
        (hour, 3, "accepted", 3), (hour, 3, "invalid", 16), (hour, 4, "accepted", 8),
        (later.replace(minute=0, second=0), 3, "accepted", 4)]


def test_stored_events_are_summed_per_issue_and_hour() -> None:
    [(_, first), (_, second)] = plan_batch(
        [item(1, uuid.uuid4().hex), item(2, uuid.uuid4().hex)], EventProcessor()).events
    counts = hourly_issue_counts([EventRow(1, 7, 100, 90, first), EventRow(1, 7, 100, 90, second),
                                  EventRow(1, 7, 101, 90, first)])
    assert sorted((c.group_id, c.hour, c.count) for c in counts) == [
        (100, AT.replace(minute=0, second=0, microsecond=0), 2),
        (101, AT.replace(minute=0, second=0, microsecond=0), 1)]


def test_counts_survive_their_stored_form_unchanged() -> None:
    hour = AT.replace(minute=0, second=0, microsecond=0)
    [(_, processed)] = plan_batch([item(1, uuid.uuid4().hex)], EventProcessor()).events
    counts = Counts(tuple(hourly_issue_counts([EventRow(1, 7, 100, 90, processed)])),
                    (Outcome(1, 7, 3, hour, "accepted", "", "error", 5),))
    decoded = decode_counts(encode_counts(counts))
    assert decoded == counts
    tables = decoded.tables()
    assert tables["outcomes"].num_rows == 1 and tables["issue_counts_hourly"].num_rows == 1
    assert tables["issue_counts_hourly"].to_pylist()[0]["hour"] == hour


def test_a_batch_processed_on_threads_gives_the_plan_of_one_thread() -> None:
    """``CRASHRAY_CONSUMER_THREADS`` > 1: the same events (hashes, issues, ids), invalid
    items and outcomes, in the batch's order, with scrubbing on as projects have it."""
    report = orjson.dumps({"discarded_events": [
        {"reason": "ratelimit_backoff", "category": "error", "quantity": 2}]})
    batch = [item(n, uuid.uuid4().hex, f"Type{n % 7}: x") for n in range(1, 40)]
    batch[5:5] = [WorkItem(100, 1, 1, 7, 3, "event", None, AT, b"[1]", {}),
                  WorkItem(101, 1, 1, 7, 3, "client_report", None, AT, report, {}),
                  WorkItem(102, 1, 1, 7, 3, "event", None, AT, b"{not json", {})]

    def plan_of(pool: ThreadPoolExecutor | None) -> tuple[object, ...]:
        processor = EventProcessor()
        processor.set_scrubbing(7, {"scrubData": True, "scrubDefaults": True})
        plan = plan_batch(batch, processor, pool)
        return ([(w.queue_id, p.event_id, p.grouping.hashes, p.issue.title, p.event["title"])
                 for w, p in plan.events],
                [(w.queue_id, error) for w, error in plan.invalid],
                [(w.queue_id, error) for w, error in plan.failed],
                {q: [(o.outcome, o.reason, o.quantity) for o in os]
                 for q, os in plan.outcomes_of.items()}, plan.done_ids)

    with ThreadPoolExecutor(3) as pool:
        threaded = plan_of(pool)
    assert threaded == plan_of(None)
    events, invalid = threaded[0], threaded[1]
    assert isinstance(events, list) and len(events) == 39
    assert isinstance(invalid, list) and [q for q, _ in invalid] == [100, 102]
