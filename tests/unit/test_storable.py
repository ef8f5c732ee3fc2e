"""The door check of what ingest hands off (events/storable.py): a value the queue cannot
store (PostgreSQL's jsonb refuses NUL characters, the JSON encoder integers beyond 64 bits,
lone surrogates and very deep nesting) is refused alone with a 400 naming the field, before
it can fail the COPY of a whole hand-off batch."""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.envelope import EnvelopeLimits, normalize_sent_at, parse_envelope
from events.errors import BadRequest, UnstorableValue
from events.process import EventProcessor, ItemContext
from events.storable import MAX_DEPTH, check_storable
from serve_apps.ingest_request import queued_items
from storage.keys import ProjectKey

KEY = ProjectKey(id=7, project_id=3, organization_id=2, public_key="k" * 32, secret_key="s",
                 label="Default", is_active=True, project_active=True,
                 rate_limit_window_s=None, rate_limit_count=None,
                 date_added=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(("value", "problem"), [
    ("a\x00b", "NUL character"),
    ({"in\x00key": 1}, "NUL character"),
    (123456789012345678901234567890, "integer above 64 bits"),
    (-(2**63) - 1, "integer above 64 bits"),
    (2**64, "integer above 64 bits"),
    ("\ud800", "lone surrogate"),
    (nested(MAX_DEPTH + 1), f"nested deeper than {MAX_DEPTH} levels"),
])
def test_values_the_queue_cannot_store_are_refused_naming_the_field(
        value: object, problem: str) -> None:
    with pytest.raises(UnstorableValue) as caught:
        check_storable(value, 'envelope item 1 header "x"')
    assert caught.value.status == 400
    assert caught.value.detail.startswith('envelope item 1 header "x"')
    assert problem in caught.value.detail


def test_the_path_inside_a_value_is_named() -> None:
    with pytest.raises(UnstorableValue) as caught:
        check_storable({"list": [1, {"deep": "x\x00"}]}, "envelope header sent_at")
    assert caught.value.detail == 'envelope header sent_at["list"][1]["deep"]: NUL character'


@pytest.mark.parametrize("value", [
    None, True, 0, 2**64 - 1, -(2**63), 1.5, "snow \u2603 and emoji \U0001f600", [],
    {"type": "event", "length": 12, "filename": "a.txt"}, nested(MAX_DEPTH),
])
def test_values_the_queue_stores_pass(value: object) -> None:
    check_storable(value, "x")


_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_whatever_passes_is_json_postgresql_takes(value: object) -> None:
    try:
        check_storable(value, "x")
    except UnstorableValue:
        return
    encoded = orjson.dumps({"meta": {"item_headers": value}})  # as storage/queue.py writes it
    assert b"\\u0000" not in encoded


def envelope(item_header: bytes, sent_at: bytes = b'"2026-01-01T00:00:00Z"') -> bytes:
    return (b'{"event_id":"9f1c0de5a1b24e46b9d3cf0d2b6f7a10","sent_at":' + sent_at + b"}\n"
            + item_header + b"\n{}\n")


@pytest.mark.parametrize(("body", "field", "problem"), [
    (envelope(b'{"type":"event","x":123456789012345678901234567890}'),
     'envelope item 1 header "x"', "integer above 64 bits"),
    (envelope(b'{"type":"event","x":"a\\u0000"}'), 'envelope item 1 header "x"',
     "NUL character"),
    (envelope(b'{"type":"event"}', b'"2026\\u0000"'), 'envelope header "sent_at"',
     "NUL character"),
])
def test_an_envelope_the_queue_cannot_store_is_refused_at_the_door(
        body: bytes, field: str, problem: str) -> None:
    parsed = parse_envelope(body, EnvelopeLimits())
    with pytest.raises(BadRequest) as caught:
        queued_items(parsed, None, KEY, dt.datetime.now(dt.UTC), {"client_ip": "127.0.0.1"})
    assert caught.value.detail.startswith(field) and problem in caught.value.detail
    assert any("remove" in cause or "send" in cause for cause in caught.value.causes)


def test_a_nul_in_the_client_name_is_refused_naming_it() -> None:
    parsed = parse_envelope(envelope(b'{"type":"event"}'), EnvelopeLimits())
    with pytest.raises(UnstorableValue) as caught:
        queued_items(parsed, None, KEY, dt.datetime.now(dt.UTC),
                     {"client_ip": "127.0.0.1", "client": "sdk\x00"})
    assert "sentry_client" in caught.value.detail


def test_items_that_are_not_handed_off_are_not_checked() -> None:
    # an unknown item type is skipped (spec §2.1 rule 7), so its headers are never stored
    parsed = parse_envelope(envelope(b'{"type":"mystery","x":123456789012345678901234567890}'),
                            EnvelopeLimits())
    assert queued_items(parsed, None, KEY, dt.datetime.now(dt.UTC), {}) == []


# --- what processing reads back never fails the event ------------------------------------


@pytest.mark.parametrize(("sent_at", "kept"), [
    ("2026-11-28T16:05:56.437301Z", "2026-11-28T16:05:56.437301+00:00"),
    ("2026-11-28T18:05:56+02:00", "2026-11-28T16:05:56+00:00"),
    ("2026-11-28T16:05:56", "2026-11-28T16:05:56+00:00"),
    ("garbage", None), ("2026-13-45T99:00:00Z", None), (123, None), ({"a": 1}, None),
    (None, None),
])
def test_sent_at_is_kept_as_rfc_3339_or_dropped(sent_at: object, kept: str | None) -> None:
    assert normalize_sent_at(sent_at) == kept


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40) | st.datetimes().map(lambda d: d.isoformat()))
def test_whatever_sent_at_an_envelope_names_its_event_is_processed(sent_at: str) -> None:
    # sentry-relay's normalizer refuses to start for a sent_at it cannot read, which would
    # fail the item on every delivery until it is dead-lettered.
    ctx = ItemContext(project_id=1, key_id=1, received_at=dt.datetime.now(dt.UTC),
                      sent_at=normalize_sent_at(sent_at))
    assert EventProcessor().process(b'{"message": "hi"}', ctx).event_id
