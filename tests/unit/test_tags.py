"""Sentry's standard tags derived from real SDK events normalized by the real sentry-relay
(events/tags.py), and what the processed event stores (events/process.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest
import sentry_relay

from events.grouping import GROUPING_CONFIGS
from events.process import UNTAGGED_GROUPING_CONFIGS, EventProcessor, ItemContext, ProjectGrouping
from events.rows import EventRow, events_table
from events.tags import MAX_TAG_KEY_CHARS, MAX_TAG_VALUE_CHARS, event_tags, user_tag_value

SDK = Path(__file__).parents[1] / "fixtures" / "sdk"
#: A real Chrome 120 on Windows 10 User-Agent header, as the browser SDK sends it.
CHROME_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36"
             " (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36")


def capture(name: str) -> bytes:
    """The event item of a captured SDK envelope (header, item header, payload)."""
    return (SDK / f"{name}.envelope").read_bytes().split(b"\n")[2]


def normalized(payload: bytes | dict[str, Any], *, user_agent: bool = False) -> dict[str, Any]:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    normalizer = sentry_relay.StoreNormalizer(project_id=1, normalize_user_agent=user_agent)
    event: dict[str, Any] = normalizer.normalize_event(raw_event=raw, json_loads=orjson.loads)
    return event


def tags_of(event: dict[str, Any]) -> dict[str, str | None]:
    pairs = event_tags(event)
    keys = [k for k, _ in pairs if k is not None]
    assert len(keys) == len(set(keys)), f"duplicate tag keys in {pairs}"
    return {k: v for k, v in pairs if k is not None}


def browser_event(**fields: Any) -> dict[str, Any]:
    """What @sentry/browser sends for an uncaught error on a checkout page."""
    return {
        "platform": "javascript", "level": "error", "environment": "production",
        "release": "shop@2.4.1", "transaction": "/checkout",
        "request": {"url": "https://shop.example.com/checkout?step=2",
                    "headers": {"User-Agent": CHROME_UA}},
        "user": {"id": "4711", "email": "ada@example.com"},
        "exception": {"values": [{
            "type": "TypeError", "value": "cart.total is not a function",
            "mechanism": {"type": "onerror", "handled": False},
            "stacktrace": {"frames": [{"filename": "https://shop.example.com/app.js",
                                       "function": "pay", "lineno": 10, "colno": 5,
                                       "in_app": True}]}}]},
        "sdk": {"name": "sentry.javascript.browser", "version": "8.40.0"},
        **fields,
    }


def process(event: dict[str, Any], config: str | None = None) -> Any:
    ctx = ItemContext(project_id=1, key_id=1, received_at=dt.datetime.now(dt.UTC))
    processor = EventProcessor()
    if config is not None:
        processor.set_grouping(1, ProjectGrouping(config))
    return processor.process(orjson.dumps(event), ctx)


def test_python_sdk_event_gets_level_environment_release_runtime_and_mechanism_tags() -> None:
    tags = tags_of(normalized(capture("python-sdk-2.75.0-exception")))
    assert tags == {"server_name": "vm", "level": "error", "environment": "test",
                    "release": "feas@1.0.0", "runtime": "CPython 3.11.7",
                    "runtime.name": "CPython", "mechanism": "generic", "handled": "yes"}


def test_node_sdk_event_gets_os_and_runtime_tags_without_the_trailing_newline() -> None:
    event = normalized(capture("node-sdk-11.12.0-exception"))
    assert event["contexts"]["os"]["version"] == "12.11\n"  # as the Node SDK reports it
    tags = tags_of(event)
    assert (tags["os"], tags["os.name"]) == ("Debian 12.11", "Debian")
    assert (tags["runtime"], tags["runtime.name"]) == ("node v20.20.2", "node")
    assert (tags["handled"], tags["mechanism"], tags["server_name"]) == ("yes", "generic", "vm")
    assert "device" not in tags  # the Node device context has no model or family


def test_browser_event_gets_browser_os_url_user_and_handled_tags_from_its_user_agent() -> None:
    tags = tags_of(normalized(browser_event(), user_agent=True))
    assert tags["browser"] == "Chrome 120.0.0" and tags["browser.name"] == "Chrome"
    assert tags["os.name"] == "Windows" and tags["os"].startswith("Windows ")
    # Relay splits the query string off the URL; the tag is the URL without it.
    assert tags["url"] == "https://shop.example.com/checkout"
    assert (tags["user"], tags["handled"], tags["mechanism"]) == ("id:4711", "no", "onerror")
    assert (tags["transaction"], tags["level"], tags["release"]) == (
        "/checkout", "error", "shop@2.4.1")
    assert tags["environment"] == "production"


def test_device_tags_are_its_model_and_family() -> None:
    event = normalized({"platform": "cocoa", "message": "m", "contexts": {
        "device": {"type": "device", "model": "iPhone15,2", "family": "iPhone"}}})
    tags = tags_of(event)
    assert (tags["device"], tags["device.family"]) == ("iPhone15,2", "iPhone")


def test_client_tags_stay_and_a_client_url_tag_wins_over_the_request_url() -> None:
    event = normalized(browser_event(tags={"url": "checkout-page", "team": "payments"}),
                       user_agent=True)
    tags = tags_of(event)
    assert (tags["url"], tags["team"]) == ("checkout-page", "payments")


def test_attribute_context_and_mechanism_tags_replace_client_tags_as_sentry_set_tag_does(
) -> None:
    event = normalized(browser_event(tags={"level": "info", "browser": "MyBrowser",
                                           "handled": "maybe", "transaction": "old"}),
                       user_agent=True)
    tags = tags_of(event)
    assert (tags["level"], tags["browser"], tags["handled"], tags["transaction"]) == (
        "error", "Chrome 120.0.0", "no", "/checkout")


def test_a_client_tag_stays_where_nothing_is_derived_for_its_key() -> None:
    event = normalized({"platform": "python", "message": "m",
                        "tags": {"os": "Plan 9", "browser": "lynx"}})
    tags = tags_of(event)
    assert (tags["os"], tags["browser"]) == ("Plan 9", "lynx")


@pytest.mark.parametrize(("user", "expected"), [
    ({"id": "7", "username": "ada", "email": "ada@example.com", "ip_address": "10.0.0.1"},
     "id:7"),
    ({"username": "ada", "email": "ada@example.com", "ip_address": "10.0.0.1"}, "username:ada"),
    ({"email": "ada@example.com", "ip_address": "10.0.0.1"}, "email:ada@example.com"),
    ({"ip_address": "2001:db8::1"}, "ip:2001:db8::1"),
    ({"ip_address": "{{auto}}"}, None),  # not an address: Sentry's _get_event_user drops it
    ({"id": 42}, "id:42"),  # Relay turns a numeric id into a string
    ({"name": "Ada"}, None),
])
def test_user_tag_takes_id_then_username_then_email_then_ip(user: dict[str, Any],
                                                           expected: str | None) -> None:
    event = normalized({"platform": "python", "message": "m", "user": user})
    assert user_tag_value(event.get("user")) == expected
    assert tags_of(event).get("user") == expected


def test_a_client_sentry_user_tag_is_shown_as_user_and_the_event_user_replaces_it() -> None:
    assert tags_of(normalized({"message": "m", "tags": {"sentry:user": "id:x"}}))["user"] == "id:x"
    event = normalized({"message": "m", "tags": {"sentry:user": "id:x"}, "user": {"id": "y"}})
    assert tags_of(event)["user"] == "id:y"


def test_dist_is_a_tag_only_with_a_release() -> None:
    assert "dist" not in tags_of(normalized({"message": "m", "dist": "42"}))
    assert tags_of(normalized({"message": "m", "release": "r@1", "dist": "42"}))["dist"] == "42"


def test_mechanism_tags_come_from_the_first_exception_of_a_chain() -> None:
    event = normalized({"platform": "python", "exception": {"values": [
        {"type": "KeyError", "value": "a", "mechanism": {"type": "chained", "handled": True}},
        {"type": "ValueError", "value": "b", "mechanism": {"type": "excepthook",
                                                          "handled": False}}]}})
    tags = tags_of(event)
    assert (tags["mechanism"], tags["handled"]) == ("chained", "yes")


def test_derived_tags_respect_relays_tag_limits() -> None:
    long_version = "9" * 300
    event = normalized({
        "platform": "python", "message": "m",
        "request": {"url": "https://example.com/" + "a" * 300},
        "contexts": {"runtime": {"type": "runtime", "name": "CPython", "version": long_version},
                     "my os": {"type": "os", "name": "Linux", "version": "6"},
                     "browser": {"type": "browser", "name": "Fire\nfox", "version": "1"}}})
    tags = tags_of(event)
    assert len(tags["runtime"] or "") == MAX_TAG_VALUE_CHARS
    assert (tags["runtime"] or "").endswith("...") and tags["runtime.name"] == "CPython"
    assert "url" not in tags  # Sentry's tag plugin leaves a too-long URL out
    assert not any(k.startswith("my os") for k in tags)  # not a valid tag key
    assert "browser" not in tags and "browser.name" not in tags  # a newline is not allowed
    assert all(len(k) <= MAX_TAG_KEY_CHARS and len(v or "") <= MAX_TAG_VALUE_CHARS
               for k, v in tags.items())


def test_tags_relay_invalidated_keep_their_place_so_meta_indexes_still_match() -> None:
    event = normalized({"message": "m", "tags": [["bad", "a\nb"], ["ok", "1"]]})
    assert event["_meta"]["tags"]["0"]["1"][""]["err"]  # Relay's remark on entry 0
    pairs = event_tags(event)
    assert pairs[:2] == [["bad", None], ["ok", "1"]]
    processed = process({"message": "m", "tags": [["bad", "a\nb"], ["ok", "1"]]})
    row = events_table([EventRow(1, 1, 1, 90, processed)]).to_pylist()[0]
    assert "bad" not in dict(row["tags"]) and dict(row["tags"])["ok"] == "1"


def test_processed_event_stores_tags_title_culprit_and_location() -> None:
    processed = process(browser_event())
    stored = processed.event
    assert dict(stored["tags"])["browser"] == "Chrome 120.0.0"
    assert stored["title"] == "TypeError: cart.total is not a function"
    assert stored["culprit"] == "/checkout" and stored["location"] == "/app.js"
    assert stored["metadata"]["function"] == "pay"
    row = events_table([EventRow(1, 1, 1, 90, processed)]).to_pylist()[0]
    assert dict(row["tags"])["user"] == "id:4711"
    assert (row["title"], row["culprit"]) == (stored["title"], stored["culprit"])


def test_a_default_event_has_no_location() -> None:
    stored = process({"platform": "python", "message": "Payment declined"}).event
    assert stored["title"] == "Payment declined" and stored["location"] is None


def test_the_transaction_tag_reaches_sentrys_built_in_hydration_fingerprint() -> None:
    """Sentry derives tags before fingerprinting, so ``tags.transaction`` rules match the
    transaction of an event that never sent a ``transaction`` tag itself. Grouping versions
    frozen before tags were derived (v1, v2) keep grouping the client's tags."""
    def hydration(transaction: str, function: str, config: str | None = None) -> str:
        event = browser_event(transaction=transaction, exception={"values": [{
            "type": "Error", "value": "Text content does not match server-rendered HTML.",
            "stacktrace": {"frames": [{"function": function, "filename": "/app.js",
                                       "lineno": 1, "in_app": True}]}}]})
        return str(process(event, config).grouping.primary_hash)

    tagged = [c for c in GROUPING_CONFIGS if c not in UNTAGGED_GROUPING_CONFIGS]
    for config in tagged:
        assert hydration("/checkout", "a", config) == hydration("/checkout", "b", config)
        assert hydration("/checkout", "a", config) != hydration("/cart", "a", config)
    assert hydration("/checkout", "a", "v2") != hydration("/checkout", "b", "v2")
