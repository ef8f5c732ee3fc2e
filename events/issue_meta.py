"""Issue title, culprit and metadata of an event, derived the way Sentry shows them.

Input is a Relay-normalised event; odd shapes never raise (missing/wrong-typed fields are
skipped). Behaviour matched (Sentry's event-type metadata and culprit helpers, re-implemented):

* type: ``"error"`` when the event has an exception, ``"csp"`` for a CSP report (with its
  directive, blocked URI and message as metadata, Sentry's ``CspEvent``), else
  ``"default"`` (Relay infers the same).
* error title: ``"Type: value"`` of the last (most recent, §4.2) exception, the value cut to its
  first non-blank line and 100 characters (``truncatechars``: 97 + ``...``); ``"Type"`` alone
  without a value; without a type the crash frame's function, else ``"<unknown>"``.
* default title: first line of ``logentry.formatted`` (else ``logentry.message``, else a bare
  ``message`` string), stripped and cut to 100 characters; ``"<unlabeled event>"`` otherwise.
* culprit: the legacy client ``culprit`` field (Relay keeps it), else ``transaction``, else the
  crash frame of the most recent stack trace: last in-app frame with a culprit, else the
  top-most frame. Per frame: ``"module in function"`` (``filename`` when no module; location cut
  to 100 chars), JavaScript/Node ``"function(module)"``, native/Cocoa just the function; ``?``
  for a missing function. Else ``request.url``. At most 200 characters (§4.5 culprit limit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from events.grouping.shape import as_mapping, as_str, get_path, interface_values, mappings

MAX_TITLE_VALUE_CHARS: Final = 100
MAX_METADATA_VALUE_CHARS: Final = 1024
MAX_CULPRIT_CHARS: Final = 200  # Relay MaxChars::Culprit (§4.5)
MAX_CULPRIT_LOCATION_CHARS: Final = 100
UNLABELED_TITLE: Final = "<unlabeled event>"

_JAVASCRIPT_PLATFORMS: Final = frozenset({"javascript", "node"})
_FUNCTION_ONLY_PLATFORMS: Final = frozenset({"objc", "cocoa", "native"})
_UNUSABLE_FUNCTIONS: Final = frozenset({"<redacted>", "<unknown>"})


@dataclass(frozen=True)
class IssueMetadata:
    """What an issue list shows for an event's group."""

    title: str
    culprit: str
    type: str
    metadata: Mapping[str, str] = field(default_factory=dict)


def truncatechars(value: str, chars: int) -> str:
    """Cut to ``chars`` characters, the last three being ``...`` (Sentry ``truncatechars``)."""
    return value if len(value) <= chars else value[: chars - 3] + "..."


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


# --- culprit -----------------------------------------------------------------------------


def frame_culprit(frame: Mapping[str, Any], event_platform: str) -> str:
    """One frame as a culprit string; ``""`` when it has no location."""
    platform = as_str(frame.get("platform")) or event_platform
    function = as_str(frame.get("function")) or "?"
    if platform in _FUNCTION_ONLY_PLATFORMS:
        return function
    location = as_str(frame.get("module")) or as_str(frame.get("filename"))
    if location is None:
        return ""
    if platform in _JAVASCRIPT_PLATFORMS:
        return f"{function}({location})"
    return f"{truncatechars(location, MAX_CULPRIT_LOCATION_CHARS)} in {function}"


def _stacktrace_culprit(frames: Sequence[Mapping[str, Any]], platform: str) -> str:
    """The top-most in-app frame with a culprit, else the top-most frame's culprit."""
    fallback: str | None = None
    for frame in reversed(frames):
        culprit = frame_culprit(frame, platform)
        if frame.get("in_app") is True and culprit:
            return culprit
        if fallback is None and frame.get("in_app") is not True:
            fallback = culprit
    return fallback or ""


def _culprit_frames(event: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Frames of the most recent exception with frames, else of ``event.stacktrace``."""
    exceptions = interface_values(event.get("exception"))
    for exception in reversed(exceptions):
        frames = mappings(get_path(exception, "stacktrace", "frames"))
        if frames:
            return frames
    if exceptions:
        return []
    return mappings(get_path(event, "stacktrace", "frames"))


def culprit_for_event(event: Mapping[str, Any]) -> str:
    platform = as_str(event.get("platform")) or "other"
    culprit = (
        as_str(event.get("culprit"))
        or as_str(event.get("transaction"))
        or _stacktrace_culprit(_culprit_frames(event), platform)
        or as_str(get_path(event, "request", "url"))
        or ""
    )
    return truncatechars(culprit, MAX_CULPRIT_CHARS)


# --- title and metadata ------------------------------------------------------------------


def _metadata_frame(exceptions: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """Crash frame for metadata: among frames with a usable function, the last in-app one,
    else the last one, of the most recent exception that has any."""
    for exception in reversed(exceptions):
        frames = [
            frame
            for frame in mappings(get_path(exception, "stacktrace", "frames"))
            if as_str(frame.get("function")) not in _UNUSABLE_FUNCTIONS
            and as_str(frame.get("function")) is not None
        ]
        if frames:
            in_app = [frame for frame in frames if frame.get("in_app") is True]
            return in_app[-1] if in_app else frames[-1]
    return None


def error_metadata(exceptions: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """``type``/``value`` of the most recent exception, ``filename``/``function`` of its crash frame."""
    exception = exceptions[-1]
    metadata: dict[str, str] = {}
    exception_type = as_str(exception.get("type"))
    if exception_type is not None:
        metadata["type"] = exception_type
    value = as_str(exception.get("value"))
    if value is not None:
        metadata["value"] = truncatechars(value, MAX_METADATA_VALUE_CHARS)
    frame = _metadata_frame(exceptions)
    if frame is not None:
        filename = as_str(frame.get("filename")) or as_str(frame.get("abs_path"))
        if filename is not None:
            metadata["filename"] = filename
        metadata["function"] = as_str(frame.get("function")) or ""
    return metadata


def error_title(metadata: Mapping[str, str]) -> str:
    exception_type = metadata.get("type")
    if exception_type is None:
        return metadata.get("function") or "<unknown>"
    value = _first_line(metadata.get("value", ""))
    if not value:
        return exception_type
    return f"{exception_type}: {truncatechars(value, MAX_TITLE_VALUE_CHARS)}"


def message_title(event: Mapping[str, Any]) -> str:
    logentry = as_mapping(event.get("logentry")) or {}
    message = (
        as_str(logentry.get("formatted"))
        or as_str(logentry.get("message"))
        or as_str(event.get("message"))
        or ""
    )
    first = _first_line(message)
    return truncatechars(first, MAX_TITLE_VALUE_CHARS) if first else UNLABELED_TITLE


def issue_metadata_for_event(event: Mapping[str, Any]) -> IssueMetadata:
    """Title, culprit, type and metadata of a Relay-normalised event (see module docstring)."""
    if not isinstance(event, Mapping):
        event = {}
    culprit = culprit_for_event(event)
    exceptions = interface_values(event.get("exception"))
    if exceptions:
        metadata = error_metadata(exceptions)
        return IssueMetadata(error_title(metadata), culprit, "error", metadata)
    title = message_title(event)
    csp = as_mapping(event.get("csp"))
    if event.get("type") == "csp" and csp is not None:
        return IssueMetadata(title, culprit, "csp", csp_metadata(csp, title))
    return IssueMetadata(title, culprit, "default", {"title": title})


def csp_metadata(csp: Mapping[str, Any], message: str) -> dict[str, str]:
    """A CSP report's issue metadata as Sentry's ``CspEvent`` keeps it: the directive, the
    blocked URI and the message (sentry/eventtypes/security.py)."""
    found = {"directive": as_str(csp.get("effective_directive")),
             "uri": as_str(csp.get("blocked_uri")), "message": message}
    return {k: truncatechars(v, MAX_METADATA_VALUE_CHARS) for k, v in found.items()
            if v is not None}
