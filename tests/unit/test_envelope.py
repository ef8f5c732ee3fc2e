"""Envelope framing, limits and the legacy /store/ body (events/envelope.py; spec §2, §3)."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.envelope import (
    Envelope,
    EnvelopeItem,
    EnvelopeLimits,
    data_category_for_item,
    parse_envelope,
    parse_store_body,
)
from events.errors import BadRequest, CrashrayError, InvalidEnvelope, PayloadTooLarge

LIMITS = EnvelopeLimits()
EVENT_ID = "9f1c0de5a1b24e46b9d3cf0d2b6f7a10"
HEADER = b'{"event_id":"9f1c0de5a1b24e46b9d3cf0d2b6f7a10"}'

# What each SDK capture holds: item types in order and the envelope's event_id.
CORPUS_EXPECTED: dict[str, tuple[tuple[str, ...], str | None]] = {
    "node-sdk-11.12.0-exception-44k": (("event",), "f6c637c702fb49bfa0052fb7bac7c791"),
    "node-sdk-11.12.0-exception": (("event",), "15700608be6c4dbf88ee8b9ae066379e"),
    "node-sdk-11.12.0-session-exit": (("session",), None),
    "node-sdk-11.12.0-session-init": (("session",), None),
    "python-sdk-2.75.0-exception": (("event",), "b5441b7223244f8fa1eed55372c53c5f"),
}


def _envelope(*lines: bytes) -> bytes:
    return b"\n".join(lines)


def _invalid_cause(body: bytes, limits: EnvelopeLimits = LIMITS) -> str:
    with pytest.raises(InvalidEnvelope) as caught:
        parse_envelope(body, limits)
    assert caught.value.status == 400
    assert caught.value.detail == "invalid event envelope"
    return caught.value.causes[0]


def _too_large(body: bytes, limits: EnvelopeLimits = LIMITS) -> PayloadTooLarge:
    with pytest.raises(PayloadTooLarge) as caught:
        parse_envelope(body, limits)
    assert caught.value.status == 413
    return caught.value


def _serialize_with_lengths(envelope: Envelope) -> bytes:
    lines = [json.dumps(dict(envelope.headers)).encode()]
    for item in envelope.items:
        headers = {**item.headers, "length": item.length}
        lines += [json.dumps(headers).encode(), item.payload]
    return b"\n".join(lines) + b"\n"


# --- the SDK corpus -----------------------------------------------------------------------


def test_every_known_sdk_capture_is_in_the_corpus(corpus_dir: Path) -> None:
    names = {path.stem for path in corpus_dir.glob("*.envelope")}
    assert set(CORPUS_EXPECTED) <= names


def test_sdk_capture_parses_into_its_items_and_event_id(corpus_name: str, corpus_dir: Path) -> None:
    envelope = parse_envelope((corpus_dir / f"{corpus_name}.envelope").read_bytes(), LIMITS)
    assert envelope.items, "every capture carries at least one item"
    if corpus_name in CORPUS_EXPECTED:
        types, event_id = CORPUS_EXPECTED[corpus_name]
        assert tuple(item.type for item in envelope.items) == types
        assert envelope.event_id == event_id
    assert "sent_at" in envelope.headers


def test_sdk_capture_payloads_are_json_objects_of_the_stated_length(
    corpus_name: str, corpus_dir: Path
) -> None:
    envelope = parse_envelope((corpus_dir / f"{corpus_name}.envelope").read_bytes(), LIMITS)
    for item in envelope.items:
        payload = orjson.loads(item.payload)
        assert isinstance(payload, dict)
        if "length" in item.headers:
            assert item.length == item.headers["length"]
        if item.type == "event" and "event_id" in payload:
            assert payload["event_id"].replace("-", "") == envelope.event_id


def test_sdk_capture_reparses_identically_with_explicit_lengths(
    corpus_name: str, corpus_dir: Path
) -> None:
    envelope = parse_envelope((corpus_dir / f"{corpus_name}.envelope").read_bytes(), LIMITS)
    again = parse_envelope(_serialize_with_lengths(envelope), LIMITS)
    assert [(i.type, i.payload) for i in again.items] == [
        (i.type, i.payload) for i in envelope.items
    ]


def test_python_sdk_event_uses_an_explicit_length(corpus_dir: Path) -> None:
    body = (corpus_dir / "python-sdk-2.75.0-exception.envelope").read_bytes()
    (event,) = parse_envelope(body, LIMITS).items
    assert event.headers["length"] == 5568 == event.length
    assert orjson.loads(event.payload)["exception"]["values"][0]["type"] == "ZeroDivisionError"


def test_node_sdk_event_without_length_runs_to_the_next_newline(corpus_dir: Path) -> None:
    body = (corpus_dir / "node-sdk-11.12.0-exception-44k.envelope").read_bytes()
    (event,) = parse_envelope(body, LIMITS).items
    assert "length" not in event.headers
    assert event.length > 40_000
    assert orjson.loads(event.payload)["exception"]["values"][0]["value"] == "big event"


def test_node_sdk_session_envelope_has_no_event_id(corpus_dir: Path) -> None:
    body = (corpus_dir / "node-sdk-11.12.0-session-init.envelope").read_bytes()
    envelope = parse_envelope(body, LIMITS)
    assert envelope.event_id is None
    assert orjson.loads(envelope.items[0].payload)["init"] is True


# --- framing (spec §2.1) --------------------------------------------------------------------


def test_spec_worked_example_parses_with_crlf_inside_a_counted_payload() -> None:
    body = (
        b'{"event_id":"9f1c0de5a1b24e46b9d3cf0d2b6f7a10","sent_at":"2024-06-01T12:00:03.120Z",'
        b'"sdk":{"name":"sentry.python","version":"2.3.0"}}\n'
        b'{"type":"event","content_type":"application/json","length":68}\n'
        b'{"message":"disk almost full","level":"warning","platform":"python"}\n'
        b'{"type":"attachment","filename":"df.txt","length":6}\n'
        b"80%\r\n!\n"
        b'{"type":"client_report"}\n'
        b'{"timestamp":1717243203,"discarded_events":[{"reason":"sample_rate","category":"error",'
        b'"quantity":3}]}'
    )
    envelope = parse_envelope(body, LIMITS)
    assert [item.type for item in envelope.items] == ["event", "attachment", "client_report"]
    assert envelope.items[1].payload == b"80%\r\n!"
    assert envelope.items[1].headers["filename"] == "df.txt"
    assert orjson.loads(envelope.items[2].payload)["discarded_events"][0]["quantity"] == 3


def test_envelope_with_only_a_header_is_valid_and_empty() -> None:
    for body in (HEADER, HEADER + b"\n", b"{}", b"{}\n"):
        assert parse_envelope(body, LIMITS).items == ()


def test_empty_body_is_empty_request_body() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_envelope(b"", LIMITS)
    assert caught.value.detail == "empty request body"


def test_whitespace_only_body_is_invalid() -> None:
    assert "expected a JSON object" in _invalid_cause(b" \n ")


def test_one_trailing_newline_is_allowed_but_not_two() -> None:
    body = _envelope(HEADER, b'{"type":"event","length":2}', b"{}")
    assert len(parse_envelope(body + b"\n", LIMITS).items) == 1
    assert _invalid_cause(body + b"\n\n").startswith("envelope item 2:")


def test_implicit_length_payload_keeps_its_carriage_return() -> None:
    body = _envelope(HEADER, b'{"type":"attachment"}', b"hello\r", b'{"type":"event"}', b"{}")
    items = parse_envelope(body, LIMITS).items
    assert items[0].payload == b"hello\r"
    assert items[1].payload == b"{}"


def test_zero_length_items_and_header_at_eof_are_valid() -> None:
    body = _envelope(HEADER, b'{"type":"attachment","length":0}', b"", b'{"type":"attachment"}')
    items = parse_envelope(body, LIMITS).items
    assert [item.length for item in items] == [0, 0]


def test_counted_payload_may_end_at_eof_without_newline() -> None:
    body = _envelope(HEADER, b'{"type":"attachment","length":3}', b"a\nb")
    assert parse_envelope(body, LIMITS).items[0].payload == b"a\nb"


def test_leading_whitespace_before_a_header_is_tolerated() -> None:
    body = _envelope(b"  " + HEADER, b'\t{"type":"event"}', b"{}")
    assert parse_envelope(body, LIMITS).items[0].type == "event"


def test_truncated_item_says_how_many_bytes_follow() -> None:
    body = _envelope(
        HEADER, b'{"type":"event","length":2}', b"{}", b'{"type":"event","length":5600}'
    )
    body += b"\n" + b"x" * 812
    cause = _invalid_cause(body)
    assert cause == 'envelope item 2: header "length" is 5600 but only 812 bytes follow'


def test_length_too_short_leaves_bytes_where_the_newline_must_be() -> None:
    body = _envelope(HEADER, b'{"type":"event","length":5}', b'{"a":1}')
    cause = _invalid_cause(body)
    assert cause.startswith('envelope item 1: the 5 bytes counted by header "length"')
    assert "b'1}'" in cause


def test_trailing_garbage_after_a_counted_payload_is_invalid() -> None:
    body = _envelope(HEADER, b'{"type":"event","length":2}', b"{} ")
    assert "instead of a newline" in _invalid_cause(body)


def test_bad_json_item_header_names_the_item() -> None:
    body = _envelope(HEADER, b'{"type":"event"}', b"{}", b'{"type":"event",}', b"{}")
    assert _invalid_cause(body).startswith("envelope item 2: header: invalid JSON")


def test_bad_json_envelope_header_is_invalid() -> None:
    assert _invalid_cause(b"{nope}\n").startswith("envelope header: invalid JSON")


def test_crlf_terminated_header_is_invalid_and_says_so() -> None:
    cause = _invalid_cause(HEADER + b"\r\n" + b'{"type":"event"}\n{}')
    assert cause.startswith("envelope header:")
    assert "\\r\\n" in cause


def test_text_after_the_header_object_is_invalid() -> None:
    assert "follows the JSON object" in _invalid_cause(HEADER + b" x\n")


def test_header_must_be_an_object() -> None:
    assert "must be a JSON object" in _invalid_cause(b"[]\n")
    assert "must be a JSON object" in _invalid_cause(_envelope(HEADER, b'"event"', b"{}"))


def test_non_utf8_header_is_invalid() -> None:
    assert "not UTF-8" in _invalid_cause(b'{"a":"\xff"}\n')


def test_nan_in_a_header_is_invalid_json() -> None:
    assert "NaN" in _invalid_cause(b'{"sample_rate":NaN}\n')


def test_duplicate_key_in_envelope_header_is_invalid() -> None:
    body = b'{"sent_at":"2024-06-01T12:00:00Z","sent_at":"2024-06-01T12:00:01Z"}\n'
    assert "duplicate key 'sent_at'" in _invalid_cause(body)


def test_duplicate_key_in_item_header_is_invalid() -> None:
    body = _envelope(HEADER, b'{"type":"event","length":2,"length":3}', b"{}")
    assert "envelope item 1" in _invalid_cause(body)


def test_item_without_type_is_invalid() -> None:
    cause = _invalid_cause(_envelope(HEADER, b'{"length":2}', b"{}"))
    assert cause.startswith('envelope item 1: header needs a string "type"')


@pytest.mark.parametrize("length", [b"-1", b"2.0", b'"2"', b"true"])
def test_length_must_be_a_non_negative_integer(length: bytes) -> None:
    body = _envelope(HEADER, b'{"type":"event","length":' + length + b"}", b"{}")
    assert 'header "length" must be a non-negative integer' in _invalid_cause(body)


def test_null_length_means_implicit_length() -> None:
    body = _envelope(HEADER, b'{"type":"event","length":null}', b"{}")
    assert parse_envelope(body, LIMITS).items[0].payload == b"{}"


def test_unknown_item_types_are_kept_for_the_caller_to_skip() -> None:
    body = _envelope(HEADER, b'{"type":"hologram","length":3}', b"abc", b'{"type":"event"}', b"{}")
    items = parse_envelope(body, LIMITS).items
    assert [item.type for item in items] == ["hologram", "event"]
    assert data_category_for_item(items[0]) is None


def test_integration_item_from_a_client_is_rejected_with_400() -> None:
    body = _envelope(HEADER, b'{"type":"integration","length":2}', b"{}")
    with pytest.raises(BadRequest) as caught:
        parse_envelope(body, LIMITS)
    assert caught.value.status == 400
    assert '"integration"' in caught.value.causes[0]


def test_unknown_envelope_headers_are_kept() -> None:
    envelope = parse_envelope(b'{"dsn":"https://k@h/1","future":{"x":1}}\n', LIMITS)
    assert envelope.headers["future"] == {"x": 1}
    assert envelope.headers["dsn"] == "https://k@h/1"


# --- event ids (spec §2.1 rule 6) -------------------------------------------------------------


def test_dashed_event_id_is_normalised_to_32_lowercase_hex() -> None:
    envelope = parse_envelope(b'{"event_id":"9F1C0DE5-A1B2-4E46-B9D3-CF0D2B6F7A10"}', LIMITS)
    assert envelope.event_id == EVENT_ID


def test_null_or_absent_event_id_is_none() -> None:
    assert parse_envelope(b'{"event_id":null}', LIMITS).event_id is None
    assert parse_envelope(b"{}", LIMITS).event_id is None


@pytest.mark.parametrize(
    "event_id",
    [b'"9f1c0de5"', b'"{9f1c0de5-a1b2-4e46-b9d3-cf0d2b6f7a10}"', b"42", b'"' + b"g" * 32 + b'"'],
)
def test_invalid_event_id_is_invalid_envelope_naming_it(event_id: bytes) -> None:
    cause = _invalid_cause(b'{"event_id":' + event_id + b"}")
    assert cause.startswith('envelope header "event_id" must be 32 hex digits')


# --- size limits (spec §3.2, §3.3) ------------------------------------------------------------


def test_oversized_event_item_is_413_citing_the_setting() -> None:
    limits = EnvelopeLimits(max_event_item_bytes=100)
    body = _envelope(HEADER, b'{"type":"event","length":101}', b"x" * 101)
    error = _too_large(body, limits)
    assert error.detail == "envelope exceeded size limits for type 'event'"
    assert "CRASHRAY_MAX_EVENT_BYTES (100 bytes per item)" in error.causes[0]
    assert "101 bytes" in error.causes[0]


def test_event_item_exactly_at_the_limit_is_accepted() -> None:
    limits = EnvelopeLimits(max_event_item_bytes=100)
    body = _envelope(HEADER, b'{"type":"event","length":100}', b"x" * 100)
    assert parse_envelope(body, limits).items[0].length == 100


def test_second_event_like_item_is_413() -> None:
    body = _envelope(HEADER, b'{"type":"event"}', b"{}", b'{"type":"transaction"}', b"{}")
    error = _too_large(body)
    assert error.detail == "envelope exceeded size limits for type 'transaction'"
    assert "envelope item 2" in error.causes[0]


def test_too_many_session_items_is_413_citing_the_setting() -> None:
    session = [b'{"type":"session"}', b'{"sid":"x"}']
    body = _envelope(b"{}", *(session * 101))
    error = _too_large(body)
    assert error.detail == "envelope exceeded size limits for type 'session'"
    assert "CRASHRAY_MAX_SESSION_ITEMS allows 100" in error.causes[0]
    assert len(parse_envelope(_envelope(b"{}", *(session * 100)), LIMITS).items) == 100


def test_oversized_attachment_and_attachment_total_are_413() -> None:
    limits = EnvelopeLimits(max_attachment_bytes=10, max_attachments_total_bytes=15)
    one = _envelope(HEADER, b'{"type":"attachment","length":11}', b"x" * 11)
    assert "CRASHRAY_MAX_ATTACHMENT_BYTES" in _too_large(one, limits).causes[0]
    attachment = [b'{"type":"attachment","length":8}', b"x" * 8]
    two = _envelope(HEADER, *(attachment * 2))
    assert "CRASHRAY_MAX_ATTACHMENTS_TOTAL_BYTES" in _too_large(two, limits).causes[0]


def test_oversized_client_report_is_413() -> None:
    body = _envelope(b"{}", b'{"type":"client_report"}', b"x" * 4097)
    assert _too_large(body).detail == "envelope exceeded size limits for type 'client_report'"


def test_too_many_items_is_413_citing_the_setting() -> None:
    limits = EnvelopeLimits(max_items=3)
    body = _envelope(b"{}", *([b'{"type":"log"}', b"{}"] * 4))
    error = _too_large(body, limits)
    assert "CRASHRAY_MAX_ENVELOPE_ITEMS" in error.causes[0]


def test_framing_errors_win_over_size_limits_as_in_relay() -> None:
    limits = EnvelopeLimits(max_event_item_bytes=1)
    body = _envelope(HEADER, b'{"type":"event","length":2}', b"{}", b"{bad")
    _invalid_cause(body, limits)


# --- data categories (spec §2.4) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("item_type", "category"),
    [
        ("event", "error"),
        ("transaction", "transaction"),
        ("attachment", "attachment"),
        ("session", "session"),
        ("sessions", "session"),
        ("client_report", None),
        ("user_report", "feedback"),
        ("feedback", "feedback"),
        ("check_in", "monitor"),
        ("statsd", None),
        ("replay_recording", "replay"),
        ("span", "span"),
    ],
)
def test_item_type_maps_to_its_rate_limit_category(item_type: str, category: str | None) -> None:
    item = EnvelopeItem(type=item_type, headers={"type": item_type}, payload=b"{}")
    assert data_category_for_item(item) == category


# --- legacy /store/ body ---------------------------------------------------------------------


def test_store_body_plain_json_is_returned_as_is() -> None:
    assert parse_store_body(b' {"message":"hi"}\n', LIMITS) == b'{"message":"hi"}'


def test_store_body_base64_zlib_json_from_old_raven_clients_is_decoded() -> None:
    body = base64.b64encode(zlib.compress(b'{"message":"hi"}'))
    assert parse_store_body(body, LIMITS) == b'{"message":"hi"}'


def test_store_body_base64_plain_json_is_decoded() -> None:
    assert parse_store_body(base64.b64encode(b'{"a":1}'), LIMITS) == b'{"a":1}'


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"bm90IGpzb24=", b"!!!"])
def test_store_body_that_is_not_a_json_object_is_invalid_json_data(body: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_store_body(body, LIMITS)
    assert caught.value.status == 400
    assert caught.value.detail.startswith("invalid JSON data: ")


def test_empty_store_body_is_empty_request_body() -> None:
    with pytest.raises(BadRequest) as caught:
        parse_store_body(b"  ", LIMITS)
    assert caught.value.detail == "empty request body"


def test_oversized_store_body_is_413_citing_the_event_setting() -> None:
    limits = EnvelopeLimits(max_event_item_bytes=10)
    with pytest.raises(PayloadTooLarge) as caught:
        parse_store_body(b'{"message":"longer than ten"}', limits)
    assert caught.value.detail == "event exceeds CRASHRAY_MAX_EVENT_BYTES (10 bytes)"


def test_store_body_zlib_bomb_is_cut_off_at_the_event_limit() -> None:
    body = base64.b64encode(zlib.compress(b'{"a":"' + b"x" * 10_000_000 + b'"}'))
    with pytest.raises(PayloadTooLarge):
        parse_store_body(body, EnvelopeLimits(max_event_item_bytes=len(body) + 10))


# --- robustness ------------------------------------------------------------------------------

SMALL_LIMITS = EnvelopeLimits(
    max_event_item_bytes=64,
    max_attachment_bytes=64,
    max_attachments_total_bytes=96,
    max_session_items=2,
    max_client_report_bytes=32,
    max_items=5,
)

_header_lines = st.sampled_from(
    [
        b"{}",
        HEADER,
        b'{"event_id":"bad"}',
        b'{"type":"event"}',
        b'{"type":"attachment","length":3}',
        b'{"type":"session","length":0}',
        b'{"type":"client_report","length":40}',
        b'{"type":"event","length":99999}',
        b'{"type":"integration"}',
        b'{"a":1,"a":2}',
        b"{\r",
        b"",
    ]
)
_lines = st.lists(st.one_of(_header_lines, st.binary(max_size=40)), max_size=12)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_ever_raise_ingest_errors(body: bytes) -> None:
    _parse_or_ingest_error(body)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_lines, st.booleans())
def test_near_valid_envelopes_only_ever_raise_ingest_errors(
    lines: list[bytes], trailing_newline: bool
) -> None:
    _parse_or_ingest_error(b"\n".join(lines) + (b"\n" if trailing_newline else b""))


def _parse_or_ingest_error(body: bytes) -> None:
    try:
        envelope = parse_envelope(body, SMALL_LIMITS)
    except CrashrayError:
        return
    assert len(envelope.items) <= SMALL_LIMITS.max_items
    assert all(isinstance(item.payload, bytes) for item in envelope.items)
