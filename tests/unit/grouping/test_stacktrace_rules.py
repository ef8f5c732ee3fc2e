"""Stack-trace rules (spec §6.8): parsing, applying and grouping."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest

from events.grouping import GroupingRules, group_hashes_for_event
from events.grouping.fingerprint_rules import parse_fingerprint_rules
from events.grouping.stacktrace_rules import StacktraceRuleError, parse_stacktrace_rules


def _frame(module: str, function: str, in_app: bool, **extra: Any) -> dict[str, Any]:
    return {"module": module, "function": function, "in_app": in_app, **extra}


def _event() -> dict[str, Any]:
    return {
        "platform": "python",
        "exception": {"values": [{"type": "ValueError", "value": "bad", "stacktrace": {"frames": [
            _frame("django.core", "dispatch", False, abs_path="/usr/lib/django/core.py"),
            _frame("shop.views", "checkout", True, abs_path="/srv/shop/views.py"),
            _frame("shop.pricing", "total", True, abs_path="/srv/shop/pricing.py"),
            _frame("shop.util", "divide", True, abs_path="/srv/shop/util.py"),
        ]}}]},
    }


def _frames(event: Any) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = event["exception"]["values"][0]["stacktrace"]["frames"]
    return frames


def _apply(text: str, event: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return _frames(parse_stacktrace_rules(text).apply(event or _event()))


# --- parsing -----------------------------------------------------------------------------


def test_parse_comments_blank_lines_and_negation() -> None:
    rules = parse_stacktrace_rules(
        "# vendor code\n\n  stack.module:django.* !function:x -app +group\n"
        "family:native,javascript path:**/vendor/** v-group ^+app max-frames=3\n")
    assert [r.line for r in rules.rules] == [3, 4]
    first = rules.rules[0]
    assert first.matchers[1].negated
    assert [(a.key, a.value, a.range) for a in first.actions] == [
        ("in_app", False, ""), ("_group", True, "")]
    second = rules.rules[1]
    assert [(a.key, a.value, a.range) for a in second.actions[:2]] == [
        ("_group", False, "v"), ("in_app", True, "^")]
    assert second.actions[2].max_frames == 3


@pytest.mark.parametrize(("text", "column", "fragment"), [
    ("module:foo", 11, "no action"),
    ("-app", 5, "no matchers"),
    ("bogus:foo -app", 1, 'unknown matcher "bogus"'),
    ("type:ValueError -app", 1, 'unknown matcher "type"'),
    ("module:foo +frobnicate", 12, "unknown action"),
    ("module:foo max-frames=x", 23, "not a number"),
    ("module:foo min-frames=2", 12, "not supported"),
    ("category:telemetry -group", 1, "not supported"),
    ("[ module:a ] | module:b -group", 1, "caller/callee"),
    ("family:cobol -app", 8, "unknown family"),
    ("app:maybe -app", 5, "expected yes or no"),
    ("module:foo[ -app", 11, 'unclosed "["'),
    ("module:foo -app function:bar", 17, "after an action"),
    ("module:foo junk", 12, "unexpected 'junk'"),
])
def test_parse_errors(text: str, column: int, fragment: str) -> None:
    with pytest.raises(StacktraceRuleError) as info:
        parse_stacktrace_rules("# header\n" + text)
    assert info.value.line == 2
    assert info.value.column == column, str(info.value)
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"line 2, column {column}: ")


# --- actions -----------------------------------------------------------------------------


def test_app_actions() -> None:
    frames = _apply("module:django.* +app\nfunction:divide -app")
    assert [f["in_app"] for f in frames] == [True, True, True, False]


def test_group_actions() -> None:
    frames = _apply("module:shop.* -group\nfunction:total +group")
    assert [f.get("_group") for f in frames] == [None, False, True, False]


def test_ranges_up_and_down() -> None:
    up = _apply("function:checkout ^-group")
    assert [f.get("_group") for f in up] == [None, None, False, False]
    down = _apply("function:total v-app")
    assert [f["in_app"] for f in down] == [False, False, True, True]


def test_max_frames_keeps_last_n() -> None:
    frames = _apply("family:all max-frames=2")
    assert [f.get("_group") for f in frames] == [False, False, None, None]
    assert [f.get("_group") for f in _apply("module:nomatch max-frames=1")] == [None] * 4


def test_rules_run_top_to_bottom_and_see_earlier_changes() -> None:
    frames = _apply("module:shop.* -app\napp:no function:total +app")
    assert [f["in_app"] for f in frames] == [False, False, True, False]
    frames = _apply("function:total +app\nfunction:total -app")
    assert frames[2]["in_app"] is False


def test_path_package_and_threads_and_top_level_stacktrace() -> None:
    frame = _frame("m", "f", True, abs_path="C:\\srv\\vendor\\x.js", package="/lib/libfoo.so")
    event = {"platform": "python", "stacktrace": {"frames": [dict(frame)]},
             "threads": {"values": [{"stacktrace": {"frames": [dict(frame)]}}]}}
    new = parse_stacktrace_rules("path:**/vendor/* -app\npackage:libfoo.so -group").apply(event)
    for stacktrace in (new["stacktrace"], new["threads"]["values"][0]["stacktrace"]):
        assert stacktrace["frames"][0]["in_app"] is False
        assert stacktrace["frames"][0]["_group"] is False


def test_input_not_mutated_and_unchanged_event_returned_as_is() -> None:
    event = _event()
    before = copy.deepcopy(event)
    new = parse_stacktrace_rules("module:shop.* -app -group\nfamily:all max-frames=1").apply(event)
    assert event == before
    assert new is not event and _frames(new) != _frames(event)
    # Only changed frames are copied.
    assert _frames(new)[3] is not _frames(event)[3]
    unchanged = parse_stacktrace_rules("module:nothing.here -app").apply(event)
    assert unchanged is event


# --- grouping ----------------------------------------------------------------------------


def _md5(*values: str) -> str:
    return hashlib.md5("".join(values).encode()).hexdigest()


def _single_app_frame_event() -> dict[str, Any]:
    return {
        "platform": "python",
        "exception": {"values": [{"type": "ValueError", "value": "bad", "stacktrace": {"frames": [
            _frame("django.core", "dispatch", False),
            _frame("shop.views", "checkout", True),
        ]}}]},
    }


def test_minus_app_on_only_in_app_frame_drops_app_variant() -> None:
    event = _single_app_frame_event()
    plain = group_hashes_for_event(event)
    assert plain.variants["app"].contributes
    rules = GroupingRules(stacktrace=parse_stacktrace_rules("module:shop.* -app"))
    result = group_hashes_for_event(event, rules=rules)
    assert not result.variants["app"].contributes
    assert result.primary_hash == result.variants["system"].hash
    assert result.hashes == (_md5("django.core", "dispatch", "shop.views", "checkout",
                                  "ValueError"),)


def test_minus_group_removes_frame_values_from_hash() -> None:
    event = _event()
    rules = GroupingRules(stacktrace=parse_stacktrace_rules("function:total -group"))
    result = group_hashes_for_event(event, rules=rules)
    app = _md5("shop.views", "checkout", "shop.util", "divide", "ValueError")
    system = _md5("django.core", "dispatch", "shop.views", "checkout", "shop.util", "divide",
                  "ValueError")
    assert result.hashes == (app, system)
    assert "ignored by stack trace rule" in str(result.to_json_dict())


def test_no_matching_rule_keeps_hashes() -> None:
    event = _event()
    rules = GroupingRules(stacktrace=parse_stacktrace_rules("module:nothing.* -app -group"))
    assert group_hashes_for_event(event, rules=rules) == group_hashes_for_event(event)
    assert group_hashes_for_event(event).hashes == group_hashes_for_event(
        event, rules=GroupingRules(stacktrace=parse_stacktrace_rules(""))).hashes


def test_stacktrace_rules_run_before_fingerprint_rules() -> None:
    event = _single_app_frame_event()
    rules = GroupingRules(
        stacktrace=parse_stacktrace_rules("module:django.* +app"),
        fingerprint=parse_fingerprint_rules("module:django.* app:yes -> django-app"),
    )
    result = group_hashes_for_event(event, rules=rules)
    assert result.fingerprint_rule == "module:django.* app:yes -> django-app"


def test_raw_text_tuples_still_refused() -> None:
    with pytest.raises(NotImplementedError, match="stacktrace="):
        group_hashes_for_event(_event(), rules=GroupingRules(stacktrace_rules=("a -app",)))
