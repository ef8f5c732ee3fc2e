"""Alert notifications in PostgreSQL: the deliveries outbox, its log, the projects' legacy
WebHooks plugin URLs and the health of each destination (migration 0023).

Order that neither loses nor silently drops a notification:

  the consumer's batch transaction ``enqueue``s one row per (action, destination) and
  ``NOTIFY``s → commit (no commit, no notification) → a notifier ``claim``s due rows under
  a lease (``FOR UPDATE SKIP LOCKED``; the claim counts an attempt) → sends →
  ``record``s the outcome, only if its claim still holds (same attempt number, still
  ``sending``).

A notifier that dies after claiming leaves its rows leased; once the lease has run out,
another claims them. While a lease is live nobody else does, so a row is sent twice only
when a notifier died (or lost PostgreSQL) between sending and recording: at least once.
Each failed attempt counts against its destination (``notification_destination_health``);
a success resets it; ``destination_warnings`` lists those that keep failing.

Every read and write of one project's rows names the organization and the project
(``ProjectScope``). ``claim`` and ``prune`` serve the notifier across all tenants.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

from events.notify import (
    NOTIFY_EVENT_SERVICE_ACTION,
    SENTRY_EMAIL_ACTION,
    Destination,
    EmailRecipients,
    InvalidNotification,
    NextStep,
    SendOutcome,
    action_destinations,
)
from storage.scope import ProjectScope

#: PostgreSQL NOTIFY channel that wakes the notifier when deliveries are queued.
NOTIFY_CHANNEL: Final = "crashray_notifications"
#: Arbitrary constant for pg_try_advisory_xact_lock: one notifier prunes at a time.
_PRUNE_LOCK_ID: Final = 0x6E6F7469
#: What the log shows instead of an action's secret.
REDACTED: Final = "********"
_SECRET_FIELDS: Final = frozenset({"secret", "password", "token"})


@dataclass(frozen=True)
class NewDelivery:
    """A fired rule action (or a test notification: ``rule_id`` None) to deliver."""

    organization_id: int
    project_id: int
    rule_id: int | None
    issue_id: int | None
    event_id: str | None
    #: The rule's action item (``{"id": …, …fields}``).
    action: Mapping[str, Any]
    #: events/notify.py ``delivery_payload``.
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Delivery:
    """One row of the delivery log (the action's secrets redacted)."""

    id: int
    organization_id: int
    project_id: int
    rule_id: int | None
    issue_id: int | None
    event_id: str | None
    action: Mapping[str, Any]
    destination: str
    status: str
    attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None
    last_response_code: int | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a notifier holds under a lease; ``attempts`` counts this one."""

    id: int
    organization_id: int
    project_id: int
    destination: str
    action: Mapping[str, Any]
    payload: Mapping[str, Any]
    attempts: int


@dataclass(frozen=True)
class DestinationWarning:
    destination: str
    consecutive_failures: int
    last_error: str | None
    last_response_code: int | None
    last_failure_at: dt.datetime | None


@dataclass(frozen=True)
class WebhookPlugin:
    urls: tuple[str, ...]
    enabled: bool


def _redacted(action: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (REDACTED if k in _SECRET_FIELDS and v else v) for k, v in action.items()}


# --- enqueue -----------------------------------------------------------------------------

def enqueue(conn: psycopg.Connection[Any], deliveries: Sequence[NewDelivery]) -> list[int]:
    """Queue ``deliveries`` in the caller's transaction, one row per destination of each
    action; returns the row ids. An action that has nowhere to go (no webhook plugin URL,
    a member without an address) is recorded as a failed row with the reason and counts
    against the project's health: shown, never silently dropped."""
    ids: list[int] = []
    plugin_urls: dict[int, list[str]] = {}
    member_emails: dict[int, dict[int, str]] = {}
    pending = False
    for d in deliveries:
        urls = (plugin_urls.setdefault(d.project_id, _enabled_plugin_urls(conn, d))
                if d.action.get("id") == NOTIFY_EVENT_SERVICE_ACTION else [])
        recipients = EmailRecipients()
        if d.action.get("id") == SENTRY_EMAIL_ACTION:
            recipients = _recipients(conn, d, member_emails.setdefault(
                d.organization_id, _member_emails(conn, d)))
        try:
            destinations = _destinations(d.action, urls, recipients)
        except InvalidNotification as exc:
            ids.append(_insert_undeliverable(conn, d, exc.detail))
            continue
        for destination in destinations:
            ids.append(_insert(conn, d, destination.key()))
            pending = True
    if pending:
        conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
    return ids


def _destinations(action: Mapping[str, Any], urls: Sequence[str],
                  recipients: EmailRecipients) -> list[Destination]:
    """Where the action goes; none only for an "Issue Owners" e-mail that falls through to
    no one (nothing to send, as Sentry: not a failure)."""
    destinations = action_destinations(action, urls, recipients)
    if not destinations and action.get("id") == NOTIFY_EVENT_SERVICE_ACTION:
        raise InvalidNotification(
            f"action {action.get('id')}: the project's WebHooks plugin has no URLs (or is"
            " disabled); set them with PUT /api/0/projects/{org}/{project}/plugins/webhooks/")
    return destinations


def _insert(conn: psycopg.Connection[Any], d: NewDelivery, destination: str) -> int:
    row = conn.execute(
        "INSERT INTO notification_deliveries (organization_id, project_id, rule_id,"
        " issue_id, event_id, action, destination, payload)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (d.organization_id, d.project_id, d.rule_id, d.issue_id, d.event_id,
         Jsonb(dict(d.action)), destination, Jsonb(dict(d.payload)))).fetchone()
    assert row is not None
    return int(row[0])


def _insert_undeliverable(conn: psycopg.Connection[Any], d: NewDelivery, reason: str) -> int:
    destination = f"action:{d.action.get('id')}"
    row = conn.execute(
        "INSERT INTO notification_deliveries (organization_id, project_id, rule_id,"
        " issue_id, event_id, action, destination, payload, status, last_error)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'failed', %s) RETURNING id",
        (d.organization_id, d.project_id, d.rule_id, d.issue_id, d.event_id,
         Jsonb(dict(d.action)), destination, Jsonb(dict(d.payload)), reason)).fetchone()
    assert row is not None
    _count_failure(conn, d.organization_id, d.project_id, destination, reason, None, None)
    return int(row[0])


def _enabled_plugin_urls(conn: psycopg.Connection[Any], d: NewDelivery) -> list[str]:
    row = conn.execute(
        "SELECT urls FROM project_webhook_plugins"
        " WHERE project_id = %s AND organization_id = %s AND enabled",
        (d.project_id, d.organization_id)).fetchone()
    return list(row[0]) if row else []


def _recipients(conn: psycopg.Connection[Any], d: NewDelivery, members: dict[int, str]
                ) -> EmailRecipients:
    """The addresses Sentry's e-mail action ``d.action`` may need, in the delivery's
    organization only: its members, the issue's owners ("IssueOwners"), the team's
    members ("Team")."""
    target = d.action.get("targetType")
    owners: tuple[str, ...] = ()
    teams: dict[int, tuple[str, ...]] = {}
    subscribers: tuple[str, ...] = ()
    if target == "IssueOwners" and d.issue_id is not None:
        owners = _issue_owner_emails(conn, d)
    if target == "IssueSubscribers" and d.issue_id is not None:
        subscribers = _issue_subscriber_emails(conn, d)
    if target == "Team" and str(d.action.get("targetIdentifier", "")).isdigit():
        team_id = int(str(d.action["targetIdentifier"]))
        teams[team_id] = _team_emails(conn, d.organization_id, team_id)
    return EmailRecipients(members, owners, teams, subscribers)


#: Members of an organization (first %s) with an address, in a team (then one).
_TEAM_MEMBER_EMAILS: Final = (
    "SELECT u.email FROM team_members tm JOIN organization_members m ON m.id = tm.member_id"
    " JOIN teams t ON t.id = tm.team_id AND t.organization_id = m.organization_id"
    " JOIN users u ON u.id = m.user_id WHERE m.organization_id = %s AND tm.team_id = {team}"
    " AND u.email IS NOT NULL AND u.email <> ''")


def _issue_owner_emails(conn: psycopg.Connection[Any], d: NewDelivery) -> tuple[str, ...]:
    """The issue's assigned member, or its assigned team's members, with an address; only
    for an issue of the delivery's project and organization."""
    issue = ("(SELECT i.{column} FROM issues i JOIN projects p ON p.id = i.project_id"
             " WHERE i.id = %s AND i.project_id = %s AND p.organization_id = %s)")
    rows = conn.execute(
        "SELECT u.email FROM organization_members m JOIN users u ON u.id = m.user_id"
        " WHERE m.organization_id = %s AND u.email IS NOT NULL AND u.email <> ''"
        f" AND u.id = {issue.format(column='assignee_user_id')}"
        f" UNION {_TEAM_MEMBER_EMAILS.format(team=issue.format(column='assignee_team_id'))}"
        " ORDER BY 1",
        (d.organization_id, d.issue_id, d.project_id, d.organization_id,
         d.organization_id, d.issue_id, d.project_id, d.organization_id)).fetchall()
    return tuple(str(r[0]) for r in rows)


def _issue_subscriber_emails(conn: psycopg.Connection[Any], d: NewDelivery
                             ) -> tuple[str, ...]:
    """The members of the delivery's organization who follow its issue (an active
    subscription: storage/triage.py), with an address; only for an issue of the delivery's
    project and organization."""
    rows = conn.execute(
        "SELECT u.email FROM issue_subscriptions s"
        " JOIN issues i ON i.id = s.issue_id AND i.project_id = %s"
        " JOIN projects p ON p.id = i.project_id AND p.organization_id = %s"
        " JOIN organization_members m ON m.user_id = s.user_id AND m.organization_id = %s"
        " JOIN users u ON u.id = s.user_id"
        " WHERE s.issue_id = %s AND s.is_active AND u.email IS NOT NULL AND u.email <> ''"
        " ORDER BY 1",
        (d.project_id, d.organization_id, d.organization_id, d.issue_id)).fetchall()
    return tuple(str(r[0]) for r in rows)


def _team_emails(conn: psycopg.Connection[Any], organization_id: int, team_id: int
                 ) -> tuple[str, ...]:
    rows = conn.execute(_TEAM_MEMBER_EMAILS.format(team="%s") + " ORDER BY 1",
                        (organization_id, team_id)).fetchall()
    return tuple(str(r[0]) for r in rows)


def _member_emails(conn: psycopg.Connection[Any], d: NewDelivery) -> dict[int, str]:
    rows = conn.execute(
        "SELECT u.id, u.email FROM organization_members m JOIN users u ON u.id = m.user_id"
        " WHERE m.organization_id = %s AND u.email IS NOT NULL AND u.email <> ''",
        (d.organization_id,)).fetchall()
    return {int(r[0]): str(r[1]) for r in rows}


# --- the notifier's side -------------------------------------------------------------------

def listen(url: str) -> psycopg.Connection[Any]:
    """A connection notified whenever deliveries are queued (``conn.notifies(timeout=…)``)."""
    listener = psycopg.connect(url, autocommit=True)
    listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
    return listener


def claim(conn: psycopg.Connection[Any], max_rows: int, lease_s: float,
          now: dt.datetime | None = None, max_attempts: int | None = None
          ) -> list[ClaimedDelivery]:
    """Claim up to ``max_rows`` due deliveries (pending and due, or sending with a lease
    run out), oldest due first, for ``lease_s``; counts the attempt. Commits at once so
    other notifiers see the lease. ``now`` None: PostgreSQL's clock.

    A leased row whose lease ran out after its ``max_attempts``-th attempt is failed
    instead: the notifiers holding it stopped before recording each time (a delivery
    that crashes its notifier must not be retried forever)."""
    if max_rows <= 0:
        return []
    with conn.transaction():
        if max_attempts is not None:
            _fail_abandoned(conn, max_attempts, now)
        rows = conn.execute(
            "WITH t AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now)"
            " UPDATE notification_deliveries d SET status = 'sending',"
            " claimed_until = t.now + make_interval(secs => %(lease)s),"
            " attempts = d.attempts + 1"
            " FROM t, (SELECT id FROM notification_deliveries, t"
            "   WHERE status IN ('pending', 'sending') AND next_attempt_at <= t.now"
            "   AND (claimed_until IS NULL OR claimed_until <= t.now)"
            "   ORDER BY next_attempt_at, id LIMIT %(n)s FOR UPDATE SKIP LOCKED) c"
            " WHERE d.id = c.id RETURNING d.id, d.organization_id, d.project_id,"
            " d.destination, d.action, d.payload, d.attempts",
            {"now": now, "lease": lease_s, "n": max_rows}).fetchall()
    return [ClaimedDelivery(int(r[0]), int(r[1]), int(r[2]), str(r[3]), r[4], r[5], int(r[6]))
            for r in sorted(rows, key=lambda r: int(r[0]))]


def _fail_abandoned(conn: psycopg.Connection[Any], max_attempts: int,
                    now: dt.datetime | None) -> None:
    rows = conn.execute(
        "WITH t AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now)"
        " UPDATE notification_deliveries d SET status = 'failed', claimed_until = NULL,"
        " last_error = 'the notifier stopped before recording the outcome of each of the '"
        "              || d.attempts || ' attempts'"
        " FROM t WHERE d.status = 'sending' AND d.claimed_until <= t.now"
        " AND d.attempts >= %(max)s"
        " RETURNING d.organization_id, d.project_id, d.destination, d.last_error",
        {"now": now, "max": max_attempts}).fetchall()
    for r in rows:
        _count_failure(conn, int(r[0]), int(r[1]), str(r[2]), str(r[3]), None, now)


def record(conn: psycopg.Connection[Any], claimed: ClaimedDelivery, outcome: SendOutcome,
           step: NextStep, now: dt.datetime | None = None) -> bool:
    """Record an attempt's outcome and what follows (``events.notify.next_step``), and the
    destination's health, in one transaction. False if the claim no longer holds (the
    lease ran out and another notifier claimed the row): nothing is written then."""
    with conn.transaction():
        row = conn.execute(
            "WITH t AS (SELECT coalesce(%(now)s::timestamptz, now()) AS now)"
            " UPDATE notification_deliveries d SET status = %(status)s,"
            " claimed_until = NULL, last_response_code = %(code)s,"
            " last_error = CASE WHEN %(status)s = 'delivered' THEN d.last_error"
            "                   ELSE %(error)s END,"
            " delivered_at = CASE WHEN %(status)s = 'delivered' THEN t.now END,"
            " next_attempt_at = t.now + make_interval(secs => %(retry)s)"
            " FROM t WHERE d.id = %(id)s AND d.attempts = %(attempts)s"
            " AND d.status = 'sending' RETURNING d.id",
            {"now": now, "status": step.status, "code": outcome.response_code,
             "error": outcome.error, "retry": step.retry_in_s, "id": claimed.id,
             "attempts": claimed.attempts}).fetchone()
        if row is None:
            return False
        if outcome.delivered:
            _count_success(conn, claimed, now)
        else:
            _count_failure(conn, claimed.organization_id, claimed.project_id,
                           claimed.destination, outcome.error, outcome.response_code, now)
    return True


def _count_success(conn: psycopg.Connection[Any], c: ClaimedDelivery,
                   now: dt.datetime | None) -> None:
    conn.execute(
        "INSERT INTO notification_destination_health AS h (project_id, organization_id,"
        " destination, consecutive_failures, last_success_at)"
        " VALUES (%(p)s, %(o)s, %(d)s, 0, coalesce(%(now)s::timestamptz, now()))"
        " ON CONFLICT (project_id, destination) DO UPDATE SET consecutive_failures = 0,"
        " last_success_at = excluded.last_success_at",
        {"p": c.project_id, "o": c.organization_id, "d": c.destination, "now": now})


def _count_failure(conn: psycopg.Connection[Any], organization_id: int, project_id: int,
                   destination: str, error: str | None, code: int | None,
                   now: dt.datetime | None) -> None:
    conn.execute(
        "INSERT INTO notification_destination_health AS h (project_id, organization_id,"
        " destination, consecutive_failures, last_error, last_response_code, last_failure_at)"
        " VALUES (%(p)s, %(o)s, %(d)s, 1, %(e)s, %(c)s, coalesce(%(now)s::timestamptz, now()))"
        " ON CONFLICT (project_id, destination) DO UPDATE SET"
        " consecutive_failures = h.consecutive_failures + 1, last_error = excluded.last_error,"
        " last_response_code = excluded.last_response_code,"
        " last_failure_at = excluded.last_failure_at",
        {"p": project_id, "o": organization_id, "d": destination, "e": error, "c": code,
         "now": now})


def prune(conn: psycopg.Connection[Any], delivered_before: dt.datetime,
          failed_before: dt.datetime, max_rows: int) -> int:
    """Delete up to ``max_rows`` delivered rows delivered before ``delivered_before`` and
    failed rows created before ``failed_before``; one notifier at a time (the others skip).
    Returns the rows deleted."""
    with conn.transaction():
        locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s)",
                              (_PRUNE_LOCK_ID,)).fetchone()
        if not locked or not locked[0]:
            return 0
        cur = conn.execute(
            "DELETE FROM notification_deliveries WHERE id IN ("
            " (SELECT id FROM notification_deliveries WHERE status = 'delivered'"
            "  AND delivered_at < %(d)s LIMIT %(n)s)"
            " UNION ALL (SELECT id FROM notification_deliveries WHERE status = 'failed'"
            "  AND created_at < %(f)s LIMIT %(n)s))",
            {"d": delivered_before, "f": failed_before, "n": max_rows})
        return cur.rowcount


# --- per project: the log, the plugin, the warnings ------------------------------------------

_DELIVERY_COLUMNS: Final = (
    "id, organization_id, project_id, rule_id, issue_id, event_id, action, destination,"
    " status, attempts, next_attempt_at, last_error, last_response_code, created_at,"
    " delivered_at")


def deliveries(conn: psycopg.Connection[Any], scope: ProjectScope, rule_id: int | None,
               limit: int) -> list[Delivery]:
    """The project's delivery log, newest first: all of it, or one rule's (``rule_id``)."""
    rule_clause = "" if rule_id is None else " AND rule_id = %(rule)s"
    rows = conn.execute(
        f"SELECT {_DELIVERY_COLUMNS} FROM notification_deliveries"
        f" WHERE organization_id = %(org)s AND project_id = %(project)s{rule_clause}"
        " ORDER BY created_at DESC, id DESC LIMIT %(limit)s",
        {"org": scope.organization_id, "project": scope.id, "rule": rule_id,
         "limit": limit}).fetchall()
    return [Delivery(int(r[0]), int(r[1]), int(r[2]), r[3], r[4], r[5], _redacted(r[6]),
                     *r[7:]) for r in rows]


def delivery(conn: psycopg.Connection[Any], scope: ProjectScope, delivery_id: int
             ) -> Delivery | None:
    """One delivery of the project, or None (also when it is another project's)."""
    r = conn.execute(
        f"SELECT {_DELIVERY_COLUMNS} FROM notification_deliveries"
        " WHERE id = %s AND organization_id = %s AND project_id = %s",
        (delivery_id, scope.organization_id, scope.id)).fetchone()
    return None if r is None else Delivery(int(r[0]), int(r[1]), int(r[2]), r[3], r[4], r[5],
                                           _redacted(r[6]), *r[7:])


def webhook_plugin(conn: psycopg.Connection[Any], scope: ProjectScope) -> WebhookPlugin:
    """The project's legacy WebHooks plugin (no URLs, enabled, when never set)."""
    row = conn.execute(
        "SELECT urls, enabled FROM project_webhook_plugins"
        " WHERE project_id = %s AND organization_id = %s",
        (scope.id, scope.organization_id)).fetchone()
    return WebhookPlugin(tuple(row[0]), bool(row[1])) if row else WebhookPlugin((), True)


def set_webhook_plugin(conn: psycopg.Connection[Any], scope: ProjectScope, *,
                       urls: Sequence[str] | None = None, enabled: bool | None = None
                       ) -> WebhookPlugin:
    """Change the URLs (already parsed: ``events.notify.parse_webhook_urls``) and/or the
    enabled flag; returns the plugin as stored. A project outside ``scope``'s organization
    is left alone (and reads back empty)."""
    conn.execute(
        "INSERT INTO project_webhook_plugins AS w (project_id, organization_id, urls, enabled)"
        " SELECT id, organization_id, coalesce(%(urls)s::text[], '{}'),"
        "        coalesce(%(enabled)s::boolean, true)"
        " FROM projects WHERE id = %(project)s AND organization_id = %(org)s"
        " ON CONFLICT (project_id) DO UPDATE SET urls = coalesce(%(urls)s::text[], w.urls),"
        " enabled = coalesce(%(enabled)s::boolean, w.enabled), updated_at = now()",
        {"urls": None if urls is None else list(urls), "enabled": enabled,
         "project": scope.id, "org": scope.organization_id})
    return webhook_plugin(conn, scope)


def destination_warnings(conn: psycopg.Connection[Any], scope: ProjectScope,
                         threshold: int) -> list[DestinationWarning]:
    """The project's destinations whose last ``threshold`` or more attempts all failed,
    worst first: what the project page shows as a warning."""
    rows = conn.execute(
        "SELECT destination, consecutive_failures, last_error, last_response_code,"
        " last_failure_at FROM notification_destination_health"
        " WHERE organization_id = %s AND project_id = %s AND consecutive_failures >= %s"
        " ORDER BY consecutive_failures DESC, destination",
        (scope.organization_id, scope.id, threshold)).fetchall()
    return [DestinationWarning(str(r[0]), int(r[1]), r[2], r[3], r[4]) for r in rows]
