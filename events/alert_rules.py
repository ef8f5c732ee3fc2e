"""Sentry's issue alert rules: the body of ``/api/0/projects/{org}/{project}/rules/``, checked
and evaluated (pure: no I/O, no clock, no storage).

A rule is what Sentry's rule API takes and answers (``RuleSerializer`` in Sentry's
``src/sentry/api/serializers/models/rule.py``)::

    {"name": "…",                       required, at most 256 characters (Sentry's Rule.label)
     "actionMatch": "all"|"any"|"none", how the conditions combine (default "all")
     "filterMatch": "all"|"any"|"none", how the filters combine (default "all")
     "frequency": 30,                   minutes between two notifications for one issue, 5-43200
     "environment": "production"|null,  only events of this environment
     "conditions": [{"id": "<class path>", …fields}],
     "filters": [{"id": …}], "actions": [{"id": …}]}     at least one action

Evaluation follows Sentry's ``RuleProcessor.apply_rule`` (src/sentry/rules/processing/
processor.py): an event of another environment never fires the rule; an empty list of
conditions or of filters is skipped (so a rule without conditions fires for every event,
subject to ``frequency``); otherwise ``all``/``any`` are Python's ``all``/``any`` over the
items and ``none`` is ``not any``. The ``frequency`` rate limit per (rule, issue) is the
caller's (it needs storage); ``rule_fires`` only says whether this event meets the rule.

Frequency conditions read counts the pipeline keeps per issue: ``windows_needed`` names the
windows (kind, length, offset, environment) and ``AlertIssue.counts`` carries them. As in
Sentry, a rule with an environment counts only that environment's events, and a condition
fires on strictly more than ``value``. The percent comparison is Sentry's
``percent_increase``: the whole percent by which the interval's count exceeds the count of
the same interval ``comparisonInterval`` earlier (0 when that earlier count is 0 or higher).

Errors: ``RuleError`` (a ``BadRequest``, 400) whose message starts with the path of what is
wrong, e.g. ``conditions[0].interval: must be one of 1m, 5m, 15m, 1h, 1d, 1w, 30d; got '2h'``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

from events.errors import BadRequest

# --- limits of Sentry's rule API (src/sentry/api/serializers/rest_framework/rule.py) -------

MAX_NAME_CHARS: Final = 256  # Sentry's Rule.label is a CharField(max_length=256)
MIN_FREQUENCY_MINUTES: Final = 5  # RuleSerializer.frequency min_value
MAX_FREQUENCY_MINUTES: Final = 60 * 24 * 30  # and max_value: 30 days
DEFAULT_FREQUENCY_MINUTES: Final = 30  # Rule.DEFAULT_FREQUENCY
MAX_ENVIRONMENT_CHARS: Final = 64  # Sentry's Environment.name
MATCH_MODES: Final = ("all", "any", "none")
DEFAULT_MATCH: Final = "all"  # Rule.DEFAULT_CONDITION_MATCH / DEFAULT_FILTER_MATCH
#: Crashray's own bounds on what an action may carry (not Sentry's: its actions point at
#: integrations); a URL as browsers take it, an address as SMTP (RFC 5321 §4.5.3.1) does.
MAX_URL_CHARS: Final = 2048
MAX_SECRET_CHARS: Final = 256
MAX_EMAIL_CHARS: Final = 254
MAX_EMAIL_RECIPIENTS: Final = 50
MAX_TEXT_FIELD_CHARS: Final = 200  # a tag key or value (Relay's MaxChars::TagKey/TagValue)

# --- supported ids -------------------------------------------------------------------------

FIRST_SEEN_EVENT: Final = "sentry.rules.conditions.first_seen_event.FirstSeenEventCondition"
REGRESSION_EVENT: Final = "sentry.rules.conditions.regression_event.RegressionEventCondition"
REAPPEARED_EVENT: Final = "sentry.rules.conditions.reappeared_event.ReappearedEventCondition"
EVERY_EVENT: Final = "sentry.rules.conditions.every_event.EveryEventCondition"
EVENT_FREQUENCY: Final = "sentry.rules.conditions.event_frequency.EventFrequencyCondition"
EVENT_UNIQUE_USER_FREQUENCY: Final = (
    "sentry.rules.conditions.event_frequency.EventUniqueUserFrequencyCondition")
ANOMALY: Final = "crashray.conditions.anomaly.AnomalyCondition"

LEVEL_FILTER: Final = "sentry.rules.filters.level.LevelFilter"
TAGGED_EVENT_FILTER: Final = "sentry.rules.filters.tagged_event.TaggedEventFilter"
AGE_COMPARISON_FILTER: Final = "sentry.rules.filters.age_comparison.AgeComparisonFilter"
ISSUE_OCCURRENCES_FILTER: Final = "sentry.rules.filters.issue_occurrences.IssueOccurrencesFilter"
LATEST_RELEASE_FILTER: Final = "sentry.rules.filters.latest_release.LatestReleaseFilter"

NOTIFY_EVENT_SERVICE: Final = "sentry.rules.actions.notify_event_service.NotifyEventServiceAction"
NOTIFY_EMAIL: Final = "sentry.mail.actions.NotifyEmailAction"
WEBHOOK_ACTION: Final = "crashray.actions.webhook"
SLACK_ACTION: Final = "crashray.actions.slack"
EMAIL_ACTION: Final = "crashray.actions.email"

# --- Sentry's choices ----------------------------------------------------------------------

#: Sentry's ``standard_intervals`` of the frequency conditions, in seconds.
INTERVAL_SECONDS: Final[Mapping[str, int]] = {
    "1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400, "1w": 7 * 86400,
    "30d": 30 * 86400}
#: Sentry's ``comparison_intervals`` (how far back the percent comparison looks).
COMPARISON_INTERVAL_SECONDS: Final[Mapping[str, int]] = {
    key: seconds for key, seconds in INTERVAL_SECONDS.items() if key != "1m"}
COMPARISON_TYPES: Final = ("count", "percent")

#: Sentry's ``LOG_LEVELS`` (src/sentry/constants.py): the level filter stores the number as
#: a string and compares numbers.
LEVEL_NUMBERS: Final[Mapping[str, int]] = {
    "sample": 0, "debug": 10, "info": 20, "warning": 30, "error": 40, "fatal": 50}
LEVEL_NAMES: Final[Mapping[int, str]] = {number: name for name, number in LEVEL_NUMBERS.items()}
LEVEL_MATCHES: Final[Mapping[str, str]] = {
    "eq": "equal to", "gte": "greater than or equal to", "lte": "less than or equal to"}

#: Sentry's ``MATCH_CHOICES`` (src/sentry/rules/match.py) with their labels.
TAG_MATCHES: Final[Mapping[str, str]] = {
    "eq": "equals", "ne": "does not equal", "sw": "starts with", "nsw": "does not start with",
    "ew": "ends with", "new": "does not end with", "co": "contains", "nc": "does not contain",
    "is": "is set", "ns": "is not set", "in": "is in (comma separated)",
    "nin": "not in (comma separated)"}
_VALUELESS_MATCHES: Final = ("is", "ns")
#: Tag keys Sentry stores with a ``sentry:`` prefix and matches without it (tagstore).
_STANDARDIZED_TAG_KEYS: Final[Mapping[str, str]] = {
    "sentry:release": "release", "sentry:dist": "dist", "sentry:user": "user"}

AGE_COMPARISONS: Final = ("older", "newer")
AGE_UNITS: Final[Mapping[str, timedelta]] = {
    "minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1),
    "week": timedelta(weeks=1)}

NOTIFY_SERVICES: Final = ("webhooks",)  # Sentry's legacy WebHooks plugin slug
#: Sentry's targets of its e-mail action, and Crashray's "IssueSubscribers": the users who
#: follow the issue (they subscribed, or were assigned, commented on or resolved it).
EMAIL_TARGET_TYPES: Final = ("IssueOwners", "IssueSubscribers", "Team", "Member")
#: Targets named by the issue itself (no ``targetIdentifier``).
ISSUE_EMAIL_TARGETS: Final = ("IssueOwners", "IssueSubscribers")
EMAIL_FALLTHROUGH_TYPES: Final = ("ActiveMembers", "AllMembers", "NoOne")
ANOMALY_SCOPES: Final = ("issue", "project")
WINDOW_KINDS: Final = ("events", "users")


class RuleError(BadRequest):
    """An alert rule body Crashray cannot take; the message starts with the field's path."""

    code = "invalid_alert_rule"


@dataclass(frozen=True)
class RuleItem:
    """One condition, filter or action: Sentry's ``{"id": …, …fields}`` without ``id``."""

    id: str
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class AlertRule:
    id: int | None
    name: str
    action_match: str
    filter_match: str
    frequency_minutes: int
    environment: str | None
    conditions: tuple[RuleItem, ...]
    filters: tuple[RuleItem, ...]
    actions: tuple[RuleItem, ...]


@dataclass(frozen=True)
class Window:
    """The count of an issue's events (or distinct users) in
    ``[now - offset_seconds - seconds, now - offset_seconds)``, only of ``environment``'s
    events when it is set (a rule with an environment counts only that environment, as
    Sentry's frequency conditions query with the rule's ``environment_id``)."""

    kind: str  # "events" | "users"
    seconds: int
    offset_seconds: int = 0
    environment: str | None = None


@dataclass(frozen=True)
class AlertEvent:
    level: str
    tags: Mapping[str, str]
    release: str | None
    environment: str | None


@dataclass(frozen=True)
class AlertIssue:
    id: int
    first_seen: datetime
    times_seen: int
    is_new: bool  # created by this event's batch
    #: None | "regression" (resolved → unresolved) | "reappeared" (ignored → unresolved)
    #: | "escalating" (ignored until escalating → unresolved)
    transition: str | None
    counts: Mapping[Window, int]  # windows_needed's windows, this batch's events included
    anomalies: Sequence[Mapping[str, Any]] = ()  # open anomalies of the issue and its project
    latest_release: str | None = None  # the project's latest release (LatestReleaseFilter)


# --- reading a body ------------------------------------------------------------------------

_REQUIRED: Final = object()


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _one_of(choices: Sequence[str]) -> str:
    return ", ".join(choices)


class _Fields:
    """An item's raw fields at ``path``; each reader returns the normalized value or raises
    a RuleError naming ``path.key``."""

    def __init__(self, raw: Mapping[str, Any], path: str) -> None:
        self.raw = raw
        self.path = path

    def error(self, key: str, message: str) -> RuleError:
        where = f"{self.path}.{key}" if self.path else key
        return RuleError(f"{where}: {message}")

    def _get(self, key: str, default: Any, what: str) -> Any:
        value = self.raw.get(key)
        if value is None or value == "":
            if default is _REQUIRED:
                raise self.error(key, f"required: {what}")
            return default
        return value

    def choice(self, key: str, choices: Sequence[str], default: Any = _REQUIRED) -> Any:
        value = self._get(key, default, f"one of {_one_of(choices)}")
        if value is not default and value not in choices:
            raise self.error(key, f"must be one of {_one_of(choices)}; got {_shown(value)}")
        return value

    def integer(self, key: str, minimum: int = 0, default: Any = _REQUIRED) -> Any:
        value = self._get(key, default, f"a whole number of at least {minimum}")
        if value is default:
            return value
        number = _as_int(value)
        if number is None or number < minimum:
            raise self.error(
                key, f"must be a whole number of at least {minimum}; got {_shown(value)}")
        return number

    def number(self, key: str, default: Any = _REQUIRED) -> Any:
        value = self._get(key, default, "a number")
        if value is default:
            return value
        number = _as_float(value)
        if number is None:
            raise self.error(key, f"must be a finite number; got {_shown(value)}")
        return number

    def text(self, key: str, max_chars: int, default: Any = _REQUIRED) -> Any:
        value = self._get(key, default, f"a string of at most {max_chars} characters")
        if value is default:
            return value
        if not isinstance(value, str):
            raise self.error(key, f"must be a string; got {_shown(value)}")
        if len(value) > max_chars:
            raise self.error(key, f"must be at most {max_chars} characters; got {len(value)}")
        return value

    def url(self, key: str) -> str:
        value: str = self.text(key, MAX_URL_CHARS)
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.error(key, f"must be an http:// or https:// URL; got {_shown(value)}")
        return value


def _as_int(value: Any) -> int | None:
    """A whole number as Django's IntegerField takes it (an int or a string of digits)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit() and text.isascii():
            return int(text)
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


# --- the items: what each takes, how it reads, when it passes ------------------------------

_Clean = Callable[[_Fields], dict[str, Any]]
_Render = Callable[[Mapping[str, Any]], str]
_Passes = Callable[[Mapping[str, Any], AlertEvent, AlertIssue, datetime, str | None], bool]


@dataclass(frozen=True)
class _Kind:
    section: str  # "conditions" | "filters" | "actions"
    clean: _Clean
    render: _Render
    passes: _Passes | None = None  # None for an action


def _no_fields(_: _Fields) -> dict[str, Any]:
    return {}


def _fixed(text: str) -> _Render:
    return lambda _fields: text


# Conditions ---------------------------------------------------------------------------------


def _clean_frequency(fields: _Fields) -> dict[str, Any]:
    cleaned: dict[str, Any] = {
        "value": fields.integer("value"),
        "interval": fields.choice("interval", tuple(INTERVAL_SECONDS)),
        "comparisonType": fields.choice("comparisonType", COMPARISON_TYPES, default="count"),
    }
    comparison = fields.choice("comparisonInterval", tuple(COMPARISON_INTERVAL_SECONDS),
                               default=None)
    if cleaned["comparisonType"] == "percent":
        if comparison is None:
            # Sentry's EventFrequencyForm.clean: "comparisonInterval is required when
            # comparing by percent".
            raise fields.error("comparisonInterval", "required when comparisonType is percent: "
                               f"one of {_one_of(tuple(COMPARISON_INTERVAL_SECONDS))}")
        cleaned["comparisonInterval"] = comparison
    return cleaned


def _frequency_windows(kind: str, fields: Mapping[str, Any],
                       environment: str | None) -> tuple[Window, ...]:
    seconds = INTERVAL_SECONDS[fields["interval"]]
    current = Window(kind, seconds, 0, environment)
    if fields["comparisonType"] != "percent":
        return (current,)
    offset = COMPARISON_INTERVAL_SECONDS[fields["comparisonInterval"]]
    return current, Window(kind, seconds, offset, environment)


def percent_increase(current: int, earlier: int) -> int:
    """Sentry's ``percent_increase``: the whole percent by which ``current`` exceeds
    ``earlier``; 0 when ``earlier`` is 0 or ``current`` is not higher."""
    if earlier <= 0 or current <= earlier:
        return 0
    return int((current - earlier) / earlier * 100)


def _count(issue: AlertIssue, window: Window) -> int:
    try:
        return issue.counts[window]
    except KeyError:
        raise LookupError(f"issue {issue.id} has no count for {window}; "
                          "pass the counts of windows_needed(rules)") from None


def _frequency_passes(kind: str) -> _Passes:
    def passes(fields: Mapping[str, Any], _event: AlertEvent, issue: AlertIssue,
               _now: datetime, environment: str | None) -> bool:
        windows = _frequency_windows(kind, fields, environment)
        measured = _count(issue, windows[0])
        if len(windows) == 2:
            measured = percent_increase(measured, _count(issue, windows[1]))
        return measured > int(fields["value"])  # Sentry: strictly greater
    return passes


def _render_frequency(noun: str) -> _Render:
    def render(fields: Mapping[str, Any]) -> str:
        if fields["comparisonType"] == "percent":
            return (f"The issue's {noun} in {fields['interval']} are more than {fields['value']}%"
                    f" higher than {fields['comparisonInterval']} ago")
        if noun == "users":
            return f"The issue is seen by more than {fields['value']} users in {fields['interval']}"
        return f"The issue is seen more than {fields['value']} times in {fields['interval']}"
    return render


def _clean_anomaly(fields: _Fields) -> dict[str, Any]:
    cleaned: dict[str, Any] = {"scope": fields.choice("scope", ANOMALY_SCOPES)}
    min_score = fields.number("min_score", default=None)
    if min_score is not None:
        cleaned["min_score"] = min_score
    return cleaned


def _anomaly_passes(fields: Mapping[str, Any], _event: AlertEvent, issue: AlertIssue,
                    _now: datetime, _environment: str | None) -> bool:
    min_score = fields.get("min_score")
    for anomaly in issue.anomalies:
        if anomaly.get("scope") != fields["scope"]:
            continue
        if min_score is None:
            return True
        score = _as_float(anomaly.get("score"))
        if score is not None and score >= min_score:
            return True
    return False


def _render_anomaly(fields: Mapping[str, Any]) -> str:
    text = f"An anomaly is detected in the {fields['scope']}"
    if "min_score" in fields:
        text += f" with a score of at least {fields['min_score']:g}"
    return text


# Filters ------------------------------------------------------------------------------------


def _clean_level(fields: _Fields) -> dict[str, Any]:
    match = fields.choice("match", tuple(LEVEL_MATCHES))
    raw = fields.raw.get("level")
    number = LEVEL_NUMBERS.get(raw) if isinstance(raw, str) else None
    if number is None:
        number = _as_int(raw)
    if number not in LEVEL_NAMES:
        choices = ", ".join(f"{n} ({name})" for n, name in sorted(LEVEL_NAMES.items()))
        raise fields.error("level", f"must be one of {choices}; got {_shown(raw)}")
    return {"match": match, "level": str(number)}  # Sentry stores the choice as a string


def _level_passes(fields: Mapping[str, Any], event: AlertEvent, _issue: AlertIssue,
                  _now: datetime, _environment: str | None) -> bool:
    level = LEVEL_NUMBERS.get(event.level)
    if level is None:  # Sentry: an unknown level never passes
        return False
    wanted = int(fields["level"])
    match = fields["match"]
    if match == "eq":
        return level == wanted
    if match == "gte":
        return level >= wanted
    return level <= wanted


def _render_level(fields: Mapping[str, Any]) -> str:
    return (f"The event's level is {LEVEL_MATCHES[fields['match']]} "
            f"{LEVEL_NAMES[int(fields['level'])]}")


def _clean_tagged(fields: _Fields) -> dict[str, Any]:
    cleaned: dict[str, Any] = {
        "key": fields.text("key", MAX_TEXT_FIELD_CHARS),
        "match": fields.choice("match", tuple(TAG_MATCHES)),
    }
    if cleaned["match"] in _VALUELESS_MATCHES:
        cleaned["value"] = fields.text("value", MAX_TEXT_FIELD_CHARS, default="")
    else:  # Sentry's TaggedEventForm: a value is required but for is/ns
        cleaned["value"] = fields.text("value", MAX_TEXT_FIELD_CHARS)
    return cleaned


def _event_tag_values(event: AlertEvent) -> dict[str, list[str]]:
    """Tag values by lower-cased key, ``sentry:release`` also as ``release``; level,
    release and environment from the event when its tags lack them (Sentry always tags
    them)."""
    values: dict[str, list[str]] = {}
    for key, value in event.tags.items():
        lowered = key.lower()
        values.setdefault(lowered, []).append(value.lower())
        standard = _STANDARDIZED_TAG_KEYS.get(lowered)
        if standard is not None:
            values.setdefault(standard, []).append(value.lower())
    derived: tuple[tuple[str, str | None], ...] = (
        ("level", event.level), ("release", event.release), ("environment", event.environment))
    for key, derived_value in derived:
        if derived_value and key not in values:
            values[key] = [derived_value.lower()]
    return values


def match_tag_values(values: Sequence[str], match: str, wanted: str) -> bool:
    """Sentry's ``match_values``: ``values`` are the event's values of the key."""
    if match == "eq":
        return wanted in values
    if match == "ne":
        return wanted not in values
    if match in ("sw", "nsw"):
        found = any(value.startswith(wanted) for value in values)
    elif match in ("ew", "new"):
        found = any(value.endswith(wanted) for value in values)
    elif match in ("co", "nc"):
        found = any(wanted in value for value in values)
    else:  # "in" / "nin": a comma-separated list, spaces ignored
        listed = set(wanted.replace(" ", "").split(","))
        found = any(value in listed for value in values)
    return found if match in ("sw", "ew", "co", "in") else not found


def _tagged_passes(fields: Mapping[str, Any], event: AlertEvent, _issue: AlertIssue,
                   _now: datetime, _environment: str | None) -> bool:
    tags = _event_tag_values(event)
    key = str(fields["key"]).lower()
    match = fields["match"]
    if match == "is":
        return key in tags
    if match == "ns":
        return key not in tags
    return match_tag_values(tags.get(key, []), match, str(fields["value"]).lower())


def _render_tagged(fields: Mapping[str, Any]) -> str:
    text = f"The event's tags match {fields['key']} {TAG_MATCHES[fields['match']]}"
    return f"{text} {fields['value']}" if fields.get("value") else text


def _clean_age(fields: _Fields) -> dict[str, Any]:
    return {"comparison_type": fields.choice("comparison_type", AGE_COMPARISONS),
            "value": fields.integer("value"),
            "time": fields.choice("time", tuple(AGE_UNITS))}


def _age_passes(fields: Mapping[str, Any], _event: AlertEvent, issue: AlertIssue,
                now: datetime, _environment: str | None) -> bool:
    # Sentry's AgeComparisonFilter: older when first_seen + age < now, newer when > now.
    reached = issue.first_seen + int(fields["value"]) * AGE_UNITS[fields["time"]]
    return reached < now if fields["comparison_type"] == "older" else reached > now


def _render_age(fields: Mapping[str, Any]) -> str:
    return (f"The issue is {fields['comparison_type']} than {fields['value']} "
            f"{fields['time']}(s)")


def _clean_occurrences(fields: _Fields) -> dict[str, Any]:
    return {"value": fields.integer("value")}


def _occurrences_passes(fields: Mapping[str, Any], _event: AlertEvent, issue: AlertIssue,
                        _now: datetime, _environment: str | None) -> bool:
    return issue.times_seen >= int(fields["value"])


def _latest_release_passes(_fields: Mapping[str, Any], event: AlertEvent, issue: AlertIssue,
                           _now: datetime, _environment: str | None) -> bool:
    if not issue.latest_release:
        return False
    return issue.latest_release.lower() in _event_tag_values(event).get("release", [])


# Actions ------------------------------------------------------------------------------------


def _clean_service(fields: _Fields) -> dict[str, Any]:
    return {"service": fields.choice("service", NOTIFY_SERVICES)}


def _clean_notify_email(fields: _Fields) -> dict[str, Any]:
    cleaned: dict[str, Any] = {"targetType": fields.choice("targetType", EMAIL_TARGET_TYPES)}
    if cleaned["targetType"] not in ISSUE_EMAIL_TARGETS:
        cleaned["targetIdentifier"] = fields.integer("targetIdentifier", minimum=1)
    fallthrough = fields.choice("fallthroughType", EMAIL_FALLTHROUGH_TYPES, default=None)
    if fallthrough is not None:
        cleaned["fallthroughType"] = fallthrough
    return cleaned


def _render_notify_email(fields: Mapping[str, Any]) -> str:
    target = fields["targetType"]
    if "targetIdentifier" in fields:
        target = f"{target} {fields['targetIdentifier']}"
    return f"Send a notification to {target}"


def _clean_webhook(fields: _Fields) -> dict[str, Any]:
    cleaned: dict[str, Any] = {"url": fields.url("url")}
    secret = fields.text("secret", MAX_SECRET_CHARS, default=None)
    if secret is not None:
        cleaned["secret"] = secret
    return cleaned


def _clean_slack(fields: _Fields) -> dict[str, Any]:
    cleaned: dict[str, Any] = {"webhook_url": fields.url("webhook_url")}
    channel = fields.text("channel", MAX_TEXT_FIELD_CHARS, default=None)
    if channel is not None:
        cleaned["channel"] = channel
    return cleaned


def _render_slack(fields: Mapping[str, Any]) -> str:
    where = fields.get("channel") or urlsplit(fields["webhook_url"]).hostname
    return f"Send a Slack message to {where}"


def _clean_email_to(fields: _Fields) -> dict[str, Any]:
    raw = fields.raw.get("to")
    if isinstance(raw, str):  # what a one-line form field sends: "a@x.org, b@x.org"
        raw = [address.strip() for address in raw.split(",") if address.strip()]
    if not isinstance(raw, list) or not raw:
        raise fields.error("to", "required: a list of e-mail addresses")
    if len(raw) > MAX_EMAIL_RECIPIENTS:
        raise fields.error("to", f"at most {MAX_EMAIL_RECIPIENTS} addresses; got {len(raw)}")
    for index, address in enumerate(raw):
        if not _is_email_address(address):
            raise fields.error(f"to[{index}]", f"must be an e-mail address of at most "
                               f"{MAX_EMAIL_CHARS} characters; got {_shown(address)}")
    return {"to": list(raw)}


def _is_email_address(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > MAX_EMAIL_CHARS:
        return False
    local, at, domain = value.rpartition("@")
    return bool(at and local and "." in domain and not any(c.isspace() for c in value))


_KINDS: Final[Mapping[str, _Kind]] = {
    FIRST_SEEN_EVENT: _Kind("conditions", _no_fields, _fixed("A new issue is created"),
                            lambda _f, _e, issue, _n, _env: issue.is_new),
    REGRESSION_EVENT: _Kind(
        "conditions", _no_fields, _fixed("The issue changes state from resolved to unresolved"),
        lambda _f, _e, issue, _n, _env: issue.transition == "regression"),
    # Ignored → unresolved, whether the ignore ran out (reappeared) or the issue was archived
    # until escalating and escalated (Sentry's condition fires on has_escalated).
    REAPPEARED_EVENT: _Kind(
        "conditions", _no_fields, _fixed("The issue changes state from ignored to unresolved"),
        lambda _f, _e, issue, _n, _env: issue.transition in ("reappeared", "escalating")),
    EVERY_EVENT: _Kind("conditions", _no_fields, _fixed("The event occurs"),
                       lambda _f, _e, _i, _n, _env: True),
    EVENT_FREQUENCY: _Kind("conditions", _clean_frequency, _render_frequency("events"),
                           _frequency_passes("events")),
    EVENT_UNIQUE_USER_FREQUENCY: _Kind("conditions", _clean_frequency, _render_frequency("users"),
                                       _frequency_passes("users")),
    ANOMALY: _Kind("conditions", _clean_anomaly, _render_anomaly, _anomaly_passes),
    LEVEL_FILTER: _Kind("filters", _clean_level, _render_level, _level_passes),
    TAGGED_EVENT_FILTER: _Kind("filters", _clean_tagged, _render_tagged, _tagged_passes),
    AGE_COMPARISON_FILTER: _Kind("filters", _clean_age, _render_age, _age_passes),
    ISSUE_OCCURRENCES_FILTER: _Kind(
        "filters", _clean_occurrences,
        lambda f: f"The issue has happened at least {f['value']} times", _occurrences_passes),
    LATEST_RELEASE_FILTER: _Kind("filters", _no_fields,
                                 _fixed("The event is from the latest release"),
                                 _latest_release_passes),
    NOTIFY_EVENT_SERVICE: _Kind("actions", _clean_service,
                                lambda f: f"Send a notification via {f['service']}"),
    NOTIFY_EMAIL: _Kind("actions", _clean_notify_email, _render_notify_email),
    WEBHOOK_ACTION: _Kind("actions", _clean_webhook, lambda f: f"Send a webhook to {f['url']}"),
    SLACK_ACTION: _Kind("actions", _clean_slack, _render_slack),
    EMAIL_ACTION: _Kind("actions", _clean_email_to,
                        lambda f: f"Send an e-mail to {', '.join(f['to'])}"),
}


def _choices(pairs: Mapping[str, str] | Sequence[str]) -> dict[str, Any]:
    items = pairs.items() if isinstance(pairs, Mapping) else ((p, p) for p in pairs)
    return {"type": "choice", "choices": [[key, label] for key, label in items]}


_INTERVAL_LABELS: Final = {"1m": "one minute", "5m": "5 minutes", "15m": "15 minutes",
                           "1h": "one hour", "1d": "one day", "1w": "one week",
                           "30d": "30 days"}
_FREQUENCY_FORM: Final = {
    "value": {"type": "number", "placeholder": 100},
    "interval": _choices(_INTERVAL_LABELS),
    "comparisonType": _choices(COMPARISON_TYPES),
    "comparisonInterval": _choices(
        {k: v for k, v in _INTERVAL_LABELS.items() if k in COMPARISON_INTERVAL_SECONDS}),
}

#: What a rule editor shows for each id: Sentry's label template (``{field}`` where the
#: field goes) and its ``formFields``, as Sentry's ``rules/configuration/`` answers them.
_EDITOR: Final[Mapping[str, tuple[str, Mapping[str, Any]]]] = {
    FIRST_SEEN_EVENT: ("A new issue is created", {}),
    REGRESSION_EVENT: ("The issue changes state from resolved to unresolved", {}),
    REAPPEARED_EVENT: ("The issue changes state from ignored to unresolved", {}),
    EVERY_EVENT: ("The event occurs", {}),
    EVENT_FREQUENCY: ("The issue is seen more than {value} times in {interval}",
                      _FREQUENCY_FORM),
    EVENT_UNIQUE_USER_FREQUENCY: ("The issue is seen by more than {value} users in {interval}",
                                  _FREQUENCY_FORM),
    ANOMALY: ("An anomaly is detected in the {scope} with a score of at least {min_score}",
              {"scope": _choices(ANOMALY_SCOPES),
               "min_score": {"type": "number", "placeholder": 3}}),
    LEVEL_FILTER: ("The event's level is {match} {level}",
                   {"match": _choices(LEVEL_MATCHES),
                    "level": _choices({str(n): name
                                       for n, name in sorted(LEVEL_NAMES.items(), reverse=True)})}),
    TAGGED_EVENT_FILTER: ("The event's tags match {key} {match} {value}",
                          {"key": {"type": "string", "placeholder": "key"},
                           "match": _choices(TAG_MATCHES),
                           "value": {"type": "string", "placeholder": "value"}}),
    AGE_COMPARISON_FILTER: ("The issue is {comparison_type} than {value} {time}",
                            {"comparison_type": _choices(AGE_COMPARISONS),
                             "value": {"type": "number", "placeholder": 10},
                             "time": _choices({unit: f"{unit}(s)" for unit in AGE_UNITS})}),
    ISSUE_OCCURRENCES_FILTER: ("The issue has happened at least {value} times",
                               {"value": {"type": "number", "placeholder": 10}}),
    LATEST_RELEASE_FILTER: ("The event is from the latest release", {}),
    NOTIFY_EVENT_SERVICE: ("Send a notification via {service}",
                           {"service": _choices({"webhooks": "WebHooks"})}),
    NOTIFY_EMAIL: ("Send a notification to {targetType}",
                   {"targetType": {"type": "mailAction",
                                   "choices": [["IssueOwners", "Issue Owners"],
                                               ["IssueSubscribers", "Issue Subscribers"],
                                               ["Team", "Team"], ["Member", "Member"]]},
                    "fallthroughType": _choices(EMAIL_FALLTHROUGH_TYPES)}),
    WEBHOOK_ACTION: ("Send a webhook to {url}",
                     {"url": {"type": "string", "placeholder": "https://example.com/hook"},
                      "secret": {"type": "string", "placeholder": "signing secret"}}),
    SLACK_ACTION: ("Send a Slack message to {channel}",
                   {"webhook_url": {"type": "string",
                                    "placeholder": "https://hooks.slack.com/services/…"},
                    "channel": {"type": "string", "placeholder": "#alerts"}}),
    EMAIL_ACTION: ("Send an e-mail to {to}",
                   {"to": {"type": "string", "placeholder": "ops@example.com, dev@example.com"}}),
}


def rule_configuration() -> dict[str, list[dict[str, Any]]]:
    """Sentry's ``GET /api/0/projects/{org}/{project}/rules/configuration/`` answer: every
    supported id with its label template and form fields, for a rule editor."""
    answer: dict[str, list[dict[str, Any]]] = {"actions": [], "conditions": [], "filters": []}
    for item_id, kind in _KINDS.items():
        label, form_fields = _EDITOR[item_id]
        entry: dict[str, Any] = {"id": item_id, "label": label, "enabled": True}
        if form_fields:
            entry["formFields"] = {key: dict(field) for key, field in form_fields.items()}
        answer[kind.section].append(entry)
    return answer


def supported_ids(section: str) -> tuple[str, ...]:
    """The ids ``section`` ("conditions", "filters" or "actions") takes."""
    return tuple(item_id for item_id, kind in _KINDS.items() if kind.section == section)


# --- parse / serialize ---------------------------------------------------------------------


def parse_rule(body: Mapping[str, Any], *, rule_id: int | None = None) -> AlertRule:
    """The rule of a POST/PUT body (Sentry's shape; a GET answer is taken back too: the
    items' ``name`` and the answer's read-only keys are ignored)."""
    if not isinstance(body, Mapping):
        raise RuleError(f"the rule must be a JSON object; got {_shown(body)}")
    top = _Fields(body, "")
    name = _parse_name(body.get("name"))
    frequency = top.integer("frequency", minimum=MIN_FREQUENCY_MINUTES,
                            default=DEFAULT_FREQUENCY_MINUTES)
    if frequency > MAX_FREQUENCY_MINUTES:
        raise RuleError(f"frequency: must be minutes from {MIN_FREQUENCY_MINUTES} to "
                        f"{MAX_FREQUENCY_MINUTES}; got {frequency}")
    actions = _parse_items(body, "actions")
    if not actions:
        raise RuleError("actions: at least one action is required; supported: "
                        f"{_one_of(supported_ids('actions'))}")
    return AlertRule(
        id=rule_id, name=name,
        action_match=_parse_match(body, "actionMatch"),
        filter_match=_parse_match(body, "filterMatch"),
        frequency_minutes=frequency,
        environment=_parse_environment(body.get("environment")),
        conditions=_parse_items(body, "conditions"),
        filters=_parse_items(body, "filters"),
        actions=actions)


def _parse_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RuleError(f"name: required: a non-empty string of at most {MAX_NAME_CHARS} "
                        f"characters; got {_shown(value)}")
    name = value.strip()
    if len(name) > MAX_NAME_CHARS:
        raise RuleError(f"name: must be at most {MAX_NAME_CHARS} characters; got {len(name)}")
    return name


def _parse_match(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return DEFAULT_MATCH
    if value not in MATCH_MODES:
        raise RuleError(f"{key}: must be one of {_one_of(MATCH_MODES)}; got {_shown(value)}")
    return str(value)


def _parse_environment(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_ENVIRONMENT_CHARS:
        raise RuleError(f"environment: must be an environment name of at most "
                        f"{MAX_ENVIRONMENT_CHARS} characters, or null; got {_shown(value)}")
    return value


def _parse_items(body: Mapping[str, Any], section: str) -> tuple[RuleItem, ...]:
    raw = body.get(section)
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise RuleError(f"{section}: must be a list of {{\"id\": …}} objects; got {_shown(raw)}")
    return tuple(_parse_item(item, f"{section}[{index}]", section)
                 for index, item in enumerate(raw))


def _parse_item(raw: Any, path: str, section: str) -> RuleItem:
    if not isinstance(raw, Mapping):
        raise RuleError(f"{path}: must be an object with an \"id\"; got {_shown(raw)}")
    item_id = raw.get("id")
    kind = _KINDS.get(item_id) if isinstance(item_id, str) else None
    if kind is None or kind.section != section or not isinstance(item_id, str):
        where = f" (it is one of the {kind.section})" if kind is not None else ""
        raise RuleError(f"{path}.id: {_shown(item_id)} is not a supported {section[:-1]}"
                        f"{where}; supported: {_one_of(supported_ids(section))}")
    # Keys other than the kind's own (Sentry's "name", a client's "uuid", "label") are
    # dropped, as Sentry's forms ignore fields they do not declare.
    return RuleItem(item_id, kind.clean(_Fields(raw, path)))


def rule_json(rule: AlertRule) -> dict[str, Any]:
    """Sentry's GET answer for ``rule`` (RuleSerializer), each item with its ``name`` text;
    the API adds ``dateCreated``, ``createdBy`` and ``projects``."""
    return {
        "id": str(rule.id) if rule.id is not None else None,
        "name": rule.name,
        "actionMatch": rule.action_match,
        "filterMatch": rule.filter_match,
        "frequency": rule.frequency_minutes,
        "environment": rule.environment,
        "conditions": [_item_json(item) for item in rule.conditions],
        "filters": [_item_json(item) for item in rule.filters],
        "actions": [_item_json(item) for item in rule.actions],
        "owner": None,
        "status": "active",
        "snooze": False,
    }


def _item_json(item: RuleItem) -> dict[str, Any]:
    return {"id": item.id, **item.fields, "name": item_name(item)}


def item_name(item: RuleItem) -> str:
    """The text Sentry shows for an item (its ``name`` in a GET answer)."""
    return _KINDS[item.id].render(item.fields)


# --- evaluation ----------------------------------------------------------------------------


def windows_needed(rules: Sequence[AlertRule]) -> set[Window]:
    """Exactly the count windows ``rule_fires`` reads for ``rules``."""
    windows: set[Window] = set()
    for rule in rules:
        for item in rule.conditions:
            kind = {EVENT_FREQUENCY: "events", EVENT_UNIQUE_USER_FREQUENCY: "users"}.get(item.id)
            if kind is not None:
                windows.update(_frequency_windows(kind, item.fields, rule.environment))
    return windows


def rule_fires(rule: AlertRule, event: AlertEvent, issue: AlertIssue, now: datetime) -> bool:
    """Whether ``event`` of ``issue`` meets ``rule`` at ``now`` (before the caller's
    per-issue ``frequency`` limit). Raises LookupError when ``issue.counts`` lacks a
    window of ``windows_needed([rule])``."""
    if rule.environment is not None and event.environment != rule.environment:
        return False
    # Sentry evaluates filters first, then conditions; an empty list is skipped.
    for items, match in ((rule.filters, rule.filter_match),
                         (rule.conditions, rule.action_match)):
        if items and not _matches(match, (_item_passes(item, event, issue, now, rule.environment)
                                          for item in items)):
            return False
    return True


def _item_passes(item: RuleItem, event: AlertEvent, issue: AlertIssue, now: datetime,
                 environment: str | None) -> bool:
    passes = _KINDS[item.id].passes
    if passes is None:
        raise ValueError(f"{item.id} is an action, not a condition or filter")
    return passes(item.fields, event, issue, now, environment)


def _matches(match: str, results: Any) -> bool:
    if match == "all":
        return all(results)
    if match == "any":
        return any(results)
    return not any(results)
