"""Dead letters only for poison: a ClickHouse outage, however long, dead-letters nothing
and loses nothing (every item is stored and counted once it is back); an item that fails
on its own still goes to the dead letters at once, and ``crashray dead-letters`` replays
it (it is then processed) or drops it; the API counts an organization's own only."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

from actors.consumer import StorageOutage
from events.grouping import DEFAULT_GROUPING_CONFIG
from storage import postgres, tenancy
from storage.clickhouse import ClickHouseStore
from storage.queue import QueuedItem
from tests.integration.consumer_harness import Harness, counts_seen, harness
from tests.support import error_event, free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def h(chdb_store: ClickHouseStore) -> Iterator[Harness]:
    yield from harness(chdb_store, "crashray_dead")


class OutageStore:
    """The real store, or, while ``down``, ClickHouse gone: every call then goes to a
    ClickHouse server address where nothing listens, and fails as clickhouse-connect fails
    when the server is gone (``OperationalError``: connection refused); ``ping`` answers
    False, as the real client's does."""

    def __init__(self, store: ClickHouseStore) -> None:
        self.store = store
        self.down = False
        self.gone_dsn = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        self.failed_calls = 0

    def __getattr__(self, name: str) -> Any:
        if not self.down:
            return getattr(self.store, name)

        def gone(*args: Any, **kwargs: Any) -> Any:
            self.failed_calls += 1
            return getattr(ClickHouseStore(self.gone_dsn), name)(*args, **kwargs)
        return gone

    def ping(self) -> bool:
        if not self.down:
            return self.store.ping()
        try:
            return bool(clickhouse_connect.get_client(dsn=self.gone_dsn).ping())
        except clickhouse_connect.driver.exceptions.OperationalError:
            return False


def cli(h: Harness, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``crashray dead-letters …`` as an operator runs it, on the harness's database."""
    env = {**os.environ, "CRASHRAY_POSTGRES_URL": h.url,
           "CRASHRAY_DATA_DIR": str(tmp_path / "data")}
    return subprocess.run([sys.executable, "-m", "cluster.cli", "dead-letters", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def poison(h: Harness, corpus_dir: Path, project_id: int, org_id: int | None = None
           ) -> QueuedItem:
    """An event accepted for a project that is gone (deleted after ingest took it): it can
    never be stored until the project exists again."""
    item = h.event_item(error_event(corpus_dir, "Poison: no project"), project_id=project_id)
    return QueuedItem(**{**item.__dict__, "organization_id": org_id or h.organization_id})


def test_a_clickhouse_outage_dead_letters_nothing_and_loses_nothing(
        h: Harness, corpus_dir: Path) -> None:
    event = error_event(corpus_dir, "DuringOutage: boom")
    h.enqueue([h.event_item(event) for _ in range(20)])
    store = OutageStore(h.clickhouse)
    store.down = True
    # Many more tries than max_attempts, by fresh consumers (which claim, fail and give the
    # batch back) and by one that knows of the outage (it asks ClickHouse before claiming).
    knowing = h.consumer(store, max_attempts=2)
    for _ in range(6):
        with pytest.raises(StorageOutage, match="ClickHouse"):
            h.consumer(store, max_attempts=2).run_once()
        with pytest.raises(StorageOutage, match="ClickHouse"):
            knowing.run_once()
        time.sleep(0.6)  # any lease would have run out
    assert store.failed_calls >= 6  # real connection errors were raised
    assert h.dead_letters() == [] and h.queue_size() == 20
    assert h.sql("SELECT max(attempts) FROM ingest_queue")[0][0] == 0
    store.down = False
    assert knowing.run_once() == 20
    assert h.queue_size() == 0 and h.dead_letters() == []
    assert counts_seen(h) == {"count": 20, "stats_24h": 20, "project_stats": 20,
                              "accepted": 20}


def test_clickhouse_going_away_after_processing_gives_the_batch_back(
        h: Harness, corpus_dir: Path) -> None:
    """The outage starts while a consumer holds its batch (processed, issues made): the
    insert fails with the client's real error, the batch is given back, nothing is
    counted; once ClickHouse is back everything is stored and counted once."""
    event = error_event(corpus_dir, "OutageMidBatch: boom")
    h.enqueue([h.event_item(event) for _ in range(8)])
    store = OutageStore(h.clickhouse)

    class GoesAwayOnInsert:
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def insert_batch(self, tables: Any) -> int:
            store.down = True
            return int(store.insert_batch(tables))

    consumer = h.consumer(GoesAwayOnInsert(), max_attempts=1)
    with pytest.raises(StorageOutage, match="OperationalError"):
        consumer.run_once()
    assert h.queue_size() == 8 and h.dead_letters() == []
    assert h.sql("SELECT coalesce(sum(times_seen), 0) FROM issues")[0][0] == 0
    store.down = False
    assert h.consumer(max_attempts=1).run_once() == 8
    assert counts_seen(h) == {"count": 8, "stats_24h": 8, "project_stats": 8, "accepted": 8}


def test_a_poison_item_is_dead_lettered_and_replayed_once_its_cause_is_fixed(
        h: Harness, corpus_dir: Path, tmp_path: Path) -> None:
    missing = h.project_id + 1  # the next project id: no such project yet
    good = [h.event_item(error_event(corpus_dir, "GoodNeighbour: fine")) for _ in range(4)]
    h.enqueue([*good[:2], poison(h, corpus_dir, missing), *good[2:]])
    consumer = h.consumer()
    assert consumer.run_once() == 5
    dead = h.dead_letters()
    assert len(dead) == 1 and "foreign key" in dead[0][2]
    assert counts_seen(h)["count"] == 4

    listed = cli(h, tmp_path, "list", "--org", h.organization_slug)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(f"{dead[0][0]}\tproject {missing} (deleted)\tevent\t")
    assert "foreign key" in listed.stdout

    with postgres.connect(h.url) as conn:  # the project is restored
        conn.execute("INSERT INTO projects (id, organization_id, slug, name, grouping_config)"
                     " VALUES (%s, %s, 'restored', 'restored', %s)",
                     (missing, h.organization_id, DEFAULT_GROUPING_CONFIG))
        conn.commit()
    replayed = cli(h, tmp_path, "replay", "--id", str(dead[0][0]))
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == f"replayed 1 dead letter: {dead[0][0]}"
    assert h.dead_letters() == [] and h.queue_size() == 1
    assert consumer.run_once() == 1
    issues = h.get(f"/projects/{h.organization_slug}/restored/issues/")
    assert [(i["title"], i["count"]) for i in issues] == [("Poison: no project", "1")]


def test_dead_letters_are_dropped_by_id_or_all_and_unknown_ids_are_refused(
        h: Harness, corpus_dir: Path, tmp_path: Path) -> None:
    h.enqueue([poison(h, corpus_dir, h.project_id + 1) for _ in range(3)]
              + [h.event_item(error_event(corpus_dir, "GoodNeighbour: fine"))])
    assert h.consumer().run_once() == 4
    ids = [d[0] for d in h.dead_letters()]
    assert len(ids) == 3
    dropped = cli(h, tmp_path, "drop", "--id", str(ids[0]))
    assert dropped.stdout.strip() == f"dropped 1 dead letter: {ids[0]}"
    unknown = cli(h, tmp_path, "replay", "--id", str(ids[0]))
    assert unknown.returncode == 2 and f"no dead letter {ids[0]}" in unknown.stderr
    neither = cli(h, tmp_path, "drop")
    assert neither.returncode == 2 and "--id N (repeatable) or --all" in neither.stderr
    everything = cli(h, tmp_path, "drop", "--all", "--org", h.organization_slug)
    assert everything.stdout.strip() == f"dropped 2 dead letters: {ids[1]}, {ids[2]}"
    assert h.dead_letters() == [] and h.queue_size() == 0


def test_the_api_counts_an_organizations_own_dead_letters_for_its_admins(
        h: Harness, corpus_dir: Path) -> None:
    with postgres.connect(h.url) as conn:
        other_org = tenancy.create_organization(conn, f"other-{uuid.uuid4().hex[:8]}",
                                                "Other", None)
        reader = tenancy.create_token(conn, "reader", ["org:read"], org_id=h.organization_id)
        conn.commit()
    h.enqueue([poison(h, corpus_dir, h.project_id + 1) for _ in range(2)]
              + [poison(h, corpus_dir, h.project_id + 2, other_org)]
              + [h.event_item(error_event(corpus_dir, "GoodNeighbour: fine"))])
    assert h.consumer().run_once() == 4
    assert len(h.dead_letters()) == 3
    body = h.get(f"/organizations/{h.organization_slug}/dead-letters/")
    assert body["total"] == 2
    [group] = body["groups"]
    assert (group["projectId"], group["project"], group["itemType"], group["count"]) == (
        str(h.project_id + 1), None, "event", 2)
    assert "foreign key" in group["lastError"]
    refused = h.api.get(f"/organizations/{h.organization_slug}/dead-letters/",
                        headers={"Authorization": f"Bearer {reader}"})
    assert refused.status_code == 403 and "org:admin" in refused.json()["detail"]
