"""Grouping v2: v1 plus Sentry's built-in rule bases (see events/grouping/v2.py).

The data-driven cases (``cases/v2_*.json``) pin one hash per built-in rule family; these tests
pin how the built-in rules combine with the project's rules and the client's fingerprint.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest

from events.grouping import GroupingRules, group_hashes_for_event
from events.grouping.builtin_rules import (
    ALL_PLATFORMS_2023_01_11,
    BASE_STACKTRACE_RULES,
    BUILTIN_FINGERPRINT_RULES,
)
from events.grouping.fingerprint_rules import parse_fingerprint_rules
from events.grouping.stacktrace_rules import parse_stacktrace_rules
from tests.unit.grouping.helpers import normalize

CHUNKLOAD_HASH = hashlib.md5(b"chunkloaderror").hexdigest()


def _chunk_load_error(**extra: Any) -> dict[str, Any]:
    return normalize({
        "platform": "javascript",
        "exception": {"values": [{"type": "ChunkLoadError", "value": "Loading chunk 7 failed.",
                                  "stacktrace": {"frames": [
                                      {"function": "load", "abs_path": "https://x.example/a.js",
                                       "in_app": True}]}}]},
        **extra,
    })


def _node_modules_event() -> dict[str, Any]:
    return normalize({"platform": "node", "exception": {"values": [{"type": "E", "stacktrace": {
        "frames": [{"function": "route", "abs_path": "/srv/app/node_modules/lib/route.js",
                    "module": "lib:route", "in_app": True},
                   {"function": "checkout", "abs_path": "/srv/app/checkout.js",
                    "module": "checkout", "in_app": True}]}}]}})


def test_base_rules_skip_native_rules_only() -> None:
    assert not any("family:native" in rule.text for rule in BASE_STACKTRACE_RULES.rules)
    assert "module:org.springframework.* category=framework" in ALL_PLATFORMS_2023_01_11
    assert len(BASE_STACKTRACE_RULES.rules) > 100
    assert all(rule.builtin for rule in BUILTIN_FINGERPRINT_RULES.rules)
    assert len(BUILTIN_FINGERPRINT_RULES.rules) == 7


def test_builtin_fingerprint_rule_is_reported_as_builtin() -> None:
    result = group_hashes_for_event(_chunk_load_error())
    assert result.hashes == (CHUNKLOAD_HASH,)
    assert "custom-fingerprint" not in result.variants
    assert result.variants["built-in-fingerprint"].component.id == "built-in-fingerprint"
    assert result.fingerprint_rule == (
        'family:javascript error.type:"ChunkLoadError" -> chunkloaderror')
    assert result.fingerprint_rule_builtin is True
    data = result.to_json_dict()
    assert data["fingerprintRule"] == result.fingerprint_rule
    assert data["fingerprintRuleBuiltin"] is True
    assert data["title"] is None


def test_project_fingerprint_rule_is_tried_before_builtin_rules() -> None:
    rules = GroupingRules(fingerprint=parse_fingerprint_rules("type:ChunkLoadError -> mine"))
    result = group_hashes_for_event(_chunk_load_error(), rules=rules)
    assert result.hashes == (hashlib.md5(b"mine").hexdigest(),)
    assert "custom-fingerprint" in result.variants
    assert result.fingerprint_rule_builtin is False
    assert result.to_json_dict()["fingerprintRuleBuiltin"] is False


@pytest.mark.parametrize("fingerprint", [["{{ default }}"], ["{{default}}"], []])
def test_builtin_rule_applies_when_client_fingerprint_is_default(fingerprint: list[str]) -> None:
    assert group_hashes_for_event(_chunk_load_error(fingerprint=fingerprint)).hashes == (
        CHUNKLOAD_HASH,)


@pytest.mark.parametrize("fingerprint", [["mine"], ["{{ default }}", "mine"]])
def test_builtin_rule_never_replaces_client_custom_fingerprint(fingerprint: list[str]) -> None:
    event = _chunk_load_error(fingerprint=fingerprint)
    result = group_hashes_for_event(event)
    assert result.fingerprint_rule is None
    assert result.hashes == group_hashes_for_event(event, "v1").hashes


def test_project_rule_still_replaces_client_custom_fingerprint() -> None:
    rules = GroupingRules(fingerprint=parse_fingerprint_rules("type:ChunkLoadError -> mine"))
    result = group_hashes_for_event(_chunk_load_error(fingerprint=["client"]), rules=rules)
    assert result.hashes == (hashlib.md5(b"mine").hexdigest(),)


def test_builtin_family_is_the_events_platform_not_a_frames() -> None:
    no_frames = normalize({"platform": "javascript", "exception": {"values": [
        {"type": "ChunkLoadError", "value": "x"}]}})
    assert group_hashes_for_event(no_frames).hashes == (CHUNKLOAD_HASH,)
    python = normalize({"platform": "python", "exception": {"values": [
        {"type": "ChunkLoadError", "value": "x", "stacktrace": {"frames": [
            {"function": "f", "platform": "javascript", "in_app": True}]}}]}})
    assert group_hashes_for_event(python).fingerprint_rule is None
    # A project rule's family still reads frames (Crashray v1's reading, kept).
    project = GroupingRules(fingerprint=parse_fingerprint_rules("family:javascript -> js"))
    assert (group_hashes_for_event(python, rules=project).fingerprint_rule
            == "family:javascript -> js")


def test_hydration_error_needs_a_transaction_tag() -> None:
    value = "Text content does not match server-rendered HTML."
    tagged = normalize({"platform": "javascript", "tags": {"transaction": "/cart"},
                        "exception": {"values": [{"type": "Error", "value": value}]}})
    untagged = normalize({"platform": "javascript",
                          "exception": {"values": [{"type": "Error", "value": value}]}})
    assert group_hashes_for_event(tagged).hashes == (
        hashlib.md5(b"hydrationerror/cart").hexdigest(),)
    assert group_hashes_for_event(untagged).fingerprint_rule is None


def test_hydration_message_matches_a_log_message_too() -> None:
    event = normalize({"platform": "javascript", "tags": {"transaction": "/cart"},
                       "logentry": {"formatted": "Hydration failed because the initial UI does "
                                                 "not match what was rendered on the server."}})
    assert group_hashes_for_event(event).variants["built-in-fingerprint"].contributes


def test_base_stacktrace_rules_run_before_project_rules_which_win() -> None:
    event = _node_modules_event()
    base_only = group_hashes_for_event(event)
    assert base_only.variants["app"].hash != base_only.variants["system"].hash
    rules = GroupingRules(stacktrace=parse_stacktrace_rules("path:**/node_modules/** +app"))
    project_wins = group_hashes_for_event(event, rules=rules)
    assert project_wins.hashes == group_hashes_for_event(event, "v1").hashes
    assert len(project_wins.hashes) == 1  # app == system again


def test_project_group_rules_see_base_categories() -> None:
    event = normalize({"platform": "java", "exception": {"values": [{"type": "E", "stacktrace": {
        "frames": [{"module": "com.shop.Cart", "function": "total", "in_app": True},
                   {"module": "org.apache.http.Client", "function": "send", "in_app": True}]}}]}})
    rules = GroupingRules(stacktrace=parse_stacktrace_rules("category:framework -group"))
    result = group_hashes_for_event(event, rules=rules)
    assert list(result.variants["system"].component.iter_values()) == [
        "com.shop.Cart", "total", "E"]
    # v1 has no base rules, so no frame has a category there.
    v1 = group_hashes_for_event(event, "v1", rules=rules)
    assert "org.apache.http.Client" in list(v1.variants["system"].component.iter_values())


def test_v2_does_not_mutate_the_event_and_ignores_a_client_fingerprint_info() -> None:
    event = _node_modules_event()
    before = copy.deepcopy(event)
    group_hashes_for_event(event)
    assert event == before
    # A raw (not normalised) event cannot claim a built-in match.
    raw = {**_chunk_load_error(fingerprint=["client"]),
           "_fingerprint_info": {"matched_rule": "x", "is_builtin": True}}
    assert "custom-fingerprint" in group_hashes_for_event(raw).variants


def test_v1_ignores_builtin_rules() -> None:
    result = group_hashes_for_event(_chunk_load_error(), "v1")
    assert result.fingerprint_rule is None
    assert "built-in-fingerprint" not in result.variants
    assert "fingerprintRuleBuiltin" not in result.to_json_dict()
