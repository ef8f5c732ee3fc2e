"""A project's PII configuration without the applications that cannot match an event.

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
cookies, tags, query strings; relay compares them case-insensitively and percent-decodes
names when it normalizes, before scrubbing), so the event's JSON holds the name as a
substring. An application whose alternatives all name a key the event's JSON does not
hold, compared case-insensitively, matches nothing in the event and is left out; the others
are kept as they are, whole. Only whole applications go: relay applies applications in the
order of their parsed selectors, and a rewritten selector could change that order or
collide with another's.

Never left out: an application whose selector has an operator other than ``||``
(``(``, ``&&``, ``&``, ``!``, ``~``, a single ``|``), or a part this parser does not know, or
a legacy word relay reads as a type (``email``, ``freeform``: every string); an alternative
that names no key (``$string``, ``**``); a name holding a character JSON escapes (a quote,
a backslash, a control character), a non-ASCII one, or a space at either end. A
configuration sentry-relay refuses (``validate_pii_config``) is never pruned: relay reports
its error as it would without pruning.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final

import orjson
import sentry_relay

#: Distinct pruned configurations kept per project (their JSON): events of one kind share
#: one; the cache starts over when full.
MAX_PRUNED_CONFIGS: Final = 256
#: Selectors relay reads as a value type rather than a key (its ``SelectorSpec::from_str``).
LEGACY_SELECTOR_WORDS: Final = frozenset({"freeform", "email", "sensitive", "text",
                                          "databag", "container"})
_KEY_ITEM = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_TYPE_ITEM = re.compile(r"\$[a-z_]+|\$\*")
_QUOTED = re.compile(r"'(?:[^']|'')*'")
_NAME_CHARS = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")


@dataclass(frozen=True)
class _Application:
    #: Each alternative's lower-case key names, shared prefixes first; None: the
    #: application is never left out (see the module docstring).
    alternatives: tuple[tuple[str, ...], ...] | None

    @cached_property
    def by_first_name(self) -> tuple[tuple[str | None, tuple[tuple[str, ...], ...]], ...]:
        """The alternatives' other names by their first name (None: none), so that one
        test of a name many share (``cookies``) rules them all out."""
        groups: dict[str | None, list[tuple[str, ...]]] = {}
        for names in self.alternatives or ():
            groups.setdefault(names[0] if names else None, []).append(names[1:])
        return tuple((first, tuple(rests)) for first, rests in groups.items())

    def may_match(self, holds: Callable[[str], bool]) -> bool:
        """Whether the application may match an event that holds the names ``holds`` says."""
        if self.alternatives is None:
            return True
        return any((first is None or holds(first)) and any(all(holds(n) for n in rest)
                                                           for rest in rests)
                   for first, rests in self.by_first_name)


def _key_names(path: str) -> tuple[str, ...] | None:
    """The key names a path selector (``*.cookies.sessionid``, ``$span.data.'a.b'``) names,
    lower-case; None when a part is not one this parser knows."""
    items = _QUOTED.sub(lambda m: m.group(0).replace(".", "\0"), path.strip()).split(".")
    if len(items) == 1 and items[0].lower() in LEGACY_SELECTOR_WORDS:
        return None
    names: list[str] = []
    for raw in items:
        item = raw.replace("\0", ".")
        if item in ("*", "**") or _TYPE_ITEM.fullmatch(item):
            continue
        if _QUOTED.fullmatch(item):
            name = item[1:-1].replace("''", "'")
        elif _KEY_ITEM.fullmatch(item):
            name = item
        else:
            return None  # an index, spaces, or syntax this parser does not know
        if not _NAME_CHARS.fullmatch(name) or '"' in name or "\\" in name:
            return None
        names.append(name.lower())
    # A dotted name's first and longest dotted prefixes are in the JSON wherever the name is:
    # names sharing them are ruled out together (``gen_ai.``, ``http.request.header.``).
    prefixes = [p for n in names if "." in n
                for p in (n[:n.index(".") + 1], n[:n.rindex(".") + 1])]
    return tuple(dict.fromkeys([*prefixes, *names]))


def _application(selector: str) -> _Application:
    outside_quotes = _QUOTED.sub("''", selector)
    if "'" in outside_quotes.replace("''", "") or any(c in outside_quotes for c in "()!&~\0") \
            or "|" in outside_quotes.replace("||", ""):
        return _Application(None)
    alternatives = []
    for text in _alternatives(selector):
        names = _key_names(text)
        if names is None:
            return _Application(None)
        alternatives.append(names)
    return _Application(tuple(alternatives))


def _alternatives(selector: str) -> list[str]:
    """``selector`` split at the ``||`` outside its quoted keys (it holds no NUL outside
    them: ``_application`` keeps such a selector whole)."""
    quoted = [m.group(0) for m in _QUOTED.finditer(selector)]
    parts = _QUOTED.sub("\0", selector).split("||")
    texts = []
    for part in parts:
        while "\0" in part:
            part = part.replace("\0", quoted.pop(0), 1)
        texts.append(part)
    return texts


def _valid(config: Mapping[str, Any]) -> bool:
    try:
        sentry_relay.validate_pii_config(orjson.dumps(config).decode())  # type: ignore[attr-defined]
    except (sentry_relay.RelayError, ValueError):  # type: ignore[attr-defined]
        return False
    return True


class PrunablePiiConfig:
    """A project's sentry-relay PII configuration (the dict ``convert_datascrubbing_config``
    returns), and its JSON for an event, without what cannot match the event."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        applications = config.get("applications")
        self._applications = tuple(_application(selector) for selector in applications) \
            if isinstance(applications, dict) and _valid(config) else None
        self._whole = orjson.dumps(self.config)
        self._pruned: dict[tuple[bool, ...], bytes] = {}

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

        kept = tuple(a.may_match(holds) for a in self._applications)
        pruned = self._pruned.get(kept)
        if pruned is None:
            if len(self._pruned) >= MAX_PRUNED_CONFIGS:
                self._pruned.clear()
            pruned = self._pruned[kept] = self._config_json(kept)
        return pruned

    def _config_json(self, kept: tuple[bool, ...]) -> bytes:
        if all(kept):
            return self._whole
        applications = self.config["applications"]
        return orjson.dumps({**self.config, "applications": {
            selector: rules for (selector, rules), keep in zip(applications.items(), kept,
                                                                strict=True) if keep}})
