"""Issue alert rules end to end without Ray: Sentry's rules API over a scratch database, and
real consumers (``BatchConsumer``) evaluating the rules in their batch transaction and
queueing deliveries, which a real notifier sends to a real local HTTP server.

Real parts: PostgreSQL (a scratch database built by the migrations), the session's chDB
ClickHouse engine, Crashray's FastAPI app in-process, http.server for the webhook."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from storage.clickhouse import ClickHouseStore
from tests.integration.consumer_harness import Harness, harness

pytestmark = pytest.mark.integration

FIRST_SEEN = "sentry.rules.conditions.first_seen_event.FirstSeenEventCondition"
REGRESSION = "sentry.rules.conditions.regression_event.RegressionEventCondition"
FREQUENCY = "sentry.rules.conditions.event_frequency.EventFrequencyCondition"
LEVEL = "sentry.rules.filters.level.LevelFilter"
WEBHOOK = "crashray.actions.webhook"


@pytest.fixture
def h(chdb_store: ClickHouseStore) -> Iterator[Harness]:
    yield from harness(chdb_store, "crashray_alerts")


def rules_path(h: Harness, rule_id: int | str | None = None) -> str:
    base = f"/projects/{h.organization_slug}/{h.project_slug}/rules/"
    return base if rule_id is None else f"{base}{rule_id}/"


def auth(h: Harness, token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or h.token}"}


def new_rule(h: Harness, **body: Any) -> dict[str, Any]:
    rule = {"name": "notify", "actionMatch": "all", "filterMatch": "all", "frequency": 5,
            "conditions": [{"id": FIRST_SEEN}], "filters": [],
            "actions": [{"id": WEBHOOK, "url": "http://127.0.0.1:9/hook", "secret": "s3"}],
            **body}
    response = h.api.post(rules_path(h), json=rule, headers=auth(h))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def test_rules_are_created_listed_changed_and_deleted_in_sentrys_shape(h: Harness) -> None:
    created = new_rule(h, name="new issues", environment="production")
    assert created["name"] == "new issues" and created["environment"] == "production"
    assert created["conditions"][0]["id"] == FIRST_SEEN
    assert created["conditions"][0]["name"] == "A new issue is created"
    assert created["frequency"] == 5 and created["projects"] == [h.project_slug]
    assert [r["id"] for r in h.get(rules_path(h))] == [created["id"]]

    changed = h.api.put(rules_path(h, created["id"]), headers=auth(h), json={
        **created, "frequency": 60, "filters": [{"id": LEVEL, "match": "gte", "level": "40"}]})
    assert changed.status_code == 200, changed.text
    shown = h.get(rules_path(h, created["id"]))
    assert shown["frequency"] == 60 and shown["filters"][0]["id"] == LEVEL

    assert h.api.delete(rules_path(h, created["id"]), headers=auth(h)).status_code == 202
    assert h.api.get(rules_path(h, created["id"]), headers=auth(h)).status_code == 404
    assert h.get(rules_path(h)) == []


@pytest.mark.parametrize(("change", "named"), [
    ({"conditions": [{"id": "sentry.rules.conditions.nope.Nope"}]}, "sentry.rules.conditions"
                                                                   ".nope.Nope"),
    ({"frequency": 2}, "frequency"),
    ({"actions": []}, "actions"),
    ({"conditions": [{"id": FREQUENCY, "value": 10, "interval": "2m"}]}, "interval"),
])
def test_a_rule_sentry_would_refuse_is_a_400_naming_what(h: Harness, change: dict[str, Any],
                                                         named: str) -> None:
    body = {"name": "bad", "actionMatch": "all", "frequency": 5,
            "conditions": [{"id": FIRST_SEEN}],
            "actions": [{"id": WEBHOOK, "url": "http://127.0.0.1:9/hook"}], **change}
    response = h.api.post(rules_path(h), json=body, headers=auth(h))
    assert response.status_code == 400, response.text
    assert named in response.text
    assert h.get(rules_path(h)) == []


def test_another_organization_can_neither_see_nor_change_the_rules(h: Harness) -> None:
    created = new_rule(h)
    other = other_org_token(h)
    for method in ("get", "put", "delete"):
        response = h.api.request(method.upper(), rules_path(h, created["id"]),
                                 headers=auth(h, other), json=created)
        assert response.status_code == 404, (method, response.text)
    assert h.api.get(rules_path(h), headers=auth(h, other)).status_code == 404
    assert [r["id"] for r in h.get(rules_path(h))] == [created["id"]]


def test_the_rule_editor_catalogue_lists_what_a_rule_may_use(h: Harness) -> None:
    """Sentry's ``rules/configuration/``: not taken for a rule id (that would be a 422), every
    id a rule may use with its label and form fields, and only for the project's own org."""
    path = rules_path(h, "configuration")
    found = h.get(path)
    conditions = {c["id"]: c for c in found["conditions"]}
    assert conditions[FIRST_SEEN]["label"] == "A new issue is created"
    assert set(conditions[FREQUENCY]["formFields"]) >= {"value", "interval"}
    assert ["1m", "one minute"] in conditions[FREQUENCY]["formFields"]["interval"]["choices"]
    assert LEVEL in {f["id"] for f in found["filters"]}
    webhook = next(a for a in found["actions"] if a["id"] == WEBHOOK)
    assert set(webhook["formFields"]) == {"url", "secret"}
    # What the catalogue offers, the rules API takes: one rule with its first choices.
    made = new_rule(h, conditions=[{"id": FREQUENCY, "value": 3, "interval": "1h"}])
    assert made["conditions"][0]["id"] == FREQUENCY
    assert h.api.get(path, headers=auth(h, other_org_token(h))).status_code == 404
    assert h.api.get(path).status_code == 401


def other_org_token(h: Harness) -> str:
    from events.grouping import DEFAULT_GROUPING_CONFIG
    from storage import postgres
    from storage.bootstrap import bootstrap

    with postgres.connect(h.url) as conn:
        made = bootstrap(conn, org_slug=f"other-{uuid.uuid4().hex[:6]}", project_slug="p",
                         grouping_config=DEFAULT_GROUPING_CONFIG)
        conn.commit()
    assert made.api_token is not None
    return made.api_token


# --- evaluation in the consumers ------------------------------------------------------------
def error_event(message: str, level: str = "error", **extra: Any) -> dict[str, Any]:
    return {"platform": "python", "level": level, "timestamp": dt.datetime.now(dt.UTC)
            .isoformat(), "exception": {"values": [{"type": "ValueError", "value": message}]},
            **extra}


def process(h: Harness, events: list[dict[str, Any]]) -> None:
    h.enqueue([h.event_item(e) for e in events])
    consumer = h.consumer(project_settings_refresh_s=0.0)
    while consumer.run_once():
        pass


def deliveries(h: Harness) -> list[tuple[Any, ...]]:
    return h.sql("SELECT rule_id, issue_id, event_id FROM notification_deliveries ORDER BY id")


def test_a_new_issue_queues_one_delivery_and_its_later_events_none(h: Harness) -> None:
    rule = new_rule(h)
    process(h, [error_event("first"), error_event("first")])
    queued = deliveries(h)
    assert len(queued) == 1 and queued[0][0] == int(rule["id"])
    process(h, [error_event("first")])
    assert len(deliveries(h)) == 1
    process(h, [error_event("second")])
    assert len(deliveries(h)) == 2


def test_a_frequency_condition_fires_once_per_frequency_per_issue(h: Harness) -> None:
    new_rule(h, conditions=[{"id": FREQUENCY, "value": 3, "interval": "1m"}])
    process(h, [error_event("busy") for _ in range(3)])
    assert deliveries(h) == []  # 3 is not more than 3
    process(h, [error_event("busy")])
    assert len(deliveries(h)) == 1
    process(h, [error_event("busy") for _ in range(5)])
    assert len(deliveries(h)) == 1  # within the rule's 5 minutes


def test_filters_keep_an_event_from_firing(h: Harness) -> None:
    new_rule(h, filters=[{"id": LEVEL, "match": "gte", "level": "50"}])  # fatal only
    process(h, [error_event("not fatal")])
    assert deliveries(h) == []
    process(h, [error_event("fatal one", level="fatal")])
    assert len(deliveries(h)) == 1


def test_a_regression_fires_the_regression_rule(h: Harness) -> None:
    new_rule(h, conditions=[{"id": REGRESSION}])
    process(h, [error_event("comes back")])
    assert deliveries(h) == []
    issue = h.issues()[0]
    resolved = h.api.put(f"/issues/{issue['id']}/", json={"status": "resolved"},
                         headers=auth(h))
    assert resolved.status_code == 200, resolved.text
    process(h, [error_event("comes back")])
    assert len(deliveries(h)) == 1


def test_two_consumers_at_once_fire_a_rule_once(h: Harness) -> None:
    """Both count events of the same issue in overlapping transactions: the (rule, issue)
    slot is taken once."""
    new_rule(h, conditions=[{"id": FREQUENCY, "value": 1, "interval": "1m"}])
    process(h, [error_event("race")])
    h.enqueue([h.event_item(error_event("race")) for _ in range(40)])
    consumers = [h.consumer(project_settings_refresh_s=0.0, batch_items=5) for _ in range(2)]

    def drain(c: Any) -> None:
        while c.run_once():
            pass
    threads = [threading.Thread(target=drain, args=(c,)) for c in consumers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert h.queue_size() == 0
    assert len(deliveries(h)) == 1


def test_a_consumer_dying_after_queueing_loses_and_repeats_no_notification(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deliveries are written in the batch's transaction: a consumer that dies after
    writing them (here: right after, before its commit) leaves neither them nor the rule's
    slot behind, and the consumer that takes the batch over after the lease queues each
    notification once."""
    import time

    import actors.consumer_alerts as consumer_alerts

    new_rule(h)
    real_enqueue = consumer_alerts.enqueue

    def enqueue_then_die(conn: Any, deliveries: Any) -> list[int]:
        real_enqueue(conn, deliveries)
        raise SystemExit("killed after queueing its notifications")

    monkeypatch.setattr(consumer_alerts, "enqueue", enqueue_then_die)
    h.enqueue([h.event_item(error_event("dies")) for _ in range(3)])
    with pytest.raises(SystemExit):
        h.consumer(project_settings_refresh_s=0.0).run_once()
    assert deliveries(h) == [] and h.queue_size() == 3
    assert h.sql("SELECT count(*) FROM alert_rule_fires")[0][0] == 0

    monkeypatch.setattr(consumer_alerts, "enqueue", real_enqueue)
    time.sleep(0.6)  # the harness's lease (0.5 s)
    process(h, [])
    assert h.queue_size() == 0
    assert len(deliveries(h)) == 1
    assert sum(int(i["count"]) for i in h.issues()) == 3


ANOMALY = "crashray.conditions.anomaly.AnomalyCondition"


def project_anomaly(h: Harness, kind: str = "drop") -> Any:
    from events.anomaly import Anomaly

    now = dt.datetime.now(dt.UTC)
    return Anomaly("project", h.organization_id, h.project_id, None,
                   now - dt.timedelta(minutes=15), now, 9.5, "down",
                   "the project's events dropped to 0 a minute (usually 120)",
                   {"expected": 120.0}, kind=kind)


def test_an_anomaly_a_detector_opens_fires_the_anomaly_rules_without_an_event(
        h: Harness) -> None:
    """A drop to zero has no event: the detector fires the rules as it records it."""
    from actors.consumer_alerts import apply_anomaly_rules
    from storage import anomalies, postgres

    rule = new_rule(h, conditions=[{"id": ANOMALY, "scope": "project", "min_score": 5}])
    new_rule(h, name="issue anomalies only", conditions=[{"id": ANOMALY, "scope": "issue"}])
    with postgres.connect(h.url) as conn:
        recorded = anomalies.record(conn, "seasonal", [project_anomaly(h)])
        queued = apply_anomaly_rules(conn, [(r.id, r.anomaly) for r in recorded
                                            if r.opened], "http://crashray.test")
        again = apply_anomaly_rules(conn, [(r.id, r.anomaly) for r in recorded],
                                    "http://crashray.test")
        conn.commit()
    assert (queued, again) == (1, 0)  # once per the rule's frequency
    [(rule_id, issue_id, event_id)] = deliveries(h)
    assert (rule_id, issue_id, event_id) == (int(rule["id"]), None, None)
    payload = h.sql("SELECT payload FROM notification_deliveries")[0][0]
    assert "dropped to 0" in str(payload)


def test_an_open_anomaly_lets_the_anomaly_rule_fire_on_the_next_event(h: Harness) -> None:
    from storage import anomalies, postgres

    new_rule(h, conditions=[{"id": ANOMALY, "scope": "project"}],
             filters=[{"id": LEVEL, "match": "gte", "level": "40"}])
    process(h, [error_event("before")])
    assert deliveries(h) == []
    with postgres.connect(h.url) as conn:
        anomalies.record(conn, "seasonal", [project_anomaly(h, "spike")])
        conn.commit()
    process(h, [error_event("during")])
    assert len(deliveries(h)) == 1
