"""A stored event (Relay-normalized, scrubbed JSON) as Sentry's Web API shows it (pure).

Sentry's event endpoint answers the event's interfaces as ``entries`` in camelCase
(``exception``, ``message``, ``breadcrumbs``, ``request``, ``threads``), frames with
``absPath``/``lineNo``/``colNo``/``inApp`` and ``context`` as ``[[lineno, line], ...]``,
a symbolicated stack trace's minified frames as ``rawStacktrace`` beside ``stacktrace``
(null when nothing was symbolicated), the event's processing ``errors`` (why a frame
stayed minified, what normalization discarded) as ``{"type", "message", "data"}``, ``tags`` as ``[{"key", "value"}]`` sorted by key, the ``user``
fields of Sentry's user interface, ``title``/``culprit``/``location``/``metadata`` as stored with the event, and the
``_meta`` of scrubbed fields as stored (the tags' re-indexed to the answered order).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from events.grouping.shape import get_path
from events.issue_meta import issue_metadata_for_event
from events.process import event_summary
from events.source_fetch import (
    FETCH_GENERIC_ERROR,
    FETCH_INVALID_HTTP_CODE,
    FETCH_TIMEOUT,
    FETCH_TOO_LARGE,
    JS_INVALID_CONTENT,
    RESTRICTED_IP,
    SECURITY_VIOLATION,
)
from events.symbolicate import (
    JS_INVALID_SOURCEMAP,
    JS_INVALID_SOURCEMAP_LOCATION,
    JS_MISSING_SOURCES_CONTENT,
    JS_NO_COLUMN,
    JS_NO_SOURCE,
    JS_TOO_LARGE,
)
from events.tags import USER_TAG_FIELDS

#: The ``message`` of each processing error type in the event API: Sentry's ``EventError``
#: types (Relay's normalization errors, events/symbolicate.py's source map errors,
#: events/source_fetch.py's fetch errors and actors/symbolicate.py's
#: ``symbolication_failed``), in our words.
ERROR_MESSAGES: Final = {
    "invalid_data": "Discarded invalid value",
    "invalid_attribute": "Discarded unknown attribute",
    "missing_attribute": "Missing value for a required attribute",
    "value_too_long": "Discarded value that was too long",
    "future_timestamp": "Timestamp in the future, replaced by the time it was received",
    "past_timestamp": "Timestamp too far in the past, replaced by the time it was received",
    "clock_drift": "The SDK's clock is off; timestamps were corrected",
    JS_NO_SOURCE: "Source code or source map not found",
    JS_INVALID_SOURCEMAP: "Invalid source map",
    JS_MISSING_SOURCES_CONTENT: "Source map without the original source",
    JS_INVALID_SOURCEMAP_LOCATION: "Position not in the source map",
    JS_TOO_LARGE: "Source map too large",
    JS_NO_COLUMN: "Frame without a column number",
    "symbolication_failed": "Symbolication failed",
    FETCH_GENERIC_ERROR: "Unable to fetch the file",
    FETCH_INVALID_HTTP_CODE: "The file's server answered an error",
    FETCH_TOO_LARGE: "The fetched file is too large",
    FETCH_TIMEOUT: "Fetching the file timed out",
    JS_INVALID_CONTENT: "The fetched file is not JavaScript",
    RESTRICTED_IP: "Not fetched: a private address",
    SECURITY_VIOLATION: "Not fetched: the domain is not allowed",
}

#: The user fields Sentry's event API answers (``User.get_api_context``).
USER_API_FIELDS: Final = ("id", "email", "username", "ip_address", "name", "geo", "data")
USER_TAG_KEYWORDS: Final = frozenset(keyword for _, keyword in USER_TAG_FIELDS)


def _frame(frame: Mapping[str, Any]) -> dict[str, Any]:
    line = frame.get("lineno")
    context: list[list[Any]] = []
    if isinstance(line, int):
        pre = frame.get("pre_context") or []
        post = frame.get("post_context") or []
        context += [[line - len(pre) + n, text] for n, text in enumerate(pre)]
        if frame.get("context_line") is not None:
            context.append([line, frame.get("context_line")])
        context += [[line + 1 + n, text] for n, text in enumerate(post)]
    return {"filename": frame.get("filename"), "absPath": frame.get("abs_path"),
            "module": frame.get("module"), "package": frame.get("package"),
            "platform": frame.get("platform"), "function": frame.get("function"),
            "rawFunction": frame.get("raw_function"), "lineNo": line,
            "colNo": frame.get("colno"), "inApp": bool(frame.get("in_app")),
            "context": context, "vars": frame.get("vars"), "data": frame.get("data"),
            "instructionAddr": frame.get("instruction_addr")}


def _stacktrace(stacktrace: object) -> dict[str, Any] | None:
    if not isinstance(stacktrace, Mapping):
        return None
    frames = stacktrace.get("frames")
    return {"frames": [_frame(f) for f in frames if isinstance(f, Mapping)]
            if isinstance(frames, list) else [],
            "framesOmitted": stacktrace.get("frames_omitted"),
            "registers": stacktrace.get("registers")}


def _values(container: object) -> list[Mapping[str, Any]]:
    values = container.get("values") if isinstance(container, Mapping) else container
    return [v for v in values if isinstance(v, Mapping)] if isinstance(values, list) else []


def _exception_entry(event: Mapping[str, Any]) -> dict[str, Any] | None:
    values = _values(event.get("exception"))
    if not values:
        return None
    return {"type": "exception", "data": {"values": [
        {"type": v.get("type"), "value": v.get("value"), "module": v.get("module"),
         "mechanism": v.get("mechanism"), "threadId": v.get("thread_id"),
         "stacktrace": _stacktrace(v.get("stacktrace")),
         "rawStacktrace": _stacktrace(v.get("raw_stacktrace"))} for v in values],
        "hasSystemFrames": any(not f.get("in_app")
                               for v in values for f in _frames(v.get("stacktrace")))}}


def _frames(stacktrace: object) -> list[Mapping[str, Any]]:
    if not isinstance(stacktrace, Mapping) or not isinstance(stacktrace.get("frames"), list):
        return []
    return [f for f in stacktrace["frames"] if isinstance(f, Mapping)]


def _request_entry(event: Mapping[str, Any]) -> dict[str, Any] | None:
    request = event.get("request")
    if not isinstance(request, Mapping):
        return None
    return {"type": "request", "data": {
        "url": request.get("url"), "method": request.get("method"),
        "query": request.get("query_string"), "fragment": request.get("fragment"),
        "data": request.get("data"), "headers": request.get("headers") or [],
        "cookies": request.get("cookies") or [], "env": request.get("env"),
        "inferredContentType": request.get("inferred_content_type")}}


def event_entries(event: Mapping[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    logentry = event.get("logentry")
    if isinstance(logentry, Mapping):
        entries.append({"type": "message", "data": {
            "formatted": logentry.get("formatted") or logentry.get("message"),
            "message": logentry.get("message"), "params": logentry.get("params")}})
    exception = _exception_entry(event)
    if exception is not None:
        entries.append(exception)
    threads = _values(event.get("threads"))
    if threads:
        entries.append({"type": "threads", "data": {"values": [
            {"id": t.get("id"), "name": t.get("name"), "crashed": t.get("crashed"),
             "current": t.get("current"), "stacktrace": _stacktrace(t.get("stacktrace")),
             "rawStacktrace": _stacktrace(t.get("raw_stacktrace"))}
            for t in threads]}})
    breadcrumbs = _values(event.get("breadcrumbs"))
    if breadcrumbs:
        entries.append({"type": "breadcrumbs", "data": {"values": [
            {"timestamp": b.get("timestamp"), "type": b.get("type") or "default",
             "category": b.get("category"), "level": b.get("level") or "info",
             "message": b.get("message"), "data": b.get("data")} for b in breadcrumbs]}})
    request = _request_entry(event)
    if request is not None:
        entries.append(request)
    return entries


def event_tags_json(event: Mapping[str, Any]) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """The event's tags as Sentry's event serializer answers them (``_get_tags_with_meta``):
    sorted by key, ``sentry:`` internal prefixes removed, entries Relay invalidated left
    out, a ``query`` on ``user`` tags (``convert_user_tag_to_query``: ``user.id:"42"``), and
    the ``_meta`` of each value re-indexed to the answered order as ``{"value": meta}``."""
    tags = event.get("tags")
    raw_meta = get_path(event, "_meta", "tags")
    meta = raw_meta if isinstance(raw_meta, Mapping) else {}
    found = []
    for index, pair in enumerate(tags if isinstance(tags, list) else []):
        if isinstance(pair, list) and len(pair) == 2 and pair[0] is not None \
                and pair[1] is not None:
            key = str(pair[0]).removeprefix("sentry:")
            found.append((key, str(pair[1]), get_path(meta, str(index), "1")))
    found.sort(key=lambda t: t[0])
    answered = []
    for key, value, _ in found:
        tag = {"key": key, "value": value}
        query = _user_tag_query(key, value)
        if query is not None:
            tag["query"] = query
        answered.append(tag)
    tags_meta = {str(n): {"value": m} for n, (_, _, m) in enumerate(found) if m}
    return answered, tags_meta


def _user_tag_query(key: str, value: str) -> str | None:
    keyword, sep, rest = value.partition(":")
    if key != "user" or not sep or keyword not in USER_TAG_KEYWORDS:
        return None
    escaped = rest.replace('"', '\\"')
    return f'user.{keyword}:"{escaped}"'


def user_json(user: object) -> dict[str, Any] | None:
    """The user as Sentry's ``User.get_api_context`` answers it; internal fields such as
    Relay's ``sentry_user`` are not part of it."""
    if not isinstance(user, Mapping):
        return None
    return {field: user.get(field) for field in USER_API_FIELDS}


def errors_json(errors: object) -> list[dict[str, Any]]:
    """The event's processing errors as Sentry's event API answers them: ``{"type",
    "message", "data"}``, ``data`` holding every other field as stored (``url``,
    ``sourcemap``, ``reason``, Relay's ``name`` and ``value``, …)."""
    answered = []
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, Mapping):
            continue
        kind = str(error.get("type") or "unknown_error")
        answered.append({"type": kind, "message": ERROR_MESSAGES.get(
            kind, kind.replace("_", " ").capitalize()),
            "data": {k: v for k, v in error.items() if k != "type"}})
    return answered


def event_summary_json(event: Mapping[str, Any]) -> dict[str, Any]:
    """``title``, ``culprit``, ``location`` and ``metadata`` as stored with the event when it
    was processed (events/process.py ``event_summary``); computed from the event for events
    stored before they were (without a fingerprint rule's title, which the event lacks)."""
    if isinstance(event.get("title"), str) and "metadata" in event:
        return {"title": event["title"], "culprit": event.get("culprit") or "",
                "location": event.get("location"), "metadata": event.get("metadata") or {}}
    return event_summary(issue_metadata_for_event(event))


def event_json(event: Mapping[str, Any], *, event_id: str, project_id: int, group_id: int,
               date_created: str, previous_id: str | None = None,
               next_id: str | None = None) -> dict[str, Any]:
    """One event in Sentry's event API shape."""
    logentry = event.get("logentry")
    message = logentry.get("formatted") if isinstance(logentry, Mapping) else None
    summary = event_summary_json(event)
    tags, tags_meta = event_tags_json(event)
    meta = event.get("_meta")
    meta = {**meta, "tags": tags_meta} if isinstance(meta, Mapping) and "tags" in meta \
        else (meta or {})
    return {
        "id": event_id, "eventID": event_id, "groupID": str(group_id),
        "projectID": str(project_id), "title": summary["title"],
        "message": message or "", "platform": event.get("platform"), "type": event.get("type"),
        "dateCreated": date_created, "dateReceived": event.get("received"),
        "culprit": summary["culprit"], "location": summary["location"],
        "metadata": summary["metadata"],
        "level": event.get("level"), "release": event.get("release"),
        "environment": event.get("environment"), "dist": event.get("dist"),
        "tags": tags, "user": user_json(event.get("user")),
        "contexts": event.get("contexts") or {},
        # Sentry answers the event's ``extra`` as ``context``; ``extra`` kept too.
        "context": event.get("extra") or {}, "extra": event.get("extra") or {},
        "sdk": event.get("sdk"), "fingerprints": event.get("fingerprint") or [],
        "entries": event_entries(event), "errors": errors_json(event.get("errors")),
        "_meta": meta,
        "previousEventID": previous_id, "nextEventID": next_id,
    }
