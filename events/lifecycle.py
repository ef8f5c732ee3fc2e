"""Issue states and the decisions about them (pure; storage/issues.py applies them).

The states are Sentry's: ``unresolved`` (substatus ``new``, ``ongoing``, ``regressed`` or
``escalating``), ``resolved`` and ``ignored``. Supported ``statusDetails``:

* resolved ``inRelease: "X"``: only an event of a release newer than X (sentry-relay's
  ``compare_version``) reopens the issue; ``inNextRelease: true`` means "in the release after
  the latest one this issue has seen", so events of that latest or older releases do not.
  A plain resolve reopens on any new event.
* ignored ``ignoreCount: N``: unignored after N more events; ``ignoreUserCount: N``: after
  N more distinct users; ``ignoreUntil: <ISO time>``: by the first event after that time.
  Plain ignore lasts forever.
* windowed ignores, as Sentry's "until this occurs N times in M minutes":
  ``ignoreCount: N`` with ``ignoreWindow: M`` unignores once the issue has N events whose
  timestamps fall in the last M minutes; ``ignoreUserCount: N`` with ``ignoreUserWindow: M``
  once N distinct users were affected in the last M minutes. M is 1 … ``MAX_WINDOW_MINUTES``.

* ignored ``ignoreUntilEscalating: true`` (Sentry's "archived until escalating"): until
  the escalating detector (events/anomaly.py, run by actors/detectors.py) finds the issue
  over its forecast from the previous week's volume; new events alone do not unignore it.

``inCommit`` and ``ignoreDuration`` (a client-side shorthand for ``ignoreUntil``) are
refused with a clear error, not approximated.

    events.errors.BadRequest
    └── InvalidStatusUpdate        the request body asks for something unknown or unsupported
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sentry_relay
from sentry_relay.processing import compare_version

from events.errors import BadRequest

STATUSES = ("unresolved", "resolved", "ignored")
#: Sentry's API also says "muted"/"archived" for ignored.
STATUS_ALIASES = {"muted": "ignored", "archived": "ignored"}
UNSUPPORTED_DETAILS = ("inCommit", "ignoreDuration")
IGNORE_DETAILS = ("ignoreCount", "ignoreWindow", "ignoreUserCount", "ignoreUserWindow",
                  "ignoreUntil", "ignoreUntilEscalating")
#: The longest window of a windowed ignore (Sentry offers up to one week).
MAX_WINDOW_MINUTES = 7 * 24 * 60
#: Activity types, named as Sentry's activity log names them.
ACTIVITY_FOR_STATUS = {"resolved": "set_resolved", "unresolved": "set_unresolved",
                       "ignored": "set_ignored"}


class InvalidStatusUpdate(BadRequest):
    """A status change the API refuses; the message names the field and the values known."""

    code = "invalid_status"


@dataclass(frozen=True)
class StatusUpdate:
    status: str
    details: Mapping[str, Any] = field(default_factory=dict)


def _status(raw: object) -> str:
    status = STATUS_ALIASES.get(raw, raw) if isinstance(raw, str) else None
    if status not in STATUSES:
        raise InvalidStatusUpdate(f'"status" must be one of {", ".join(STATUSES)}; got {raw!r}')
    assert isinstance(status, str)
    return status


def _details(status: str, details: Mapping[str, Any]) -> dict[str, Any]:
    unsupported = [k for k in UNSUPPORTED_DETAILS if details.get(k)]
    if unsupported:
        raise InvalidStatusUpdate(
            f'"statusDetails.{unsupported[0]}" is not supported yet; see the docs for the'
            " supported ones (inRelease, inNextRelease, ignoreCount, ignoreWindow,"
            " ignoreUserCount, ignoreUserWindow, ignoreUntil, ignoreUntilEscalating)")
    allowed = {"resolved": ("inRelease", "inNextRelease"),
               "ignored": IGNORE_DETAILS}.get(status, ())
    misplaced = [k for k in ("inRelease", "inNextRelease", *IGNORE_DETAILS)
                 if details.get(k) and k not in allowed]
    if misplaced:
        raise InvalidStatusUpdate(f'"statusDetails.{misplaced[0]}" does not go with'
                                  f' status {status!r}')
    for window, count in (("ignoreWindow", "ignoreCount"),
                          ("ignoreUserWindow", "ignoreUserCount")):
        if details.get(window) and not details.get(count):
            raise InvalidStatusUpdate(f'"statusDetails.{window}" needs "{count}": ignore until'
                                      f' {count} in {window} minutes')
    # Absent, null and false mean "not set"; anything else is checked (0 is refused).
    return {k: _checked(k, details[k]) for k in allowed
            if details.get(k) is not None and details.get(k) is not False}


def _checked(key: str, value: Any) -> Any:
    if key == "inRelease" and isinstance(value, str) and value.strip():
        return value
    if key in ("inNextRelease", "ignoreUntilEscalating") and value is True:
        return True
    if key in ("ignoreCount", "ignoreUserCount") and isinstance(value, int) \
            and not isinstance(value, bool) and value > 0:
        return value
    if key in ("ignoreWindow", "ignoreUserWindow") and isinstance(value, int) \
            and not isinstance(value, bool) and 0 < value <= MAX_WINDOW_MINUTES:
        return value
    if key == "ignoreUntil" and isinstance(value, str) and _parse_time(value) is not None:
        return _parse_time(value).isoformat()  # type: ignore[union-attr]
    expected = {"inRelease": "a release name", "inNextRelease": "true",
                "ignoreCount": "a positive whole number",
                "ignoreUserCount": "a positive whole number",
                "ignoreWindow": f"a whole number of minutes from 1 to {MAX_WINDOW_MINUTES}",
                "ignoreUserWindow": f"a whole number of minutes from 1 to {MAX_WINDOW_MINUTES}",
                "ignoreUntil": "an ISO 8601 time", "ignoreUntilEscalating": "true"}[key]
    raise InvalidStatusUpdate(f'"statusDetails.{key}" must be {expected}; got {value!r}')


def _parse_time(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def parse_status_update(body: Mapping[str, Any]) -> StatusUpdate:
    """The state change a ``PUT /api/0/issues/{id}/`` body asks for."""
    status = _status(body.get("status"))
    details = body.get("statusDetails")
    if details is None:
        details = {}
    if not isinstance(details, Mapping):
        raise InvalidStatusUpdate('"statusDetails" must be an object')
    return StatusUpdate(status, _details(status, details))


def stored_details(update: StatusUpdate, times_seen: int, last_release: str | None,
                   users: int = 0) -> dict[str, Any]:
    """What to keep with the new state: the thresholds, fixed at the time of the change
    (``users``: the issue's distinct users then)."""
    details = dict(update.details)
    if details.pop("inNextRelease", False):
        details["inNextRelease"] = True
        if last_release:
            details["inRelease"] = last_release
    if "ignoreCount" in details and "ignoreWindow" not in details:
        details["ignoreCountBase"] = times_seen
    if "ignoreUserCount" in details and "ignoreUserWindow" not in details:
        details["ignoreUserCountBase"] = users
    return details


def needs_user_count(details: Mapping[str, Any]) -> bool:
    """Whether deciding on this state needs the issue's current distinct user count (for
    all time; a windowed user count is ``counting_windows``' business)."""
    return isinstance(details.get("ignoreUserCount"), int) and "ignoreUserWindow" not in details


@dataclass(frozen=True)
class CountingWindows:
    """What a windowed ignore needs counted: events and/or distinct users in the last
    ``*_minutes`` (None: not needed)."""

    events_minutes: int | None = None
    users_minutes: int | None = None


def counting_windows(details: Mapping[str, Any]) -> CountingWindows:
    events = details.get("ignoreWindow")
    users = details.get("ignoreUserWindow")
    return CountingWindows(events if isinstance(events, int) else None,
                           users if isinstance(users, int) else None)


@dataclass(frozen=True)
class IssueState:
    status: str
    details: Mapping[str, Any]
    times_seen: int
    #: Distinct users now; only looked up when ``needs_user_count(details)``.
    users: int | None = None
    #: Events / distinct users in the windows of ``counting_windows(details)``.
    window_events: int | None = None
    window_users: int | None = None


@dataclass(frozen=True)
class NewEvent:
    release: str | None
    timestamp: dt.datetime


@dataclass(frozen=True)
class Transition:
    status: str
    substatus: str
    activity: str
    data: Mapping[str, Any]


def _parsed_release(release: str) -> tuple[str | None, str] | None:
    """(package, raw version) when sentry-relay reads ``release`` as a semantic version."""
    try:
        parsed = sentry_relay.parse_release(release)  # type: ignore[attr-defined]
    except sentry_relay.RelayError:  # type: ignore[attr-defined]
        return None
    if parsed.get("version_parsed") is None:
        return None
    return parsed.get("package"), str(parsed["version_raw"])


def _newer(release: str | None, than: str) -> bool:
    """Whether ``release`` comes after ``than``: semantic versions of the same package are
    ordered with sentry-relay's ``compare_version``. Sentry orders other releases by when
    they were first seen, which Crashray does not track yet, so any other release counts as
    newer (the issue reopens rather than hides a regression)."""
    if not release or release == than:
        return False
    mine, theirs = _parsed_release(release), _parsed_release(than)
    if mine is None or theirs is None or mine[0] != theirs[0]:
        return True
    try:
        return bool(compare_version(mine[1], theirs[1]) > 0)  # type: ignore[no-untyped-call]
    except sentry_relay.RelayError:  # type: ignore[attr-defined]
        return True


def transition_after_events(state: IssueState, events: Sequence[NewEvent]
                            ) -> Transition | None:
    """The state change new events cause (``state.times_seen`` already counts them)."""
    if not events:
        return None
    if state.status == "resolved":
        threshold = state.details.get("inRelease")
        if threshold is None:
            return Transition("unresolved", "regressed", "set_regression", {})
        newer = next((e.release for e in events if _newer(e.release, threshold)), None)
        if newer is not None:
            return Transition("unresolved", "regressed", "set_regression", {"version": newer})
        return None
    if state.status == "ignored":
        return _unignore(state, events)
    return None


def _unignore(state: IssueState, events: Sequence[NewEvent]) -> Transition | None:
    details = state.details
    count = details.get("ignoreCount")
    window = details.get("ignoreWindow")
    seen = state.window_events if window else state.times_seen - details.get(
        "ignoreCountBase", 0)
    if isinstance(count, int) and seen is not None and seen >= count:
        return Transition("unresolved", "escalating", "set_unresolved",
                          {"reason": "ignoreCount", "ignoreCount": count,
                           **({"ignoreWindow": window} if window else {})})
    user_count = details.get("ignoreUserCount")
    user_window = details.get("ignoreUserWindow")
    users = state.window_users if user_window else (
        None if state.users is None else state.users - details.get("ignoreUserCountBase", 0))
    if isinstance(user_count, int) and users is not None and users >= user_count:
        return Transition("unresolved", "escalating", "set_unresolved",
                          {"reason": "ignoreUserCount", "ignoreUserCount": user_count,
                           **({"ignoreUserWindow": user_window} if user_window else {})})
    until = state.details.get("ignoreUntil")
    limit = _parse_time(until) if isinstance(until, str) else None
    if limit is not None and any(e.timestamp >= limit for e in events):
        return Transition("unresolved", "escalating", "set_unresolved",
                          {"reason": "ignoreUntil", "ignoreUntil": until})
    return None
