"""Ownership rules (Sentry's "Issue Owners"): one rule a line, ``type:pattern owner…``::

    # comments and blank lines are skipped
    path:src/app/*          #frontend
    module:shop.payments    ada@example.com
    url:https://example.com/checkout/*  #checkout
    tags.sku_class:enterprise  #enterprise bob

* ``path`` matches the ``filename`` and ``abs_path`` of every stack frame (of exceptions
  and threads), ``module`` the frames' ``module``, ``url`` the request's ``url``,
  ``tags.KEY`` the value of tag ``KEY``.
* Patterns are unix-style globs (``*``, ``?``, ``[…]``; not regexes), as Sentry's; paths are
  compared case-insensitively, and a relative path pattern also matches below any folder
  (``src/app/*`` matches ``/srv/www/src/app/x.py``).
* Owners: ``#team-slug``, or a user by e-mail address (Sentry's form) or username.

A new issue is auto-assigned to the first owner of the last rule its first event matches
(``issue_owner``: the last matching rule wins, as in Sentry and CODEOWNERS). The rules are parsed once when a consumer loads a project's settings
(``parse_ownership``), and matched only for projects that have rules. Pure: no I/O.

Errors::

    events.errors.BadRequest
    └── OwnershipSyntaxError   400   a line that is not ``type:pattern owner…``
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from events.errors import BadRequest

#: Longest rules text a project keeps (Sentry's ProjectOwnership.raw is a text field; this
#: many characters hold some thousand rules).
MAX_OWNERSHIP_CHARS: Final = 100_000
#: Frames looked at per event (the innermost ones: a stack trace may have thousands).
MAX_FRAMES: Final = 250
_TYPES: Final = ("path", "module", "url")
_TAG_KEY: Final = re.compile(r"[a-zA-Z0-9_.:-]{1,200}")

RuleType = Literal["path", "module", "url", "tag"]


class OwnershipSyntaxError(BadRequest):
    code = "invalid_ownership"


@dataclass(frozen=True)
class Owner:
    """A team (by slug) or a user (by e-mail address or username)."""

    kind: Literal["user", "team"]
    name: str

    @property
    def text(self) -> str:
        return f"#{self.name}" if self.kind == "team" else self.name


@dataclass(frozen=True)
class Rule:
    type: RuleType
    pattern: str
    owners: tuple[Owner, ...]
    tag: str = ""  # for ``tags.KEY`` rules

    def matches(self, facts: EventFacts) -> bool:
        regex = _glob(self.pattern, self.type == "path")
        if self.type == "path":
            return any(regex.match(p) for p in facts.paths)
        if self.type == "module":
            return any(regex.match(m) for m in facts.modules)
        if self.type == "url":
            return facts.url is not None and regex.match(facts.url) is not None
        value = facts.tags.get(self.tag)
        return value is not None and regex.match(value) is not None


@dataclass(frozen=True)
class OwnershipRules:
    rules: tuple[Rule, ...] = ()

    @property
    def owners(self) -> frozenset[Owner]:
        return frozenset(o for r in self.rules for o in r.owners)


@dataclass(frozen=True)
class EventFacts:
    """What ownership rules look at in one event."""

    paths: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    url: str | None = None
    tags: Mapping[str, str] = None  # type: ignore[assignment]  # set in __post_init__

    def __post_init__(self) -> None:
        if self.tags is None:
            object.__setattr__(self, "tags", {})


def parse_ownership(raw: str) -> OwnershipRules:
    """The rules of ``raw``; OwnershipSyntaxError names the line of the first bad rule."""
    if len(raw) > MAX_OWNERSHIP_CHARS:
        raise OwnershipSyntaxError(f"raw: at most {MAX_OWNERSHIP_CHARS} characters; got"
                                   f" {len(raw)}")
    rules = [_rule(number, line.strip())
             for number, line in enumerate(raw.splitlines(), start=1)
             if line.strip() and not line.strip().startswith("#")]
    return OwnershipRules(tuple(rules))


def _rule(number: int, line: str) -> Rule:
    matcher, _, rest = line.partition(" ")
    kind, colon, pattern = matcher.partition(":")
    owners = rest.split()
    where = f"line {number}"
    if not colon or not pattern:
        raise OwnershipSyntaxError(f"{where}: expected type:pattern owner (such as"
                                   f" path:src/app/* #frontend); got {line[:80]!r}")
    if not owners:
        raise OwnershipSyntaxError(f"{where}: the rule {matcher[:80]!r} names no owner; add"
                                   " #team-slug or a user's e-mail address after it")
    parsed = tuple(_owner(where, o) for o in owners)
    if kind in _TYPES:
        return Rule(kind, pattern, parsed)  # type: ignore[arg-type]  # one of _TYPES
    if kind.startswith("tags.") and _TAG_KEY.fullmatch(kind[5:]):
        return Rule("tag", pattern, parsed, kind[5:])
    raise OwnershipSyntaxError(f"{where}: unknown rule type {kind[:80]!r}; expected path,"
                               " module, url or tags.KEY")


def _owner(where: str, text: str) -> Owner:
    if text.startswith("#"):
        if len(text) < 2:
            raise OwnershipSyntaxError(f"{where}: '#' must be followed by a team slug")
        return Owner("team", text[1:])
    return Owner("user", text)


def _glob(pattern: str, is_path: bool) -> re.Pattern[str]:
    return _compiled(pattern.lower() if is_path else pattern, is_path)


_COMPILED: dict[tuple[str, bool], re.Pattern[str]] = {}


def _compiled(pattern: str, is_path: bool) -> re.Pattern[str]:
    """The glob as a regex, compiled once per pattern (patterns come from parsed rules,
    so the cache holds what the loaded projects' rules name)."""
    key = (pattern, is_path)
    found = _COMPILED.get(key)
    if found is None:
        regex = fnmatch.translate(pattern)
        if is_path and not pattern.startswith(("/", "*")):
            # src/app/* also matches /srv/www/src/app/x.py (below any folder)
            regex = f"(?:.*/)?{regex}"
        found = _COMPILED[key] = re.compile(regex, re.IGNORECASE if is_path else 0)
    return found


def issue_owner(rules: OwnershipRules, facts: EventFacts) -> Owner | None:
    """The first owner of the last rule ``facts`` match (None: no rule matches). The last
    matching rule wins, as in Sentry and in CODEOWNERS files: broad rules go first, the
    specific ones that override them below."""
    for rule in reversed(rules.rules):
        if rule.matches(facts):
            return rule.owners[0]
    return None


def event_facts(event: Mapping[str, Any]) -> EventFacts:
    """Frames' paths and modules, the request URL and the tags of a normalized event."""
    paths: list[str] = []
    modules: list[str] = []
    for frame in _frames(event):
        for key in ("filename", "abs_path"):
            value = frame.get(key)
            if isinstance(value, str) and value:
                paths.append(value.lower())
        module = frame.get("module")
        if isinstance(module, str) and module:
            modules.append(module)
    request = event.get("request")
    url = request.get("url") if isinstance(request, Mapping) else None
    return EventFacts(tuple(dict.fromkeys(paths)), tuple(dict.fromkeys(modules)),
                      url if isinstance(url, str) else None, _tags(event.get("tags")))


def _frames(event: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    seen = 0
    for container in ("exception", "threads"):
        holder = event.get(container)
        values = holder.get("values") if isinstance(holder, Mapping) else None
        for value in values if isinstance(values, list) else []:
            trace = value.get("stacktrace") if isinstance(value, Mapping) else None
            frames = trace.get("frames") if isinstance(trace, Mapping) else None
            for frame in reversed(frames) if isinstance(frames, list) else []:
                if isinstance(frame, Mapping) and seen < MAX_FRAMES:
                    seen += 1
                    yield frame


def _tags(tags: object) -> dict[str, str]:
    """Normalized events carry tags as [key, value] pairs; a mapping is read too."""
    if isinstance(tags, Mapping):
        return {str(k): str(v) for k, v in tags.items() if v is not None}
    found: dict[str, str] = {}
    for pair in tags if isinstance(tags, list) else []:
        if isinstance(pair, list | tuple) and len(pair) == 2 and pair[1] is not None:
            found.setdefault(str(pair[0]), str(pair[1]))
    return found
