"""Stack-trace rules, the project setting Sentry calls "Stack Trace Rules" (spec §6.8).

One rule per line; blank lines and lines starting with ``#`` are ignored::

    matcher:value [!matcher:value ...] action [action ...]

Matchers (all must hold for the same frame): ``family``, ``stack.abs_path``/``path``,
``stack.module``/``module``, ``stack.function``/``function``, ``stack.package``/``package``,
``app``; globs and values as in fingerprint rules (§6.7). Actions:

* ``+app`` / ``-app``: set the frame's ``in_app`` to true / false;
* ``+group`` / ``-group``: set the private frame key ``"_group"`` to true / false (a frame with
  ``"_group": False`` does not contribute to grouping);
* either prefixed with ``^`` (the frames above, towards the crash: later in the list) or ``v``
  (the frames below: earlier in the list), which then applies to those frames, not the match;
* ``max-frames=N``: every frame but the N last (closest to the crash) gets ``"_group": False``.

Rules run top to bottom; each rule is matched against every frame of a stack trace as it stands
after the earlier rules, and its actions are applied after all its matches are known.
``parse_stacktrace_rules(text)`` returns ``StacktraceRules``; ``StacktraceRules.apply(event)``
returns a new event (copied only where changed; the input is never mutated).

Not supported (refused when parsing): caller/callee context (``[ ... ] |``, ``| [ ... ]``), the
``category`` matcher and the ``category=``, ``min-frames=`` and ``invert-stacktrace=`` actions.

Exception tree::

    ValueError
     └── StacktraceRuleError   "line N, column M: <what was wrong>; <what is expected>"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from events.grouping.fingerprint_rules import (
    FingerprintRuleError,
    Matcher,
    RuleSyntaxError,
    _LineParser,
    rule_lines,
)
from events.grouping.shape import as_mapping, as_str

__all__ = [
    "GROUP_KEY",
    "FrameAction",
    "StacktraceRule",
    "StacktraceRuleError",
    "StacktraceRules",
    "parse_stacktrace_rules",
]

#: Private frame key written by ``+group``/``-group``/``max-frames``; read by grouping.
GROUP_KEY: Final = "_group"

_FRAME_MATCHERS: Final = (
    "family", "stack.abs_path", "path", "stack.module", "module", "stack.function", "function",
    "stack.package", "package", "app",
)
_UNSUPPORTED_MATCHERS: Final = frozenset({"category", "stack.category"})
_FLAG_ACTION: Final = re.compile(r"([\^v]?)([+-])([A-Za-z_-]*)")
_VAR_ACTION: Final = re.compile(r"([A-Za-z_-]+)=(.*)")
_UNSUPPORTED_VARS: Final = frozenset({"min-frames", "invert-stacktrace", "category"})
_ACTION_HINT: Final = "+app, -app, +group, -group (optionally prefixed by ^ or v) or max-frames=N"


class StacktraceRuleError(RuleSyntaxError):
    """A stack-trace rule that does not parse."""


@dataclass(frozen=True)
class FrameAction:
    """``+app``/``-app`` (``key="in_app"``), ``+group``/``-group`` (``key="_group"``) with a
    range ``""`` (the matched frame), ``"^"`` (frames after it) or ``"v"`` (frames before it);
    or ``max-frames=N`` (``key="max-frames"``, ``max_frames=N``)."""

    key: str
    value: bool = False
    range: str = ""
    max_frames: int | None = None


@dataclass(frozen=True)
class StacktraceRule:
    matchers: tuple[Matcher, ...]
    actions: tuple[FrameAction, ...]
    text: str
    line: int

    def matches(self, frame: Mapping[str, Any], platform: str) -> bool:
        return all(m.matches_frame(frame, platform) for m in self.matchers)


@dataclass(frozen=True)
class StacktraceRules:
    rules: tuple[StacktraceRule, ...] = ()

    def apply(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        """``event`` with the rules applied to every stack trace (exceptions, top level,
        threads); the same object when nothing changed. Never mutates ``event``."""
        if not self.rules or not isinstance(event, Mapping):
            return event
        platform = as_str(event.get("platform")) or "other"
        result: dict[str, Any] | None = None
        for key in ("exception", "threads"):
            container = event.get(key)
            new_container = self._apply_interface(container, platform)
            if new_container is not container:
                result = result if result is not None else dict(event)
                result[key] = new_container
        stacktrace = event.get("stacktrace")
        new_stacktrace = self._apply_stacktrace(stacktrace, platform)
        if new_stacktrace is not stacktrace:
            result = result if result is not None else dict(event)
            result["stacktrace"] = new_stacktrace
        return result if result is not None else event

    def _apply_interface(self, container: object, platform: str) -> object:
        """``{"values": [...]}`` or a bare list of entries with a ``stacktrace`` each."""
        mapping = as_mapping(container)
        entries = mapping.get("values") if mapping is not None else container
        if not isinstance(entries, list):
            return container
        new_entries = list(entries)
        changed = False
        for index, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                continue
            stacktrace = entry.get("stacktrace")
            new_stacktrace = self._apply_stacktrace(stacktrace, platform)
            if new_stacktrace is not stacktrace:
                new_entries[index] = {**entry, "stacktrace": new_stacktrace}
                changed = True
        if not changed:
            return container
        return {**mapping, "values": new_entries} if mapping is not None else new_entries

    def _apply_stacktrace(self, stacktrace: object, event_platform: str) -> object:
        mapping = as_mapping(stacktrace)
        if mapping is None or not isinstance(mapping.get("frames"), list):
            return stacktrace
        frames: list[Any] = list(mapping["frames"])
        copied: set[int] = set()
        for rule in self.rules:
            matched = [
                i for i, frame in enumerate(frames)
                if isinstance(frame, Mapping) and rule.matches(
                    frame, as_str(frame.get("platform")) or event_platform)
            ]
            for index in matched:
                for action in rule.actions:
                    for target in _targets(action, index, len(frames)):
                        _set(frames, copied, target, action.key, action.value)
            if not matched:
                continue
            for action in rule.actions:
                if action.max_frames is not None:
                    for target in range(max(len(frames) - action.max_frames, 0)):
                        _set(frames, copied, target, GROUP_KEY, False)
        if not copied:
            return stacktrace
        return {**mapping, "frames": frames}


def _targets(action: FrameAction, index: int, count: int) -> range:
    if action.max_frames is not None:
        return range(0)
    if action.range == "^":
        return range(index + 1, count)
    if action.range == "v":
        return range(index)
    return range(index, index + 1)


def _set(frames: list[Any], copied: set[int], index: int, key: str, value: bool) -> None:
    frame = frames[index]
    if not isinstance(frame, Mapping) or frame.get(key) is value:
        return
    if index not in copied:
        frame = dict(frame)
        frames[index] = frame
        copied.add(index)
    frame[key] = value


# --- parser ------------------------------------------------------------------------------


class _RuleParser(_LineParser):
    """Reuses the fingerprint-rule matcher parser (globs, quoting, family/app values)."""

    def fail(self, problem: str, pos: int | None = None) -> StacktraceRuleError:
        return StacktraceRuleError(self.line, (self.pos if pos is None else pos) + 1, problem)

    def parse_stacktrace_rule(self) -> StacktraceRule:
        matchers: list[Matcher] = []
        actions: list[FrameAction] = []
        while True:
            self.skip_whitespace()
            if self.at_end():
                break
            start = self.pos
            if self.peek() in "[|":
                raise self.fail("caller/callee context ([ ... ] | and | [ ... ]) is not "
                                "supported; expected matcher:value or an action")
            word = self.read_word()
            self.pos = start
            if ":" in word and not _FLAG_ACTION.fullmatch(word):
                if actions:
                    raise self.fail(f"matcher {word!r} after an action; expected all matchers "
                                    f"before the actions ({_ACTION_HINT})")
                matchers.append(self.parse_frame_matcher())
            else:
                actions.append(self.parse_action())
        if not matchers:
            raise self.fail("rule has no matchers; expected matcher:value, e.g. "
                            "module:vendor.* -app")
        if not actions:
            raise self.fail(f"rule has no action; expected one of {_ACTION_HINT}")
        return StacktraceRule(tuple(matchers), tuple(actions), self.text.strip(), self.line)

    def parse_frame_matcher(self) -> Matcher:
        start = self.pos
        name_start = start + 1 if self.peek() == "!" else start
        name = self.text[name_start:self.text.index(":", name_start)]
        if name in _UNSUPPORTED_MATCHERS:
            raise self.fail(f'matcher "{name}" is not supported; expected one of '
                            f"{', '.join(_FRAME_MATCHERS)}", name_start)
        if name not in _FRAME_MATCHERS:
            raise self.fail(f'unknown matcher "{name}" for a stack trace rule; expected one of '
                            f"{', '.join(_FRAME_MATCHERS)}", name_start)
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
            key = {"app": "in_app", "group": GROUP_KEY}.get(name)
            if key is None:
                raise self.fail(f"unknown action {word!r}; expected {_ACTION_HINT}", start)
            return FrameAction(key=key, value=sign == "+", range=prefix)
        var = _VAR_ACTION.fullmatch(word)
        if var is None:
            raise self.fail(f"unexpected {word!r}; expected matcher:value or an action "
                            f"({_ACTION_HINT})", start)
        name, value = var.groups()
        if name in _UNSUPPORTED_VARS:
            raise self.fail(f'action "{name}=" is not supported; expected {_ACTION_HINT}', start)
        if name != "max-frames":
            raise self.fail(f"unknown action {word!r}; expected {_ACTION_HINT}", start)
        if not value.isdigit() or not value.isascii():
            raise self.fail(f"max-frames value {value!r} is not a number; expected "
                            "max-frames=N with N a non-negative integer", start + len(name) + 1)
        return FrameAction(key="max-frames", max_frames=int(value))


def parse_stacktrace_rules(text: str) -> StacktraceRules:
    """Parse a project's stack-trace rules text; raises ``StacktraceRuleError``."""
    rules: list[StacktraceRule] = []
    for number, line, start in rule_lines(text):
        parser = _RuleParser(line, number)
        parser.pos = start
        rules.append(parser.parse_stacktrace_rule())
    return StacktraceRules(tuple(rules))
