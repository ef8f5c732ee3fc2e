"""What an alert notification says and where it goes (pure: no I/O).

A fired rule action becomes one delivery per destination (storage/notifications.py); a
delivery carries a *payload* built here by ``delivery_payload`` when the rule fires, and
the notifier (actors/notifier.py) renders it when it sends:

- ``webhook_body``: the JSON Sentry's legacy WebHooks plugin posts (sentry-plugins
  ``webhooks``; fields documented on Sentry's "Webhook Plugin" page: ``id`` (the issue id
  as a string), ``project``, ``project_name``, ``project_slug``, ``logger``, ``level``,
  ``culprit``, ``message``, ``url``, ``triggering_rules``, ``event`` with ``event_id`` and
  ``id`` (the same value, "for backwards compatibility") and ``tags`` as ``[[key, value]]``),
  signed by ``signature_headers`` when the action has a secret;
- ``slack_message``: a Slack incoming-webhook message (``text`` + ``attachments``), which
  Mattermost and Discord's ``/slack`` endpoint take as they are;
- ``email_message``: subject, plain text and HTML (every value escaped).

Errors: ``InvalidNotification`` (400) for actions and webhook URL lists that cannot be
delivered, naming the field and what to do; ``InvalidNotifySettings`` (400) for notifier
settings that contradict each other.
"""

from __future__ import annotations

import hashlib
import hmac
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from events.errors import BadRequest

#: Sentry's "send a notification via a service" action; service "webhooks" posts to the
#: project's legacy WebHooks plugin URLs.
NOTIFY_EVENT_SERVICE_ACTION: Final = (
    "sentry.rules.actions.notify_event_service.NotifyEventServiceAction")
WEBHOOK_ACTION: Final = "crashray.actions.webhook"
SLACK_ACTION: Final = "crashray.actions.slack"
EMAIL_ACTION: Final = "crashray.actions.email"
#: Sentry's e-mail action: targetType "IssueOwners" (with its fallthroughType), "Team" or
#: "Member" (targetIdentifier: the team or user id), and Crashray's "IssueSubscribers".
SENTRY_EMAIL_ACTION: Final = "sentry.mail.actions.NotifyEmailAction"

#: Header carrying ``sha256=<hex HMAC-SHA256 of the body keyed with the action's secret>``.
SIGNATURE_HEADER: Final = "X-Crashray-Signature"
#: Header carrying the Unix time (seconds) the notifier sent the request at.
TIMESTAMP_HEADER: Final = "X-Crashray-Timestamp"
#: Longest webhook URL list of a project (Sentry's plugin takes a text area; tens at most).
MAX_PLUGIN_URLS: Final = 50
MAX_URL_CHARS: Final = 2048

#: Slack attachment colours per level (Sentry's level colours).
_LEVEL_COLORS: Final = {"fatal": "#d20f2a", "error": "#e03e2f", "warning": "#f5b000",
                        "info": "#2788ce", "debug": "#bdbdbd"}


class InvalidNotification(BadRequest):
    code = "invalid_notification"


class InvalidNotifySettings(BadRequest):
    """CRASHRAY_NOTIFY_* settings that contradict each other (actors/notifier.py)."""

    code = "invalid_notify_settings"


@dataclass(frozen=True)
class NotifiedProject:
    id: int
    slug: str
    name: str
    organization_slug: str


@dataclass(frozen=True)
class NotifiedIssue:
    id: int
    title: str
    culprit: str | None
    level: str
    short_id: str | None = None


@dataclass(frozen=True)
class Destination:
    """Where one delivery goes: ``kind`` "webhook", "slack" or "email"; ``target`` the URL
    or the comma-separated addresses."""

    kind: str
    target: str

    def key(self) -> str:
        return f"{self.kind}:{self.target}"

    @staticmethod
    def parse(key: str) -> Destination:
        kind, _, target = key.partition(":")
        if kind not in ("webhook", "slack", "email") or not target:
            raise InvalidNotification(f"destination {key!r} is not kind:target")
        return Destination(kind, target)

    def addresses(self) -> list[str]:
        return [a for a in self.target.split(",") if a]


def issue_url(base_url: str, organization_slug: str, issue_id: int) -> str:
    """The issue page (the API's ``permalink``)."""
    return f"{base_url.rstrip('/')}/organizations/{organization_slug}/issues/{issue_id}/"


def delivery_payload(*, event: Mapping[str, Any], issue: NotifiedIssue | None,
                     project: NotifiedProject, rule_names: Sequence[str],
                     base_url: str) -> dict[str, Any]:
    """What a delivery stores for rendering: the event, the issue, the project and the
    names of the rules that fired (``issue`` None: a test notification of no issue)."""
    return {
        "event": dict(event),
        "issue": None if issue is None else {
            "id": issue.id, "title": issue.title, "culprit": issue.culprit,
            "level": issue.level, "short_id": issue.short_id,
            "url": issue_url(base_url, project.organization_slug, issue.id)},
        "project": {"id": project.id, "slug": project.slug, "name": project.name,
                    "organization_slug": project.organization_slug},
        "rules": list(rule_names),
    }


def _tag_pairs(tags: Any) -> list[list[str]]:
    """Tags as Sentry stores them on an event, ``[[key, value], …]``, from either form."""
    if isinstance(tags, Mapping):
        return [[str(k), str(v)] for k, v in tags.items()]
    pairs: list[list[str]] = []
    if isinstance(tags, Sequence) and not isinstance(tags, str):
        for tag in tags:
            if isinstance(tag, Sequence) and not isinstance(tag, str) and len(tag) == 2:
                pairs.append([str(tag[0]), str(tag[1])])
    return pairs


def _tag(event: Mapping[str, Any], key: str) -> str | None:
    return next((v for k, v in _tag_pairs(event.get("tags")) if k == key), None)


def _message(event: Mapping[str, Any], issue: Mapping[str, Any] | None) -> str:
    """The event's message (``logentry``/``message``), else the issue title."""
    logentry = event.get("logentry")
    if isinstance(logentry, Mapping):
        text = logentry.get("formatted") or logentry.get("message")
        if isinstance(text, str) and text:
            return text
    message = event.get("message")
    if isinstance(message, str) and message:
        return message
    if isinstance(message, Mapping) and isinstance(message.get("formatted"), str):
        return str(message["formatted"])
    return str((issue or {}).get("title") or event.get("title") or "")


def _summary(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The fields every rendering shares."""
    event: Mapping[str, Any] = payload.get("event") or {}
    issue: Mapping[str, Any] | None = payload.get("issue")
    project: Mapping[str, Any] = payload["project"]
    level = str(event.get("level") or (issue or {}).get("level") or "error")
    culprit = (issue or {}).get("culprit") or event.get("culprit") or event.get("transaction")
    return {
        "issue_id": None if issue is None else str(issue["id"]),
        "title": str((issue or {}).get("title") or event.get("title") or _message(event, issue)
                     or "(no title)"),
        "message": _message(event, issue), "level": level,
        "culprit": None if culprit is None else str(culprit),
        "url": None if issue is None else issue.get("url"),
        "project_slug": str(project["slug"]), "project_name": str(project["name"]),
        "environment": event.get("environment") or _tag(event, "environment"),
        "release": event.get("release") or _tag(event, "release"),
        "logger": event.get("logger") or _tag(event, "logger"),
        "rules": [str(r) for r in payload.get("rules") or ()],
    }


def webhook_body(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Sentry's legacy WebHooks plugin body for a delivery's payload."""
    s = _summary(payload)
    event = dict(payload.get("event") or {})
    event_id = event.get("event_id")
    event.update(id=event_id, event_id=event_id, tags=_tag_pairs(event.get("tags")))
    return {"id": s["issue_id"], "project": s["project_slug"],
            "project_name": s["project_name"], "project_slug": s["project_slug"],
            "logger": s["logger"], "level": s["level"], "culprit": s["culprit"],
            "message": s["message"], "url": s["url"], "triggering_rules": s["rules"],
            "event": event}


def signature(body: bytes, secret: str) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of the exact request body keyed with ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_headers(body: bytes, secret: str | None, timestamp_s: int) -> dict[str, str]:
    """The headers a webhook request carries: the timestamp always, the signature when
    the action has a secret (Sentry's legacy plugin signs nothing)."""
    headers = {TIMESTAMP_HEADER: str(timestamp_s)}
    if secret:
        headers[SIGNATURE_HEADER] = signature(body, secret)
    return headers


def signature_valid(body: bytes, secret: str, header_value: str) -> bool:
    """What a receiver checks (constant-time comparison)."""
    return hmac.compare_digest(signature(body, secret), header_value)


def _slack_escape(text: str) -> str:
    # Slack's message formatting: &, < and > are control characters and must be escaped
    # (api.slack.com "Escaping text"); Mattermost and Discord's /slack accept the same.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(payload: Mapping[str, Any], channel: str | None = None) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` (the notification's one line, which every
    Slack-compatible endpoint shows) and one attachment with the title linked to the issue,
    the culprit and level, environment and release fields. Attachments rather than Block
    Kit: Mattermost and Discord's Slack-compatible endpoints render attachments only."""
    s = _summary(payload)
    title = _slack_escape(s["title"])
    fields = [{"title": "Level", "value": s["level"], "short": True}]
    for name in ("environment", "release"):
        if s[name]:
            fields.append({"title": name.capitalize(), "value": _slack_escape(str(s[name])),
                           "short": True})
    attachment: dict[str, Any] = {
        "fallback": f"[{s['project_slug']}] {title}", "title": title,
        "color": _LEVEL_COLORS.get(s["level"], _LEVEL_COLORS["error"]),
        "text": _slack_escape(s["culprit"] or ""), "fields": fields,
        "footer": _slack_escape(f"{s['project_name']} · " + ", ".join(s["rules"])
                                if s["rules"] else s["project_name"])}
    if s["url"]:
        attachment["title_link"] = s["url"]
    message: dict[str, Any] = {
        "text": f"[{_slack_escape(s['project_slug'])}] {title}", "attachments": [attachment]}
    if channel:
        message["channel"] = channel
    return message


@dataclass(frozen=True)
class EmailContent:
    subject: str
    text: str
    html: str


def email_message(payload: Mapping[str, Any]) -> EmailContent:
    """The alert e-mail: subject ``[Crashray] <project>: <title>`` (one line), plain text
    and HTML with the issue link; every value from the event is HTML-escaped."""
    s = _summary(payload)
    subject = " ".join(f"[Crashray] {s['project_slug']}: {s['title']}".split())[:200]
    rows = [("Project", s["project_name"]), ("Level", s["level"]), ("Culprit", s["culprit"]),
            ("Environment", s["environment"]), ("Release", s["release"]),
            ("Rules", ", ".join(s["rules"]) or None)]
    present = [(k, str(v)) for k, v in rows if v]
    text_lines = [s["title"], ""] + [f"{k}: {v}" for k, v in present]
    if s["message"] and s["message"] != s["title"]:
        text_lines += ["", s["message"]]
    if s["url"]:
        text_lines += ["", f"View the issue: {s['url']}"]
    e = html.escape
    table = "".join(f"<tr><th align=\"left\">{e(k)}</th><td>{e(v)}</td></tr>"
                    for k, v in present)
    link = (f"<p><a href=\"{e(s['url'])}\">View the issue</a></p>" if s["url"] else "")
    body = (f"<html><body><h2>{e(s['title'])}</h2><table>{table}</table>"
            + (f"<pre>{e(s['message'])}</pre>" if s["message"] != s["title"] else "")
            + f"{link}</body></html>")
    return EmailContent(subject, "\n".join(text_lines) + "\n", body)


def _http_url(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidNotification(f"{where}: expected an http(s) URL, got {value!r}")
    url = value.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidNotification(
            f"{where}: {url[:200]!r} is not an http:// or https:// URL with a host")
    if len(url) > MAX_URL_CHARS or any(c.isspace() for c in url):
        raise InvalidNotification(
            f"{where}: the URL must be at most {MAX_URL_CHARS} characters without spaces")
    return url


def parse_webhook_urls(text: Any) -> list[str]:
    """The legacy WebHooks plugin's ``urls`` option: one http(s) URL a line (blank lines
    ignored, duplicates kept once, in order)."""
    if not isinstance(text, str):
        raise InvalidNotification(f'"urls": expected a string of URLs one per line, '
                                  f"got {type(text).__name__}")
    urls: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            url = _http_url(line, f'"urls" line {number}')
            if url not in urls:
                urls.append(url)
    if len(urls) > MAX_PLUGIN_URLS:
        raise InvalidNotification(
            f'"urls": {len(urls)} URLs, at most {MAX_PLUGIN_URLS} are allowed')
    return urls


@dataclass(frozen=True)
class EmailRecipients:
    """Whom Sentry's e-mail action may address, as storage found them in the delivery's
    organization: its members by user id ("Member", and the fallthrough of "IssueOwners"),
    the issue's owners (its assigned member, or its assigned team's members) and the
    members of each team named ("Team"), by team id. Addresses only."""

    members: Mapping[int, str] = field(default_factory=dict)
    issue_owners: tuple[str, ...] = ()
    teams: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    #: The members following the issue ("IssueSubscribers"), with an address.
    issue_subscribers: tuple[str, ...] = ()


def action_destinations(action: Mapping[str, Any], plugin_urls: Sequence[str],
                        member_emails: Mapping[int, str] | EmailRecipients
                        ) -> list[Destination]:
    """Where a rule action goes: one destination per webhook plugin URL for Sentry's
    service action, none for an e-mail to issue owners when there are none and the action
    falls through to no one, else one. ``member_emails``: the project organization's
    members' e-mail addresses by user id, or all the recipients ``EmailRecipients`` holds
    (for Sentry's e-mail action)."""
    recipients = member_emails if isinstance(member_emails, EmailRecipients) \
        else EmailRecipients(member_emails)
    action_id = action.get("id")
    if action_id == NOTIFY_EVENT_SERVICE_ACTION:
        if action.get("service") != "webhooks":
            raise InvalidNotification(
                f"action {action_id}: service {action.get('service')!r} is not available;"
                ' Crashray sends through "webhooks" (the project\'s WebHooks plugin URLs)')
        return [Destination("webhook", url) for url in plugin_urls]
    if action_id == WEBHOOK_ACTION:
        return [Destination("webhook", _http_url(action.get("url"), f"action {action_id}: url"))]
    if action_id == SLACK_ACTION:
        return [Destination("slack", _http_url(action.get("webhook_url"),
                                               f"action {action_id}: webhook_url"))]
    addresses = _email_addresses(action, recipients)
    return [Destination("email", ",".join(addresses))] if addresses else []


def _email_addresses(action: Mapping[str, Any], recipients: EmailRecipients) -> list[str]:
    member_emails = recipients.members
    action_id = action.get("id")
    if action_id == EMAIL_ACTION:
        to = action.get("to")
        if (not isinstance(to, list) or not to
                or not all(isinstance(a, str) and _looks_like_address(a) for a in to)):
            raise InvalidNotification(
                f'action {action_id}: "to" must be a non-empty list of e-mail addresses')
        return list(dict.fromkeys(to))
    if action_id == SENTRY_EMAIL_ACTION and action.get("targetType") == "IssueOwners":
        return _issue_owner_addresses(action, recipients)
    if action_id == SENTRY_EMAIL_ACTION and action.get("targetType") == "IssueSubscribers":
        # Nobody follows the issue: nothing to send (as "Issue Owners" falling through to
        # no one), not a failure.
        return list(dict.fromkeys(recipients.issue_subscribers))
    if action_id == SENTRY_EMAIL_ACTION and action.get("targetType") == "Team":
        return _team_addresses(action, recipients)
    if action_id == SENTRY_EMAIL_ACTION:
        if action.get("targetType") != "Member":
            raise InvalidNotification(
                f"action {action_id}: targetType {action.get('targetType')!r} is not"
                ' available; use "IssueOwners", "IssueSubscribers", "Team" or "Member" (the'
                f' team or user id as targetIdentifier), or {EMAIL_ACTION} with "to"')
        try:
            user_id = int(action.get("targetIdentifier"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InvalidNotification(
                f"action {action_id}: targetIdentifier must be a user id") from None
        if user_id not in member_emails:
            raise InvalidNotification(
                f"action {action_id}: user {user_id} is not a member of the organization"
                " with an e-mail address")
        return [member_emails[user_id]]
    raise InvalidNotification(f"action id {action_id!r} is not a notification action")


#: Sentry's default fallthrough of an "Issue Owners" e-mail when nobody owns the issue.
DEFAULT_FALLTHROUGH: Final = "ActiveMembers"


def _issue_owner_addresses(action: Mapping[str, Any], recipients: EmailRecipients
                           ) -> list[str]:
    """Sentry's "Issue Owners": whoever owns the issue (Crashray's ownership rules assign
    new issues to their owner, so its assignee: a member, or a team's members); nobody
    owning it, the action's ``fallthroughType``: "ActiveMembers" (the default; Crashray does
    not track activity, so every member) and "AllMembers" address every member of the
    organization with an address, "NoOne" nobody (no delivery at all, as Sentry)."""
    if recipients.issue_owners:
        return list(dict.fromkeys(recipients.issue_owners))
    fallthrough = action.get("fallthroughType") or DEFAULT_FALLTHROUGH
    if fallthrough == "NoOne":
        return []
    if not recipients.members:
        raise InvalidNotification(
            f"action {SENTRY_EMAIL_ACTION}: the issue has no owner and no member of the"
            f" organization has an e-mail address (fallthroughType {fallthrough})")
    return sorted(set(recipients.members.values()))


def _team_addresses(action: Mapping[str, Any], recipients: EmailRecipients) -> list[str]:
    try:
        team_id = int(action.get("targetIdentifier"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidNotification(
            f"action {SENTRY_EMAIL_ACTION}: targetIdentifier must be a team id") from None
    addresses = recipients.teams.get(team_id, ())
    if not addresses:
        raise InvalidNotification(
            f"action {SENTRY_EMAIL_ACTION}: team {team_id} is no team of the organization"
            " with members who have an e-mail address")
    return list(dict.fromkeys(addresses))


def _looks_like_address(address: str) -> bool:
    local, at, domain = address.partition("@")
    return bool(local and at and "." in domain and not any(c.isspace() or c in ",<>"
                                                              for c in address))


@dataclass(frozen=True)
class SendOutcome:
    """What one attempt at a destination gave: ``delivered``, the HTTP or SMTP reply code
    if one came, the error otherwise, and whether trying again may help."""

    delivered: bool
    response_code: int | None = None
    error: str | None = None
    retryable: bool = True


@dataclass(frozen=True)
class NextStep:
    """What becomes of a delivery after an attempt: ``status`` "delivered", "pending"
    (again after ``retry_in_s``) or "failed"."""

    status: str
    retry_in_s: float = 0.0


def http_outcome(status_code: int, body_excerpt: str) -> SendOutcome:
    """An HTTP reply as an outcome: 2xx delivered; 408, 425, 429 and 5xx may pass later
    (overload, restarts); any other 4xx and 3xx will not (a wrong URL or a refusing
    receiver: retrying only hides it). Redirects are not followed: a webhook URL is
    configured, not discovered."""
    if 200 <= status_code < 300:
        return SendOutcome(True, status_code)
    retryable = status_code >= 500 or status_code in (408, 425, 429)
    detail = " ".join(body_excerpt.split())[:300]
    return SendOutcome(False, status_code, f"HTTP {status_code}" + (f": {detail}" if detail
                                                                     else ""), retryable)


def retry_delay_s(attempts: int, base_s: float, cap_s: float) -> float:
    """Exponential backoff after the ``attempts``-th failed attempt: base, 2·base, 4·base…
    capped at ``cap_s``."""
    return float(min(cap_s, base_s * 2 ** max(attempts - 1, 0)))


def next_step(outcome: SendOutcome, attempts: int, max_attempts: int, backoff_base_s: float,
              backoff_cap_s: float) -> NextStep:
    """After the ``attempts``-th attempt (counted from 1)."""
    if outcome.delivered:
        return NextStep("delivered")
    if not outcome.retryable or attempts >= max_attempts:
        return NextStep("failed")
    return NextStep("pending", retry_delay_s(attempts, backoff_base_s, backoff_cap_s))
