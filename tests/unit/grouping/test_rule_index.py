"""The shortcuts of rule matching never change a result (property tests).

Three pieces only skip work: a matcher's required literal, tested before its regex
(``fingerprint_rules.may_contain``); the stack-trace rules' gate index, which skips rules that
cannot match a stack trace (``stacktrace_rules._Pass``); and the fingerprint rules' gates
(``FingerprintRules.match``). They are compared here with plain evaluations without shortcuts.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from events.grouping.builtin_rules import BASE_STACKTRACE_RULES, BUILTIN_FINGERPRINT_RULES
from events.grouping.fingerprint_rules import (
    FingerprintRules,
    GlobLiterals,
    Matcher,
    RuleSyntaxError,
    frame_values,
    glob_literals,
    parse_fingerprint_rules,
)
from events.grouping.stacktrace_rules import (
    GROUP_KEY,
    StacktraceRule,
    StacktraceRules,
    apply_in_sentry_order,
    parse_stacktrace_rules,
)

# --- the required-literal prefilter ------------------------------------------------------

# Characters that stress case folding: Unicode IGNORECASE equates long s (U+017F) with "s",
# the Kelvin sign with "k" and dotless i with "i"; str.lower() maps a final sigma by context.
_TRICKY = ["a", "s", "S", "k", "K", "i", "I", "\u017f", "\u212a", "\u0131", "\u0130", "\u03a3",
           "\u03c3", "\u03c2", "/", ".", "\\", "-", "x"]
_GLOB_TOKENS = st.sampled_from([*_TRICKY, "*", "**", "?", "\\*", "[a-s]", "{a,S}"])
_globs = st.lists(_GLOB_TOKENS, min_size=1, max_size=8).map("".join)
_values = st.lists(st.sampled_from(_TRICKY), max_size=10).map("".join)


def _plain_match(matcher: Matcher, frame: Mapping[str, Any]) -> bool:
    """``matcher.matches_frame`` without the prefilter: the glob's regex on every value."""
    assert matcher.glob is not None
    pattern = matcher.glob.regex
    candidates = [v for v in frame_values(frame, matcher.key, matcher.sentry_paths) if v]
    if matcher.retries_with_slash:
        candidates += ["/" + v for v in candidates if not v.startswith("/")]
    return any(pattern.fullmatch(v) is not None for v in candidates) != matcher.negated


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["module", "function", "path", "package", "stack.filename", "category"]),
       _globs, _values, st.booleans())
@example("path", "*s*", "x\u017fx", False)  # "s" matches long s, whose lower() stays long s
@example("category", "i", "\u0131", False)
@example("path", "*\u03c3", "x\u03a3", False)  # lower() gives a final sigma here
@example("module", "*k*", "\u212a", True)  # ASCII folding: the Kelvin sign stays itself
def test_required_literal_never_changes_a_match(name: str, glob: str, value: str,
                                                builtin: bool) -> None:
    try:
        rules = parse_stacktrace_rules(f'{name}:"{glob}" -app', builtin=builtin)
    except RuleSyntaxError:
        assume(False)
        return
    matcher = rules.rules[0].matchers[0]
    frame = {"module": value, "function": value, "abs_path": value, "filename": value,
             "package": value, "_category": value}
    assert matcher.matches_frame(frame, "python") == _plain_match(matcher, frame)


def test_glob_literals() -> None:
    assert glob_literals("org.apache.*") == GlobLiterals("org.apache.", "", "org.apache.", False)
    assert glob_literals("**/site-packages/**") == GlobLiterals(
        "", "", "/site-packages/", False)
    assert glob_literals("**/libBugly.so") == GlobLiterals("", "/libBugly.so", "/libBugly.so",
                                                           False)
    assert glob_literals("nextTick") == GlobLiterals("nextTick", "nextTick", "nextTick", True)
    assert glob_literals(r"a\*b*c") == GlobLiterals("a*b", "c", "a*b", False)
    # Nothing after a class or alternatives is collected (it may be optional).
    assert glob_literals("ab[cd]efgh") == GlobLiterals("ab", "", "ab", False)


# --- the gate index ----------------------------------------------------------------------

_MODULES = ["java.util.HashMap", "java.lang.reflect.Method", "org.springframework.web.X",
            "android.os.Handler", "android.view.View", "androidx.core.widget.Y", "io.sentry.Z",
            "Java.Util.List", "com.example.Cart", "@babel/runtime/helpers", "lib:route", None]
_FUNCTIONS = ["run", "call", "handleMessage", "dispatchMessage", "loop", "main", "get",
              "runMicrotasks", "nextTick", "reportError", "_callSuper", "loadLibrary", None]
_PATHS = ["/srv/app/x.py", "/venv/lib/site-packages/a.py", "node_modules/x/i.js",
          "/app/node_modules/y.js", "webpack:///./src/a.js", "webpack:///./~/r/i.js",
          "app:///main.js", "https://unpkg.com/react/index.js", "C:\\vendor\\a.js",
          "/x/NewRelic/agent.js", "package:sentry/src/a.dart", None]
_frames = st.lists(st.fixed_dictionaries({}, optional={
    "module": st.sampled_from(_MODULES), "function": st.sampled_from(_FUNCTIONS),
    "abs_path": st.sampled_from(_PATHS), "filename": st.sampled_from(_PATHS),
    "package": st.sampled_from(["/apex/com.android.art/lib64/x.so", "/a/libBugly.so", None]),
    "platform": st.sampled_from(["javascript", "node", "java", "python", "native", None]),
    "in_app": st.sampled_from([True, False, None]),
    "_category": st.sampled_from(["system", "std", "ui", None]),
}), max_size=8)
_PROJECT_RULES = st.lists(st.sampled_from([
    "category:framework -group", "module:com.example.* category=system",
    "[ category:std ] | function:get category=internals", "app:yes category=ui",
    "function:run | [ !category:ui ] -app", "path:**/srv/** +app v-group",
    "family:javascript max-frames=2", "!module:java.* ^-app",
]), max_size=4).map("\n".join)


def _plain_apply(frames: list[dict[str, Any]], platform: str,
                 rules: list[StacktraceRule]) -> list[dict[str, Any]]:
    """``rules`` in order, each tried on every frame (no index), its actions applied after."""
    frames = copy.deepcopy(frames)
    platforms = [f.get("platform") or platform for f in frames]
    for rule in rules:
        matched = [i for i in range(len(frames)) if rule.matches_at(frames, platforms, i)]
        for index in matched:
            for action in rule.actions:
                if action.max_frames is not None:
                    continue
                targets = {"^": range(index + 1, len(frames)), "v": range(index)}.get(
                    action.range, range(index, index + 1))
                for target in targets:
                    frames[target][action.key] = action.value
        for action in rule.actions:
            if matched and action.max_frames is not None:
                for target in range(max(len(frames) - action.max_frames, 0)):
                    frames[target][GROUP_KEY] = False
    return frames


def _sentry_order(*rule_sets: StacktraceRules) -> list[StacktraceRule]:
    return [restricted for classifiers in (True, False) for rules in rule_sets
            for rule in rules.rules
            if (restricted := rule.with_actions(classifiers)) is not None]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames, st.sampled_from(["javascript", "java", "python", "native"]), _PROJECT_RULES)
def test_index_gives_the_same_frames_as_trying_every_rule(
        raw_frames: list[dict[str, Any]], platform: str, project_text: str) -> None:
    frames = [{k: v for k, v in frame.items() if v is not None} for frame in raw_frames]
    project = parse_stacktrace_rules(project_text)
    event = {"platform": platform, "stacktrace": {"frames": frames}}
    result = apply_in_sentry_order(event, BASE_STACKTRACE_RULES, project)
    expected = _plain_apply(frames, platform, _sentry_order(BASE_STACKTRACE_RULES, project))
    assert [dict(f) for f in result["stacktrace"]["frames"]] == expected
    # v1's order (each rule's actions in turn) goes through the same index.
    both = StacktraceRules(BASE_STACKTRACE_RULES.rules + project.rules)
    sequential = both.apply(event)["stacktrace"]["frames"]
    assert [dict(f) for f in sequential] == _plain_apply(frames, platform, list(both.rules))


# --- fingerprint rule gates --------------------------------------------------------------

_HYDRATION = ("Hydration failed because the initial UI does not match what was rendered on "
              "the server.")
_TEXTS = st.sampled_from([
    "ChunkLoadError", "chunkloaderror: Loading chunk 7 failed.", "CHUNKLOADERROR", "Error",
    _HYDRATION, _HYDRATION.upper(), "Hydration failed", "Loading chunk 4 failed",
    "\u017fhop", "ValueError", "x\u212a", "",
])
_fingerprint_events = st.fixed_dictionaries({
    "platform": st.sampled_from(["javascript", "node", "python", "java"]),
}, optional={
    "exception": st.fixed_dictionaries({"values": st.lists(st.fixed_dictionaries(
        {}, optional={"type": _TEXTS, "value": _TEXTS}), max_size=2)}),
    "logentry": st.fixed_dictionaries({}, optional={"formatted": _TEXTS, "message": _TEXTS}),
    "tags": st.lists(st.tuples(st.sampled_from(["transaction", "release"]),
                               st.sampled_from(["/cart", "", "x"])).map(list), max_size=2),
    "logger": _TEXTS,
})
_PROJECT_FINGERPRINT_RULES = st.lists(st.sampled_from([
    "type:ChunkLoad* -> a", "value:*\u017fhop -> b", "message:*chunk* level:error -> c",
    "value:*CHUNK* -> g", "message:*S* -> h",
    "logger:x\u212a -> d", "tags.release:x -> e", "!type:Error -> f",
]), max_size=3).map("\n".join)


@settings(max_examples=400, deadline=None)
@given(_fingerprint_events, _PROJECT_FINGERPRINT_RULES)
def test_fingerprint_gates_give_the_same_match_as_trying_every_rule(
        event: dict[str, Any], project_text: str) -> None:
    rules = FingerprintRules(
        parse_fingerprint_rules(project_text).rules + BUILTIN_FINGERPRINT_RULES.rules)
    plain = next((rule.text for rule in rules.rules if rule.matches(event, lambda: [])), None)
    matched = rules.match(event)
    assert (matched.text if matched is not None else None) == plain
