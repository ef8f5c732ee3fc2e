"""A stored event (Relay-normalized, scrubbed JSON) as Sentry's Web API shows it (pure).

Sentry's event endpoint answers the event's interfaces as ``entries`` in camelCase
(``exception``, ``message``, ``breadcrumbs``, ``request``, ``threads``), frames with
``absPath``/``lineNo``/``colNo``/``inApp`` and ``context`` as ``[[lineno, line], ...]``,
``tags`` as ``[{"key", "value"}]``, and the ``_meta`` of scrubbed fields as stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


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
            "context": context, "vars": frame.get("vars"),
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
             "current": t.get("current"), "stacktrace": _stacktrace(t.get("stacktrace"))}
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


def event_json(event: Mapping[str, Any], *, event_id: str, project_id: int, group_id: int,
               title: str, date_created: str, previous_id: str | None = None,
               next_id: str | None = None) -> dict[str, Any]:
    tags = event.get("tags")
    pairs = [p for p in tags if isinstance(p, list) and len(p) == 2] \
        if isinstance(tags, list) else []
    logentry = event.get("logentry")
    message = logentry.get("formatted") if isinstance(logentry, Mapping) else None
    return {
        "id": event_id, "eventID": event_id, "groupID": str(group_id),
        "projectID": str(project_id), "title": title, "message": message or "",
        "platform": event.get("platform"), "type": event.get("type"),
        "dateCreated": date_created, "dateReceived": event.get("received"),
        "culprit": event.get("culprit"), "location": event.get("transaction"),
        "level": event.get("level"), "release": event.get("release"),
        "environment": event.get("environment"), "dist": event.get("dist"),
        "tags": [{"key": str(k), "value": str(v)} for k, v in pairs],
        "user": event.get("user"), "contexts": event.get("contexts") or {},
        # Sentry answers the event's ``extra`` as ``context``; ``extra`` kept too.
        "context": event.get("extra") or {}, "extra": event.get("extra") or {},
        "sdk": event.get("sdk"), "fingerprints": event.get("fingerprint") or [],
        "entries": event_entries(event), "errors": event.get("errors") or [],
        "_meta": event.get("_meta") or {},
        "previousEventID": previous_id, "nextEventID": next_id,
    }
