"""Alert rules as a consumer applies them to a batch (issue 13), inside the batch's
transaction, on the counts the pipeline has: the issues' new events, their lifecycle
transitions, and per-issue window counts kept in PostgreSQL (storage/alert_rules.py) only
for projects whose rules ask for them. A rule that fires for an issue takes its
(rule, issue) slot and queues one delivery per action (storage/notifications.py); the
notifier actor sends them after the commit. Nothing here waits for a destination.

Sentry evaluates rules per event: "first seen" holds for the event that created the issue,
"regression"/"reappeared" for the first event after the transition, frequency conditions on
the windows as they are with the batch counted.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg

from events.alert_rules import (
    ANOMALY,
    AlertEvent,
    AlertIssue,
    AlertRule,
    RuleError,
    Window,
    parse_rule,
    rule_fires,
    windows_needed,
)
from events.anomaly import Anomaly
from events.notify import NotifiedIssue, NotifiedProject, delivery_payload
from storage import alert_rules as rule_store
from storage.anomalies import open_for_alerts
from storage.notifications import NewDelivery, enqueue
from storage.scope import ProjectScope

log = logging.getLogger("crashray.alerts")

#: The parts of an event a delivery carries (what Sentry's webhook payload shows).
EVENT_KEYS: Final = ("event_id", "level", "platform", "logger", "culprit", "transaction",
                     "message", "logentry", "exception", "tags", "user", "request",
                     "contexts", "release", "environment", "timestamp", "sdk", "fingerprint",
                     "extra", "modules")


@dataclass(frozen=True)
class BatchEvent:
    """One stored event of the batch, as the rules see it."""

    scope: ProjectScope
    issue_id: int
    event_id: str
    event: Mapping[str, Any]
    timestamp: dt.datetime
    title: str
    culprit: str


def alert_event(event: Mapping[str, Any]) -> AlertEvent:
    tags = event.get("tags") or []
    pairs = tags.items() if isinstance(tags, dict) else (
        (t[0], t[1]) for t in tags if isinstance(t, list | tuple) and len(t) == 2)
    found = {str(k): str(v) for k, v in pairs if k is not None and v is not None}
    return AlertEvent(str(event.get("level") or "error"), found,
                      _str(event.get("release")), _str(event.get("environment")))


def user_key(event: Mapping[str, Any]) -> str | None:
    """Who the event happened to, as Sentry's ``user`` tag names them."""
    user = event.get("user")
    if not isinstance(user, dict):
        return None
    for field, prefix in (("id", "id"), ("username", "username"), ("email", "email"),
                          ("ip_address", "ip")):
        value = user.get(field)
        if value not in (None, ""):
            return f"{prefix}:{value}"
    return None


def _str(value: object) -> str | None:
    return None if value is None else str(value)


class RuleCache:
    """The rules of each project, re-read every ``refresh_s``; a stored rule that no longer
    parses (a newer Crashray wrote it) is skipped and logged, never fails a batch."""

    def __init__(self, refresh_s: float) -> None:
        self.refresh_s = refresh_s
        self._rules: dict[int, tuple[float, list[tuple[rule_store.StoredRule, AlertRule]]]] = {}

    def rules(self, conn: psycopg.Connection[Any], scopes: Sequence[ProjectScope]
              ) -> dict[int, list[tuple[rule_store.StoredRule, AlertRule]]]:
        now = time.monotonic()
        stale = [s for s in scopes if now - self._rules.get(s.id, (-1e9, []))[0] > self.refresh_s]
        if stale:
            for project_id, stored in rule_store.rules_of_projects(conn, stale).items():
                parsed = []
                for rule in stored:
                    try:
                        parsed.append((rule, parse_rule(dict(rule.body), rule_id=rule.id)))
                    except RuleError as exc:
                        log.error("alert rule %s of project %s skipped: %s", rule.id,
                                  project_id, exc)
                self._rules[project_id] = (now, parsed)
        return {s.id: self._rules.get(s.id, (0.0, []))[1] for s in scopes}


def apply_rules(conn: psycopg.Connection[Any], cache: RuleCache, events: Sequence[BatchEvent],
                transitions: Mapping[int, str], base_url: str,
                now: dt.datetime | None = None) -> int:
    """Evaluate the projects' rules for the batch's ``events`` (new, counted) and queue the
    deliveries of those that fire; returns how many were queued."""
    if not events:
        return 0
    now = now or dt.datetime.now(dt.UTC)
    scopes = sorted({e.scope for e in events}, key=lambda s: s.id)
    rules = cache.rules(conn, scopes)
    events = [e for e in events if rules.get(e.scope.id)]
    if not events:
        return 0
    windows = {p: windows_needed([r for _, r in rs]) for p, rs in rules.items()}
    counted = [e for e in events if windows.get(e.scope.id)]
    if counted:
        with_users = any(w.kind == "users" for ws in windows.values() for w in ws)
        rule_store.count_for_alerts(conn, [
            rule_store.CountedForAlerts(e.issue_id, e.timestamp, user_key(e.event),
                                        _str(e.event.get("environment")))
            for e in counted], with_users)
    issue_ids = sorted({e.issue_id for e in events})
    issues = rule_store.issue_ages(conn, issue_ids)
    latest = rule_store.latest_releases(conn, scopes)
    anomalies: dict[int, list[dict[str, Any]]] = {}
    for scope in scopes:  # only where a rule asks: one query per such project
        if any(c.id == ANOMALY for _, r in rules.get(scope.id, []) for c in r.conditions):
            anomalies.update(open_for_alerts(conn, scope, sorted(
                {e.issue_id for e in events if e.scope == scope})))
    wanted = {(w.kind, w.seconds, w.offset_seconds, w.environment)
              for ws in windows.values() for w in ws}
    counts = rule_store.window_counts(conn, [e.issue_id for e in counted], wanted, now) \
        if wanted else {}
    batch_count: dict[int, int] = {}
    for e in events:
        batch_count[e.issue_id] = batch_count.get(e.issue_id, 0) + 1
    firing: list[tuple[BatchEvent, rule_store.StoredRule, AlertRule]] = []
    seen: set[int] = set()
    for e in sorted(events, key=lambda e: e.timestamp):
        first_seen, times_seen = issues.get(e.issue_id, (now, 0))
        first_of_issue = e.issue_id not in seen
        seen.add(e.issue_id)
        issue = AlertIssue(
            e.issue_id, first_seen, times_seen,
            is_new=first_of_issue and times_seen == batch_count[e.issue_id],
            transition=transitions.get(e.issue_id) if first_of_issue else None,
            counts={Window(k, s, o, env): n for (k, s, o, env), n
                    in counts.get(e.issue_id, {}).items()},
            latest_release=latest.get(e.scope.id), anomalies=anomalies.get(e.issue_id, ()))
        event = alert_event(e.event)
        for stored, rule in rules[e.scope.id]:
            if rule_fires(rule, event, issue, now):
                firing.append((e, stored, rule))
    if not firing:
        return 0
    granted = rule_store.claim_fires(conn, [(s.id, e.issue_id, s.frequency_minutes)
                                            for e, s, _ in firing], now)
    deliveries: list[NewDelivery] = []
    projects = rule_store.notified_projects(conn, scopes)
    for e, stored, rule in firing:
        if (stored.id, e.issue_id) not in granted:
            continue
        granted.discard((stored.id, e.issue_id))  # once per (rule, issue) in a batch
        payload = payload_of(e, stored, projects[e.scope.id], base_url)
        deliveries += [NewDelivery(e.scope.organization_id, e.scope.id, stored.id,
                                   e.issue_id, e.event_id, {"id": a.id, **a.fields}, payload)
                       for a in rule.actions]
    if deliveries:
        enqueue(conn, deliveries)
    return len(deliveries)


def payload_of(e: BatchEvent, rule: rule_store.StoredRule, project: NotifiedProject,
               base_url: str) -> dict[str, Any]:
    """What the notifier renders a notification from (events/notify.py)."""
    event = {k: e.event[k] for k in EVENT_KEYS if k in e.event}
    issue = NotifiedIssue(e.issue_id, e.title, e.culprit, str(e.event.get("level") or "error"))
    return delivery_payload(event={**event, "event_id": e.event_id}, issue=issue,
                            project=project, rule_names=[rule.name], base_url=base_url)


# --- anomalies (actors/detectors.py calls this as it records them) --------------------------
def anomaly_json(anomaly_id: int, a: Anomaly) -> dict[str, Any]:
    return {"id": str(anomaly_id), "scope": a.scope, "kind": a.kind, "direction": a.direction,
            "score": float(a.score), "explanation": a.explanation}


def apply_anomaly_rules(conn: psycopg.Connection[Any], opened: Sequence[tuple[int, Anomaly]],
                        base_url: str, now: dt.datetime | None = None) -> int:
    """Rules with Crashray's anomaly condition, for anomalies a detector has just opened: a
    drop to zero has no event to be evaluated with, so the detector, not the consumer,
    fires them. Filters see an event of level ``warning`` carrying the anomaly (tag
    ``anomaly``: its kind); the slot is per (rule, issue), a project's anomaly taking issue
    0. Inside the detector's transaction; returns the deliveries queued."""
    if not opened:
        return 0
    now = now or dt.datetime.now(dt.UTC)
    scopes = sorted({ProjectScope(a.organization_id, a.project_id) for _, a in opened},
                    key=lambda s: s.id)
    stored_rules = rule_store.rules_of_projects(conn, scopes)
    projects = rule_store.notified_projects(conn, scopes)
    issues = rule_store.issue_ages(
        conn, sorted({a.issue_id for _, a in opened if a.issue_id is not None}))
    firing: list[tuple[int, Anomaly, rule_store.StoredRule, AlertRule]] = []
    for anomaly_id, a in opened:
        event = AlertEvent("warning", {"anomaly": a.kind}, None, None)
        first_seen, times_seen = issues.get(a.issue_id or 0, (now, 0))
        for stored in stored_rules.get(a.project_id, []):
            try:
                rule = parse_rule(dict(stored.body), rule_id=stored.id)
            except RuleError:
                continue
            if not any(c.id == ANOMALY for c in rule.conditions):
                continue
            issue = AlertIssue(a.issue_id or 0, first_seen, times_seen, is_new=False,
                               transition=None,
                               counts=dict.fromkeys(windows_needed([rule]), 0),
                               anomalies=[anomaly_json(anomaly_id, a)])
            if rule_fires(rule, event, issue, now):
                firing.append((anomaly_id, a, stored, rule))
    granted = rule_store.claim_fires(conn, [(s.id, a.issue_id or 0, s.frequency_minutes)
                                            for _, a, s, _ in firing], now)
    deliveries: list[NewDelivery] = []
    for anomaly_id, a, stored, rule in firing:
        if (stored.id, a.issue_id or 0) not in granted:
            continue
        granted.discard((stored.id, a.issue_id or 0))
        shown = {"event_id": None, "level": "warning", "message": a.explanation,
                 "tags": [["anomaly", a.kind], ["direction", a.direction]],
                 "extra": {"anomaly": anomaly_json(anomaly_id, a),
                           "evidence": dict(a.evidence)}}
        notified = None if a.issue_id is None else NotifiedIssue(
            a.issue_id, a.explanation, None, "warning")
        payload = delivery_payload(event=shown, issue=notified,
                                   project=projects[a.project_id],
                                   rule_names=[stored.name], base_url=base_url)
        deliveries += [NewDelivery(a.organization_id, a.project_id, stored.id, a.issue_id,
                                   None, {"id": item.id, **item.fields}, payload)
                       for item in rule.actions]
    if deliveries:
        enqueue(conn, deliveries)
    return len(deliveries)
