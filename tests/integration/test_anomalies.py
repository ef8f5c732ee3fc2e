"""Anomalies in PostgreSQL and through the API (storage/anomalies.py,
serve_apps/api/anomalies.py): episodes open, extend and close; checkpoints survive; another
organization sees nothing. Real PostgreSQL (scratch database), the in-process FastAPI app."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from events.anomaly import Anomaly
from storage import anomalies, postgres
from storage.clickhouse import ClickHouseStore
from storage.scope import ProjectScope
from tests.integration.consumer_harness import Harness, harness
from tests.integration.test_alerts import auth, other_org_token

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)


@pytest.fixture
def h(chdb_store: ClickHouseStore) -> Iterator[Harness]:
    yield from harness(chdb_store, "crashray_anomalies")


def spike(h: Harness, minutes: int, score: float = 8.0, organization_id: int | None = None
          ) -> Anomaly:
    return Anomaly("project", organization_id or h.organization_id, h.project_id, None, T0,
                   T0 + dt.timedelta(minutes=minutes), score, "up",
                   f"Spike: {minutes} minutes", {"observed": 100.0, "expected": 10.0}, "spike")


def path(h: Harness) -> str:
    return f"/projects/{h.organization_slug}/{h.project_slug}/anomalies/"


def record(h: Harness, *found: Anomaly, detector: str = "seasonal") -> list[Any]:
    with postgres.connect(h.url) as conn:
        recorded = anomalies.record(conn, detector, found)
        conn.commit()
    return recorded


def test_an_episode_is_recorded_once_extended_and_shown(h: Harness) -> None:
    first, = record(h, spike(h, 2, score=8.0))
    again, = record(h, spike(h, 5, score=6.0))
    assert first.opened and not again.opened and first.id == again.id
    shown = h.get(path(h))
    assert len(shown) == 1
    assert shown[0]["id"] == str(first.id) and shown[0]["status"] == "open"
    assert shown[0]["start"] == "2026-11-02T09:00:00Z"
    assert shown[0]["end"] == "2026-11-02T09:05:00Z"
    assert shown[0]["score"] == 8.0 and shown[0]["explanation"] == "Spike: 5 minutes"
    assert (shown[0]["scope"], shown[0]["direction"], shown[0]["kind"]) == ("project", "up",
                                                                            "spike")


def test_a_quiet_episode_is_closed_and_the_next_one_is_new(h: Harness) -> None:
    first, = record(h, spike(h, 2))
    with postgres.connect(h.url) as conn:
        assert anomalies.close_quiet(conn, "seasonal", [h.project_id],
                                     T0 + dt.timedelta(minutes=10)) == 1
        conn.commit()
    second, = record(h, spike(h, 30))
    assert second.opened and second.id != first.id
    assert [a["status"] for a in h.get(path(h))] == ["open", "closed"]
    assert [a["id"] for a in h.get(path(h), status="closed")] == [str(first.id)]


def test_another_organization_sees_no_anomaly_and_cannot_plant_one(h: Harness) -> None:
    record(h, spike(h, 2))
    other = other_org_token(h)
    assert h.api.get(path(h), headers=auth(h, other)).status_code == 404
    # An anomaly naming this project under another organization is not recorded.
    assert record(h, spike(h, 3, organization_id=h.organization_id + 1)) == []
    with postgres.connect(h.url) as conn:
        elsewhere = ProjectScope(h.organization_id + 1, h.project_id)
        assert anomalies.list_anomalies(conn, elsewhere, 100) == []


def test_bad_query_parameters_are_refused_naming_them(h: Harness) -> None:
    for query, named in (({"status": "gone"}, "status"), ({"issue": "x"}, "issue"),
                         ({"limit": 0}, "limit")):
        response = h.api.get(path(h), params=query, headers=auth(h))
        assert response.status_code == 400, response.text
        assert named in response.text


def test_a_checkpoint_is_loaded_back_only_for_the_same_sharding(h: Harness) -> None:
    with postgres.connect(h.url) as conn:
        anomalies.save_checkpoint(conn, "seasonal", 1, 4, b"learnt")
        anomalies.save_checkpoint(conn, "seasonal", 1, 4, b"learnt more")
        conn.commit()
        assert anomalies.load_checkpoint(conn, "seasonal", 1, 4) == b"learnt more"
        assert anomalies.load_checkpoint(conn, "seasonal", 1, 2) is None
        assert anomalies.load_checkpoint(conn, "escalating", 1, 4) is None


def test_alert_rules_see_the_open_anomalies_of_the_issue_and_its_project(h: Harness) -> None:
    issue = Anomaly("issue", h.organization_id, h.project_id, 41, T0, T0, 3.0, "up",
                    "Escalating", {}, "escalating")
    elsewhere = Anomaly("issue", h.organization_id, h.project_id, 42, T0, T0, 9.0, "up",
                        "Escalating", {}, "escalating")
    record(h, spike(h, 2), issue, elsewhere, detector="escalating")
    with postgres.connect(h.url) as conn:
        found = anomalies.open_for_alerts(conn, ProjectScope(h.organization_id, h.project_id),
                                          [41])
        other = anomalies.open_for_alerts(conn, ProjectScope(h.organization_id + 1,
                                                             h.project_id), [41])
    assert sorted((a["scope"], a["score"]) for a in found[41]) == [("issue", 3.0),
                                                                   ("project", 8.0)]
    assert other == {41: []}
