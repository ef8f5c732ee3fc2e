"""Server-side fingerprint rules, the project setting Sentry calls "Fingerprint Rules" (spec §6.7).

One rule per line; blank lines and lines starting with ``#`` are ignored::

    matcher:value [!matcher:value ...] -> fp-part[, fp-part ...] [title="..."]

``parse_fingerprint_rules(text)`` turns the project text into ``FingerprintRules``;
``FingerprintRules.match(event)`` returns the first rule whose matchers all match the
Relay-normalised event as a ``MatchedRule`` (fingerprint parts kept literally, ``{{ type }}``
and friends are resolved later by the grouping config, like an SDK fingerprint).

Event matchers look at the event; frame matchers (``path``, ``module``, ``function``,
``package``, ``family``, ``app``) must all hold for one and the same frame, taken from every
exception's stack trace, the top-level stack trace and every thread.

Built-in rules (``parse_fingerprint_rules(text, builtin=True)``, Sentry's fingerprinting bases
such as ``javascript@2024-02-02``) are marked ``builtin`` and read ``family`` as Sentry's
fingerprinting does: the family of the *event's* platform (``EventDatastore._get_family``), not
of a frame. Project rules keep the frame reading Crashray shipped with v1, so their hashes do
not move.

The stack-trace rule language (``events.grouping.stacktrace_rules``) reuses this module's
matchers and adds two frame keys to them: ``category`` (the private frame key ``"_category"``)
and ``filename`` (``stack.filename``). Its built-in rules use the readings of Sentry's enhancer
(``enhancer_readings``): every glob folds ASCII case (ophio ``translate_pattern``), ``path`` is
``abs_path`` else ``filename``, ``package`` the package alone, and a relative path is also
tried with a leading ``/`` (``PathLikeMatch``).

Globs are compiled and matched by ``events.grouping.glob`` (without backtracking). A project's
rule text, in either language, is held to ``MAX_RULES``, ``MAX_RULE_CHARS``,
``MAX_RULES_BYTES`` and ``MAX_GLOB_WILDCARDS`` when it is parsed (``limited_rule_lines``);
built-in rules are not.

Exception tree::

    ValueError
     └── FingerprintRuleError   "line N, column M: <what was wrong>; <what is expected>"
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

from events.errors import BadRequest
from events.grouping.glob import Glob, GlobError, compile_glob
from events.grouping.shape import as_str, basename, get_path, interface_values, mappings, tag_value

__all__ = [
    "FRAME_CATEGORY_KEY",
    "MAX_GLOB_WILDCARDS",
    "MAX_RULES",
    "MAX_RULES_BYTES",
    "MAX_RULE_CHARS",
    "MAX_TOTAL_WILDCARDS",
    "FingerprintRule",
    "FingerprintRuleError",
    "FingerprintRules",
    "GlobLiterals",
    "MatchedRule",
    "Matcher",
    "RuleSyntaxError",
    "WildcardBudget",
    "glob_literals",
    "limited_rule_lines",
    "may_contain",
    "parse_fingerprint_rules",
    "resolve_title",
    "rule_lines",
]


class RuleSyntaxError(BadRequest):
    """A rule text (either of Sentry's rule languages) that does not parse; ``line`` and
    ``column`` are 1-based."""

    def __init__(self, line: int, column: int, problem: str) -> None:
        super().__init__(f"line {line}, column {column}: {problem}")
        self.line = line
        self.column = column
        self.problem = problem


class FingerprintRuleError(RuleSyntaxError):
    """A fingerprint rule that does not parse."""


# --- matcher catalogue -------------------------------------------------------------------

EVENT_SCOPE: Final = "event"
FRAME_SCOPE: Final = "frame"


@dataclass(frozen=True)
class _MatcherKind:
    key: str
    scope: str
    case_sensitive: bool = True
    path_glob: bool = False


_KINDS: Final = {
    "type": _MatcherKind("type", EVENT_SCOPE),
    "value": _MatcherKind("value", EVENT_SCOPE, case_sensitive=False),
    "message": _MatcherKind("message", EVENT_SCOPE, case_sensitive=False),
    "logger": _MatcherKind("logger", EVENT_SCOPE),
    "level": _MatcherKind("level", EVENT_SCOPE, case_sensitive=False),
    "tags": _MatcherKind("tags", EVENT_SCOPE),
    # release/sdk: listed as UNVERIFIED in the spec; plain case-sensitive globs here.
    "release": _MatcherKind("release", EVENT_SCOPE),
    "sdk": _MatcherKind("sdk", EVENT_SCOPE),
    "path": _MatcherKind("path", FRAME_SCOPE, case_sensitive=False, path_glob=True),
    "module": _MatcherKind("module", FRAME_SCOPE),
    "function": _MatcherKind("function", FRAME_SCOPE),
    "package": _MatcherKind("package", FRAME_SCOPE, case_sensitive=False, path_glob=True),
    "family": _MatcherKind("family", FRAME_SCOPE),
    "app": _MatcherKind("app", FRAME_SCOPE),
    # Stack-trace rules only (not reachable from a fingerprint rule's matcher names).
    "category": _MatcherKind("category", FRAME_SCOPE, case_sensitive=False),
    "filename": _MatcherKind("filename", FRAME_SCOPE, case_sensitive=False, path_glob=True),
    # Built-in fingerprint rules only: ``family`` of the event's platform (module docstring).
    "event_family": _MatcherKind("event_family", EVENT_SCOPE),
}
_MATCHER_NAMES: Final = {
    "error.type": "type", "type": "type",
    "error.value": "value", "value": "value",
    "message": "message", "logger": "logger", "level": "level",
    "release": "release", "sdk": "sdk",
    "stack.abs_path": "path", "path": "path",
    "stack.module": "module", "module": "module",
    "stack.function": "function", "function": "function",
    "stack.package": "package", "package": "package",
    "family": "family", "app": "app",
}
_KNOWN_MATCHERS: Final = ", ".join([*_MATCHER_NAMES, "tags.NAME"])

FAMILIES: Final = frozenset({"javascript", "native", "other", "all"})
# Platforms of Sentry's "javascript" and "native" behaviour families; everything else is other.
_JAVASCRIPT_PLATFORMS: Final = frozenset({"javascript", "node"})
_NATIVE_PLATFORMS: Final = frozenset({"native", "c", "cocoa", "objc"})
_APP_VALUES: Final = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


def frame_family(platform: str) -> str:
    if platform in _JAVASCRIPT_PLATFORMS:
        return "javascript"
    return "native" if platform in _NATIVE_PLATFORMS else "other"


# --- literal prefilter -------------------------------------------------------------------

#: How ``Matcher.required`` is compared with a value (see ``may_contain``).
FOLD_NONE: Final = "none"  # case-sensitive glob: plain substring test
FOLD_ASCII: Final = "ascii"  # ASCII-only case folding (re.IGNORECASE | re.ASCII)
FOLD_UNICODE: Final = "unicode"  # re.IGNORECASE: exact only for ASCII values

_GLOB_METACHARACTERS: Final = frozenset("*?[{")


@dataclass(frozen=True)
class GlobLiterals:
    """What any value matched by a glob must contain: ``prefix`` (literal text before the first
    wildcard, which a match starts with; the whole glob when ``exact``), ``suffix`` (literal
    text after the last wildcard, which a match ends with; ``""`` after a ``[...]``/``{...}``)
    and ``longest`` (the longest literal run before any ``[...]``/``{...}``; runs after those
    are not collected)."""

    prefix: str
    suffix: str
    longest: str
    exact: bool


def glob_literals(raw: str) -> GlobLiterals:
    """Literal runs of a (valid) glob: every run between wildcards is required in a match."""
    runs: list[str] = []
    current: list[str] = []
    complete = True  # no class or alternatives: the last run is the suffix
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "\\" and i + 1 < len(raw):
            current.append(raw[i + 1])
            i += 2
            continue
        if char in _GLOB_METACHARACTERS:
            runs.append("".join(current))
            current = []
            if char in "[{":
                complete = False
                break  # a class or alternatives: stop collecting (runs after it are optional)
        else:
            current.append(char)
        i += 1
    if complete:
        runs.append("".join(current))
    exact = complete and len(runs) == 1
    return GlobLiterals(prefix=runs[0], suffix=runs[-1] if complete else "",
                        longest=max(runs, key=len), exact=exact)


def _prefilter(raw: str, kind: _MatcherKind, ascii_case: bool) -> tuple[str, str]:
    """(required literal, fold) for ``Matcher``; ``("", ...)`` when nothing can be required."""
    literal = glob_literals(raw).longest
    fold = FOLD_ASCII if ascii_case else FOLD_NONE if kind.case_sensitive else FOLD_UNICODE
    if fold == FOLD_NONE:
        return literal, fold
    # Folded comparisons lower-case both sides; only ASCII literals lower-case context-free
    # (str.lower() maps a final sigma differently) and fold exactly as the regex does.
    return (literal.lower(), fold) if literal.isascii() else ("", fold)


def may_contain(required: str, fold: str, haystack: str) -> bool:
    """False only if no value inside ``haystack`` can contain a match of a glob whose required
    literal is ``required`` (compared as ``fold`` says); used to skip glob work."""
    if not required:
        return True
    if fold == FOLD_NONE:
        return required in haystack
    if fold == FOLD_ASCII or haystack.isascii():
        # Unicode IGNORECASE also equates e.g. "\u017f" with "s": exact for ASCII text only.
        return required in haystack.lower()
    return True


# --- rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matcher:
    """One ``[!]name:value`` term. ``glob`` is set for glob matchers, ``families`` for
    ``family``, ``app`` for ``app``.

    ``required``/``fold``: a literal every matching value contains (``may_contain``), tested
    before the glob; it never changes a result, it only skips glob work.
    ``sentry_paths``: built-in stack-trace rules read paths as Sentry's enhancer does (module
    docstring)."""

    name: str
    key: str
    value: str
    negated: bool = False
    tag: str | None = None
    glob: Glob | None = None
    families: frozenset[str] = frozenset()
    app: bool | None = None
    required: str = ""
    fold: str = FOLD_NONE
    sentry_paths: bool = False

    @property
    def is_frame_matcher(self) -> bool:
        return _KINDS[self.key].scope == FRAME_SCOPE

    @property
    def retries_with_slash(self) -> bool:
        """Sentry's ``path_like_match``: a relative path is also tried as ``"/" + path``."""
        return self.sentry_paths and _KINDS[self.key].path_glob

    def _value_matches(self, glob: Glob, value: str) -> bool:
        retry = self.retries_with_slash and not value.startswith("/")
        # With the retry, "/" + value covers both attempts for the prefilter.
        if not may_contain(self.required, self.fold, "/" + value if retry else value):
            return False
        if glob.matches(value):
            return True
        return retry and glob.matches("/" + value)

    def _any_matches(self, values: list[str | None]) -> bool:
        glob = self.glob
        if glob is None:
            return False
        return any(self._value_matches(glob, v) for v in values if v is not None)

    def matches_event(self, event: Mapping[str, Any],
                      values: _EventValues | None = None) -> bool:
        """``values``: the event's values by (key, tag), shared by the rules of one match."""
        if self.key == "event_family":
            cached = values.get(_FAMILY_KEY) if values is not None else None
            family = cached[0] if cached else _event_family(event)
            found = "all" in self.families or family in self.families
            return found != self.negated
        if values is None:  # matching one rule on its own
            return self._any_matches(_event_values(event, self.key, self.tag)) != self.negated
        cache_key = (self.key, self.tag)
        found_values = values.get(cache_key)
        if found_values is None:
            found_values = values[cache_key] = _event_values(event, self.key, self.tag)
        return self._any_matches(found_values) != self.negated

    def matches_frame(self, frame: Mapping[str, Any], platform: str) -> bool:
        if self.key == "family":
            found = "all" in self.families or frame_family(platform) in self.families
        elif self.key == "app":
            found = (frame.get("in_app") is True) == self.app
        else:
            found = self._any_matches(frame_values(frame, self.key, self.sentry_paths))
        return found != self.negated


@dataclass(frozen=True)
class MatchedRule:
    """The winning rule: its fingerprint parts (variables unresolved), title and text;
    ``builtin`` for one of Sentry's built-in rules."""

    fingerprint: tuple[str, ...]
    title: str | None
    text: str
    line: int
    builtin: bool = False


@dataclass(frozen=True)
class FingerprintRule:
    matchers: tuple[Matcher, ...]
    fingerprint: tuple[str, ...]
    title: str | None
    text: str
    line: int
    builtin: bool = False

    @cached_property
    def _event_matchers(self) -> tuple[Matcher, ...]:
        return tuple(m for m in self.matchers if not m.is_frame_matcher)

    @cached_property
    def gate(self) -> tuple[str, str | None, str, str] | None:
        """(key, tag, required literal, fold) of a positive event matcher: the rule cannot
        match an event none of whose values for it may contain the literal."""
        return next(((m.key, m.tag, m.required, m.fold) for m in self._event_matchers
                     if m.required and not m.negated and m.key != "event_family"), None)

    @cached_property
    def _frame_matchers(self) -> tuple[Matcher, ...]:
        return tuple(m for m in self.matchers if m.is_frame_matcher)

    def matches(self, event: Mapping[str, Any],
                frames: Callable[[], list[tuple[Mapping[str, Any], str]]],
                values: _EventValues | None = None) -> bool:
        """``frames`` is called only when a frame matcher needs the frames."""
        if not all(m.matches_event(event, values) for m in self._event_matchers):
            return False
        frame_matchers = self._frame_matchers
        if not frame_matchers:
            return True
        return any(all(m.matches_frame(frame, platform) for m in frame_matchers)
                   for frame, platform in frames())


@dataclass(frozen=True)
class FingerprintRules:
    rules: tuple[FingerprintRule, ...] = ()

    def match(self, event: Mapping[str, Any]) -> MatchedRule | None:
        """First rule whose matchers all match ``event`` (Relay-normalised), else ``None``."""
        if not self.rules or not isinstance(event, Mapping):
            return None
        family = _event_family(event)
        families = self._event_families
        if families is not None and family not in families:
            return None
        cached: list[list[tuple[Mapping[str, Any], str]]] = []

        def frames() -> list[tuple[Mapping[str, Any], str]]:
            if not cached:
                cached.append(list(_all_frames(event)))
            return cached[0]

        values: _EventValues = {_FAMILY_KEY: [family]}
        texts: dict[tuple[str, str | None, str], str | None] = {}
        for rule in self.rules:
            gate = rule.gate
            if gate is not None:
                key, tag, required, fold = gate
                text_key = (key, tag, fold)
                if text_key not in texts:
                    texts[text_key] = _gate_text(event, values, key, tag, fold)
                text = texts[text_key]
                if text is not None and required not in text:
                    continue
            if rule.matches(event, frames, values):
                return MatchedRule(rule.fingerprint, rule.title, rule.text, rule.line,
                                   rule.builtin)
        return None

    @cached_property
    def _event_families(self) -> frozenset[str] | None:
        """The event families some rule can match, when every rule names them with a positive
        event-level ``family`` (built-in rules); else ``None``. Only skips work."""
        families: set[str] = set()
        for rule in self.rules:
            named = [m.families for m in rule.matchers
                     if m.key == "event_family" and not m.negated and "all" not in m.families]
            if not named:
                return None
            families |= frozenset.intersection(*named)
        return frozenset(families)


# --- what the matchers look at -------------------------------------------------------------

_EventValues = dict[tuple[str, str | None], list[str | None]]
_FAMILY_KEY: Final = ("event_family", None)


def _gate_text(event: Mapping[str, Any], values: _EventValues, key: str, tag: str | None,
               fold: str) -> str | None:
    """The event's ``key`` values, one per line, compared as ``fold`` says (see
    ``may_contain``); ``None`` when a substring test would not be exact."""
    cache_key = (key, tag)
    found = values.get(cache_key)
    if found is None:
        found = values[cache_key] = _event_values(event, key, tag)
    text = "\n".join(v for v in found if v is not None)
    if fold == FOLD_NONE:
        return text
    return text.lower() if fold == FOLD_ASCII or text.isascii() else None


def _event_family(event: Mapping[str, Any]) -> str:
    return frame_family(as_str(event.get("platform")) or "other")


def _event_values(event: Mapping[str, Any], key: str, tag: str | None) -> list[str | None]:
    if key == "type":
        return [as_str(e.get("type")) for e in interface_values(event.get("exception"))]
    if key == "value":
        return [as_str(e.get("value")) for e in interface_values(event.get("exception"))]
    if key == "message":
        return [as_str(get_path(event, "logentry", "formatted")),
                as_str(get_path(event, "logentry", "message")),
                as_str(event.get("message")),
                *(as_str(e.get("value")) for e in interface_values(event.get("exception")))]
    if key == "tags":
        return [tag_value(event.get("tags"), tag or "")]
    if key == "sdk":
        return [as_str(get_path(event, "sdk", "name"))]
    return [as_str(event.get(key))]  # logger, level, release


def _normalized_path(path: str | None) -> str | None:
    return path.replace("\\", "/") if path is not None else None


#: Private frame key written by the stack-trace rules' ``category=`` action (never hashed).
FRAME_CATEGORY_KEY: Final = "_category"


def frame_values(frame: Mapping[str, Any], key: str, sentry_paths: bool = False
                 ) -> list[str | None]:
    """The frame's values a ``key`` matcher looks at (any of them may match)."""
    if key == "path":
        abs_path = as_str(frame.get("abs_path"))
        filename = as_str(frame.get("filename"))
        if sentry_paths:  # Sentry's enhancer: ``abs_path or filename``
            return [_normalized_path(abs_path or filename)]
        return [_normalized_path(abs_path), _normalized_path(filename)]
    if key == "package":
        package = as_str(frame.get("package"))
        if sentry_paths:
            return [_normalized_path(package)]
        return [_normalized_path(package), basename(package) if package else None]
    if key == "filename":
        return [_normalized_path(as_str(frame.get("filename")))]
    if key == "category":
        return [as_str(frame.get(FRAME_CATEGORY_KEY))]
    return [as_str(frame.get(key))]  # module, function


def _all_frames(event: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], str]]:
    """Every frame with its platform (the frame's own, else the event's)."""
    event_platform = as_str(event.get("platform")) or "other"
    stacktraces = [e.get("stacktrace") for e in interface_values(event.get("exception"))]
    stacktraces.append(event.get("stacktrace"))
    stacktraces.extend(t.get("stacktrace") for t in interface_values(event.get("threads")))
    for stacktrace in stacktraces:
        for frame in mappings(get_path(stacktrace, "frames")):
            yield frame, as_str(frame.get("platform")) or event_platform


# --- parser ------------------------------------------------------------------------------

_ATTRIBUTE: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
_VARIABLE: Final = re.compile(r"\{\{\s*(\S+?)\s*\}\}")
_PART_HINT: Final = 'a word, a "quoted string" or a {{ variable }}'


def _unescape(raw: str) -> str:
    return re.sub(r"\\(.)", r"\1", raw, flags=re.DOTALL)


class _LineParser:
    """Parses one rule line; positions are 0-based internally, 1-based in errors."""

    def __init__(self, text: str, line: int, *, builtin: bool = False) -> None:
        self.text = text
        self.line = line
        self.pos = 0
        # Sentry's built-in fingerprint rules: marked builtin, event-level ``family``.
        self.builtin = builtin
        # Sentry's built-in stack-trace rules: the enhancer's readings (set by that parser).
        self.enhancer_readings = False
        # A project's rules: globs are held to MAX_GLOB_WILDCARDS (built-in ones are not).
        self.limited = not builtin
        #: Wildcards of this line's globs, counted against MAX_TOTAL_WILDCARDS.
        self.wildcards = 0

    def error(self, problem: str, pos: int | None = None) -> FingerprintRuleError:
        return FingerprintRuleError(self.line, (self.pos if pos is None else pos) + 1, problem)

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if not self.at_end() else ""

    def skip_whitespace(self) -> None:
        while not self.at_end() and self.text[self.pos].isspace():
            self.pos += 1

    def read_word(self, stop: str = "") -> str:
        """Up to whitespace or a ``stop`` character; ``\\x`` is kept raw and never stops."""
        start = self.pos
        while not self.at_end() and not self.peek().isspace() and self.peek() not in stop:
            self.pos += 2 if self.peek() == "\\" else 1
        self.pos = min(self.pos, len(self.text))
        return self.text[start:self.pos]

    def read_quoted(self) -> str:
        """A ``"..."`` string at ``pos``; its raw content, escapes kept."""
        opening = self.pos
        self.pos += 1
        start = self.pos
        while not self.at_end() and self.peek() != '"':
            self.pos += 2 if self.peek() == "\\" else 1
        if self.at_end():
            raise self.error('unterminated quoted string; expected a closing "', opening)
        self.pos += 1
        return self.text[start:self.pos - 1]

    def parse_rule(self) -> FingerprintRule:
        matchers: list[Matcher] = []
        while True:
            self.skip_whitespace()
            if self.text.startswith("->", self.pos):
                break
            if self.at_end():
                expected = ("expected '->' followed by the fingerprint" if matchers
                            else "expected matcher:value, e.g. type:ValueError")
                raise self.error(f"rule ends early; {expected}")
            matchers.append(self.parse_matcher())
        if not matchers:
            raise self.error("rule has no matchers; expected matcher:value before '->'")
        self.pos += 2
        fingerprint, title = self.parse_fingerprint()
        return FingerprintRule(tuple(matchers), fingerprint, title, self.text.strip(), self.line,
                               builtin=self.builtin)

    def parse_matcher(self) -> Matcher:
        start = self.pos
        negated = self.peek() == "!"
        if negated:
            self.pos += 1
        name_start = self.pos
        name = self.read_word(stop=":")
        if self.peek() != ":":
            raise self.error(f"expected matcher:value, got {self.text[start:self.pos]!r}", start)
        key, tag = self.matcher_key(name, name_start)
        self.pos += 1
        value_start = self.pos
        if self.peek() == '"':
            value = self.read_quoted()
            value_start += 1
        else:
            value = self.read_word()
            if not value:
                raise self.error(f'matcher "{name}" has no value; expected {name}:VALUE '
                                 '(write "" for an empty value)')
        return self.build_matcher(name, key, tag, value, negated, value_start)

    def matcher_key(self, name: str, pos: int) -> tuple[str, str | None]:
        if name.startswith("tags."):
            if name == "tags.":
                raise self.error('matcher "tags." has no tag name; expected tags.NAME', pos)
            return "tags", name[len("tags."):]
        key = _MATCHER_NAMES.get(name)
        if key is None:
            raise self.error(f'unknown matcher "{name}"; known: {_KNOWN_MATCHERS}', pos)
        if key == "family" and self.builtin:
            return "event_family", None
        return key, None

    def build_matcher(self, name: str, key: str, tag: str | None, value: str, negated: bool,
                      value_start: int) -> Matcher:
        def matcher(**how: Any) -> Matcher:
            return Matcher(name=name, key=key, value=value, negated=negated, tag=tag, **how)

        if key in ("family", "event_family"):
            families = frozenset(f.strip().lower() for f in _unescape(value).split(","))
            unknown = sorted(families - FAMILIES)
            if unknown:
                raise self.error(f'unknown family "{unknown[0]}"; expected one or more of '
                                 f"{', '.join(sorted(FAMILIES))}, comma-separated", value_start)
            return matcher(families=families)
        if key == "app":
            app = _APP_VALUES.get(_unescape(value).lower())
            if app is None:
                raise self.error(f'app value "{value}" is not allowed; expected yes or no',
                                 value_start)
            return matcher(app=app)
        kind = _KINDS[key]
        try:
            glob = compile_glob(value, case_sensitive=kind.case_sensitive, path=kind.path_glob,
                                ascii_case=self.enhancer_readings)
        except GlobError as error:
            raise self.error(f'matcher "{name}": {error.problem}',
                             value_start + error.offset) from None
        if self.limited and glob.wildcards > MAX_GLOB_WILDCARDS:
            raise self.error(f'matcher "{name}": the glob has {glob.wildcards} wildcards; at '
                             f"most {MAX_GLOB_WILDCARDS} are allowed (each *, **, ?, [...] and "
                             "each alternative of {...} counts): use fewer wildcards or split "
                             "the rule", value_start)
        self.wildcards += glob.wildcards
        required, fold = _prefilter(value, kind, ascii_case=self.enhancer_readings)
        return matcher(glob=glob, required=required, fold=fold,
                       sentry_paths=self.enhancer_readings and kind.path_glob)

    def parse_fingerprint(self) -> tuple[tuple[str, ...], str | None]:
        parts = [self.parse_part()]
        while True:
            self.skip_whitespace()
            if self.at_end():
                return tuple(parts), None
            if self.peek() == ",":
                self.pos += 1
                parts.append(self.parse_part())
            elif _ATTRIBUTE.match(self.text, self.pos):
                return tuple(parts), self.parse_attributes()
            else:
                raise self.error(f"unexpected {self.peek()!r} after a fingerprint part; "
                                 "expected ',' and another part, or title=\"...\" "
                                 "(quote parts that contain spaces)")

    def parse_part(self) -> str:
        self.skip_whitespace()
        if self.at_end() or self.peek() == ",":
            raise self.error(f"missing fingerprint part; expected {_PART_HINT}")
        if _ATTRIBUTE.match(self.text, self.pos):
            raise self.error(f"missing fingerprint part before an attribute; expected {_PART_HINT}"
                             ' (quote a part that contains "=")')
        if self.peek() == '"':
            return _unescape(self.read_quoted())
        if self.text.startswith("{{", self.pos):
            end = self.text.find("}}", self.pos)
            if end < 0:
                raise self.error('unclosed "{{"; expected "}}"')
            part = self.text[self.pos:end + 2]
            self.pos = end + 2
            return part
        return _unescape(self.read_word(stop=","))

    def parse_attributes(self) -> str:
        """``title="..."`` up to the end of the line (the only attribute, at most once)."""
        title = self.parse_title()
        self.skip_whitespace()
        if not self.at_end():
            if self.text.startswith("title=", self.pos):
                raise self.error("title is given twice; expected it at most once")
            raise self.error('unexpected text after title="..."; expected the end of the rule')
        return title

    def parse_title(self) -> str:
        attribute = _ATTRIBUTE.match(self.text, self.pos)
        if attribute is None or attribute.group(1) != "title":
            name = attribute.group(1) if attribute else self.peek()
            raise self.error(f'unknown attribute "{name}"; known: title')
        self.pos = attribute.end()
        if self.peek() != '"':
            raise self.error('title must be quoted; expected title="..."')
        return _unescape(self.read_quoted())


def rule_lines(text: str) -> Iterator[tuple[int, str, int]]:
    """(line number, line, where its rule starts) of every rule line: blank lines and ``#``
    comments are skipped, as in both of Sentry's rule languages."""
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.rstrip()
        stripped = line.lstrip()
        if stripped and not stripped.startswith("#"):
            yield number, line, len(line) - len(stripped)


# --- limits on a project's rules ----------------------------------------------------------
#
# Sentry sets none on these two settings: ``fingerprintingRules`` and ``groupingEnhancements``
# are CharFields without ``max_length`` that are only parsed
# (src/sentry/api/endpoints/project_details.py, ``ProjectAdminSerializer``); its one limit on
# a comparable setting is ``MAX_SENSITIVE_FIELD_CHARS = 4000`` on ``sensitiveFields``, because
# Relay compiles that list into a regex. Crashray's consumers, shared by every organization,
# match a project's rules against every event of the project, so the work one rule set can
# ask for is bounded here. The figures are far above real rule sets: Sentry's stack-trace base
# all-platforms@2023-01-11 is 137 rules here (7 KB, at most 104 characters and 4 wildcards a
# rule) and its javascript fingerprinting base has a 232-character rule. They are constants,
# not deployment settings: the API (on save), the consumers and ``crashray grouping hash``
# must accept exactly the same rules, or a saved rule set would be skipped by the consumers.

#: Rules (lines that are not blank or ``#`` comments) in one setting's text.
MAX_RULES: Final = 1_000
#: Characters in one rule line (leading and trailing blanks excluded).
MAX_RULE_CHARS: Final = 1_000
#: UTF-8 bytes of one setting's whole text, comments included (1,000 rules of 64 bytes).
MAX_RULES_BYTES: Final = 64 * 1024
#: Wildcards in one glob (``Glob.wildcards``: each ``*``/``**``, ``?``, ``[...]`` and each
#: alternative of a ``{...}``). A glob with alternatives, or a path glob mixing ``*`` and
#: ``**``, costs about one pass over the value per wildcard (``events.grouping.glob``).
MAX_GLOB_WILDCARDS: Final = 16
#: Wildcards in all the globs of one setting's rules. Each glob is linear, but every rule is
#: tried on every event of the project: this bounds one event's worst case (measured: up to
#: ~2 ms a wildcard on a 10 KB value in the general matcher, so ~1 s for 512), far above
#: what real rule sets use (Sentry's own 137 built-in stack-trace rules have 118).
MAX_TOTAL_WILDCARDS: Final = 512

_ErrorAt = Callable[[int, int, str], RuleSyntaxError]


def limited_rule_lines(text: str, error: _ErrorAt) -> Iterator[tuple[int, str, int]]:
    """``rule_lines(text)`` of a project's rules; raises ``error(line, column, problem)`` for
    a text over ``MAX_RULES_BYTES``, a rule line over ``MAX_RULE_CHARS`` or more than
    ``MAX_RULES`` rules."""
    _check_text_size(text, error)
    for count, (number, line, start) in enumerate(rule_lines(text), start=1):
        if count > MAX_RULES:
            raise error(number, start + 1, f"more than {MAX_RULES:,} rules (this is rule "
                        f"{count:,}); at most {MAX_RULES:,} are allowed: merge rules (e.g. "
                        "type:{A,B}) or remove rules that are no longer needed")
        length = len(line) - start
        if length > MAX_RULE_CHARS:
            raise error(number, start + MAX_RULE_CHARS + 1, f"rule is {length:,} characters "
                        f"long; at most {MAX_RULE_CHARS:,} are allowed: shorten it or split it "
                        "into several rules")
        yield number, line, start


def _check_text_size(text: str, error: _ErrorAt) -> None:
    if len(text) * 4 <= MAX_RULES_BYTES:  # UTF-8 takes at most 4 bytes a character
        return
    size = len(text.encode("utf-8", "surrogatepass"))
    if size <= MAX_RULES_BYTES:
        return
    total = 0
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        total += len(line.encode("utf-8", "surrogatepass"))
        if total > MAX_RULES_BYTES:
            raise error(number, 1, f"the rules are {size:,} bytes (UTF-8) and this line goes "
                        f"past the {MAX_RULES_BYTES:,} allowed: remove rules or comments that "
                        "are no longer needed")


def parse_fingerprint_rules(text: str, *, builtin: bool = False) -> FingerprintRules:
    """Parse a project's fingerprint rules text; raises ``FingerprintRuleError``, also for
    rules over the limits above.

    ``builtin``: Sentry's built-in rules (marked ``builtin``, Sentry's matcher readings; not
    limited)."""
    rules: list[FingerprintRule] = []
    lines = rule_lines(text) if builtin else limited_rule_lines(text, FingerprintRuleError)
    budget = WildcardBudget(FingerprintRuleError)
    for number, line, start in lines:
        parser = _LineParser(line, number, builtin=builtin)
        parser.pos = start
        rules.append(parser.parse_rule())
        if parser.limited:
            budget.spend(parser.wildcards, number, start)
    return FingerprintRules(tuple(rules))


class WildcardBudget:
    """Counts a rule text's wildcards against ``MAX_TOTAL_WILDCARDS``."""

    def __init__(self, error: _ErrorAt) -> None:
        self.error = error
        self.total = 0

    def spend(self, wildcards: int, line: int, start: int) -> None:
        self.total += wildcards
        if self.total > MAX_TOTAL_WILDCARDS:
            raise self.error(line, start + 1, f"the rules up to this one have {self.total:,}"
                             f" wildcards; at most {MAX_TOTAL_WILDCARDS:,} are allowed in all"
                             " (every rule is tried on every event): merge rules or use"
                             " literal values where you can")


def resolve_title(title: str, resolve_entry: Callable[[str], str]) -> str:
    """``title`` with each ``{{ variable }}`` replaced by ``resolve_entry("{{ variable }}")``
    (the grouping config's fingerprint variable resolution, §6.7)."""
    return _VARIABLE.sub(lambda match: resolve_entry(match.group(0)), title)
