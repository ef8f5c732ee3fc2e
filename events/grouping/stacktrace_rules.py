"""Stack-trace rules, the project setting Sentry calls "Stack Trace Rules" (spec §6.8).

One rule per line; blank lines and lines starting with ``#`` are ignored::

    [ [ caller matchers ] | ] matcher:value [!matcher:value ...] [ | [ callee matchers ] ]
        action [action ...]

Matchers (all must hold for the same frame): ``family``, ``stack.abs_path``/``path``,
``stack.module``/``module``, ``stack.function``/``function``, ``stack.package``/``package``,
``stack.filename`` (the frame's ``filename`` only, a path glob), ``app`` and ``category`` (the
category an earlier ``category=`` action gave the frame; a case-insensitive glob; a frame without
one does not match ``category:x`` and does match ``!category:x``); globs and values as in
fingerprint rules (§6.7).

Caller/callee context (Sentry's enhancer ``CallerMatch``/``CalleeMatch``): frames are listed
oldest call first, crash last, so the *caller* of frame ``i`` is frame ``i - 1`` and its *callee*
frame ``i + 1``. ``[ matchers ] |`` before the frame matchers must hold for the caller,
``| [ matchers ]`` after them for the callee; both may appear. A frame without a caller (the
first) or a callee (the last) does not match a rule that asks for one, negated or not. Sentry
accepts one matcher inside the brackets; Crashray accepts several (all must hold).

Actions:

* ``+app`` / ``-app``: set the frame's ``in_app`` to true / false;
* ``+group`` / ``-group``: set the private frame key ``"_group"`` to true / false (a frame with
  ``"_group": False`` does not contribute to grouping; ``+group`` does not re-enable a frame
  that grouping itself ignores);
* either prefixed with ``^`` (the frames above, towards the crash: later in the list) or ``v``
  (the frames below: earlier in the list), which then applies to those frames, not the match;
* ``category=NAME``: set the private frame key ``"_category"`` (read by later rules'
  ``category:`` matchers, never hashed); NAME is letters, digits, ``_``, ``.``, ``-``;
* ``max-frames=N``: every frame but the N last (closest to the crash) gets ``"_group": False``
  (Crashray's reading; Sentry counts only frames that still contribute).

Order. Rules run top to bottom; each rule is matched against every frame of a stack trace as it
stands after the earlier rules, and its actions are applied after all its matches are known.

* ``StacktraceRules.apply(event)`` (grouping v1): one pass, each rule applying all its actions.
* ``apply_in_sentry_order(event, rules...)`` (grouping v2, Sentry's enhancer): first every
  rule's ``in_app``/``category`` actions ("classifier" rules, every rule set in turn), then
  every rule's ``group``/``max-frames`` actions ("contributes" rules). So ``-group`` rules see
  the final categories and ``in_app`` of all rules, e.g. ``category:internals -group`` above a
  later ``[ category:std ] | category:std category=internals``.

Both return a new event (copied only where changed; the input is never mutated). Rules whose
literals cannot occur in a stack trace are skipped without looking at its frames (the gate index
below); this never changes a result.

Not supported (refused when parsing): the ``min-frames=`` and ``invert-stacktrace=`` actions and
exception matchers (``error.type`` ...), whose Sentry semantics are not pinned down here.

Exception tree::

    ValueError
     └── RuleSyntaxError
          └── StacktraceRuleError   "line N, column M: <what was wrong>; <what is expected>"
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Final, TypeGuard

from events.grouping.fingerprint_rules import (
    FOLD_ASCII,
    FOLD_NONE,
    FRAME_CATEGORY_KEY,
    FingerprintRuleError,
    Matcher,
    RuleSyntaxError,
    WildcardBudget,
    _LineParser,
    frame_family,
    glob_literals,
    limited_rule_lines,
    may_contain,
    rule_lines,
)
from events.grouping.shape import as_str

__all__ = [
    "CATEGORY_KEY",
    "GROUP_KEY",
    "FrameAction",
    "StacktraceRule",
    "StacktraceRuleError",
    "StacktraceRules",
    "apply_in_sentry_order",
    "parse_stacktrace_rules",
]

#: Private frame key written by ``+group``/``-group``/``max-frames``; read by grouping.
GROUP_KEY: Final = "_group"
#: Private frame key written by ``category=``; read by ``category:`` matchers only.
CATEGORY_KEY: Final = FRAME_CATEGORY_KEY
IN_APP_KEY: Final = "in_app"
MAX_FRAMES_KEY: Final = "max-frames"
#: Sentry's "classifier" actions (the enhancer's modifier rules); the rest "contribute".
_CLASSIFIER_KEYS: Final = frozenset({IN_APP_KEY, CATEGORY_KEY})

# Matcher name → key of ``fingerprint_rules._KINDS``.
_FRAME_MATCHERS: Final = {
    "family": "family", "stack.abs_path": "path", "path": "path",
    "stack.module": "module", "module": "module", "stack.function": "function",
    "function": "function", "stack.package": "package", "package": "package",
    "stack.filename": "filename", "app": "app", "category": "category",
}
_KNOWN_MATCHERS: Final = ", ".join(_FRAME_MATCHERS)
_FLAG_ACTION: Final = re.compile(r"([\^v]?)([+-])([A-Za-z_-]*)")
_VAR_ACTION: Final = re.compile(r"([A-Za-z_-]+)=(.*)")
_CATEGORY_NAME: Final = re.compile(r"[A-Za-z0-9_.-]+")  # Sentry's grammar ``ident``
_UNSUPPORTED_VARS: Final = frozenset({"min-frames", "invert-stacktrace"})
_ACTION_HINT: Final = ("+app, -app, +group, -group (optionally prefixed by ^ or v), "
                       "category=NAME or max-frames=N")
_CONTEXT_HINT: Final = ("a caller context [ matcher:value ] | comes first and a callee "
                        "context | [ matcher:value ] after the frame matchers")


class StacktraceRuleError(RuleSyntaxError):
    """A stack-trace rule that does not parse."""


@dataclass(frozen=True)
class FrameAction:
    """``+app``/``-app`` (``key="in_app"``), ``+group``/``-group`` (``key="_group"``) with a
    range ``""`` (the matched frame), ``"^"`` (frames after it) or ``"v"`` (frames before it);
    ``category=NAME`` (``key="_category"``, ``value=NAME``); or ``max-frames=N``
    (``key="max-frames"``, ``max_frames=N``)."""

    key: str
    value: bool | str = False
    range: str = ""
    max_frames: int | None = None

    @property
    def classifies(self) -> bool:
        """An ``in_app`` or ``category`` action (Sentry's classifier phase)."""
        return self.key in _CLASSIFIER_KEYS


@dataclass(frozen=True)
class StacktraceRule:
    """``matchers`` hold for the frame itself, ``caller`` for the frame before it and
    ``callee`` for the frame after it (empty: no condition)."""

    matchers: tuple[Matcher, ...]
    actions: tuple[FrameAction, ...]
    text: str
    line: int
    caller: tuple[Matcher, ...] = ()
    callee: tuple[Matcher, ...] = ()

    def matches_at(self, frames: Sequence[Any], platforms: Sequence[str], index: int) -> bool:
        """Whether the rule matches ``frames[index]`` (in the context of its neighbours)."""
        if not _frame_matches(self.matchers, frames[index], platforms[index]):
            return False
        if self.caller and (index == 0 or not _frame_matches(
                self.caller, frames[index - 1], platforms[index - 1])):
            return False
        return not self.callee or (index + 1 < len(frames) and _frame_matches(
            self.callee, frames[index + 1], platforms[index + 1]))

    def with_actions(self, keep_classifiers: bool) -> StacktraceRule | None:
        """The rule with only its classifier (or only its other) actions; None if none."""
        actions = tuple(a for a in self.actions if a.classifies == keep_classifiers)
        return replace(self, actions=actions) if actions else None


def _frame_matches(matchers: tuple[Matcher, ...], frame: Any, platform: str) -> bool:
    if not _is_mapping(frame):
        return False
    return all(matcher.matches_frame(frame, platform) for matcher in matchers)


@dataclass(frozen=True)
class StacktraceRules:
    rules: tuple[StacktraceRule, ...] = ()

    def apply(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """``event`` with the rules applied to every stack trace (exceptions, top level,
        threads), each rule applying all its actions in turn (v1); the same object when
        nothing changed. Never mutates ``event``."""
        if not self.rules:
            return event
        return _apply_passes(event, (self._single_pass,))

    @cached_property
    def _single_pass(self) -> _Pass:
        return _Pass.compile(self.rules)

    @cached_property
    def classifier_pass(self) -> _Pass:
        """The rules with only their ``in_app``/``category`` actions."""
        return _Pass.compile(_restricted(self.rules, keep_classifiers=True))

    @cached_property
    def contributes_pass(self) -> _Pass:
        """The rules with only their ``group``/``max-frames`` actions."""
        return _Pass.compile(_restricted(self.rules, keep_classifiers=False))


def _restricted(rules: Iterable[StacktraceRule], keep_classifiers: bool
                ) -> tuple[StacktraceRule, ...]:
    kept = (rule.with_actions(keep_classifiers) for rule in rules)
    return tuple(rule for rule in kept if rule is not None)


def apply_in_sentry_order(event: Mapping[str, Any], *rule_sets: StacktraceRules | None
                          ) -> Mapping[str, Any]:
    """``event`` with ``rule_sets`` (in order: built-in base first, then the project's) applied
    as Sentry's enhancer does: all classifier actions, then all contributes actions."""
    present = [rules for rules in rule_sets if rules is not None and rules.rules]
    if not present:
        return event
    passes = [rules.classifier_pass for rules in present]
    passes += [rules.contributes_pass for rules in present]
    return _apply_passes(event, [p for p in passes if p.rules])


# --- applying ----------------------------------------------------------------------------


def _apply_passes(event: Mapping[str, Any], passes: Sequence[_Pass]) -> Mapping[str, Any]:
    if not passes or not _is_mapping(event):
        return event
    platform = as_str(event.get("platform")) or "other"
    result: dict[str, Any] | None = None
    for key in ("exception", "threads"):
        container = event.get(key)
        new_container = _apply_interface(container, platform, passes)
        if new_container is not container:
            result = result if result is not None else dict(event)
            result[key] = new_container
    stacktrace = event.get("stacktrace")
    new_stacktrace = _apply_stacktrace(stacktrace, platform, passes)
    if new_stacktrace is not stacktrace:
        result = result if result is not None else dict(event)
        result["stacktrace"] = new_stacktrace
    return result if result is not None else event


def _apply_interface(container: object, platform: str, passes: Sequence[_Pass]) -> object:
    """``{"values": [...]}`` or a bare list of entries with a ``stacktrace`` each."""
    mapping = container if _is_mapping(container) else None
    entries = mapping.get("values") if mapping is not None else container
    if not isinstance(entries, list):
        return container
    new_entries = list(entries)
    changed = False
    for index, entry in enumerate(entries):
        if not _is_mapping(entry):
            continue
        stacktrace = entry.get("stacktrace")
        new_stacktrace = _apply_stacktrace(stacktrace, platform, passes)
        if new_stacktrace is not stacktrace:
            new_entries[index] = {**entry, "stacktrace": new_stacktrace}
            changed = True
    if not changed:
        return container
    return {**mapping, "values": new_entries} if mapping is not None else new_entries


def _apply_stacktrace(stacktrace: object, event_platform: str, passes: Sequence[_Pass]
                      ) -> object:
    if not _is_mapping(stacktrace):
        return stacktrace
    mapping = stacktrace
    if not isinstance(mapping.get("frames"), list) or not mapping["frames"]:
        return stacktrace
    frames = _Frames(list(mapping["frames"]), event_platform)
    for rule_pass in passes:
        rule_pass.run(frames)
    if not frames.copied:
        return stacktrace
    return {**mapping, "frames": frames.frames}


def _is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    return isinstance(value, (dict, Mapping))  # dict first: no ABC check for the usual case


# Which of the values a ``_Frames`` collects each matcher field can read
# (``fingerprint_rules.frame_values``): path-like fields share the abs_path, filename and
# package values, a superset that only makes a gate pass more often, never less.
_TEXT_FIELD: Final = {"path": "path", "filename": "path", "package": "path",
                      "module": "module", "function": "function"}


class _Frames:
    """One stack trace being rewritten: its frames (copied on first change), their platforms,
    and what the gate index asks about them (collected in one walk over the frames; rules
    change only ``in_app`` and the private keys, never what the gates read)."""

    def __init__(self, frames: list[Any], event_platform: str) -> None:
        self.frames = frames
        self.copied: set[int] = set()
        self.platforms = platforms = [event_platform] * len(frames)
        self.categories: set[str] = set()
        categories = self.categories
        modules: set[str] = set()
        functions: set[str] = set()
        values: list[object] = []  # abs_path, filename, package
        for index, frame in enumerate(frames):
            if not isinstance(frame, (dict, Mapping)):
                continue
            value = frame.get("platform")
            if isinstance(value, str) and value:
                platforms[index] = value
            if isinstance(value := frame.get("module"), str) and value:
                modules.add(value)
            if isinstance(value := frame.get("function"), str) and value:
                functions.add(value)
            values += (frame.get("abs_path"), frame.get("filename"), frame.get("package"))
            if isinstance(value := frame.get(CATEGORY_KEY), str) and value:
                categories.add(value)
        paths = {v for v in values if isinstance(v, str) and v}
        self._values = {"module": modules, "function": functions, "path": paths}
        self._tokens: dict[str, set[str]] = {}
        self._texts: dict[tuple[str, str], str | None] = {}
        self._contains: dict[tuple[str, str, str], bool] = {}

    def assign(self, index: int, key: str, value: bool | str) -> None:
        frame = self.frames[index]
        if not _is_mapping(frame):
            return
        current = frame.get(key)
        # ``is`` for flags: an ``in_app`` of 1 is not True for grouping and gets rewritten.
        if current is value or (isinstance(value, str) and current == value):
            return
        if index not in self.copied:
            self.frames[index] = dict(frame)
            self.copied.add(index)
        self.frames[index][key] = value
        if key == CATEGORY_KEY and isinstance(value, str):
            self.categories.add(value)

    def tokens(self, kind: str) -> set[str]:
        """The stack's token values of ``kind`` (see ``_index_token``)."""
        found = self._tokens.get(kind)
        if found is None:
            found = self._tokens[kind] = self._compute_tokens(kind)
        return found

    def _compute_tokens(self, kind: str) -> set[str]:
        if kind == _FAMILY:
            return {frame_family(p) for p in set(self.platforms)}
        field, fold = kind.split("/")
        if field == "path":  # path segments
            text = self.text(field, fold)
            return set(text.split("/")) if text is not None else set()
        values = self._values[field]
        if field == "module":
            values = {_first_segment(v) for v in values}
        return {v.lower() for v in values} if fold == FOLD_ASCII else values

    def text(self, field: str, fold: str) -> str | None:
        """Every value a ``field`` matcher can read, each after a ``"/"`` (covering Sentry's
        leading-slash retry); lower-cased for a folding matcher; ``None`` when a substring
        test would not be exact (``may_contain``)."""
        key = (field, fold)
        if key in self._texts:
            return self._texts[key]
        values = self._values[field]
        found: str | None = "/" + "/".join(values) if values else ""
        if found and field == "path":
            found = found.replace("\\", "/")  # as ``_normalized_path`` does to each value
        if fold != FOLD_NONE and found:
            found = found.lower() if fold == FOLD_ASCII or found.isascii() else None
        self._texts[key] = found
        return found

    def contains(self, field: str, fold: str, required: str) -> bool:
        """Whether some ``field`` value may contain ``required`` (memoised across passes)."""
        key = (field, fold, required)
        found = self._contains.get(key)
        if found is None:
            text = self.text(field, fold)
            found = self._contains[key] = text is None or required in text
        return found


# --- the gate index ----------------------------------------------------------------------
#
# A rule can only match in a stack trace that holds the literals its positive matchers
# require (a matcher on the caller or callee looks at a frame of the same stack trace). Each
# rule is indexed under tokens, one of which every matching stack trace carries: the first
# segment of a module prefix ("org" for ``module:org.springframework.*``), an exact function
# name, a full path segment ("site-packages" for ``path:**/site-packages/**``), else its frame
# families; a rule with none of these is always a candidate. A candidate must then contain
# one required substring (when the token did not already come from that matcher) and, when
# its turn comes, its ``category:`` literals (earlier rules of the pass may set categories).
# The index only skips rules that cannot match; it never changes a result.

_FAMILY: Final = "family"
_INDEXED_FIELDS: Final = ("module", "function", "path", "package", "filename")


def _first_segment(value: str) -> str:
    return value.split(".", 1)[0].split("/", 1)[0]


def _full_segments(raw: str) -> list[str]:
    """Path segments every value matched by the path glob ``raw`` has (non-empty ones)."""
    literals = glob_literals(raw)
    pieces = literals.longest.split("/")
    found = pieces if literals.exact else pieces[1:-1]  # bounded by "/" on both sides
    prefix = literals.prefix.split("/")
    if len(prefix) > 1:  # the prefix's first piece runs from the value's start to a "/"
        found = [*found, prefix[0], *prefix[1:-1]]
    suffix = literals.suffix.split("/")
    if len(suffix) > 1:  # the suffix's last piece runs from a "/" to the value's end
        found = [*found, *suffix[1:-1], suffix[-1]]
    return [piece for piece in found if piece]


def _index_token(matcher: Matcher) -> tuple[str, str] | None:
    """A ``(kind, value)`` token that every stack trace this positive matcher matches in
    carries; kinds are ``field/fold``."""
    if matcher.glob is None or matcher.key not in _INDEXED_FIELDS:
        return None
    if matcher.fold not in (FOLD_NONE, FOLD_ASCII):
        return None  # Unicode case folding has no exact lower-case token
    literals = glob_literals(matcher.value)
    if matcher.key == "function":
        candidates = [literals.prefix] if literals.exact else []
    elif matcher.key == "module":
        # The value's first segment is the prefix's only when the prefix reaches a separator.
        reaches = literals.exact or any(s in literals.prefix for s in "./")
        candidates = [_first_segment(literals.prefix)] if reaches else []
    else:
        candidates = _full_segments(matcher.value)
    folded = matcher.fold == FOLD_ASCII
    usable = [c for c in candidates if c and (c.isascii() or not folded)]
    if not usable:
        return None
    token = max(usable, key=len)
    return f"{_TEXT_FIELD[matcher.key]}/{matcher.fold}", token.lower() if folded else token


@dataclass(frozen=True)
class _Gate:
    tokens: tuple[tuple[str, str], ...] = ()  # candidate if the stack has any of them
    substring: tuple[str, str, str] | None = None  # (field, fold, required literal)
    # (required literal, fold) of each positive ``category:`` matcher
    categories: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, rule: StacktraceRule) -> _Gate:
        positive = [m for m in (*rule.matchers, *rule.caller, *rule.callee) if not m.negated]
        categories = tuple((m.required, m.fold) for m in positive
                           if m.key == "category" and m.required)
        indexed = next(((m, t) for m in positive if (t := _index_token(m)) is not None), None)
        substring = next(((_TEXT_FIELD[m.key], m.fold, m.required) for m in positive
                          if m.required and m.key in _INDEXED_FIELDS
                          and (indexed is None or m is not indexed[0])), None)
        if indexed is not None:
            return cls((indexed[1],), substring, categories)
        families = next((m.families for m in positive
                         if m.key == "family" and "all" not in m.families), frozenset())
        return cls(tuple((_FAMILY, f) for f in sorted(families)), substring, categories)

    def categories_present(self, categories: set[str]) -> bool:
        return all(any(may_contain(required, fold, c) for c in categories)
                   for required, fold in self.categories)


@dataclass(frozen=True)
class _Pass:
    """Rules run in order over a stack trace, with their gates indexed."""

    rules: tuple[StacktraceRule, ...]
    gates: tuple[_Gate, ...]
    by_token: Mapping[str, Mapping[str, tuple[int, ...]]]  # kind → token value → rules
    ungated: frozenset[int]  # no token: always candidates (unless category-gated)
    ungated_by_category: frozenset[int]  # ... of which needing a category to be present
    category_gated: frozenset[int]  # every rule that needs a category to be present
    # rules with a ``category=`` action that need no category themselves
    free_category_setters: frozenset[int]

    @classmethod
    def compile(cls, rules: tuple[StacktraceRule, ...]) -> _Pass:
        gates = tuple(_Gate.of(rule) for rule in rules)
        by_token: dict[str, dict[str, list[int]]] = {}
        for index, gate in enumerate(gates):
            for kind, token in gate.tokens:
                by_token.setdefault(kind, {}).setdefault(token, []).append(index)
        category_gated = frozenset(i for i, gate in enumerate(gates) if gate.categories)
        ungated = frozenset(i for i, gate in enumerate(gates) if not gate.tokens)
        return cls(
            rules, gates,
            {kind: {t: tuple(i) for t, i in tokens.items()} for kind, tokens in by_token.items()},
            ungated - category_gated, ungated & category_gated, category_gated,
            frozenset(i for i, (rule, gate) in enumerate(zip(rules, gates, strict=True))
                      if not gate.categories
                      and any(a.key == CATEGORY_KEY for a in rule.actions)))

    def _candidates(self, frames: _Frames) -> list[int]:
        found = set(self.ungated)
        for kind, rules_by_token in self.by_token.items():
            for token in rules_by_token.keys() & frames.tokens(kind):
                found.update(rules_by_token[token])
        if frames.categories or not self.free_category_setters.isdisjoint(found):
            found |= self.ungated_by_category
        else:
            found -= self.category_gated  # no category now, and no candidate can set one
        gates = self.gates
        return sorted(i for i in found
                      if (sub := gates[i].substring) is None or frames.contains(*sub))

    def run(self, frames: _Frames) -> None:
        count = len(frames.frames)
        for rule_index in self._candidates(frames):
            gate = self.gates[rule_index]
            if gate.categories and not (
                    frames.categories and gate.categories_present(frames.categories)):
                continue
            rule = self.rules[rule_index]
            matched = [i for i in range(count)
                       if rule.matches_at(frames.frames, frames.platforms, i)]
            if matched:
                _apply_actions(rule, matched, frames)


def _apply_actions(rule: StacktraceRule, matched: list[int], frames: _Frames) -> None:
    count = len(frames.frames)
    for index in matched:
        for action in rule.actions:
            for target in _targets(action, index, count):
                frames.assign(target, action.key, action.value)
    for action in rule.actions:
        if action.max_frames is not None:
            for target in range(max(count - action.max_frames, 0)):
                frames.assign(target, GROUP_KEY, False)


def _targets(action: FrameAction, index: int, count: int) -> range:
    if action.max_frames is not None:
        return range(0)
    if action.range == "^":
        return range(index + 1, count)
    if action.range == "v":
        return range(index)
    return range(index, index + 1)


# --- parser ------------------------------------------------------------------------------


class _RuleParser(_LineParser):
    """Reuses the fingerprint-rule matcher parser (globs, quoting, family/app values)."""

    def fail(self, problem: str, pos: int | None = None) -> StacktraceRuleError:
        return StacktraceRuleError(self.line, (self.pos if pos is None else pos) + 1, problem)

    def parse_stacktrace_rule(self) -> StacktraceRule:
        self.skip_whitespace()
        caller = self.parse_caller() if self.peek() == "[" else ()
        matchers: list[Matcher] = []
        actions: list[FrameAction] = []
        callee: tuple[Matcher, ...] = ()
        while True:
            self.skip_whitespace()
            if self.at_end():
                break
            start = self.pos
            if self.peek() == "[":
                raise self.fail(f'unexpected "["; {_CONTEXT_HINT}')
            if self.peek() == "|":
                self.check_callee_allowed(matchers, actions, callee)
                callee = self.parse_callee()
                continue
            word = self.read_word()
            self.pos = start
            if self.looks_like_matcher(word):
                if actions:
                    raise self.fail(f"matcher {word!r} after an action; expected all matchers "
                                    f"before the actions ({_ACTION_HINT})")
                if callee:
                    raise self.fail(f"matcher {word!r} after the callee context; expected the "
                                    f"actions ({_ACTION_HINT})")
                matchers.append(self.parse_frame_matcher())
            else:
                actions.append(self.parse_action())
        if not matchers:
            raise self.fail("rule has no matchers for the frame itself; expected matcher:value, "
                            "e.g. module:vendor.* -app")
        if not actions:
            raise self.fail(f"rule has no action; expected one of {_ACTION_HINT}")
        return StacktraceRule(tuple(matchers), tuple(actions), self.text.strip(), self.line,
                              caller=caller, callee=callee)

    @staticmethod
    def looks_like_matcher(word: str) -> bool:
        return ":" in word and not _FLAG_ACTION.fullmatch(word)

    def check_callee_allowed(self, matchers: list[Matcher], actions: list[FrameAction],
                             callee: tuple[Matcher, ...]) -> None:
        if actions:
            raise self.fail(f'callee context "| [ ... ]" after an action; {_CONTEXT_HINT}')
        if callee:
            raise self.fail('a second callee context "| [ ... ]"; expected the actions')
        if not matchers:
            raise self.fail(f'"|" before any frame matcher; {_CONTEXT_HINT}')

    def parse_caller(self) -> tuple[Matcher, ...]:
        """``[ matchers ] |`` at the start of the rule."""
        caller = self.parse_bracketed("caller")
        self.skip_whitespace()
        if self.peek() != "|":
            raise self.fail('expected "|" after the caller context "[ ... ]", then the frame '
                            "matchers")
        self.pos += 1
        return caller

    def parse_callee(self) -> tuple[Matcher, ...]:
        """``| [ matchers ]`` after the frame matchers."""
        self.pos += 1
        self.skip_whitespace()
        if self.peek() != "[":
            raise self.fail('expected "[" after "|": a callee context is | [ matcher:value ]')
        return self.parse_bracketed("callee")

    def parse_bracketed(self, which: str) -> tuple[Matcher, ...]:
        opening = self.pos
        self.pos += 1
        matchers: list[Matcher] = []
        while True:
            self.skip_whitespace()
            if self.at_end() or self.peek() == "|":
                seen = "the end of the rule" if self.at_end() else '"|"'
                hint = (' (put a space between a value and "]")'
                        if matchers and matchers[-1].value.endswith("]") else "")
                raise self.fail(f'{which} context "[" at column {opening + 1} is not closed: '
                                f'found {seen}; expected "]"{hint}')
            if self.peek() == "]":
                self.pos += 1
                break
            start = self.pos
            word = self.read_word()
            self.pos = start
            if not self.looks_like_matcher(word):
                raise self.fail(f"unexpected {word!r} in the {which} context; expected "
                                'matcher:value or "]"')
            matchers.append(self.parse_frame_matcher())
        if not matchers:
            raise self.fail(f"empty {which} context; expected [ matcher:value ]", opening)
        return tuple(matchers)

    def matcher_key(self, name: str, pos: int) -> tuple[str, str | None]:
        key = _FRAME_MATCHERS.get(name)
        if key is None:
            raise self.fail(f'unknown matcher "{name}" for a stack trace rule; expected one of '
                            f"{_KNOWN_MATCHERS}", pos)
        return key, None

    def parse_frame_matcher(self) -> Matcher:
        try:
            return self.parse_matcher()
        except FingerprintRuleError as error:
            raise StacktraceRuleError(error.line, error.column, error.problem) from None

    def parse_action(self) -> FrameAction:
        start = self.pos
        word = self.read_word()
        flag = _FLAG_ACTION.fullmatch(word)
        if flag is not None:
            prefix, sign, name = flag.groups()
            key = {"app": IN_APP_KEY, "group": GROUP_KEY}.get(name)
            if key is None:
                raise self.fail(f"unknown action {word!r}; expected {_ACTION_HINT}", start)
            return FrameAction(key=key, value=sign == "+", range=prefix)
        var = _VAR_ACTION.fullmatch(word)
        if var is None:
            raise self.fail(f"unexpected {word!r}; expected matcher:value or an action "
                            f"({_ACTION_HINT})", start)
        name, value = var.groups()
        value_start = start + len(name) + 1
        if name in _UNSUPPORTED_VARS:
            raise self.fail(f'action "{name}=" is not supported; expected {_ACTION_HINT}', start)
        if name == "category":
            if not _CATEGORY_NAME.fullmatch(value):
                raise self.fail(f"category name {value!r} is not allowed; expected "
                                "category=NAME with letters, digits, _, . or -", value_start)
            return FrameAction(key=CATEGORY_KEY, value=value)
        if name != "max-frames":
            raise self.fail(f"unknown action {word!r}; expected {_ACTION_HINT}", start)
        if not value.isdigit() or not value.isascii():
            raise self.fail(f"max-frames value {value!r} is not a number; expected "
                            "max-frames=N with N a non-negative integer", value_start)
        return FrameAction(key=MAX_FRAMES_KEY, max_frames=int(value))


def parse_stacktrace_rules(text: str, *, builtin: bool = False) -> StacktraceRules:
    """Parse a project's stack-trace rules text; raises ``StacktraceRuleError``, also for
    rules over the limits of ``events.grouping.fingerprint_rules`` (``MAX_RULES`` ...).

    ``builtin``: Sentry's built-in base rules, matched with Sentry's readings (case-insensitive
    globs, Sentry's path reading; see ``events.grouping.fingerprint_rules``)."""
    rules: list[StacktraceRule] = []
    lines = rule_lines(text) if builtin else limited_rule_lines(text, StacktraceRuleError)
    budget = WildcardBudget(StacktraceRuleError)
    for number, line, start in lines:
        parser = _RuleParser(line, number)
        parser.enhancer_readings = builtin
        parser.limited = not builtin
        parser.pos = start
        rules.append(parser.parse_stacktrace_rule())
        if parser.limited:
            budget.spend(parser.wildcards, number, start)
    return StacktraceRules(tuple(rules))
