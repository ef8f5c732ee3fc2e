"""Issue states and the decisions about them (pure; storage/issues.py applies them).

The states are Sentry's: ``unresolved`` (substatus ``new``, ``ongoing`` or ``regressed``),
``resolved`` and ``ignored``. A new event on a resolved issue reopens it as regressed.
This first version supports plain resolve / unresolve / ignore (forever); resolving in a
release and ignoring until a count, user count or date are not implemented yet and are
refused with a clear error rather than silently treated as something else.

    LifecycleError                 (base)
    └── InvalidStatusUpdate        the request body asks for something unknown or unsupported
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STATUSES = ("unresolved", "resolved", "ignored")
#: Sentry's API also says "resolvedInNextRelease" and "muted"/"archived" for these.
STATUS_ALIASES = {"muted": "ignored", "archived": "ignored"}
UNSUPPORTED_DETAILS = ("inNextRelease", "inRelease", "inCommit", "ignoreCount",
                       "ignoreUserCount", "ignoreUntil", "ignoreDuration", "ignoreWindow",
                       "ignoreUserWindow", "ignoreUntilEscalating")
#: Activity types, named as Sentry's activity log names them.
ACTIVITY_FOR_STATUS = {"resolved": "set_resolved", "unresolved": "set_unresolved",
                       "ignored": "set_ignored"}
ACTIVITY_REGRESSION = "set_regression"


class LifecycleError(Exception):
    pass


class InvalidStatusUpdate(LifecycleError):
    pass


@dataclass(frozen=True)
class StatusUpdate:
    status: str


def parse_status_update(body: Mapping[str, Any]) -> StatusUpdate:
    """The state change a ``PUT /api/0/issues/{id}/`` body asks for."""
    raw = body.get("status")
    if not isinstance(raw, str):
        raise InvalidStatusUpdate(
            f'"status" must be one of {", ".join(STATUSES)}; got {raw!r}')
    status = STATUS_ALIASES.get(raw, raw)
    if status not in STATUSES:
        raise InvalidStatusUpdate(f'"status" must be one of {", ".join(STATUSES)}; got {raw!r}')
    details = body.get("statusDetails")
    if details is None:
        details = {}
    if not isinstance(details, Mapping):
        raise InvalidStatusUpdate('"statusDetails" must be an object')
    unsupported = [k for k in UNSUPPORTED_DETAILS if details.get(k)]
    if unsupported:
        raise InvalidStatusUpdate(
            f'"statusDetails.{unsupported[0]}" is not supported yet; set a plain status')
    return StatusUpdate(status)


def regresses(status: str) -> bool:
    """Whether a new event reopens an issue in ``status`` (a resolved one does)."""
    return status == "resolved"
