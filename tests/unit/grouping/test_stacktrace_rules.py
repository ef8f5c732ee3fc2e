"""Stack-trace rules (spec §6.8): parsing, applying and grouping."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest

from events.grouping import GroupingRules, group_hashes_for_event
from events.grouping.fingerprint_rules import parse_fingerprint_rules
from events.grouping.stacktrace_rules import (
    StacktraceRuleError,
    apply_in_sentry_order,
    parse_stacktrace_rules,
)


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
    ("module:foo invert-stacktrace=1", 12, "not supported"),
    ("stack.category:x -group", 1, 'unknown matcher "stack.category"'),
    ("category:x category=", 21, "category name '' is not allowed; expected category=NAME"),
    ("category:x category=a/b", 21, "category name 'a/b' is not allowed"),
    ("^category=x module:a -app", 1, "unexpected '^category=x'"),
    ("[ module:a ] module:b -app", 14, 'expected "|" after the caller context'),
    ("[ module:a | module:b -app", 12,
     'caller context "[" at column 1 is not closed: found "|"; expected "]"'),
    ("[ module:a] | module:b -app", 13, 'put a space between a value and "]"'),
    ("module:b | [ module:a", 22, 'callee context "[" at column 12 is not closed: found the end'),
    ("[ ] | module:b -app", 1, "empty caller context; expected [ matcher:value ]"),
    ("[ -app ] | module:b -app", 3, "unexpected '-app' in the caller context"),
    ("[ module:a ] | -app", 20, "rule has no matchers for the frame itself"),
    ("| [ module:b ] module:a -app", 1, '"|" before any frame matcher'),
    ("module:a | module:b -app", 12, 'expected "[" after "|"'),
    ("module:a [ module:b ] -app", 10, 'unexpected "["; a caller context [ matcher:value ] |'),
    ("module:a | [ module:b ] | [ module:c ] -app", 25, "a second callee context"),
    ("module:a | [ module:b ] module:c -app", 25, "after the callee context"),
    ("module:a -app | [ module:b ]", 15, "callee context \"| [ ... ]\" after an action"),
    ("module:a | [ family:cobol ] -app", 21, 'unknown family "cobol"'),
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


def test_parse_category_and_context() -> None:
    (rule,) = parse_stacktrace_rules(
        "[ category:std function:get ] | !category:std | [ module:java.* ] category=internals"
    ).rules
    assert [(m.name, m.value) for m in rule.caller] == [("category", "std"), ("function", "get")]
    assert [(m.name, m.negated) for m in rule.matchers] == [("category", True)]
    assert [m.value for m in rule.callee] == ["java.*"]
    assert [(a.key, a.value) for a in rule.actions] == [("_category", "internals")]


# --- categories and caller/callee context -------------------------------------------------


def _java_event(*modules: str) -> dict[str, Any]:
    return {"platform": "java", "exception": {"values": [{"type": "E", "stacktrace": {
        "frames": [_frame(m, f"f{i}", False) for i, m in enumerate(modules)]}}]}}


def test_category_action_is_read_by_later_category_matchers() -> None:
    frames = _apply("module:java.* category=std\ncategory:std -group",
                    _java_event("java.util.List", "shop.Cart", "java.util.Map"))
    assert [f.get("_category") for f in frames] == ["std", None, "std"]
    assert [f.get("_group") for f in frames] == [False, None, False]


def test_category_matcher_ignores_case_and_negation_matches_frames_without_one() -> None:
    frames = _apply("module:java.* category=std\ncategory:STD -group\n!category:std +app",
                    _java_event("java.util.List", "shop.Cart"))
    assert [f.get("_group") for f in frames] == [False, None]
    assert [f["in_app"] for f in frames] == [False, True]


def test_category_is_never_hashed() -> None:
    event = _java_event("java.util.List", "shop.Cart")
    rules = GroupingRules(stacktrace=parse_stacktrace_rules("module:java.* category=std"))
    for config in ("v1", "v2", "v3"):
        assert (group_hashes_for_event(event, config, rules=rules).hashes
                == group_hashes_for_event(event, config).hashes)


def test_caller_is_the_frame_before_and_callee_the_frame_after() -> None:
    event = _java_event("a", "b", "c")
    assert [f.get("_group") for f in _apply("[ module:a ] | module:* -group", event)] == [
        None, False, None]
    assert [f.get("_group") for f in _apply("module:* | [ module:c ] -group", event)] == [
        None, False, None]
    both = _apply("[ module:a ] | module:b | [ module:c ] -group\n"
                  "[ module:b ] | module:c | [ module:* ] -app", event)
    assert [f.get("_group") for f in both] == [None, False, None]
    assert [f["in_app"] for f in both] == [False, False, False]


def test_frame_without_caller_or_callee_never_matches_a_rule_needing_one() -> None:
    event = _java_event("a", "b")
    # Negated or not: the first frame has no caller, the last no callee.
    caller = _apply("[ !module:zzz ] | module:* -group", event)
    assert [f.get("_group") for f in caller] == [None, False]
    callee = _apply("module:* | [ !module:zzz ] -group", event)
    assert [f.get("_group") for f in callee] == [False, None]


def test_several_matchers_in_a_context_all_hold_for_the_neighbour() -> None:
    event = {"platform": "java", "stacktrace": {"frames": [
        _frame("a", "run", True), _frame("a", "call", True), _frame("b", "x", True)]}}
    frames = parse_stacktrace_rules("[ module:a function:call ] | module:b -group").apply(event)
    assert [f.get("_group") for f in frames["stacktrace"]["frames"]] == [None, None, False]
    frames = parse_stacktrace_rules("[ module:a function:run ] | module:b -group").apply(event)
    assert [f.get("_group") for f in frames["stacktrace"]["frames"]] == [None, None, None]


def test_context_sees_earlier_rules_and_matches_are_found_before_actions() -> None:
    # Both "b" frames have a std caller before the rule acts (Sentry collects matches first).
    frames = _apply("module:* category=std\n[ category:std ] | category:std category=internals",
                    _java_event("a", "b", "b"))
    assert [f.get("_category") for f in frames] == ["std", "internals", "internals"]


def test_sentry_order_runs_group_actions_after_every_category_action() -> None:
    text = "category:internals -group\nmodule:java.* category=internals"
    event = _java_event("java.util.List", "shop.Cart")
    # v1 order: each rule acts in turn, so the -group rule saw no category yet.
    assert [f.get("_group") for f in _apply(text, event)] == [None, None]
    sentry = _frames(apply_in_sentry_order(event, parse_stacktrace_rules(text)))
    assert [f.get("_group") for f in sentry] == [False, None]


def test_sentry_order_runs_every_rule_set_in_turn_so_later_sets_win() -> None:
    base = parse_stacktrace_rules("module:shop.* -app\nmodule:shop.* -group")
    project = parse_stacktrace_rules("module:shop.* +app\nfunction:total +group")
    frames = _frames(apply_in_sentry_order(_event(), base, project))
    assert [f["in_app"] for f in frames] == [False, True, True, True]
    assert [f.get("_group") for f in frames] == [None, False, True, False]
    assert apply_in_sentry_order(_event(), None, parse_stacktrace_rules("")) == _event()


def test_builtin_rules_read_paths_and_case_as_sentrys_enhancer() -> None:
    relative = {"platform": "node", "stacktrace": {"frames": [
        {"function": "f", "filename": "node_modules/x/index.js", "in_app": True},
        {"function": "g", "module": "Java.Util.List", "in_app": True}]}}
    text = "path:**/node_modules/** -app\nmodule:java.* -group"
    # Project rules (Crashray's v1 reading): "**/" needs a "/" before, module globs keep case.
    project = parse_stacktrace_rules(text).apply(relative)
    assert project is relative
    # Built-in rules: a relative path is also tried as "/" + path; globs fold ASCII case.
    builtin = _frames_of(parse_stacktrace_rules(text, builtin=True).apply(relative))
    assert [f["in_app"] for f in builtin] == [False, True]
    assert [f.get("_group") for f in builtin] == [None, False]


def test_builtin_path_is_abs_path_else_filename() -> None:
    frame = {"function": "f", "abs_path": "https://cdn.example.com/app.js",
             "filename": "/vendor/app.js", "in_app": True}
    event = {"platform": "javascript", "stacktrace": {"frames": [frame]}}
    text = "path:**/vendor/** -app"
    assert _frames_of(parse_stacktrace_rules(text).apply(event))[0]["in_app"] is False
    assert parse_stacktrace_rules(text, builtin=True).apply(event) is event


def test_stack_filename_matcher_reads_filename_only() -> None:
    event = {"platform": "javascript", "stacktrace": {"frames": [
        {"function": "f", "abs_path": "webpack:///./~/react/index.js",
         "filename": "~/react/index.js", "in_app": False},
        {"function": "g", "abs_path": "webpack:///./src/app.js", "filename": "./src/app.js",
         "in_app": False}]}}
    rules = parse_stacktrace_rules(
        "family:javascript stack.abs_path:webpack:** +app\n"
        "family:javascript stack.abs_path:webpack:** stack.filename:~/*** -app")
    assert [f["in_app"] for f in _frames_of(rules.apply(event))] == [False, True]


def _frames_of(event: Any) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = event["stacktrace"]["frames"]
    return frames


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
