"""A project's rule texts are held to limits (rules, characters a rule, bytes, wildcards a
glob) wherever they are parsed: on save through the API, in the consumers and in
``crashray grouping hash``; a text over a limit is refused naming the line and what to do."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from events.grouping.fingerprint_rules import (
    MAX_GLOB_WILDCARDS,
    MAX_RULE_CHARS,
    MAX_RULES,
    MAX_RULES_BYTES,
    FingerprintRuleError,
    RuleSyntaxError,
    parse_fingerprint_rules,
)
from events.grouping.rules import grouping_rules_from_text
from events.grouping.stacktrace_rules import StacktraceRuleError, parse_stacktrace_rules
from serve_apps.api.app import validation_detail
from serve_apps.api.project_settings import ProjectSettingsBody
from tests.unit.grouping.test_grouping_cli import crashray_grouping_hash, rules_file

HEADER = "# team rules\n\n"  # a comment and a blank line: not rules, but lines


def fingerprint_rules(count: int) -> str:
    return HEADER + "".join(f"type:Error{i} -> error-{i}\n" for i in range(count))


def stacktrace_rules(count: int) -> str:
    return HEADER + "".join(f"module:vendor{i}.core -app\n" for i in range(count))


def padded_rule(length: int) -> str:
    """A fingerprint rule of exactly ``length`` characters."""
    rule = 'message:"" -> long'
    return rule.replace('""', '"' + "x" * (length - len(rule)) + '"')


def wildcard_glob(count: int) -> str:
    """A glob with ``count`` wildcards, ending in a literal."""
    return "*a" * count + "b"


# --- the limits in each language -----------------------------------------------------------


def test_rule_counts_up_to_the_limit_are_accepted_in_both_languages() -> None:
    assert len(parse_fingerprint_rules(fingerprint_rules(MAX_RULES)).rules) == MAX_RULES
    assert len(parse_stacktrace_rules(stacktrace_rules(MAX_RULES)).rules) == MAX_RULES


@pytest.mark.parametrize(("parse", "text", "error"), [
    (parse_fingerprint_rules, fingerprint_rules(MAX_RULES + 1), FingerprintRuleError),
    (parse_stacktrace_rules, stacktrace_rules(MAX_RULES + 1), StacktraceRuleError),
], ids=["fingerprint", "stacktrace"])
def test_one_rule_too_many_is_refused_at_its_line(parse: Callable[[str], object], text: str,
                                                  error: type[RuleSyntaxError]) -> None:
    with pytest.raises(error) as refused:
        parse(text)
    assert refused.value.line == MAX_RULES + 3  # after the comment and the blank line
    assert str(refused.value).startswith(
        f"line {MAX_RULES + 3}, column 1: more than {MAX_RULES:,} rules")
    assert "merge rules" in refused.value.problem


def test_a_rule_one_character_too_long_is_refused_at_the_first_character_past_the_limit() -> None:
    assert parse_fingerprint_rules(padded_rule(MAX_RULE_CHARS)).rules
    with pytest.raises(FingerprintRuleError) as refused:
        parse_fingerprint_rules("type:A -> a\n  " + padded_rule(MAX_RULE_CHARS + 1))
    assert (refused.value.line, refused.value.column) == (2, 2 + MAX_RULE_CHARS + 1)
    assert refused.value.problem == (
        f"rule is {MAX_RULE_CHARS + 1:,} characters long; at most {MAX_RULE_CHARS:,} are "
        "allowed: shorten it or split it into several rules")


def test_a_text_over_the_byte_limit_is_refused_at_the_line_that_goes_past_it() -> None:
    comment = "# " + "\u00e9" * 400 + "\n"  # 803 bytes of UTF-8, 403 characters
    lines_within = MAX_RULES_BYTES // len(comment.encode())
    within = comment * lines_within
    assert parse_fingerprint_rules(within + "type:A -> a\n").rules
    with pytest.raises(StacktraceRuleError) as refused:
        parse_stacktrace_rules(within + comment + "module:a -app\n")
    assert refused.value.line == lines_within + 1
    assert f"past the {MAX_RULES_BYTES:,} allowed: remove rules or comments" in str(refused.value)


def test_globs_up_to_the_wildcard_limit_are_accepted() -> None:
    glob = wildcard_glob(MAX_GLOB_WILDCARDS)
    assert parse_fingerprint_rules(f'message:"{glob}" -> many').rules
    assert parse_stacktrace_rules(f"path:{glob} -app").rules


@pytest.mark.parametrize(("rule", "parse", "column"), [
    (f'type:A message:"{wildcard_glob(MAX_GLOB_WILDCARDS + 1)}" -> many',
     parse_fingerprint_rules, 17),
    ("function:{a,b,c,d,e,f,g,h,i}{a,b,c,d,e,f,g,h,i} -app", parse_stacktrace_rules, 10),
], ids=["fingerprint-stars", "stacktrace-alternatives"])
def test_a_glob_with_too_many_wildcards_is_refused_at_its_value(
        rule: str, parse: Callable[[str], object], column: int) -> None:
    with pytest.raises(RuleSyntaxError) as refused:
        parse(rule)
    assert (refused.value.line, refused.value.column) == (1, column)
    assert f"at most {MAX_GLOB_WILDCARDS} are allowed" in refused.value.problem
    assert "use fewer wildcards or split the rule" in refused.value.problem


def test_builtin_rules_are_not_held_to_the_project_limits() -> None:
    glob = wildcard_glob(MAX_GLOB_WILDCARDS + 1)
    assert parse_fingerprint_rules(f'message:"{glob}" -> many', builtin=True).rules
    assert parse_stacktrace_rules(f"path:{glob} -app", builtin=True).rules


# --- the same limits wherever a project's rules are parsed ----------------------------------


@pytest.mark.parametrize(("setting", "text", "where"), [
    ("fingerprintingRules", fingerprint_rules(MAX_RULES + 1), f"line {MAX_RULES + 3}, column 1"),
    ("groupingEnhancements", f"path:{wildcard_glob(MAX_GLOB_WILDCARDS + 1)} -app",
     "line 1, column 6"),
], ids=["too-many-fingerprint-rules", "too-many-wildcards-in-a-stacktrace-rule"])
def test_saving_rules_over_a_limit_is_a_400_naming_the_setting_and_line(
        setting: str, text: str, where: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ProjectSettingsBody.model_validate({setting: text})
    detail = validation_detail(refused.value.errors())
    assert detail.startswith(f"{setting}: {where}: "), detail


def test_the_consumers_refuse_rules_over_a_limit_as_the_api_does() -> None:
    with pytest.raises(FingerprintRuleError) as refused:
        grouping_rules_from_text(fingerprint_rules(MAX_RULES + 1), "")
    assert refused.value.line == MAX_RULES + 3
    with pytest.raises(StacktraceRuleError):
        grouping_rules_from_text("", "module:a -app\n" + padded_rule(MAX_RULE_CHARS + 1))


def test_the_cli_refuses_rules_over_a_limit_naming_file_and_line(tmp_path: Path) -> None:
    path = rules_file(tmp_path, "fingerprints.txt", fingerprint_rules(MAX_RULES + 1))
    result = crashray_grouping_hash("--fingerprinting-rules", path)
    assert result.returncode == 2
    assert f"{path}, line {MAX_RULES + 3}, column 1: " in result.stderr
    assert f"more than {MAX_RULES:,} rules" in result.stderr


def test_all_rules_together_are_held_to_a_wildcard_budget() -> None:
    """Each glob is linear, but every rule runs on every event: the sum is bounded too."""
    from events.grouping.fingerprint_rules import MAX_TOTAL_WILDCARDS, parse_fingerprint_rules
    from events.grouping.stacktrace_rules import parse_stacktrace_rules

    per_rule = 8
    fitting = MAX_TOTAL_WILDCARDS // per_rule
    fingerprint = "\n".join(f'message:"a*b*c*d*e*f*g*h*" -> fp{i}' for i in range(fitting))
    parse_fingerprint_rules(fingerprint)
    with pytest.raises(RuleSyntaxError, match=f"at most {MAX_TOTAL_WILDCARDS} are allowed"
                       ) as caught:
        parse_fingerprint_rules(fingerprint + '\nmessage:"x*" -> over')
    assert caught.value.line == fitting + 1
    stacktrace = "\n".join(f"function:a*b*c*d*e*f*g*h*{i} -group" for i in range(fitting))
    parse_stacktrace_rules(stacktrace)
    with pytest.raises(RuleSyntaxError, match="wildcards"):
        parse_stacktrace_rules(stacktrace + "\nfunction:x* -group")
