"""Every count a user reads is exact, whatever is delivered twice: an issue's ``count``,
its ``stats["24h"]``, the project's stats and the accepted outcomes of ``stats_v2`` all
equal the number of distinct events, after a consumer crashes between its ClickHouse
insert and its PostgreSQL commit (and the next claims bring the items in another mix),
after a crash between the commit and the counts reaching ClickHouse, and when an SDK
sends an event id twice. A second event with an id already stored is dropped: the first
one stays, as in Sentry."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from actors.clickhouse import clickhouse_store
from events.consume import DUPLICATE_REASON
from events.rows import Counts, Outcome, outcomes_table
from storage.clickhouse import ClickHouseStore
from tests.integration.conftest import RunningCrashray
from tests.integration.consumer_harness import Harness, counts_seen, harness
from tests.support import envelope_bytes, error_event, gzip_bytes, python_sdk_headers, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def h(chdb_store: ClickHouseStore) -> Iterator[Harness]:
    yield from harness(chdb_store, "crashray_counts")


class CrashAfterInsert:
    """The real store, 'crashing' (raising) right after the batch's ClickHouse insert,
    before the consumer commits to PostgreSQL — the worst moment for duplicates."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def insert_batch(self, tables: Any) -> int:
        inserted: int = self.store.insert_batch(tables)
        raise RuntimeError(f"simulated crash after the ClickHouse insert of {inserted} rows")


class CrashAroundCounts:
    """The real store, 'crashing' when the committed counts are shipped: ``after`` first
    inserts them (a crash before the outbox row is forgotten), else before inserting."""

    def __init__(self, store: Any, after: bool) -> None:
        self.store = store
        self.after = after

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def insert_counts(self, token: str, tables: Any) -> int:
        if self.after:
            self.store.insert_counts(token, tables)
        raise RuntimeError("simulated crash while shipping counts")


def sessions_payload() -> bytes:
    return orjson.dumps({"sid": uuid.uuid4().hex, "init": True, "status": "ok", "errors": 0,
                         "started": "2026-01-01T00:00:00Z",
                         "attrs": {"release": "app@1", "environment": "ci"}})


def test_a_batch_redelivered_after_a_crash_before_the_commit_is_counted_once(
        h: Harness, corpus_dir: Path) -> None:
    event = error_event(corpus_dir, "CrashBeforeCommit: boom")
    ids = [uuid.uuid4().hex for _ in range(30)]
    attachment = b"a log line\n" * 10
    h.enqueue([*(h.event_item(event, i) for i in ids),
               h.item("attachment", attachment, ids[0], {"item_headers": {"type": "attachment"}}),
               h.item("session", sessions_payload())])
    crashing = h.consumer(CrashAfterInsert(h.clickhouse))
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashing.run_once()
    assert h.queue_size() == 32  # nothing acknowledged
    # More items arrive; the re-claims take smaller batches: another mix than the first.
    more = [uuid.uuid4().hex for _ in range(10)]
    h.enqueue([h.event_item(event, i) for i in more])
    time.sleep(0.6)  # the crashed consumer's lease runs out
    healthy = h.consumer(batch_items=7)
    while healthy.run_once():
        pass
    assert h.queue_size() == 0 and not h.dead_letters()
    assert counts_seen(h) == {"count": 40, "stats_24h": 40, "project_stats": 40,
                              "accepted": 40}
    assert h.outcome_totals("attachment") == {("accepted", ""): len(attachment)}
    assert h.outcome_totals("session") == {("accepted", ""): 1}
    listed = h.get(f"/projects/{h.organization_slug}/{h.project_slug}/events/", limit=100)
    assert sorted(e["eventID"] for e in listed) == sorted(ids + more)


def test_counts_lost_or_repeated_between_commit_and_clickhouse_arrive_once(
        h: Harness, corpus_dir: Path) -> None:
    event = error_event(corpus_dir, "CrashAroundCounts: boom")
    for after in (True, False):  # shipped then crashed; crashed before shipping
        h.enqueue([h.event_item(event) for _ in range(5)])
        assert h.consumer(CrashAroundCounts(h.clickhouse, after)).run_once() == 5
        assert h.queue_size() == 0  # the batch is committed; its counts wait in the outbox
    assert h.sql("SELECT count(*) FROM clickhouse_outbox")[0][0] == 2
    time.sleep(0.6)  # the leases of the outbox rows run out
    assert h.consumer().ship_outbox_if_due() == 2
    assert h.sql("SELECT count(*) FROM clickhouse_outbox")[0][0] == 0
    assert counts_seen(h) == {"count": 10, "stats_24h": 10, "project_stats": 10,
                              "accepted": 10}


def test_an_event_id_sent_twice_is_stored_and_counted_once(h: Harness,
                                                           corpus_dir: Path) -> None:
    """An SDK retry: the same event under the same id, in the same batch and later."""
    event = error_event(corpus_dir, "SentTwice: boom")
    ids = [uuid.uuid4().hex for _ in range(4)]
    h.enqueue([h.event_item(event, i) for i in ids] + [h.event_item(event, ids[0])])
    consumer = h.consumer()
    assert consumer.run_once() == 5
    h.enqueue([h.event_item(event, i) for i in ids[:2]])
    assert consumer.run_once() == 2
    assert counts_seen(h) == {"count": 4, "stats_24h": 4, "project_stats": 4, "accepted": 4}
    assert h.outcome_totals("error") == {("accepted", ""): 4, ("invalid", DUPLICATE_REASON): 3}
    stored = h.clickhouse.query_rows(
        "SELECT count() FROM events WHERE project_id = {p:UInt64}", {"p": h.project_id})
    assert stored == [(4,)]


def test_a_second_event_with_an_existing_id_does_not_replace_the_first(
        h: Harness, corpus_dir: Path) -> None:
    event_id = uuid.uuid4().hex
    first = error_event(corpus_dir, "FirstOfItsId: kept")
    second = {**error_event(corpus_dir, "SecondOfItsId: dropped"), "level": "fatal"}
    consumer = h.consumer()
    h.enqueue([h.event_item(first, event_id)])
    assert consumer.run_once() == 1
    h.enqueue([h.event_item(second, event_id)])
    assert consumer.run_once() == 1
    shown = h.get(f"/projects/{h.organization_slug}/{h.project_slug}/events/{event_id}/")
    assert shown["title"] == "FirstOfItsId: kept"
    assert [i["title"] for i in h.issues()] == ["FirstOfItsId: kept"]  # no issue for it
    listed = h.get(f"/projects/{h.organization_slug}/{h.project_slug}/events/")
    assert [(e["eventID"], e["title"]) for e in listed] == [(event_id, "FirstOfItsId: kept")]
    assert h.outcome_totals("error") == {("accepted", ""): 1, ("invalid", DUPLICATE_REASON): 1}


def test_two_events_with_one_id_in_one_batch_keep_the_older_item(
        h: Harness, corpus_dir: Path) -> None:
    event_id = uuid.uuid4().hex
    h.enqueue([h.event_item(error_event(corpus_dir, "OlderItem: kept"), event_id),
               h.event_item(error_event(corpus_dir, "NewerItem: dropped"), event_id)])
    assert h.consumer().run_once() == 2
    shown = h.get(f"/projects/{h.organization_slug}/{h.project_slug}/events/{event_id}/")
    assert shown["title"] == "OlderItem: kept"
    assert [(i["title"], i["count"]) for i in h.issues()] == [("OlderItem: kept", "1")]


def test_the_hourly_rollup_has_no_view_left_to_count_inserts_again(
        chdb_store: ClickHouseStore) -> None:
    """Migration 0003: the rollup is written from the outbox only, never by a view on
    ``events`` (which counted every re-inserted row); the summed tables deduplicate."""
    views = chdb_store.query_rows(
        "SELECT name FROM system.tables WHERE database = currentDatabase()"
        " AND engine = 'MaterializedView'", {})
    assert views == []
    settings = dict(chdb_store.query_rows(
        "SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase()"
        " AND name IN ('issue_counts_hourly', 'outcomes')", {}))
    assert all("non_replicated_deduplication_window = 10000" in q for q in settings.values())


def test_direct_inserts_of_identical_outcome_rows_all_count(
        chdb_store: ClickHouseStore) -> None:
    """With deduplication on, token-less identical inserts would be dropped as repeats;
    each ``insert`` gets a token of its own, a repeated ``insert_counts`` token does not."""
    org = 990_000_000 + uuid.uuid4().int % 1_000_000
    row = Outcome(org, 1, 1, dt.datetime.now(dt.UTC), "accepted", "", "error", 2)
    for _ in range(3):
        chdb_store.insert("outcomes", outcomes_table([row]))
    token = uuid.uuid4().hex
    for _ in range(3):
        chdb_store.insert_counts(token, Counts((), (row,)).tables())
    total = chdb_store.query_rows(
        "SELECT sum(quantity) FROM outcomes WHERE organization_id = {o:UInt64}", {"o": org})
    assert total == [(8,)]


def test_a_running_instance_counts_an_sdk_retry_once(crashray: RunningCrashray,
                                                     corpus_dir: Path) -> None:
    """Through ingest, the consumer actors and the ClickHouse owner actor: an envelope
    sent twice (an SDK retry) is one event in every count, and the counts reach
    ClickHouse through the owner (``RemoteStore.insert_counts``)."""
    title = f"RetriedEnvelope{uuid.uuid4().hex[:8]}: boom"
    event = error_event(corpus_dir, title)
    ids = [uuid.uuid4().hex for _ in range(5)]
    # A project of its own: the instance's other tests may still be draining into the
    # default project while this one counts.
    project = instance_call(crashray, "POST", "/teams/crashray/crashray/projects/",
                            {"name": f"retry-{uuid.uuid4().hex[:6]}"})
    project_id, slug = int(project["id"]), project["slug"]
    public_key = project["dsn"].split("//", 1)[1].split("@", 1)[0]
    headers = python_sdk_headers(public_key)
    for event_id in [*ids, ids[0], ids[1]]:
        response = wait_until(lambda event_id=event_id: ok_or_none(httpx.post(
            f"{crashray.base_url}/api/{project_id}/envelope/", headers=headers,
            content=gzip_bytes(envelope_bytes(event, event_id)), timeout=10)), 15,
            "the new project's key accepted")
        assert response.status_code == 200

    def counts() -> tuple[int, int, dict[tuple[str, str], int]] | None:
        issues = instance_get(crashray, f"/projects/crashray/{slug}/issues/",
                              query=f'"{title}"')
        if not issues:
            return None
        [issue] = issues
        return (int(issue["count"]), sum(n for _, n in issue["stats"]["24h"]),
                instance_outcomes(crashray, project_id))

    expected = (5, 5, {("accepted", ""): 5, ("invalid", DUPLICATE_REASON): 2})
    wait_until(lambda: counts() == expected or None, 60, "exact counts of the retried events")
    time.sleep(1.0)  # nothing arrives late and counts again
    assert counts() == expected
    assert clickhouse_store(crashray.runtime.clickhouse_dsn).ping()


def instance_get(c: RunningCrashray, path: str, **params: Any) -> Any:
    response = httpx.get(f"{c.base_url}/api/0{path}", params=params, timeout=10,
                         headers={"Authorization": f"Bearer {c.info.api_token}"})
    response.raise_for_status()
    return response.json()


def instance_outcomes(c: RunningCrashray, project_id: int) -> dict[tuple[str, str], int]:
    body = instance_get(c, "/organizations/crashray/stats_v2/", field="sum(quantity)",
                        statsPeriod="1d", interval="1h", category="error",
                        groupBy=["outcome", "reason"], project=project_id)
    return {(g["by"]["outcome"], g["by"]["reason"]): g["totals"]["sum(quantity)"]
            for g in body["groups"] if g["totals"]["sum(quantity)"]}


def instance_call(c: RunningCrashray, method: str, path: str, body: object) -> Any:
    response = httpx.request(method, f"{c.base_url}/api/0{path}", json=body, timeout=10,
                             headers={"Authorization": f"Bearer {c.info.api_token}"})
    response.raise_for_status()
    return response.json()


def ok_or_none(response: httpx.Response) -> httpx.Response | None:
    """The answer once the new key is known to ingest (its key cache reloads on a miss)."""
    return None if response.status_code == 403 else response
