"""The Sentry envelope format, byte level (spec §2), and the legacy /store/ body (spec §3.4).

Grammar (spec §2.1)::

    Envelope = Headers { "\\n" Item } [ "\\n" ]
    Item     = Headers "\\n" Payload
    Headers  = one line of compact UTF-8 JSON object

``parse_envelope`` checks framing and headers only. Item payloads stay bytes: Relay parses
event JSON asynchronously and answers 200 for a well-framed envelope whose event is garbage
(spec §3.4, §10 step 7), so that decision belongs downstream. Items of unknown type are kept;
the caller skips them (spec §2.1 rule 7).

Errors (``events.errors``): framing or header problems raise ``InvalidEnvelope`` (400,
"invalid event envelope", the sentence saying which item and what is wrong in ``causes``);
size limits raise ``PayloadTooLarge`` (413, spec §3.3, Relay PR #5474) with detail
"envelope exceeded size limits for type '<type>'" and a cause naming the setting;
an empty body raises ``BadRequest("empty request body")``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import orjson

from events.errors import BadRequest, InvalidEnvelope, PayloadTooLarge

__all__ = [
    "Envelope",
    "EnvelopeItem",
    "EnvelopeLimits",
    "check_size_limits",
    "data_category_for_item",
    "normalize_event_id",
    "normalize_sent_at",
    "parse_envelope",
    "parse_envelope_headers",
    "parse_store_body",
]

KIB = 1024
MIB = 1024 * KIB
MB = 1000 * 1000


@dataclass(frozen=True)
class EnvelopeLimits:
    """Per-envelope limits (spec §3.2, Relay's ``Limits::default()`` in relay-config).

    ``SETTINGS`` names the ``CRASHRAY_*`` setting each field comes from, so errors cite it.
    """

    # Relay's max_event_size: 1 MiB for event/transaction items and for a /store/ body.
    max_event_item_bytes: int = 1 * MIB
    # Relay's max_attachment_size and max_attachments_size: 100 MB each (spec §3.2).
    max_attachment_bytes: int = 100 * MB
    max_attachments_total_bytes: int = 100 * MB
    # Relay's max_session_count: session + sessions items per envelope.
    max_session_items: int = 100
    # Relay's max_client_reports_size.
    max_client_report_bytes: int = 4 * KIB
    # Relay's max_check_in_size (spec §3.2: 100 KB per check-in item).
    max_check_in_bytes: int = 100 * KIB
    # Not a Relay limit: bounds the work of parsing an envelope of many tiny items.
    max_items: int = 1000

    SETTINGS: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "max_event_item_bytes": "CRASHRAY_MAX_EVENT_BYTES",
            "max_attachment_bytes": "CRASHRAY_MAX_ATTACHMENT_BYTES",
            "max_attachments_total_bytes": "CRASHRAY_MAX_ATTACHMENTS_TOTAL_BYTES",
            "max_session_items": "CRASHRAY_MAX_SESSION_ITEMS",
            "max_client_report_bytes": "CRASHRAY_MAX_CLIENT_REPORT_BYTES",
            "max_check_in_bytes": "CRASHRAY_MAX_CHECK_IN_BYTES",
            "max_items": "CRASHRAY_MAX_ENVELOPE_ITEMS",
        }
    )

    def value_of(self, limit_name: str) -> int:
        """The value of the limit field called ``limit_name``."""
        value: int = getattr(self, limit_name)
        return value


@dataclass(frozen=True)
class EnvelopeItem:
    """One item: its ``type`` header, all its headers as sent, and its payload bytes."""

    type: str
    headers: Mapping[str, Any]
    payload: bytes = field(repr=False)

    @property
    def length(self) -> int:
        """Payload size in bytes."""
        return len(self.payload)


@dataclass(frozen=True)
class Envelope:
    """The envelope headers as sent (unknown keys kept, spec §2.2) and its items in order."""

    headers: Mapping[str, Any]
    items: tuple[EnvelopeItem, ...]

    @property
    def event_id(self) -> str | None:
        """The ``event_id`` header as 32 lowercase hex digits, or None when absent or null.

        ``parse_envelope`` has already refused malformed ids; on a hand-built envelope one
        raises ``InvalidEnvelope`` here.
        """
        return normalize_event_id(self.headers.get("event_id"))


_EVENT_ID_RE = re.compile(
    r"[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def normalize_event_id(value: object) -> str | None:
    """32-hex or 36-char dashed UUID → 32 lowercase hex (spec §2.1 rule 6); null → None."""
    if value is None:
        return None
    if isinstance(value, str) and _EVENT_ID_RE.fullmatch(value):
        return value.replace("-", "").lower()
    raise InvalidEnvelope(
        f'envelope header "event_id" must be 32 hex digits or a dashed UUID, got {value!r:.80}'
    )


#: Longer than any RFC 3339 date and time with fractions and an offset.
_MAX_SENT_AT_CHARS = 64


def normalize_sent_at(value: object) -> str | None:
    """The ``sent_at`` envelope header (spec §2.2) as an RFC 3339 UTC string; None when it
    is absent or no date and time. It only corrects the event's clock drift, so an
    unreadable one is dropped rather than failing the event: sentry-relay's normalizer
    refuses to start for it, which would fail the item on every delivery. Without an
    offset, UTC (as SDKs mean it)."""
    if not isinstance(value, str) or len(value) > _MAX_SENT_AT_CHARS:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC).isoformat()
    except (ValueError, OverflowError):
        return None


def parse_envelope(body: bytes, limits: EnvelopeLimits) -> Envelope:
    """Split an envelope into headers and items, enforcing spec §2.1 and the size limits."""
    if not body:
        raise BadRequest("empty request body")
    headers, header_end = _read_header(body, 0, "envelope header")
    normalize_event_id(headers.get("event_id"))
    items: list[EnvelopeItem] = []
    # Relay's loop (relay-server/src/envelope/mod.rs parse_items): an item starts right after
    # the newline that ends the previous header or payload; at EOF (or just past the single
    # optional trailing newline) the envelope is complete.
    offset = header_end + 1
    while offset < len(body):
        if len(items) == limits.max_items:
            raise _too_many_items(limits)
        item, payload_end = _read_item(body, offset, len(items) + 1)
        items.append(item)
        offset = payload_end + 1
    envelope = Envelope(headers=MappingProxyType(headers), items=tuple(items))
    check_size_limits(envelope, limits)
    return envelope


def parse_envelope_headers(first_line: bytes) -> Mapping[str, Any]:
    """The envelope headers from its first line alone (leading whitespace and the newline
    already gone), checked as ``parse_envelope`` checks them: for reading the ``dsn`` before
    the rest of the body."""
    headers = _decode_header_line(first_line, "envelope header")
    normalize_event_id(headers.get("event_id"))
    return MappingProxyType(headers)


def _read_item(body: bytes, offset: int, index: int) -> tuple[EnvelopeItem, int]:
    """Parse item ``index`` (1-based) at ``offset``; returns it and where its payload ends."""
    where = f"envelope item {index}"
    headers, header_end = _read_header(body, offset, f"{where}: header")
    item_type = headers.get("type")
    if not isinstance(item_type, str):
        raise InvalidEnvelope(f'{where}: header needs a string "type", got {item_type!r:.80}')
    if item_type == "integration":
        # Relay-internal (spec §2.4): rejected when a client sends it.
        raise InvalidEnvelope(
            f'{where}: item type "integration" is internal to the server; SDKs may not send it'
        )
    # The last header needs no newline, so the payload may start at EOF (Relay item.rs).
    payload_start = min(header_end + 1, len(body))
    length = _declared_length(headers, where)
    if length is None:
        # Implicit length: up to the next "\n" or EOF; a "\r" stays in the payload (§2.1).
        payload_end = body.find(b"\n", payload_start)
        payload_end = len(body) if payload_end == -1 else payload_end
    else:
        payload_end = payload_start + length
        _check_counted_payload(body, payload_start, length, where)
    item = EnvelopeItem(
        type=item_type,
        headers=MappingProxyType(headers),
        payload=body[payload_start:payload_end],
    )
    return item, payload_end


def _declared_length(headers: Mapping[str, Any], where: str) -> int | None:
    """The ``length`` header: absent or null means implicit; else a u32 as in Relay."""
    length = headers.get("length")
    if length is None:
        return None
    if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length < 2**32:
        raise InvalidEnvelope(
            f'{where}: header "length" must be a non-negative integer byte count, '
            f"got {length!r:.40}"
        )
    return length


def _check_counted_payload(body: bytes, start: int, length: int, where: str) -> None:
    """A counted payload must fit, and be followed by "\\n" or EOF (spec §2.1 rule 4)."""
    available = len(body) - start
    if length > available:
        raise InvalidEnvelope(
            f'{where}: header "length" is {length} but only {available} bytes follow'
        )
    end = start + length
    if end < len(body) and body[end : end + 1] != b"\n":
        raise InvalidEnvelope(
            f'{where}: the {length} bytes counted by header "length" are followed by '
            f"{body[end : end + 10]!r} instead of a newline; check the length is in bytes"
        )


# JSON whitespace; Relay's streaming reader skips it before a header (spec §2.1 rule 8).
_LEADING_WHITESPACE = re.compile(rb"[ \t\r\n]*")


def _read_header(body: bytes, offset: int, where: str) -> tuple[dict[str, Any], int]:
    """Parse the header line at ``offset``; returns it and the index of its "\\n" (or EOF)."""
    whitespace = _LEADING_WHITESPACE.match(body, offset)
    start = whitespace.end() if whitespace else offset
    if start == len(body):
        raise InvalidEnvelope(
            f"{where}: expected a JSON object but the envelope ends in whitespace; "
            "only one optional newline may follow the last item"
        )
    end = body.find(b"\n", start)
    end = len(body) if end == -1 else end
    return _decode_header_line(body[start:end], where), end


class _DuplicateKey(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A repeated key (e.g. "sent_at" written twice) makes Relay reject the envelope (spec
    # §2.2); json's default silently keeps the last one, so headers are parsed with this hook.
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _DuplicateKey(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_HEADER_DECODER = json.JSONDecoder(
    object_pairs_hook=_object_without_duplicates, parse_constant=_refuse_constant
)


def _decode_header_line(line: bytes, where: str) -> dict[str, Any]:
    try:
        text = line.decode("utf-8")
        value, end = _HEADER_DECODER.raw_decode(text)
    except UnicodeDecodeError as exc:
        raise InvalidEnvelope(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidEnvelope(f"{where}: invalid JSON ({exc})") from None
    rest = text[end:]
    if rest == "\r":
        raise InvalidEnvelope(
            f'{where}: line ends with "\\r\\n"; envelope lines must end with "\\n" only'
        )
    if rest:
        raise InvalidEnvelope(
            f"{where}: {rest[:20]!r} follows the JSON object; a header must end with a newline"
        )
    if not isinstance(value, dict):
        raise InvalidEnvelope(f"{where}: must be a JSON object, got {type(value).__name__}")
    return value


def _too_many_items(limits: EnvelopeLimits) -> PayloadTooLarge:
    setting = EnvelopeLimits.SETTINGS["max_items"]
    return PayloadTooLarge(
        "envelope exceeded size limits for number of items",
        [f"envelope has more than {limits.max_items} items, the limit set by {setting}"],
    )


@dataclass(frozen=True)
class _SizeRule:
    """How one family of item types is limited (after relay-server/src/utils/sizes.rs)."""

    family: str
    item_bytes_limit: str | None = None  # EnvelopeLimits field bounding one item
    total_bytes_limit: str | None = None  # field bounding the family's bytes per envelope
    count_limit: str | None = None  # field bounding the family's items per envelope
    max_count: int | None = None  # a fixed bound, where Relay has no setting for it


_EVENT_RULE = _SizeRule("event", "max_event_item_bytes", "max_event_item_bytes", max_count=1)
_ATTACHMENT_RULE = _SizeRule("attachment", "max_attachment_bytes", "max_attachments_total_bytes")
_SESSION_RULE = _SizeRule("session", count_limit="max_session_items")
_CLIENT_REPORT_RULE = _SizeRule(
    "client_report", "max_client_report_bytes", "max_client_report_bytes"
)
_CHECK_IN_RULE = _SizeRule("check_in", "max_check_in_bytes", max_count=1)

# Relay's families: one event-like item per envelope; user reports count with attachments.
_SIZE_RULES: Mapping[str, _SizeRule] = MappingProxyType(
    {
        **dict.fromkeys(
            (
                "event",
                "transaction",
                "security",
                "raw_security",
                "replay_event",
                "feedback",
                "form_data",
            ),
            _EVENT_RULE,
        ),
        **dict.fromkeys(("attachment", "unreal_report", "user_report"), _ATTACHMENT_RULE),
        **dict.fromkeys(("session", "sessions"), _SESSION_RULE),
        "client_report": _CLIENT_REPORT_RULE,
        "check_in": _CHECK_IN_RULE,
    }
)


def check_size_limits(envelope: Envelope, limits: EnvelopeLimits) -> None:
    """413 when an item or a family of items is over its limit (spec §3.2, §3.3)."""
    counts: dict[str, int] = {}
    total_bytes: dict[str, int] = {}
    for index, item in enumerate(envelope.items, start=1):
        rule = _SIZE_RULES.get(item.type)
        if rule is None:
            continue  # unknown and unlimited types: only the envelope size bounds them
        counts[rule.family] = counts.get(rule.family, 0) + 1
        total_bytes[rule.family] = total_bytes.get(rule.family, 0) + item.length
        where = f"envelope item {index} ({item.type!r}, {item.length} bytes)"
        cause = _item_size_violation(rule, item, where, limits) or _family_violation(
            rule, counts[rule.family], total_bytes[rule.family], where, limits
        )
        if cause is not None:
            raise PayloadTooLarge(f"envelope exceeded size limits for type '{item.type}'", [cause])


def _item_size_violation(
    rule: _SizeRule, item: EnvelopeItem, where: str, limits: EnvelopeLimits
) -> str | None:
    if rule.item_bytes_limit is None:
        return None
    limit = limits.value_of(rule.item_bytes_limit)
    if item.length <= limit:
        return None
    setting = EnvelopeLimits.SETTINGS[rule.item_bytes_limit]
    return f"{where} is larger than {setting} ({limit} bytes per item)"


def _family_violation(
    rule: _SizeRule, count: int, total: int, where: str, limits: EnvelopeLimits
) -> str | None:
    if rule.max_count is not None and count > rule.max_count:
        return (
            f"{where} is item number {count} of the {rule.family!r} kind; "
            f"an envelope may hold at most {rule.max_count}"
        )
    if rule.count_limit is not None and count > limits.value_of(rule.count_limit):
        setting = EnvelopeLimits.SETTINGS[rule.count_limit]
        return (
            f"{where} is item number {count} of the {rule.family!r} kind; "
            f"{setting} allows {limits.value_of(rule.count_limit)} per envelope"
        )
    if rule.total_bytes_limit is not None and total > limits.value_of(rule.total_bytes_limit):
        setting = EnvelopeLimits.SETTINGS[rule.total_bytes_limit]
        return (
            f"{where} brings the {rule.family!r} items to {total} bytes; "
            f"{setting} allows {limits.value_of(rule.total_bytes_limit)} bytes per envelope"
        )
    return None


# Rate-limit data category of each item type, as Relay counts it at envelope-check time
# (spec §2.4 and §5.3; relay-server/src/envelope/item.rs `quantities`). Items that count
# towards two categories (attachment bytes + attachment_item) map to the primary one.
_DATA_CATEGORIES: Mapping[str, str] = MappingProxyType(
    {
        "event": "error",
        "unreal_report": "error",
        "transaction": "transaction",
        "security": "security",
        "raw_security": "security",
        "attachment": "attachment",
        "session": "session",
        "sessions": "session",
        "user_report": "feedback",
        "feedback": "feedback",
        "check_in": "monitor",
        "log": "log_item",
        "span": "span",
        "otel_span": "span",
        "otel_traces_data": "span",
        "profile": "profile",
        "profile_chunk": "profile_chunk",
        "replay_event": "replay",
        "replay_recording": "replay",
        "replay_video": "replay",
        "trace_metric": "trace_metric",
    }
)


def data_category_for_item(item: EnvelopeItem) -> str | None:
    """The quota category ``item`` counts against, or None when it is never rate limited.

    None covers client reports (never limited, spec §9), legacy metrics, nel, form_data and
    unknown types.
    """
    return _DATA_CATEGORIES.get(item.type)


def parse_store_body(body: bytes, limits: EnvelopeLimits) -> bytes:
    """The event JSON of a legacy ``/store/`` body (spec §3.4), validated as a JSON object.

    Accepts plain JSON, or base64 of zlib-compressed JSON as old raven clients send it
    (base64 of plain JSON too). The body and the inflated JSON are capped by
    ``max_event_item_bytes`` (Relay limits /store/ by max_event_size, spec §3.2).
    """
    limit = limits.max_event_item_bytes
    if len(body) > limit:
        raise _store_too_large(f"the body is {len(body)} bytes", limits)
    stripped = body.strip()
    if not stripped:
        raise BadRequest("empty request body")
    event_json = stripped if stripped.startswith(b"{") else _decode_legacy_store(stripped, limits)
    try:
        event = orjson.loads(event_json)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON data: {exc}") from None
    if not isinstance(event, dict):
        raise BadRequest(f"invalid JSON data: expected an object, got {type(event).__name__}")
    return event_json


def _decode_legacy_store(data: bytes, limits: EnvelopeLimits) -> bytes:
    """base64(zlib(json)) → json, inflating at most ``max_event_item_bytes`` + 1 bytes."""
    try:
        decoded = base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise BadRequest(
            "invalid JSON data: body is neither a JSON object nor base64",
            [f"base64: {exc}"],
        ) from None
    if decoded.lstrip().startswith(b"{"):
        return decoded
    inflater = zlib.decompressobj()
    try:
        event_json = inflater.decompress(decoded, limits.max_event_item_bytes + 1)
    except zlib.error as exc:
        raise BadRequest(
            "invalid JSON data: base64 body is not zlib-compressed JSON", [f"zlib: {exc}"]
        ) from None
    if len(event_json) > limits.max_event_item_bytes:
        raise _store_too_large("the inflated event is larger", limits)
    if not inflater.eof:
        raise BadRequest(
            "invalid JSON data: base64 body is not zlib-compressed JSON",
            ["zlib: stream is truncated"],
        )
    return event_json


def _store_too_large(seen: str, limits: EnvelopeLimits) -> PayloadTooLarge:
    setting = EnvelopeLimits.SETTINGS["max_event_item_bytes"]
    limit = limits.max_event_item_bytes
    return PayloadTooLarge(
        f"event exceeds {setting} ({limit} bytes)",
        [f"{seen}; send a smaller event or raise {setting}"],
    )
