"""A project's PII configuration without the selectors that cannot match an event.

sentry-relay parses and compiles the PII configuration on every ``pii_strip_event`` call
(its C ABI has no compiled-config handle), and evaluates every selector on every value of
the event. Sentry's default data scrubbing converts (``convert_datascrubbing_config``) to
a configuration of 4 applications, two of which are long ``||`` lists of paths naming keys
an error event seldom has: ~180 session and CSRF cookie names (``*.cookies.sessionid``,
``*.'http.request.header.cookie.sessionid'``, …) and the ``gen_ai``/``mcp`` span data
attributes. Scrubbing a Python SDK error event costs ~680 µs with them, ~330 µs without
(bench/RESULTS.md, 2026-12-06).

A path selector matches a value only under every key it names, and a key is a string of the
event as sentry-relay reads it (an object key, or the name in a pair list: headers,
cookies, tags, query strings), so the event's JSON holds the name as a substring. An
alternative of an application's ``||`` list that names a key the event's JSON does not
hold, compared case-insensitively, can match nothing in the event and is left out; an
application left with none is left out. What is kept is the original text of each kept
alternative, in order, with the original rules: the scrubbed event is the one the whole
configuration gives.

Kept whole, never pruned: an application whose selector has parentheses, ``&&`` or ``!``,
or a part this parser does not know (the first of the default configuration, ``($string
|| …) && !(…)``, applies to every string); alternatives that name no key (``$string``,
``**``); and names holding a character JSON escapes (a quote, a backslash, a control
character) or any non-ASCII one, which the substring test could miss.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

import orjson

#: Distinct pruned configurations kept per project (their JSON): events of one kind share
#: one; the cache starts over when full.
MAX_PRUNED_CONFIGS: Final = 256
_KEY_ITEM = re.compile(r"[A-Za-z0-9_-]+")
_NAME_CHARS = re.compile(r"[\x20-\x7e]+")


@dataclass(frozen=True)
class _Alternative:
    text: str
    #: Lower-case key names the event must hold, checked in order (shared prefixes first).
    names: tuple[str, ...]


@dataclass(frozen=True)
class _Application:
    selector: str
    rules: Any
    #: None: kept whole (see the module docstring).
    alternatives: tuple[_Alternative, ...] | None

    @cached_property
    def by_first_name(self) -> tuple[tuple[str | None, tuple[tuple[int, tuple[str, ...]], ...]],
                                     ...]:
        """The alternatives' indexes and other names by their first name (None: none), so
        that one test of a name shared by many (``cookies``) rules them all out."""
        groups: dict[str | None, list[tuple[int, tuple[str, ...]]]] = {}
        for i, alternative in enumerate(self.alternatives or ()):
            first = alternative.names[0] if alternative.names else None
            groups.setdefault(first, []).append((i, alternative.names[1:]))
        return tuple((first, tuple(members)) for first, members in groups.items())

    def kept(self, holds: Callable[[str], bool]) -> tuple[int, ...] | None:
        """The indexes of the alternatives that may match an event (None: kept whole)."""
        if self.alternatives is None:
            return None
        kept = [i for first, members in self.by_first_name
                if first is None or holds(first)
                for i, rest in members if all(holds(n) for n in rest)]
        return tuple(sorted(kept))


def _split_outside_quotes(text: str, separator: str) -> list[str] | None:
    """``text`` split at ``separator`` where it is not inside a quoted key; None when a
    quote is left open."""
    parts, start, quoted, i = [], 0, False, 0
    while i < len(text):
        if text[i] == "'":
            quoted = not quoted  # a doubled quote inside a key toggles twice
        elif not quoted and text.startswith(separator, i):
            parts.append(text[start:i])
            start = i + len(separator)
            i = start
            continue
        i += 1
    if quoted:
        return None
    parts.append(text[start:])
    return parts


def _key_names(path: str) -> tuple[str, ...] | None:
    """The key names a path selector (``*.cookies.sessionid``, ``$span.data.'a.b'``) names,
    lower-case; None when a part is not one this parser knows."""
    items = _split_outside_quotes(path.strip(), ".")
    if items is None:
        return None
    names: list[str] = []
    for item in items:
        if item in ("*", "**") or (item.startswith("$") and _KEY_ITEM.fullmatch(item[1:])):
            continue
        if len(item) >= 2 and item[0] == item[-1] == "'":
            name = item[1:-1].replace("''", "'")
        elif _KEY_ITEM.fullmatch(item):
            if item.isdigit():
                continue  # an array index
            name = item
        else:
            return None
        if not name or not _NAME_CHARS.fullmatch(name) or '"' in name or "\\" in name:
            return None
        names.append(name.lower())
    # A dotted name's first and longest dotted prefixes are in the JSON wherever the name is:
    # names sharing them are ruled out together (``gen_ai.``, ``http.request.header.``).
    prefixes = [p for n in names if "." in n
                for p in (n[:n.index(".") + 1], n[:n.rindex(".") + 1])]
    return tuple(dict.fromkeys([*prefixes, *names]))


def _application(selector: str, rules: Any) -> _Application:
    if any(c in selector for c in "()!") or "&&" in selector:
        return _Application(selector, rules, None)
    texts = _split_outside_quotes(selector, "||")
    if texts is None:
        return _Application(selector, rules, None)
    alternatives = []
    for text in texts:
        names = _key_names(text)
        if names is None:
            return _Application(selector, rules, None)
        alternatives.append(_Alternative(text.strip(), names))
    return _Application(selector, rules, tuple(alternatives))


class PrunablePiiConfig:
    """A project's sentry-relay PII configuration (the dict ``convert_datascrubbing_config``
    returns), and its JSON for an event, without what cannot match the event."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        applications = config.get("applications")
        self._applications = tuple(
            _application(selector, rules) for selector, rules in applications.items()
        ) if isinstance(applications, dict) else None
        self._whole = orjson.dumps(self.config)
        self._pruned: dict[tuple[tuple[int, ...] | None, ...], bytes] = {}

    def __bool__(self) -> bool:
        return bool(self.config)

    def json_for(self, event_json: bytes) -> bytes:
        """The configuration's JSON for the event whose JSON is ``event_json``."""
        if self._applications is None:
            return self._whole
        text = event_json.decode().lower()
        present: dict[str, bool] = {}

        def holds(name: str) -> bool:
            found = present.get(name)
            if found is None:
                found = present[name] = name in text
            return found

        kept = tuple(a.kept(holds) for a in self._applications)
        pruned = self._pruned.get(kept)
        if pruned is None:
            if len(self._pruned) >= MAX_PRUNED_CONFIGS:
                self._pruned.clear()
            pruned = self._pruned[kept] = self._config_json(kept)
        return pruned

    def _config_json(self, kept: tuple[tuple[int, ...] | None, ...]) -> bytes:
        assert self._applications is not None  # json_for checked
        applications: dict[str, Any] = {}
        for application, indexes in zip(self._applications, kept, strict=True):
            if indexes is None:
                selector = application.selector
            elif indexes:
                alternatives = application.alternatives or ()
                selector = " || ".join(alternatives[i].text for i in indexes)
            else:
                continue
            if selector in applications:
                return self._whole  # two applications pruned alike: no merging of rules
            applications[selector] = application.rules
        return orjson.dumps({**self.config, "applications": applications})
