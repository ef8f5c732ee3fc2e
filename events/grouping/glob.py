"""Globs of Sentry's rule languages, matched without backtracking (issue 10).

The dialect (fingerprint rules §6.7, stack-trace rules §6.8): ``*`` (any text), ``?`` (one
character), ``[...]`` (one character of a class; ``[!...]``/``[^...]`` negated, ``a-z`` ranges,
``\\x`` escapes), ``{a,b}`` (one of the alternatives, not nested) and ``\\x`` (the character
``x``). In a *path* glob ``*`` and ``?`` do not cross ``/`` while ``**`` does. A glob is matched
against a whole value, case-sensitively or not as its matcher says.

Crashray used to translate a glob into a Python regular expression and ``fullmatch`` it. The
translation is kept (``Glob.regex``: it validates the glob and defines what a glob means), but
``re`` backtracks: ``x*a*a*a*a*b`` took ~18 s on a 200-character message, and consumers shared
by every organization run project rules on every event. ``Glob.matches`` gives the same
answer as ``regex.fullmatch`` for every value (tests/unit/grouping/test_glob.py compares them
on random globs and values) in time linear in the value for each part of the glob:

* no ``{...}`` and at most one star: ``regex.fullmatch`` itself (one star backtracks over at
  most every split of the value, O(n·m));
* no ``{...}`` and every star may cross ``/`` (every glob that is not a path glob): the
  literal runs between stars are fixed-length, so the leftmost place of each run is always
  the best one (the classic wildcard matcher; CPython's ``fnmatch`` does the same since 3.9);
* otherwise (alternatives, or path globs mixing ``*`` with other stars): the set of value
  positions the glob so far can end at, kept as the bits of an ``int`` and advanced one part
  at a time (a Thompson simulation over the value's positions, O(n) per part).

Each run of one-character elements is matched by the regex atoms of the old translation
(same flags), so case folding (Unicode or ASCII-only), classes and ranges mean exactly what
they meant.

Exception tree::

    ValueError
     └── GlobError   "<problem>" at ``offset`` characters into the glob
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import reduce
from operator import or_
from typing import Final

__all__ = ["Glob", "GlobError", "compile_glob"]


class GlobError(ValueError):
    """A malformed glob: ``problem`` found ``offset`` characters into it."""

    def __init__(self, offset: int, problem: str) -> None:
        super().__init__(problem)
        self.offset = offset
        self.problem = problem


# --- parsing: the glob's elements, each with the regex the old translation gave it --------


@dataclass(frozen=True)
class _Char:
    """One character: a literal, ``?`` or ``[...]``."""

    regex: str


@dataclass(frozen=True)
class _Star:
    crosses_slash: bool

    @property
    def regex(self) -> str:
        return ".*" if self.crosses_slash else "[^/]*"


@dataclass(frozen=True)
class _Alternatives:
    branches: tuple[tuple[_Element, ...], ...]

    @property
    def regex(self) -> str:
        return "(?:" + "|".join(_regex(branch) for branch in self.branches) + ")"


_Element = _Char | _Star | _Alternatives


def _regex(elements: tuple[_Element, ...]) -> str:
    return "".join(element.regex for element in elements)


def _class_regex(raw: str, start: int) -> tuple[str, int]:
    """``[...]`` starting at ``raw[start] == "["``: (regex, index after the ``]``)."""
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
        raise GlobError(start, 'unclosed "["; expected "]" (or escape it as \\[)')
    return out + "]", i + 1


def _alternatives(raw: str, start: int, path: bool) -> tuple[_Alternatives, int]:
    """``{a,b}`` starting at ``raw[start] == "{"``: (element, index after the ``}``)."""
    i = start + 1
    alternatives: list[str] = []
    current = ""
    while i < len(raw) and raw[i] != "}":
        if raw[i] == "{":
            raise GlobError(i, 'nested "{" is not supported; expected "}" or \\{')
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
        raise GlobError(start, 'unclosed "{"; expected "}" (or escape it as \\{)')
    alternatives.append(current)
    # Offsets inside an alternative are approximate (reported at the "{").
    try:
        branches = tuple(_elements(alt, path) for alt in alternatives)
    except GlobError as error:
        raise GlobError(start, error.problem) from None
    return _Alternatives(branches), i + 1


def _elements(raw: str, path: bool) -> tuple[_Element, ...]:
    """The glob's elements: ``*``, ``?``, ``[...]``, ``{a,b}``, ``\\`` escapes; in a path glob
    ``*`` and ``?`` do not cross ``/`` but ``**`` does."""
    out: list[_Element] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "\\":
            if i + 1 >= len(raw):
                raise GlobError(i, "dangling backslash; expected a character after \\")
            out.append(_Char(re.escape(raw[i + 1])))
            i += 2
        elif char == "*" and path and raw.startswith("**", i):
            out.append(_Star(crosses_slash=True))
            i += 2
        elif char == "*":
            out.append(_Star(crosses_slash=not path))
            i += 1
        elif char == "?":
            out.append(_Char("[^/]" if path else "."))
            i += 1
        elif char == "[":
            regex, i = _class_regex(raw, i)
            out.append(_Char(regex))
        elif char == "{":
            alternatives, i = _alternatives(raw, i, path)
            out.append(alternatives)
        else:
            out.append(_Char(re.escape(char)))
            i += 1
    return tuple(out)


def _wildcards(elements: tuple[_Element, ...]) -> int:
    """Each star (``*`` or ``**``), ``?``, ``[...]`` and each alternative of a ``{...}``."""
    count = 0
    for element in elements:
        if isinstance(element, _Star):
            count += 1
        elif isinstance(element, _Alternatives):
            count += len(element.branches) + sum(_wildcards(b) for b in element.branches)
        elif _is_wildcard(element):
            count += 1
    return count


def _is_wildcard(char: _Char) -> bool:
    """``?`` or ``[...]`` (a literal's regex is ``re.escape`` of it: never ``.`` nor ``[``)."""
    return char.regex in (".", "[^/]") or char.regex.startswith("[")


# --- the matching program ----------------------------------------------------------------

# What the rest of a glob needs to know about the positions a run of characters can end at.
_END: Final = 0  # only whether it can end at the end of the value
_FIRST: Final = 1  # only the first one (a star that may cross "/" follows)
_FIRST_PER_STRETCH: Final = 2  # the first one before each "/" (a star that may not follows)
_ALL: Final = 3  # every one


@dataclass(frozen=True)
class _Run:
    """Consecutive one-character elements: ``here`` matches them at a position, ``ahead``
    finds every position they match at (a zero-width look-ahead)."""

    here: re.Pattern[str]
    ahead: re.Pattern[str]
    length: int
    need: int


@dataclass(frozen=True)
class _Choice:
    branches: tuple[tuple[_Step, ...], ...]


_Step = _Run | _Star | _Choice


def _program(elements: tuple[_Element, ...], flags: int, tail_need: int) -> tuple[_Step, ...]:
    """The steps, each run told what the steps after it need (``tail_need`` after the last)."""
    steps: list[_Step] = []
    need = tail_need
    for item in reversed(_grouped(elements)):
        if isinstance(item, list):
            regex = "".join(char.regex for char in item)
            steps.append(_Run(re.compile(regex, flags), re.compile(f"(?={regex})", flags),
                              len(item), need))
            need = _ALL
        elif isinstance(item, _Star):
            steps.append(item)
            need = _FIRST if item.crosses_slash else _FIRST_PER_STRETCH
        else:
            branches = tuple(_program(b, flags, need) for b in item.branches)
            steps.append(_Choice(branches))
            needs = {_need_before(branch, need) for branch in branches}
            need = needs.pop() if len(needs) == 1 else _ALL
    return tuple(reversed(steps))


def _grouped(elements: tuple[_Element, ...]) -> list[_Star | _Alternatives | list[_Char]]:
    """Consecutive characters as one list (a run); adjacent stars as one (``**`` then ``*``
    is one star that crosses ``/``: ``.*[^/]*`` matches what ``.*`` matches)."""
    grouped: list[_Star | _Alternatives | list[_Char]] = []
    for element in elements:
        last = grouped[-1] if grouped else None
        if isinstance(element, _Char):
            if isinstance(last, list):
                last.append(element)
            else:
                grouped.append([element])
        elif isinstance(element, _Star) and isinstance(last, _Star):
            grouped[-1] = _Star(last.crosses_slash or element.crosses_slash)
        else:
            grouped.append(element)
    return grouped


def _need_before(steps: tuple[_Step, ...], tail_need: int) -> int:
    """What ``steps`` (followed by what needs ``tail_need``) need of the positions before."""
    if not steps:
        return tail_need
    first = steps[0]
    if isinstance(first, _Star):
        return _FIRST if first.crosses_slash else _FIRST_PER_STRETCH
    return _ALL  # a run, or alternatives (never the first of a branch: not nested)


# --- matching ----------------------------------------------------------------------------


class _Positions:
    """The value being matched and its positions ``0..n`` as bits of an ``int``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)
        self.every = (1 << (self.n + 1)) - 1
        self._passable: int | None = None

    def passable(self) -> int:
        """Positions ``q`` that a ``/``-free star can step into: ``text[q - 1] != "/"``."""
        if self._passable is None:
            blocked = bytearray((self.n >> 3) + 1)
            slash = self.text.find("/")
            while slash >= 0:
                q = slash + 1
                blocked[q >> 3] |= 1 << (q & 7)
                slash = self.text.find("/", q)
            self._passable = self.every & ~1 & ~int.from_bytes(blocked, "little")
        return self._passable


def _run_steps(steps: tuple[_Step, ...], reach: int, at: _Positions) -> int:
    """The positions the glob can end at after ``steps``, starting from ``reach``."""
    for step in steps:
        if not reach:
            return 0
        if isinstance(step, _Run):
            reach = _after_run(step, reach, at)
        elif isinstance(step, _Star):
            reach = _after_star(step, reach, at)
        else:
            reach = reduce(or_, (_run_steps(b, reach, at) for b in step.branches), 0)
    return reach


def _after_star(star: _Star, reach: int, at: _Positions) -> int:
    if star.crosses_slash:
        return at.every ^ ((reach & -reach) - 1)  # every position from the first one on
    # Each position spreads forward until just before a "/": adding the seeds to the
    # passable bits carries through each run of them (a bitboard "fill").
    passable = at.passable()
    seeds = (reach << 1) & passable
    return reach | ((((passable + seeds) ^ passable) | seeds) & passable)


def _after_run(run: _Run, reach: int, at: _Positions) -> int:
    """The positions ``run`` can end at from the positions ``reach``, or as many of them as
    the steps after it need (``run.need``)."""
    text, n, length = at.text, at.n, run.length
    if run.need == _END:
        start = n - length
        if start < 0 or not (reach >> start) & 1 or run.here.match(text, start) is None:
            return 0
        return 1 << n
    first = (reach & -reach).bit_length() - 1
    if run.need == _FIRST and reach == at.every ^ ((1 << first) - 1):
        found = run.here.search(text, first)
        return 0 if found is None else 1 << (found.start() + length)
    members = format(reach, "b")[::-1]  # members[p] == "1" for each position p in reach
    if run.need == _ALL:
        return _every_end(run, members, first, text)
    # Leapfrog: the next position in ``reach``, then the next place the run matches, until
    # they meet; each step moves forward, so the value is scanned once.
    ends = bytearray((n >> 3) + 1)
    p = first
    while (p := members.find("1", p)) >= 0 and (found := run.ahead.search(text, p)):
        if found.start() != p:
            p = found.start()
            continue
        q = p + length
        if run.need == _FIRST:
            return 1 << q
        ends[q >> 3] |= 1 << (q & 7)
        # The first end before the next "/" is enough: the star after it covers the rest.
        slash = text.find("/", q)
        p = max(p + 1, (n if slash < 0 else slash) - length + 1)
    return int.from_bytes(ends, "little")


def _every_end(run: _Run, members: str, first: int, text: str) -> int:
    last = len(members) - 1
    ends = bytearray((len(text) >> 3) + 1)
    for found in run.ahead.finditer(text, first):
        p = found.start()
        if p > last:
            break
        if members[p] == "1":
            q = p + run.length
            ends[q >> 3] |= 1 << (q & 7)
    return int.from_bytes(ends, "little")


def _leftmost_runs(steps: tuple[_Step, ...], text: str) -> bool:
    """Stars that all cross ``/``, no alternatives: each run at its leftmost place."""
    pos, first, last = 0, 0, len(steps)
    head, tail = steps[0], steps[-1]
    if isinstance(head, _Run):
        if head.here.match(text) is None:
            return False
        pos, first = head.length, 1
    if isinstance(tail, _Run):
        last -= 1
    for step in steps[first:last]:
        if isinstance(step, _Run):
            found = step.here.search(text, pos)
            if found is None:
                return False
            pos = found.start() + step.length
    if isinstance(tail, _Run):
        start = len(text) - tail.length
        return start >= pos and tail.here.match(text, start) is not None
    return True


_BY_REGEX: Final = "regex"
_BY_LEFTMOST_RUNS: Final = "leftmost"
_BY_POSITIONS: Final = "positions"


def _strategy(elements: tuple[_Element, ...], steps: tuple[_Step, ...]) -> str:
    if any(isinstance(e, _Alternatives) for e in elements):
        return _BY_POSITIONS
    if sum(isinstance(e, _Star) for e in elements) <= 1:
        return _BY_REGEX
    if all(s.crosses_slash for s in steps if isinstance(s, _Star)):
        return _BY_LEFTMOST_RUNS
    return _BY_POSITIONS


@dataclass(frozen=True)
class Glob:
    """A compiled glob. ``regex``: the old translation (what the glob means; a full match);
    ``matches(value)`` answers as ``regex.fullmatch(value)`` does, without backtracking.
    ``wildcards``: each star (``*`` or ``**``), ``?``, ``[...]`` and each alternative of a
    ``{...}`` (rules limit them: ``fingerprint_rules.MAX_GLOB_WILDCARDS``)."""

    raw: str
    regex: re.Pattern[str]
    wildcards: int
    steps: tuple[_Step, ...] = field(repr=False, compare=False)
    strategy: str = field(repr=False, compare=False)

    def matches(self, value: str) -> bool:
        if self.strategy == _BY_REGEX:
            return self.regex.fullmatch(value) is not None
        if self.strategy == _BY_LEFTMOST_RUNS:
            return _leftmost_runs(self.steps, value)
        return self.matches_by_positions(value)

    def matches_by_positions(self, value: str) -> bool:
        """The general matcher (any glob); ``matches`` picks a faster one when it can."""
        at = _Positions(value)
        return bool(_run_steps(self.steps, 1, at) >> at.n & 1)


def compile_glob(raw: str, *, case_sensitive: bool, path: bool, ascii_case: bool = False
                 ) -> Glob:
    """The compiled glob; raises ``GlobError`` for a malformed one.

    ``ascii_case``: fold case for ASCII letters only (built-in rules; see
    ``fingerprint_rules.Matcher``)."""
    flags = re.DOTALL
    if ascii_case:
        flags |= re.IGNORECASE | re.ASCII
    elif not case_sensitive:
        flags |= re.IGNORECASE
    elements = _elements(raw, path)
    try:
        regex = re.compile(_regex(elements), flags)
    except re.error as error:  # e.g. a reversed range "[z-a]"
        raise GlobError(0, f"invalid glob ({error.msg})") from None
    steps = _program(elements, flags, _END)
    return Glob(raw, regex, _wildcards(elements), steps, _strategy(elements, steps))
