"""The PII configuration pruned per event (events/pii_config.py) scrubs every event exactly
as the whole configuration does, with sentry-relay itself. Pure code: no Ray, no database."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import orjson
import pytest
import sentry_relay

from events.pii_config import PrunablePiiConfig
from events.process import EventProcessor, ItemContext
from tests.unit.grouping.helpers import CASES_DIR, corpus_event

NOW = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)
SDK_EVENTS = ("python-sdk-2.75.0-exception.envelope", "node-sdk-11.12.0-exception.envelope",
              "node-sdk-11.12.0-exception-44k.envelope")
#: Project settings (Sentry's data-scrubbing options) the equality is checked under.
SCRUBBING = [
    {"scrubData": True, "scrubDefaults": True},
    {"scrubData": True, "scrubDefaults": True, "scrubIpAddresses": True,
     "sensitiveFields": ["token", "My Field"], "excludeFields": ["safe"]},
    {"scrubData": True, "scrubDefaults": False, "scrubIpAddresses": True},
]
EMAIL = "jane.doe@example.com"
CARD = "4242 4242 4242 4242"


def normalized(event: dict[str, Any]) -> dict[str, Any]:
    processor = EventProcessor()
    ctx = ItemContext(project_id=1, key_id=None, received_at=NOW, organization_id=1,
                      client_ip="203.0.113.9")
    return processor._normalize(orjson.dumps(event), ctx)


def events_with_what_the_selectors_name() -> list[dict[str, Any]]:
    """Events holding the cookies, span data and addresses the default selectors name,
    in other cases, in every place relay reads keys from (objects and pair lists)."""
    python = corpus_event(SDK_EVENTS[0])
    with_cookies = copy.deepcopy(python)
    with_cookies["request"] = {
        "url": "https://shop.example/cart?csrf_token=abc&q=1", "method": "POST",
        "cookies": {"SessionID": "s3cr3t", "csrf-token": "t0k3n", "theme": "dark"},
        "headers": {"Cookie": "sessionid=abc; other=1", "User-Agent": "Mozilla/5.0",
                    "X-Token": "abc"},
        "env": {"REMOTE_ADDR": "198.51.100.7"}, "data": {"password": "hunter2"}}
    with_span_data = copy.deepcopy(python)
    with_span_data["contexts"] = {
        "trace": {"trace_id": "a" * 32, "span_id": "b" * 16,
                  "data": {"gen_ai.prompt": f"mail {EMAIL}", "GEN_AI.Tool.Name": CARD}},
        "custom": {"HTTP.Request.Header.Cookie.SessionId": "x", "My Field": "y"}}
    with_span_data["extra"] = {"http.response.header.set-cookie.csrf": "z", "safe": EMAIL,
                               "mcp.tool.result.content": f"card {CARD}", "token": "abc"}
    with_log = copy.deepcopy(python)
    with_log["logentry"] = {"message": "user %s paid", "params": [EMAIL],
                            "formatted": f"user {EMAIL} paid with {CARD}"}
    with_log["user"] = {"ip_address": "192.0.2.1", "email": EMAIL}
    with_log["breadcrumbs"] = {"values": [{"message": f"login {EMAIL}",
                                           "data": {"Cookies": {"sudo": "1"}}}]}
    return [normalized(e) for e in (with_cookies, with_span_data, with_log)]


def all_events() -> list[dict[str, Any]]:
    cases = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(CASES_DIR.glob("*.json"))]
    events = [normalized({k: v for k, v in c.items() if not k.startswith("_")}) for c in cases]
    events += [normalized(corpus_event(name)) for name in SDK_EVENTS]
    return events + events_with_what_the_selectors_name()


def scrubbed(config: Any, event: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = sentry_relay.pii_strip_event(config, event)
    return result


@pytest.mark.parametrize("options", SCRUBBING, ids=["defaults", "fields-and-ips", "ips-only"])
def test_the_pruned_configuration_scrubs_every_event_as_the_whole_one(
        options: dict[str, Any]) -> None:
    whole = sentry_relay.convert_datascrubbing_config(options)
    pruned = PrunablePiiConfig(whole)
    for event in all_events():
        config = orjson.loads(pruned.json_for(orjson.dumps(event)))
        assert scrubbed(config, event) == scrubbed(whole, event)


def test_the_crafted_events_are_scrubbed_where_their_keys_are_named() -> None:
    """The equality above is not vacuous: the default configuration filters the crafted
    cookies, span data and log lines, with what each event holds kept in its pruned
    configuration."""
    whole = sentry_relay.convert_datascrubbing_config({"scrubData": True,
                                                      "scrubDefaults": True})
    pruned = PrunablePiiConfig(whole)
    cookies, span_data, log = events_with_what_the_selectors_name()
    out = scrubbed(orjson.loads(pruned.json_for(orjson.dumps(cookies))), cookies)
    assert dict(out["request"]["cookies"])["SessionID"] == "[Filtered]"
    out = scrubbed(orjson.loads(pruned.json_for(orjson.dumps(span_data))), span_data)
    assert out["contexts"]["custom"]["HTTP.Request.Header.Cookie.SessionId"] == "[Filtered]"
    assert out["extra"]["http.response.header.set-cookie.csrf"] == "[Filtered]"
    out = scrubbed(orjson.loads(pruned.json_for(orjson.dumps(log))), log)
    assert EMAIL not in out["logentry"]["formatted"] and CARD not in out["logentry"]["formatted"]
    assert out["breadcrumbs"]["values"][0]["data"]["Cookies"]["sudo"] == "[Filtered]"


def test_a_plain_error_event_gets_no_cookie_or_span_data_selectors() -> None:
    whole = sentry_relay.convert_datascrubbing_config({"scrubData": True,
                                                      "scrubDefaults": True})
    pruned = PrunablePiiConfig(whole)
    event = normalized(corpus_event(SDK_EVENTS[0]))
    config = orjson.loads(pruned.json_for(orjson.dumps(event)))
    assert len(config["applications"]) == 1 < len(whole["applications"])
    assert "cookies" not in json.dumps(config) and "gen_ai" not in json.dumps(config)


def test_applications_go_whole_or_stay_whole() -> None:
    """Kept as written when one alternative may match (never rewritten: relay orders
    applications by their parsed selectors); left out when none may."""
    config = {"applications": {"extra.alpha || extra.beta": ["@email:replace"],
                               "extra.gamma": ["@anything:remove"]}}
    pruned = PrunablePiiConfig(config)
    assert orjson.loads(pruned.json_for(b'{"extra": {"BETA": "x"}}')) == {
        "applications": {"extra.alpha || extra.beta": ["@email:replace"]}}
    assert orjson.loads(pruned.json_for(b'{"extra": {"gamma": "x", "alpha": 1}}')) == config


def test_selectors_this_parser_does_not_know_are_never_left_out() -> None:
    config = {"applications": {
        "$string && !$error.value": ["@email:replace"],
        "email || extra.absent": ["@anything:remove"],  # relay reads "email" as $string
        "extra.' absent'": ["@anything:remove"],  # relay skips the space: "absent"
        "extra.'absent'|'other'": ["@anything:remove"],  # a single | is an operator too
        "extra.absent.0": ["@anything:remove"],
        "extra.absent || $frame.vars.missing": ["@anything:remove"],
    }}
    kept = orjson.loads(PrunablePiiConfig(config).json_for(b'{"message": "hi"}'))
    assert list(kept["applications"]) == list(config["applications"])[:5]


def test_a_configuration_relay_refuses_is_never_pruned() -> None:
    config = {"applications": {"extra.1abc || extra.absent": ["@anything:remove"]}}
    assert orjson.loads(PrunablePiiConfig(config).json_for(b'{"extra": {}}')) == config


COUNTER_EXAMPLES = {  # hand-written configurations a review built to break the pruning
    "legacy word": {"freeform": ["@email:replace"]},
    "legacy word among paths": {"email || extra.nothere": ["@anything:remove"]},
    "space after the quote": {"extra.' foo'": ["@anything:remove"]},
    "single bar": {"extra.'a'|'b'": ["@anything:remove"]},
    "order of an or and a type": {"extra.foo || extra.nothere": ["@anything:hash"],
                                  "$string": ["@anything:replace"]},
    "one key spelled twice": {"extra.foo || extra.x1": ["@anything:hash"],
                              "extra.'foo' || extra.x2": ["@email:replace"]},
}


@pytest.mark.parametrize("applications", COUNTER_EXAMPLES.values(), ids=COUNTER_EXAMPLES)
def test_hand_written_configurations_scrub_as_the_whole_one(
        applications: dict[str, Any]) -> None:
    event = normalized({"platform": "python", "message": f"mail {EMAIL}",
                        "extra": {"foo": EMAIL, "b": "secret", "a": "x"},
                        "user": {"email": EMAIL, "username": "jane"}})
    config = {"applications": applications}
    pruned = orjson.loads(PrunablePiiConfig(config).json_for(orjson.dumps(event)))
    assert scrubbed(pruned, event) == scrubbed(config, event)


def test_the_processor_scrubs_with_the_pruned_configuration() -> None:
    processor = EventProcessor()
    processor.set_scrubbing(1, {"scrubData": True, "scrubDefaults": True})
    whole = sentry_relay.convert_datascrubbing_config({"scrubData": True,
                                                      "scrubDefaults": True})
    for event in events_with_what_the_selectors_name():
        assert processor._scrub(event, 1) == scrubbed(whole, event)
