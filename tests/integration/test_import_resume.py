"""An import batch interrupted at the worst moment — right after its rows reached
ClickHouse, before its PostgreSQL transaction committed — is stored exactly once when the
import is resumed, and what a user reads (the issues' counts and stats, the project's
stats, ``stats_v2``'s accepted outcomes with reason ``import``) counts every event once.
Drives pipelines/import_events.store_batch, the datasink's work, without Ray: real
PostgreSQL (a scratch database) and the real ClickHouse engine (chDB in this process)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from actors.grouping import IssueResolver
from actors.store_events import EventStorage
from events.process import EventProcessor, ProcessedEvent
from pipelines.import_events import IMPORT_REASON, ImportJob, import_context, store_batch
from storage import postgres
from storage.clickhouse import ClickHouseStore
from tests.integration.consumer_harness import Harness, counts_seen, harness
from tests.integration.test_exact_counts import CrashAfterInsert
from tests.support import error_event

pytestmark = pytest.mark.integration

EVENTS = 12


@pytest.fixture
def h(chdb_store: ClickHouseStore) -> Iterator[Harness]:
    yield from harness(chdb_store, "crashray_import")


def processed_events(h: Harness, corpus_dir: Path) -> tuple[ImportJob, list[ProcessedEvent]]:
    job = ImportJob(h.url, h.clickhouse.dsn, h.organization_id, h.project_id, 90, 30.0, 1000)
    received = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    processor = EventProcessor()
    events = []
    for n in range(EVENTS):
        event = error_event(corpus_dir, f"ResumedImportError{n % 3}: boom")
        event.update(event_id=uuid.uuid4().hex, timestamp=received.timestamp() - n)
        events.append(processor.process(orjson.dumps(event), import_context(job, received,
                                                                             None)))
    return job, events


def test_an_import_batch_interrupted_before_its_commit_is_stored_once_when_resumed(
        h: Harness, corpus_dir: Path) -> None:
    job, events = processed_events(h, corpus_dir)
    with postgres.connect(h.url) as conn:
        resolver = IssueResolver(conn, 1000)
        crashing: Any = EventStorage(CrashAfterInsert(h.clickhouse), 90, 30.0)
        with pytest.raises(RuntimeError, match="simulated crash"):
            store_batch(conn, crashing, resolver, job, events[: EVENTS // 2])
        storage = EventStorage(h.clickhouse, 90, 30.0)
        resumed = store_batch(conn, storage, resolver, job, events)
        again = store_batch(conn, storage, resolver, job, events)
    assert (resumed.imported, resumed.skipped) == (EVENTS, 0)
    assert (again.imported, again.skipped) == (0, EVENTS)
    # ``accepted`` of counts_seen is the live reason (""); imports count under their own.
    assert counts_seen(h) == {"count": EVENTS, "stats_24h": EVENTS, "project_stats": EVENTS,
                              "accepted": 0}
    assert h.outcome_totals("error") == {("accepted", IMPORT_REASON): EVENTS}
    [(distinct,)] = h.clickhouse.query_rows(
        "SELECT uniqExact(event_id) FROM events WHERE organization_id = {org:UInt64}"
        " AND project_id = {project:UInt64}",
        {"org": h.organization_id, "project": h.project_id})
    assert distinct == EVENTS
    assert sorted(int(i["count"]) for i in h.issues()) == [4, 4, 4]
