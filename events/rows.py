"""Processed events as Arrow record batches, in the shape of ClickHouse's ``events`` table.

Promoted columns (release, environment, level, user, transaction, ...) are pulled out of
the normalized event so list and search queries never parse the body; the ``tags`` map
holds every tag, the standard ones too (``level``, ``environment``, ``release``, ``user``,
``browser``, ...: events/tags.py); the whole event is kept in ``body`` (zstd-compressed by
ClickHouse) for the event page, with the hash of what grouping reads of it
(``grouping_projection``, events/projection.py) for ``crashray reprocess``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from events.process import ProcessedEvent
from events.projection import stored_projection

_TS = pa.timestamp("us", tz="UTC")

EVENTS_SCHEMA = pa.schema([
    ("organization_id", pa.uint64()), ("project_id", pa.uint64()),
    ("event_id", pa.string()), ("group_id", pa.uint64()), ("primary_hash", pa.string()),
    ("timestamp", _TS), ("received", _TS), ("retention_days", pa.uint16()),
    ("type", pa.string()), ("platform", pa.string()), ("level", pa.string()),
    ("environment", pa.string()), ("release", pa.string()), ("dist", pa.string()),
    ("transaction", pa.string()), ("logger", pa.string()), ("server_name", pa.string()),
    ("title", pa.string()), ("message", pa.string()), ("culprit", pa.string()),
    ("user_id", pa.string()), ("user_email", pa.string()), ("user_username", pa.string()),
    ("user_ip", pa.string()), ("sdk_name", pa.string()), ("sdk_version", pa.string()),
    ("tags", pa.map_(pa.string(), pa.string())),
    ("exception_types", pa.list_(pa.string())), ("exception_values", pa.list_(pa.string())),
    ("frame_functions", pa.list_(pa.string())), ("frame_modules", pa.list_(pa.string())),
    ("frame_filenames", pa.list_(pa.string())), ("frame_in_app", pa.list_(pa.uint8())),
    ("body", pa.string()),
    ("grouping_projection", pa.uint64()),
])


@dataclass(frozen=True)
class EventRow:
    """A processed event and where it belongs."""

    organization_id: int
    project_id: int
    group_id: int
    retention_days: int
    processed: ProcessedEvent


def _s(value: object) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _values(container: object) -> list[Mapping[str, Any]]:
    values = _dict(container).get("values")
    return [v for v in values if isinstance(v, Mapping)] if isinstance(values, list) else []


def _tags(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ``tags`` map: the event's tags (client tags and the standard tags derived by
    events/tags.py), without the entries Relay invalidated (``null`` key or value)."""
    tags = event.get("tags")
    if not isinstance(tags, list):
        return []
    pairs = {}
    for pair in tags:
        if isinstance(pair, list) and len(pair) == 2 and pair[0] is not None \
                and pair[1] is not None:
            pairs[_s(pair[0])] = _s(pair[1])
    return list(pairs.items())


def _message(event: Mapping[str, Any]) -> str:
    logentry = _dict(event.get("logentry"))
    return _s(logentry.get("formatted") or logentry.get("message"))


def _frames(exceptions: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    frames: list[Mapping[str, Any]] = []
    for exc in exceptions:
        raw = _dict(exc.get("stacktrace")).get("frames")
        if isinstance(raw, list):
            frames.extend(f for f in raw if isinstance(f, Mapping))
    return frames


def _row(r: EventRow) -> dict[str, Any]:
    p = r.processed
    e = p.event
    user, sdk = _dict(e.get("user")), _dict(e.get("sdk"))
    exceptions = _values(e.get("exception"))
    frames = _frames(exceptions)
    tags = _tags(e)
    return {
        "organization_id": r.organization_id, "project_id": r.project_id,
        "event_id": str(uuid.UUID(p.event_id)), "group_id": r.group_id,
        "primary_hash": p.grouping.primary_hash, "timestamp": p.timestamp,
        "received": p.received, "retention_days": r.retention_days,
        "type": _s(e.get("type")) or "default", "platform": _s(e.get("platform")) or "other",
        "level": _s(e.get("level")) or "error", "environment": _s(e.get("environment")),
        "release": _s(e.get("release")), "dist": _s(e.get("dist")),
        "transaction": _s(e.get("transaction")), "logger": _s(e.get("logger")),
        "server_name": dict(tags).get("server_name", ""),
        "title": p.issue.title, "message": _message(e), "culprit": p.issue.culprit,
        "user_id": _s(user.get("id")), "user_email": _s(user.get("email")),
        "user_username": _s(user.get("username")), "user_ip": _s(user.get("ip_address")),
        "sdk_name": _s(sdk.get("name")), "sdk_version": _s(sdk.get("version")),
        "tags": tags,
        "exception_types": [_s(x.get("type")) for x in exceptions],
        "exception_values": [_s(x.get("value")) for x in exceptions],
        "frame_functions": [_s(f.get("function")) for f in frames],
        "frame_modules": [_s(f.get("module")) for f in frames],
        "frame_filenames": [_s(f.get("filename") or f.get("abs_path")) for f in frames],
        "frame_in_app": [1 if f.get("in_app") is True else 0 for f in frames],
        "body": orjson.dumps(e).decode(),
        "grouping_projection": stored_projection(e),
    }


def events_table(rows: Sequence[EventRow]) -> pa.Table:
    """One Arrow table for a batch of events, ready for ClickHouse ``insert_arrow``."""
    return pa.Table.from_pylist([_row(r) for r in rows], schema=EVENTS_SCHEMA)


OUTCOMES_SCHEMA = pa.schema([
    ("organization_id", pa.uint64()), ("project_id", pa.uint64()), ("key_id", pa.uint64()),
    ("hour", pa.timestamp("s", tz="UTC")), ("outcome", pa.string()), ("reason", pa.string()),
    ("category", pa.string()), ("quantity", pa.uint64()),
])


@dataclass(frozen=True)
class Outcome:
    """What became of ``quantity`` items of one category (Sentry's outcomes)."""

    organization_id: int
    project_id: int
    key_id: int
    timestamp: dt.datetime
    outcome: str  # accepted | filtered | rate_limited | invalid | client_discard
    reason: str
    category: str
    quantity: int = 1


def outcomes_table(outcomes: Sequence[Outcome]) -> pa.Table:
    return pa.Table.from_pylist([
        {"organization_id": o.organization_id, "project_id": o.project_id, "key_id": o.key_id,
         "hour": o.timestamp.replace(minute=0, second=0, microsecond=0), "outcome": o.outcome,
         "reason": o.reason, "category": o.category, "quantity": o.quantity}
        for o in outcomes
    ], schema=OUTCOMES_SCHEMA)


SESSIONS_SCHEMA = pa.schema([
    ("queue_id", pa.uint64()), ("row", pa.uint16()), ("organization_id", pa.uint64()), ("project_id", pa.uint64()),
    ("received", pa.timestamp("ms", tz="UTC")), ("session_id", pa.string()),
    ("distinct_id", pa.string()), ("status", pa.string()), ("errors", pa.uint32()), ("is_init", pa.uint8()),
    ("release", pa.string()), ("environment", pa.string()),
    ("started", pa.timestamp("ms", tz="UTC")), ("duration_s", pa.float64()),
    ("quantity", pa.uint32()),
])


def sessions_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=SESSIONS_SCHEMA)


ENVELOPE_ITEMS_SCHEMA = pa.schema([
    ("queue_id", pa.uint64()), ("organization_id", pa.uint64()), ("project_id", pa.uint64()), ("event_id", pa.string()),
    ("item_type", pa.string()), ("received", pa.timestamp("ms", tz="UTC")),
    ("headers", pa.string()), ("payload", pa.binary()), ("retention_days", pa.uint16()),
])


@dataclass(frozen=True)
class RawItem:
    """An envelope item kept as sent."""

    queue_id: int
    organization_id: int
    project_id: int
    event_id: str
    item_type: str
    received: dt.datetime
    headers: Mapping[str, Any]
    payload: bytes


def envelope_items_table(items: Sequence[RawItem], retention_days: int) -> pa.Table:
    return pa.Table.from_pylist([
        {"queue_id": i.queue_id, "organization_id": i.organization_id,
         "project_id": i.project_id, "event_id": i.event_id, "item_type": i.item_type, "received": i.received,
         "headers": orjson.dumps(i.headers).decode(), "payload": i.payload,
         "retention_days": retention_days}
        for i in items
    ], schema=ENVELOPE_ITEMS_SCHEMA)


ISSUE_COUNTS_SCHEMA = pa.schema([
    ("project_id", pa.uint64()), ("group_id", pa.uint64()),
    ("hour", pa.timestamp("s", tz="UTC")), ("retention_days", pa.uint16()),
    ("count", pa.uint64()),
])


@dataclass(frozen=True)
class IssueCount:
    """Events of one issue in one hour (ClickHouse ``issue_counts_hourly``)."""

    project_id: int
    group_id: int
    hour: dt.datetime
    retention_days: int
    count: int


def issue_counts_table(counts: Sequence[IssueCount]) -> pa.Table:
    return pa.Table.from_pylist([
        {"project_id": c.project_id, "group_id": c.group_id, "hour": c.hour,
         "retention_days": c.retention_days, "count": c.count} for c in counts
    ], schema=ISSUE_COUNTS_SCHEMA)


def _hour(when: dt.datetime) -> dt.datetime:
    aware = when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def hourly_issue_counts(events: Sequence[EventRow]) -> list[IssueCount]:
    """The rollup rows of ``events`` (each counted once), summed per issue and hour."""
    sums: dict[tuple[int, int, dt.datetime, int], int] = {}
    for r in events:
        key = (r.project_id, r.group_id, _hour(r.processed.timestamp), r.retention_days)
        sums[key] = sums.get(key, 0) + 1
    return [IssueCount(p, g, h, d, n) for (p, g, h, d), n in sums.items()]


def summed_outcomes(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """``outcomes`` summed per row of ClickHouse's ``outcomes`` table (hour and all keys)."""
    sums: dict[tuple[int, int, int, dt.datetime, str, str, str], int] = {}
    for o in outcomes:
        key = (o.organization_id, o.project_id, o.key_id, _hour(o.timestamp), o.outcome,
               o.reason, o.category)
        sums[key] = sums.get(key, 0) + o.quantity
    return [Outcome(*key, quantity=n) for key, n in sums.items()]


@dataclass(frozen=True)
class Counts:
    """What one finished batch adds to ClickHouse's summed tables (an outbox row)."""

    issue_counts: tuple[IssueCount, ...]
    outcomes: tuple[Outcome, ...]

    def tables(self) -> dict[str, pa.Table]:
        return {"issue_counts_hourly": issue_counts_table(self.issue_counts),
                "outcomes": outcomes_table(self.outcomes)}


def encode_counts(counts: Counts) -> bytes:
    """``counts`` as stored in PostgreSQL's ``clickhouse_outbox`` (hours as epoch seconds)."""
    return orjson.dumps({
        "issue_counts": [[c.project_id, c.group_id, int(c.hour.timestamp()), c.retention_days,
                          c.count] for c in counts.issue_counts],
        "outcomes": [[o.organization_id, o.project_id, o.key_id, int(o.timestamp.timestamp()),
                      o.outcome, o.reason, o.category, o.quantity] for o in counts.outcomes]})


def decode_counts(data: bytes) -> Counts:
    stored = orjson.loads(data)

    def at(epoch_s: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(epoch_s, dt.UTC)

    return Counts(
        tuple(IssueCount(p, g, at(h), d, n) for p, g, h, d, n in stored["issue_counts"]),
        tuple(Outcome(org, p, k, at(h), o, r, c, q)
              for org, p, k, h, o, r, c, q in stored["outcomes"]))
