"""Rule globs match as the regex translation Crashray shipped with grouping v1 did, for every
glob and value, without its backtracking: a hostile rule over a long message costs
milliseconds, not hours (issue 10).

The old translation is kept below as the oracle (it defines what a glob means, so the hashes of
the frozen grouping versions stay as they are); it runs only on small inputs.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from events.grouping.fingerprint_rules import (
    MAX_GLOB_WILDCARDS,
    parse_fingerprint_rules,
)
from events.grouping.glob import Glob, GlobError, compile_glob
from events.grouping.stacktrace_rules import parse_stacktrace_rules

# --- the oracle: the glob → regex translation as shipped (events/grouping/fingerprint_rules.py
# before issue 10), matched with re.fullmatch ---------------------------------------------


class _OldGlobError(Exception):
    def __init__(self, offset: int, problem: str) -> None:
        super().__init__(problem)
        self.offset = offset
        self.problem = problem


def _old_class_regex(raw: str, start: int) -> tuple[str, int]:
    i = start + 1
    out = "["
    if i < len(raw) and raw[i] in "!^":
        out += "^"
        i += 1
    first = i
    while i < len(raw) and (raw[i] != "]" or i == first):
        if raw[i] == "\\" and i + 1 < len(raw):
            out += re.escape(raw[i + 1])
            i += 2
            continue
        out += "-" if raw[i] == "-" and i > first else re.escape(raw[i])
        i += 1
    if i >= len(raw):
        raise _OldGlobError(start, 'unclosed "["; expected "]" (or escape it as \\[)')
    return out + "]", i + 1


def _old_alternatives_regex(raw: str, start: int, path: bool) -> tuple[str, int]:
    i = start + 1
    alternatives: list[str] = []
    current = ""
    while i < len(raw) and raw[i] != "}":
        if raw[i] == "{":
            raise _OldGlobError(i, 'nested "{" is not supported; expected "}" or \\{')
        if raw[i] == "\\" and i + 1 < len(raw):
            current += raw[i:i + 2]
            i += 2
            continue
        if raw[i] == ",":
            alternatives.append(current)
            current = ""
        else:
            current += raw[i]
        i += 1
    if i >= len(raw):
        raise _OldGlobError(start, 'unclosed "{"; expected "}" (or escape it as \\{)')
    alternatives.append(current)
    try:
        regexes = [_old_glob_regex(alt, path) for alt in alternatives]
    except _OldGlobError as error:
        raise _OldGlobError(start, error.problem) from None
    return "(?:" + "|".join(regexes) + ")", i + 1


def _old_glob_regex(raw: str, path: bool) -> str:
    out: list[str] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "\\":
            if i + 1 >= len(raw):
                raise _OldGlobError(i, "dangling backslash; expected a character after \\")
            out.append(re.escape(raw[i + 1]))
            i += 2
        elif char == "*" and path and raw.startswith("**", i):
            out.append(".*")
            i += 2
        elif char == "*":
            out.append("[^/]*" if path else ".*")
            i += 1
        elif char == "?":
            out.append("[^/]" if path else ".")
            i += 1
        elif char == "[":
            regex, i = _old_class_regex(raw, i)
            out.append(regex)
        elif char == "{":
            regex, i = _old_alternatives_regex(raw, i, path)
            out.append(regex)
        else:
            out.append(re.escape(char))
            i += 1
    return "".join(out)


def _old_compile_glob(raw: str, *, case_sensitive: bool, path: bool, ascii_case: bool = False
                      ) -> re.Pattern[str]:
    flags = re.DOTALL
    if ascii_case:
        flags |= re.IGNORECASE | re.ASCII
    elif not case_sensitive:
        flags |= re.IGNORECASE
    try:
        return re.compile(_old_glob_regex(raw, path), flags)
    except re.error as error:
        raise _OldGlobError(0, f"invalid glob ({error.msg})") from None


# --- the property: the same answer as the oracle, for every glob and value ---------------

# Every character the dialect gives a meaning to, letters that case folding equates (long s
# U+017F with "s" under Unicode folding, the Kelvin sign U+212A with "k"), "/" for path globs
# and a newline (the translation matches it with DOTALL).
_SPECIAL = ["*", "?", "[", "]", "!", "^", "-", "{", "}", ",", "\\"]
_LETTERS = ["a", "b", "s", "S", "\u017f", "k", "\u212a", "/", ".", "\n"]
_PIECES = ["**", "[a-s]", "[!/]", "[/a]", "[^a-]", "[]a]", "{a,*}", "{,/}", "{*a,b*,**}",
           "{[ab],?}", "\\*", "\\[", "\\{"]
_globs = st.lists(st.sampled_from(_SPECIAL + _LETTERS + _PIECES), max_size=8).map("".join)
_values = st.lists(st.sampled_from(_LETTERS + _SPECIAL), max_size=12).map("".join)
_flags = st.sampled_from([
    {"case_sensitive": True, "path": False}, {"case_sensitive": False, "path": False},
    {"case_sensitive": True, "path": True}, {"case_sensitive": False, "path": True},
    {"case_sensitive": False, "path": True, "ascii_case": True},
    {"case_sensitive": True, "path": False, "ascii_case": True},
])


def _compiled(glob: str, flags: dict[str, bool]) -> tuple[Glob, re.Pattern[str]] | None:
    """Both compilations, or None when both refuse the glob alike (checked here)."""
    try:
        oracle = _old_compile_glob(glob, **flags)
    except _OldGlobError as old_error:
        with pytest.raises(GlobError) as raised:
            compile_glob(glob, **flags)
        assert (raised.value.offset, raised.value.problem) == (old_error.offset,
                                                               old_error.problem)
        return None
    new = compile_glob(glob, **flags)
    assert (new.regex.pattern, new.regex.flags) == (oracle.pattern, oracle.flags)
    return new, oracle


@settings(max_examples=3000, deadline=None)
@given(_globs, st.lists(_values, min_size=1, max_size=6), _flags)
@example("x*a*a*a*a*b", ["xaab", "xaaaab", "xaaaaab", "xaaaa"], {"case_sensitive": False,
                                                                   "path": False})
@example("**a*b", ["a/ab", "a/a/b", "ab/"], {"case_sensitive": True, "path": True})
@example("*[/a]*b", ["a/b", "/ab", "a//b"], {"case_sensitive": True, "path": True})
@example("*s*", ["\u017f", "S", "x\u017fx"], {"case_sensitive": False, "path": False})
@example("*k*", ["\u212a"], {"case_sensitive": False, "path": True, "ascii_case": True})
@example("{*a,b}*{a,}b", ["ab", "bab", "xaab", "bb"], {"case_sensitive": True, "path": False})
def test_glob_matches_exactly_as_the_regex_translation(glob: str, values: list[str],
                                                       flags: dict[str, bool]) -> None:
    compiled = _compiled(glob, flags)
    if compiled is None:
        return
    new, oracle = compiled
    for value in values:
        expected = oracle.fullmatch(value) is not None
        assert new.matches(value) == expected, (glob, value)
        assert new.matches_by_positions(value) == expected, (glob, value)


# Globs that take each matcher (``Glob.matches`` picks one) and the tricky corners of each:
# mixed path stars, a class that matches "/", alternatives with stars, empty alternatives.
_HAND_PICKED = [
    ("a*b", True), ("*a*a*b", False), ("*a?b*", False), ("**/a/*", True), ("**a*b", True),
    ("*[/a]*b", True), ("*/*a**", True), ("a*?*b", True), ("{a,b}", False), ("{*a,b*}b", False),
    ("*{a,}b*", True), ("{,/}*{a/,}**", True), ("?*?", True), ("[!a]*[/]*", True),
]


@pytest.mark.parametrize(("glob", "path"), _HAND_PICKED)
def test_hand_picked_globs_match_every_short_value_as_the_regex(glob: str, path: bool) -> None:
    new = compile_glob(glob, case_sensitive=True, path=path)
    oracle = _old_compile_glob(glob, case_sensitive=True, path=path)
    for length in range(8):
        for letters in itertools.product("ab/", repeat=length):
            value = "".join(letters)
            expected = oracle.fullmatch(value) is not None
            assert new.matches(value) == expected, value
            assert new.matches_by_positions(value) == expected, value


# --- worst cases: hostile rules over long values finish at once ---------------------------


def _finishes(work: Callable[[], object], timeout_s: float = 30.0) -> object:
    """``work()``'s result, computed in a thread given ``timeout_s`` (generous: the figures are
    in bench/RESULTS.md; the old translation needed hours to years for these)."""
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(work()), daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), "matching did not finish: it backtracks"
    return results[0]


_TEN_KB = 10 * 1024


def test_a_backtracking_message_rule_over_a_10_kb_message_finishes() -> None:
    rules = parse_fingerprint_rules('message:"x*a*a*a*a*b" -> slow')
    almost = {"message": "x" + "a" * (_TEN_KB - 1)}
    matching = {"message": "x" + "a" * (_TEN_KB - 2) + "b"}
    assert _finishes(lambda: rules.match(almost)) is None
    assert _finishes(lambda: rules.match(matching)) is not None


def _at_the_limit(piece: str, end: str) -> str:
    """``piece`` repeated as often as a rule's glob allows (MAX_GLOB_WILDCARDS), then ``end``."""
    def wildcards(glob: str) -> int:
        return compile_glob(glob, case_sensitive=True, path=True).wildcards

    glob = end
    while wildcards(piece + glob) <= MAX_GLOB_WILDCARDS:
        glob = piece + glob
    return glob


@pytest.mark.parametrize("rule", [
    # Path globs mixing ``**`` and ``*`` (the general matcher), on a path of one segment and
    # on a path of many.
    f'path:"{_at_the_limit("**a*", "b")}" -app',
    # Alternatives with stars.
    f'function:"{_at_the_limit("{*a,a}", "b")}" -app',
])
@pytest.mark.parametrize("segment", ["a" * _TEN_KB, "a/" * (_TEN_KB // 2)],
                         ids=["one-10-KB-segment", "5,000-segments"])
def test_hostile_stacktrace_rules_at_the_wildcard_limit_over_10_kb_values_finish(
        rule: str, segment: str) -> None:
    rules = parse_stacktrace_rules(rule)
    event = {"platform": "python", "exception": {"values": [{"type": "E", "stacktrace": {
        "frames": [{"abs_path": segment, "function": segment, "in_app": True}]}}]}}
    result = _finishes(lambda: rules.apply(event))
    assert result is event  # nothing matched (no "b"), nothing changed


def test_hostile_message_rules_at_the_wildcard_limit_over_10_kb_messages_finish() -> None:
    globs = [_at_the_limit("{*a,a}", "b"), _at_the_limit("*[ab]", "b"), _at_the_limit("?", "*b")]
    rules = parse_fingerprint_rules("\n".join(f'message:"{g}" -> slow' for g in globs))
    event = {"message": "a" * _TEN_KB}
    assert _finishes(lambda: rules.match(event)) is None
