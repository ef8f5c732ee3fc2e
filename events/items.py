"""The non-event items SDKs send around events: sessions and client reports.

``session``/``sessions`` items become release-health rows (ClickHouse ``sessions_raw``);
``client_report`` items become ``client_discard`` outcomes, one per discarded
(reason, category), as Sentry records them (spec §9).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from events.process import InvalidEvent, parse_event_json
from events.rows import Outcome

#: Relay ignores client reports older than this or this far in the future (spec §9).
CLIENT_REPORT_MAX_AGE = dt.timedelta(days=30)
CLIENT_REPORT_MAX_FUTURE = dt.timedelta(seconds=60)

#: ClickHouse UInt32 columns: larger counts from a client are clamped, not fatal.
UINT32_MAX = 2**32 - 1

_DISCARD_ARRAYS = ("discarded_events", "rate_limited_events", "filtered_events",
                   "filtered_sampling_events")


def parse_timestamp(value: object) -> dt.datetime | None:
    """An RFC 3339 string or unix seconds, as SDKs send timestamps (spec §4.1)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
    if isinstance(value, str) and value:
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


def client_report_outcomes(payload: bytes, organization_id: int, project_id: int,
                           key_id: int, received: dt.datetime) -> list[Outcome]:
    report = parse_event_json(payload)
    when = parse_timestamp(report.get("timestamp")) or received
    if when < received - CLIENT_REPORT_MAX_AGE or when > received + CLIENT_REPORT_MAX_FUTURE:
        raise InvalidEvent("timestamp", f"client report timestamp {when.isoformat()} is outside"
                           " the accepted window (30 days back, 60 s ahead)")
    outcomes = []
    for array in _DISCARD_ARRAYS:
        entries = report.get(array)
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, Mapping):
                continue
            quantity = entry.get("quantity")
            if not isinstance(quantity, int) or quantity <= 0:
                continue
            outcomes.append(Outcome(organization_id, project_id, key_id, when,
                                    "client_discard", str(entry.get("reason") or ""),
                                    str(entry.get("category") or "default"), quantity))
    return outcomes


def _session_row(s: Mapping[str, Any], attrs: Mapping[str, Any], organization_id: int,
                 project_id: int, received: dt.datetime) -> dict[str, Any]:
    started = parse_timestamp(s.get("started")) or received
    duration = s.get("duration")
    errors = s.get("errors")
    return {
        "organization_id": organization_id, "project_id": project_id, "received": received,
        "session_id": str(s.get("sid") or s.get("did") or ""),
        # The user, for crash-free users (storage/release_health.py).
        "distinct_id": str(s.get("did") or ""),
        "status": str(s.get("status") or "ok"),
        "errors": min(errors, UINT32_MAX) if isinstance(errors, int) and errors >= 0 else 0,
        "is_init": 1 if s.get("init") is True else 0,
        "release": str(attrs.get("release") or ""),
        "environment": str(attrs.get("environment") or ""),
        "started": started,
        "duration_s": float(duration) if isinstance(duration, int | float) else 0.0,
        "quantity": 1,
    }


def session_rows(item_type: str, payload: bytes, organization_id: int, project_id: int,
                 received: dt.datetime) -> list[dict[str, Any]]:
    """Rows for one ``session`` update or one ``sessions`` aggregate item."""
    doc = parse_event_json(payload)
    raw_attrs = doc.get("attrs")
    attrs: Mapping[str, Any] = raw_attrs if isinstance(raw_attrs, Mapping) else {}
    if item_type == "session":
        return [_session_row(doc, attrs, organization_id, project_id, received)]
    rows = []
    for bucket in doc.get("aggregates") or []:
        if not isinstance(bucket, Mapping):
            continue
        started = parse_timestamp(bucket.get("started")) or received
        for status in ("exited", "errored", "abnormal", "crashed"):
            count = bucket.get(status)
            if isinstance(count, int) and count > 0:
                rows.append({
                    "organization_id": organization_id, "project_id": project_id,
                    "received": received, "session_id": str(bucket.get("did") or ""),
                    "distinct_id": str(bucket.get("did") or ""),
                    "status": status, "errors": 1 if status != "exited" else 0, "is_init": 1,
                    "release": str(attrs.get("release") or ""),
                    "environment": str(attrs.get("environment") or ""),
                    "started": started, "duration_s": 0.0,
                    "quantity": min(count, UINT32_MAX),
                })
    return rows

