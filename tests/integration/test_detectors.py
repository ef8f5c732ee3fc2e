"""The detector host without Ray (actors/detectors.py ``DetectorHost``): the per-minute
series it reads from ClickHouse after real consumers stored events, the anomalies it
records, the ignored-until-escalating issue an escalating anomaly moves, checkpoints.

Real parts: PostgreSQL (scratch database), the session's chDB engine, ``BatchConsumer``,
the FastAPI app; the detectors are plugin classes written for these tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import pytest

from actors.detectors import (
    DetectorConfig,
    DetectorHost,
    DetectorLoadError,
    discover,
    resource_options,
)
from events.anomaly import Anomaly, EscalatingDetector, Series
from storage.clickhouse import ClickHouseStore
from tests.integration.consumer_harness import Harness, harness
from tests.integration.test_alerts import auth, error_event, other_org_token, process

pytestmark = pytest.mark.integration


class Recorder:
    """Remembers what it was fed; reports nothing."""

    name: ClassVar[str] = "recorder"

    def __init__(self) -> None:
        self.batches: list[list[Series]] = []

    def observe(self, batch: Sequence[Series], now: dt.datetime) -> list[Anomaly]:
        self.batches.append(list(batch))
        return []

    def checkpoint(self) -> bytes:
        return str(len(self.batches)).encode()

    def restore(self, state: bytes) -> None:
        self.batches = [[] for _ in range(int(state))]


class BusyIssues:
    """Calls an issue with 3 events or more in its window escalating."""

    name: ClassVar[str] = "busy-issues"

    def observe(self, batch: Sequence[Series], now: dt.datetime) -> list[Anomaly]:
        return [Anomaly("issue", s.organization_id, s.project_id, s.issue_id, s.minutes[0], now,
                        float(sum(s.events)), "up", f"{sum(s.events)} events", {"limit": 3.0},
                        "escalating")
                for s in batch if s.scope == "issue" and sum(s.events) >= 3]

    def checkpoint(self) -> bytes:
        return b""

    def restore(self, state: bytes) -> None:
        pass


@pytest.fixture
def h(chdb_store: ClickHouseStore) -> Iterator[Harness]:
    yield from harness(chdb_store, "crashray_detectors")


def config(h: Harness, **overrides: Any) -> DetectorConfig:
    return DetectorConfig(**{"postgres_url": h.url, "clickhouse_dsn": h.clickhouse.dsn,
                             "shards": 1, "window_minutes": 10, **overrides})


def issue_ids(h: Harness) -> dict[str, int]:
    return {i["metadata"]["value"]: int(i["id"]) for i in h.issues()}


def test_the_host_reads_each_minute_of_projects_and_issues_from_clickhouse(h: Harness) -> None:
    process(h, [error_event("a", user={"id": "u1"}), error_event("a", user={"id": "u2"}),
                error_event("a", user={"id": "u1"}), error_event("b")])
    detector = Recorder()
    host = DetectorHost(detector, 0, config(h), h.clickhouse)
    host.tick()
    [batch] = detector.batches
    mine = [s for s in batch if s.project_id == h.project_id]
    project = next(s for s in mine if s.scope == "project")
    assert len(project.minutes) == 10 and sum(project.events) == 4
    assert sum(project.users) == 2
    by_issue = {s.issue_id: s for s in mine if s.scope == "issue"}
    ids = issue_ids(h)
    assert sum(by_issue[ids["a"]].events) == 3 and sum(by_issue[ids["a"]].users) == 2
    assert sum(by_issue[ids["b"]].events) == 1
    assert not any(s.until_escalating for s in mine)


def test_a_shard_reads_only_its_projects_and_each_organizations_own_events(h: Harness
                                                                           ) -> None:
    process(h, [error_event("a")])
    other_org_token(h)  # another organization with a project of its own
    seen: dict[int, set[int]] = {}
    for shard in (0, 1):
        detector = Recorder()
        DetectorHost(detector, shard, config(h, shards=2), h.clickhouse).tick()
        seen[shard] = {s.project_id for s in detector.batches[0]}
        assert all(p % 2 == shard for p in seen[shard])
        for s in detector.batches[0]:
            if s.project_id != h.project_id:
                assert sum(s.events) == 0, "another organization's project shows our events"
    assert h.project_id in seen[h.project_id % 2]


def test_an_escalating_anomaly_moves_an_issue_ignored_until_escalating(h: Harness) -> None:
    process(h, [error_event("ignored one") for _ in range(3)]
            + [error_event("open one") for _ in range(3)])
    ids = issue_ids(h)
    response = h.api.put(f"/issues/{ids['ignored one']}/", headers=auth(h), json={
        "status": "ignored", "statusDetails": {"ignoreUntilEscalating": True}})
    assert response.status_code == 200, response.text
    process(h, [error_event("ignored one") for _ in range(5)])
    assert h.sql("SELECT status FROM issues WHERE id = %s", (ids["ignored one"],)) == [
        ("ignored",)], "new events alone do not unignore it"
    host = DetectorHost(BusyIssues(), 0, config(h), h.clickhouse)
    recorded = host.tick()
    assert {r.anomaly.issue_id for r in recorded} == {ids["ignored one"], ids["open one"]}
    status = h.sql("SELECT id, status, substatus FROM issues WHERE id = ANY(%s) ORDER BY id",
                   (list(ids.values()),))
    states = {r[0]: (r[1], r[2]) for r in status}
    assert states[ids["ignored one"]] == ("unresolved", "escalating")
    assert states[ids["open one"]][1] != "escalating", "only an ignored issue escalates"
    assert host.counts["escalated"] == 1
    [activity] = h.sql("SELECT type, data, actor FROM issue_activity WHERE issue_id = %s"
                       " AND type = 'set_escalating'", (ids["ignored one"],))
    assert activity[1]["forecast"] == 3.0 and activity[2] == "crashray:detector:busy-issues"
    shown = h.get(f"/projects/{h.organization_slug}/{h.project_slug}/anomalies/",
                  issue=str(ids["ignored one"]))
    assert [(a["kind"], a["detector"], a["status"]) for a in shown] == [
        ("escalating", "busy-issues", "open")]
    # The next observation extends the episode and escalates nothing again.
    assert not any(r.opened for r in host.tick()) and host.counts["escalated"] == 1


def test_quiet_episodes_close_and_checkpoints_restore(h: Harness) -> None:
    process(h, [error_event("x") for _ in range(3)])
    now = dt.datetime.now(dt.UTC)
    host = DetectorHost(BusyIssues(), 0, config(h, close_after_s=60), h.clickhouse,
                        clock=lambda: now)
    assert len(host.tick()) == 1
    host.feed([], now + dt.timedelta(minutes=5))
    assert [a["status"] for a in h.get(
        f"/projects/{h.organization_slug}/{h.project_slug}/anomalies/")] == ["closed"]
    learnt = EscalatingDetector()
    first = DetectorHost(learnt, 0, config(h), h.clickhouse)
    first.tick()
    first.checkpoint()
    again = DetectorHost(EscalatingDetector(), 0, config(h), h.clickhouse)
    assert again.counts["restored"] == 1
    assert again.detector.checkpoint() == learnt.checkpoint()


def test_a_broken_detector_path_is_refused_naming_the_setting() -> None:
    with pytest.raises(DetectorLoadError, match=r"CRASHRAY_DETECTORS.*nowhere\.module"):
        discover(["nowhere.module:Detector"], entry_points=False)
    with pytest.raises(DetectorLoadError, match="not an import path"):
        discover(["events.anomaly"], entry_points=False)
    with pytest.raises(DetectorLoadError, match="not a detector class"):
        discover(["events.anomaly:Series"], entry_points=False)
    assert [s.name for s in discover(["events.anomaly:EscalatingDetector",
                                      "events.anomaly:SeasonalDetector"], False)] == [
        "escalating", "seasonal"]


class GpuDetector(Recorder):
    name: ClassVar[str] = "gpu"
    num_gpus: ClassVar[float] = 1
    memory: ClassVar[int] = 2 * 1024**3


def test_the_resources_a_detector_class_declares_are_what_ray_is_asked_for() -> None:
    assert resource_options(GpuDetector) == {"num_gpus": 1, "memory": 2 * 1024**3}
    assert resource_options(Recorder) == {}
