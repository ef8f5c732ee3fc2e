"""Server-side fingerprint rules (spec §6.7): parsing, matching and grouping."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.grouping import GroupingRules, group_hashes_for_event
from events.grouping.fingerprint_rules import (
    FingerprintRuleError,
    MatchedRule,
    parse_fingerprint_rules,
)
from tests.unit.grouping.helpers import normalize

DB_EVENT: dict[str, Any] = {
    "platform": "python",
    "level": "error",
    "logger": "app.db",
    "release": "shop@1.2.0",
    "tags": {"region": "eu-west-1"},
    "exception": {"values": [{"type": "DatabaseError", "value": "Connection REFUSED to db-7",
                              "stacktrace": {"frames": [
        {"module": "django.db.backends", "function": "execute", "in_app": False,
         "abs_path": "/usr/lib/python3/site-packages/django/db/backends/utils.py",
         "package": "/usr/lib/python3.11"},
        {"module": "shop.orders", "function": "place_order", "in_app": True,
         "abs_path": "/srv/shop/orders/views.py", "filename": "orders/views.py"},
    ]}}]},
}
JS_EVENT: dict[str, Any] = {
    "platform": "javascript",
    "logentry": {"formatted": "Checkout failed for cart 42"},
    "stacktrace": {"frames": [
        {"function": "handleClick", "abs_path": "https://shop.example/static/app.js",
         "in_app": True},
    ]},
}


NORMALIZED_DB_EVENT = normalize(DB_EVENT)


def match(rules_text: str, event: dict[str, Any]) -> MatchedRule | None:
    return parse_fingerprint_rules(rules_text).match(normalize(event))


def md5(*values: str) -> str:
    return hashlib.md5("".join(values).encode()).hexdigest()


# --- parsing -----------------------------------------------------------------------------


def test_comments_and_blank_lines_ignored_and_line_numbers_kept() -> None:
    rules = parse_fingerprint_rules("# header\n\n   # indented comment\ntype:A -> a\n\nvalue:b -> b\n")
    assert [(rule.line, rule.text) for rule in rules.rules] == [(4, "type:A -> a"),
                                                                (6, "value:b -> b")]


def test_several_parts_variables_quotes_and_title_parsed() -> None:
    (rule,) = parse_fingerprint_rules(
        'message:"Checkout failed*" -> checkout, {{ type }},"with space" title="Checkout: {{ message }}"'
    ).rules
    assert rule.fingerprint == ("checkout", "{{ type }}", "with space")
    assert rule.title == "Checkout: {{ message }}"
    assert rule.matchers[0].value == "Checkout failed*"


def test_quoted_value_with_escaped_quote_matches_literally() -> None:
    assert match(r'message:"*\"quoted\"*" -> q', {"message": 'a "quoted" b'}) is not None


def test_escaped_glob_metacharacters_are_literal() -> None:
    assert match(r"value:\[x\]\* -> lit", {"exception": {"values": [
        {"type": "E", "value": "[x]*"}]}}) is not None
    assert match(r"value:\[x\]\* -> lit", {"exception": {"values": [
        {"type": "E", "value": "[x]yz"}]}}) is None


def test_glob_classes_and_alternatives() -> None:
    event = {"exception": {"values": [{"type": "IOError", "value": "v"}]}}
    assert match("type:{OSError,IOError} -> io", event) is not None
    assert match("type:[A-Z]OError -> io", event) is not None
    assert match("type:[!I]OError -> io", event) is None


def test_negation_parsed_and_applied() -> None:
    (rule,) = parse_fingerprint_rules("!type:ValueError -> other").rules
    assert rule.matchers[0].negated
    assert match("!type:ValueError -> other", DB_EVENT) is not None
    assert match("!type:DatabaseError -> other", DB_EVENT) is None


# --- every matcher -----------------------------------------------------------------------


@pytest.mark.parametrize("rule", [
    "type:DatabaseError", "error.type:Database*",
    "value:*refused*", "error.value:connection?refused*",
    "message:*REFUSED*", "logger:app.*", "level:ERROR", "tags.region:eu-*",
    "release:shop@1.*",
    "path:/srv/shop/**", "stack.abs_path:**/orders/views.py", "path:orders/*.py",
    "module:shop.*", "stack.module:django.db.backends",
    "function:place_order", "stack.function:exec*",
    "package:python3.11", "stack.package:/USR/lib/**",
    "family:other", "family:javascript,other", "app:yes", "app:no",
])
def test_matcher_matches_db_event(rule: str) -> None:
    assert match(f"{rule} -> hit", DB_EVENT) is not None


@pytest.mark.parametrize("rule", [
    "type:databaseerror",  # type is case-sensitive
    "logger:APP.DB",  # logger is case-sensitive
    "message:nothing*", "level:warning", "tags.region:us-*", "tags.missing:*",
    "path:/srv/*.py",  # "*" does not cross "/"
    "module:Shop.*", "function:missing", "package:other", "family:native",
    "family:javascript", "release:other",
])
def test_matcher_does_not_match_db_event(rule: str) -> None:
    assert match(f"{rule} -> hit", DB_EVENT) is None


def test_message_matcher_reads_logentry_and_family_javascript() -> None:
    assert match("message:checkout* family:javascript -> js", JS_EVENT) is not None
    assert match("path:https://shop.example/** app:yes -> js", JS_EVENT) is not None


# --- same-frame semantics and order ------------------------------------------------------


def test_frame_matchers_must_hold_on_the_same_frame() -> None:
    # execute is in django.db.backends, place_order is in shop.orders.
    assert match("function:execute module:shop.orders -> x", DB_EVENT) is None
    assert match("function:place_order module:shop.orders -> x", DB_EVENT) is not None
    assert match("function:place_order app:no -> x", DB_EVENT) is None
    assert match("!function:place_order app:no -> x", DB_EVENT) is not None


def test_thread_frames_are_searched() -> None:
    event = {"threads": {"values": [{"stacktrace": {"frames": [{"function": "worker"}]}}]}}
    assert match("function:worker -> w", event) is not None


def test_first_matching_rule_wins() -> None:
    matched = match("type:Nope -> a\ntype:Database* -> b\ntype:DatabaseError -> c", DB_EVENT)
    assert matched is not None
    assert (matched.fingerprint, matched.text, matched.line) == (("b",), "type:Database* -> b", 2)


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("type:A -> a\n\n  stack.file:x -> y", r'^line 3, column 3: unknown matcher "stack\.file"; known: '),
    ("type:A", r"^line 1, column 7: rule ends early; expected '->'"),
    ("-> a", r"^line 1, column 1: rule has no matchers"),
    ("type:A ->", r"^line 1, column 10: missing fingerprint part; expected"),
    ("type:A -> a,", r"^line 1, column 13: missing fingerprint part"),
    ('message:"abc -> a', r'^line 1, column 9: unterminated quoted string; expected a closing "'),
    ("type:[abc -> a", r'^line 1, column 6: matcher "type": unclosed "\["; expected "\]"'),
    ("type:{a,b -> a", r'^line 1, column 6: matcher "type": unclosed "\{"'),
    ("type:abc\\", r'^line 1, column 9: matcher "type": dangling backslash; expected a char'),
    ("family:wasm -> a", r'^line 1, column 8: unknown family "wasm"; expected one or more of'),
    ("app:maybe -> a", r'^line 1, column 5: app value "maybe" is not allowed; expected yes or no'),
    ("type: -> a", r'^line 1, column 6: matcher "type" has no value; expected type:VALUE'),
    ("type -> a", r"^line 1, column 1: expected matcher:value, got 'type'"),
    ("tags.:x -> a", r'^line 1, column 1: matcher "tags\." has no tag name'),
    ("type:A -> a b", r"^line 1, column 13: unexpected 'b' after a fingerprint part"),
    ('type:A -> a colour="red"', r'^line 1, column 13: unknown attribute "colour"; known: title'),
    ("type:A -> a title=x", r'^line 1, column 19: title must be quoted'),
    ('type:A -> a title="x" title="y"', r"title is given twice"),
    ("type:A -> {{ type", r'^line 1, column 11: unclosed "\{\{"; expected "\}\}"'),
])
def test_bad_rules_name_line_column_problem_and_expectation(text: str, expected: str) -> None:
    with pytest.raises(FingerprintRuleError, match=expected) as caught:
        parse_fingerprint_rules(text)
    assert caught.value.status == 400  # the API answers it as a bad request


@given(st.text())
def test_parsing_arbitrary_text_raises_only_fingerprint_rule_error(text: str) -> None:
    with contextlib.suppress(FingerprintRuleError):
        parse_fingerprint_rules(text)


@given(st.lists(st.sampled_from(
    ["type:", "!", "path:", "family:", "app:", "tags.a:", " ", "->", ",", '"', "\\", "*", "**",
     "[", "]", "{", "}", "a", "-", "title=", "{{", "}}", "\n", "#"]), max_size=20))
def test_parsing_rule_shaped_text_raises_only_fingerprint_rule_error(tokens: list[str]) -> None:
    with contextlib.suppress(FingerprintRuleError):
        parse_fingerprint_rules("".join(tokens)).match(NORMALIZED_DB_EVENT)


# --- grouping ----------------------------------------------------------------------------


def rules_of(text: str) -> GroupingRules:
    return GroupingRules(fingerprint=parse_fingerprint_rules(text))


def test_matched_rule_gives_custom_fingerprint_hash() -> None:
    result = group_hashes_for_event(normalize(DB_EVENT),
                                    rules=rules_of("type:DatabaseError -> database-failure"))
    assert result.hashes == (md5("database-failure"),)
    assert result.variants["custom-fingerprint"].contributes
    assert result.fingerprint_rule == "type:DatabaseError -> database-failure"
    data = result.to_json_dict()
    assert data["fingerprintRule"] == "type:DatabaseError -> database-failure"
    assert data["title"] is None


def test_rule_replaces_sdk_fingerprint_and_resolves_variables() -> None:
    event = normalize({**DB_EVENT, "fingerprint": ["from-sdk"]})
    result = group_hashes_for_event(
        event, rules=rules_of('type:DatabaseError -> db, {{ type }} title="DB down: {{ value }}"'))
    assert result.hashes == (md5("db", "DatabaseError"),)
    assert result.title == "DB down: Connection REFUSED to db-7"


def test_default_in_rule_salts_the_normal_variants() -> None:
    event = normalize(DB_EVENT)
    plain = group_hashes_for_event(event)
    salted = group_hashes_for_event(event, rules=rules_of("type:DatabaseError -> {{ default }}, db"))
    sdk_salted = group_hashes_for_event(normalize({**DB_EVENT,
                                                   "fingerprint": ["{{ default }}", "db"]}))
    assert salted.hashes == sdk_salted.hashes
    assert set(salted.hashes).isdisjoint(plain.hashes)
    assert set(salted.variants) == {"app", "system"}


def test_unmatched_event_hashes_and_json_unchanged() -> None:
    event = normalize(DB_EVENT)
    plain = group_hashes_for_event(event)
    ruled = group_hashes_for_event(event, rules=rules_of("type:Other -> other"))
    assert ruled.hashes == plain.hashes
    assert ruled.fingerprint_rule is None
    assert ruled.to_json_dict() == plain.to_json_dict()
    assert "fingerprintRule" not in ruled.to_json_dict()


def test_stacktrace_rules_still_refused_alongside_fingerprint_rules() -> None:
    rules = GroupingRules(stacktrace_rules=("function:x -group",),
                          fingerprint=parse_fingerprint_rules("type:A -> a"))
    with pytest.raises(NotImplementedError, match="stack-trace rules"):
        group_hashes_for_event(normalize(DB_EVENT), rules=rules)
