"""Sentry's issue search syntax: one parser to a typed query (frozen dataclasses), and the
pure split of that query between the two stores that answer it.

Used by the issue list (``GET /api/0/projects/{org}/{project}/issues/?query=...``) and an
issue's event list (``GET /api/0/issues/{id}/events/?query=...``)::

    q = parse_search(query, now)          # pure; SearchSyntaxError → 400 naming the position
    issue_filters(q)                      # IssueFilters: what PostgreSQL ``issues`` answers
    event_filters(q)                      # EventFilters: what ClickHouse ``events`` answers
    needs_events(q)                       # False: ClickHouse can be skipped

No SQL here: ``storage/search_sql.py`` renders both to SQL with bound parameters only, and
the storage functions that run them add the tenant scope themselves.

Syntax (https://docs.sentry.io/concepts/search/; grammar of Sentry's
``src/sentry/api/event_search.py``). Terms are separated by spaces and ANDed:

* ``key:value``; ``!key:value`` negates. ``key:"a b \\"c\\""`` quotes; ``key:[a, "b c"]``
  matches any of the values (``!key:[a, b]``: none of them). A backslash escapes ``*``,
  ``"`` and ``\\``; any other backslash is literal.
* ``*`` anywhere in a value is a wildcard (LIKE, with ``%``, ``_`` and ``\\`` escaped);
  ``\\*`` is a literal asterisk. Matching is exact and case-sensitive, as in Sentry.
* Event fields: ``level release environment dist platform transaction logger server_name
  title culprit user.id user.email user.username user.ip sdk.name sdk.version event.type``
  (columns), ``error.type error.value stack.function stack.module stack.filename`` (any
  element of the array matches), ``message`` (same search as free text). Any other key,
  and ``tags[key]`` for any key, is a tag (Sentry treats unknown keys as tags).
* ``has:key`` / ``!has:key``: the field is non-empty, the tag is present; ``has:user``:
  any of the user fields is set.
* ``is:unresolved|resolved|ignored|archived|muted`` (status; archived and muted are
  ignored, events/lifecycle.py) and ``is:new|ongoing|regressed|escalating`` (substatus).
* ``times_seen:10``, ``times_seen:>10`` (also >=, <, <=, !=; suffixes k, m, b as Sentry).
* Dates: ``age`` and ``firstSeen`` (issue first seen), ``lastSeen``, ``timestamp`` /
  ``event.timestamp`` (the event's time). ``-24h`` means within the last 24 hours,
  ``+7d`` more than 7 days ago (units s, m, h, d, w); ``>2026-01-01``,
  ``<=2026-01-01T10:00:00`` (also >= and <; ISO 8601, UTC unless an offset is given);
  a bare date is that whole UTC day, a bare date-time the window from 5 minutes before to
  6 minutes after it (Sentry's ``parse_datetime_value``).
* ``firstRelease:1.0`` (also ``first-release``, ``first_release``).
* ``release:latest`` and ``firstRelease:latest``: the latest release of each project
  searched (Sentry's ``parse_release``). The parser keeps the word; the caller, which knows
  the projects, replaces it with versions (``with_latest_release``) before building SQL.
* Triage: ``assigned:me``, ``assigned:#team-slug``, ``assigned:<username or e-mail>``,
  ``assigned:my_teams``, ``assigned:none``, lists (``assigned:[me, none]``); ``is:assigned``,
  ``is:unassigned``; ``bookmarks:me`` (or a username) and ``is:bookmarked``;
  ``subscribed:me``. Names are looked up in the organization searched only.
* Anything else is free text: consecutive words form one phrase (Sentry's
  ``free_text_unquoted``), a quoted string is a phrase of its own; each phrase must occur,
  case-insensitively, in the title, message or culprit or in an exception value. ``*`` is
  literal there (the search is already a substring search).

Where each filter is answered:

* PostgreSQL ``issues`` only (``issue_filters``): ``is:``, times_seen, age/firstSeen,
  lastSeen, firstRelease, and the triage terms. ``event_conditions`` leaves them out.
* ClickHouse ``events`` only (``event_conditions``): every other key, ``has:``, free text,
  and ``timestamp`` / ``event.timestamp`` (the event's ``timestamp`` column).
* Both: ``level`` (ClickHouse always, PostgreSQL with ``include_level=True``).

firstSeen/lastSeen are not mapped to an event's timestamp: they describe the issue (its
first and last event), and "issues first seen within 24h" is not "issues with an event
within 24h"; ``timestamp`` is the event-side date. ``level`` follows Sentry, which matches
it against events (an issue matches ``level:fatal`` if one of its events is fatal);
``issue_filters(q, include_level=True)`` also (or, for a caller that does not query
events, instead) filters ``issues.level``, the level of the issue's latest event.

Boolean operators are refused, as in Sentry's issue search (``allow_boolean=False``): a
standalone ``OR`` or ``AND``, in any case as in Sentry's grammar, is a SearchSyntaxError
(quote it to search for the word). Parentheses must balance, as in Sentry's grammar
(``free_parens``, ``paren_group``): a balanced group such as ``(a b)`` or ``f(x)`` is free
text, as Sentry's issue search treats a paren group without boolean operators; an unclosed
``(`` or a stray ``)`` is a SearchSyntaxError at its position. On text keys an operator is part of the value (``release:>1.0`` looks for the
release ">1.0"), as Sentry does for tags.

Left out: ``is:linked``, ``is:for_review``, ownership keys (``owner:``),
semver comparisons, quoted keys (``"a:b":c``), unix-timestamp dates,
numeric lists (``times_seen:[1, 2]``), negated exact dates (``!firstSeen:2026-01-01``),
operators on relative dates (``age:>-24h``) and wildcards in free text.

Errors::

    events.errors.BadRequest
    └── SearchSyntaxError   400   the query cannot be parsed; ``position`` is the offset
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Final, Literal, TypeAlias

from events.errors import BadRequest

#: Longer queries are refused: a search box query (URL-sized).
MAX_QUERY_CHARS = 8192
#: At most this many values in one query: each free-text word, each filter and each item
#: of a ``[list]`` counts one. One value makes at most ~300 characters of SQL (a free-text
#: search) and at most two bound parameters, so the SQL stays under 60 KB, far below
#: ClickHouse's max_query_size (256 KiB).
MAX_VALUES = 200
#: PostgreSQL ``times_seen`` is a bigint.
MAX_TIMES_SEEN = 2**63 - 1
#: Dates must fit ClickHouse's ``DateTime`` range (as events/stats.py); relative dates
#: further back than the epoch are clamped to it (no event or issue is older).
MIN_YEAR, MAX_YEAR = 1970, 2105
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

Operator: TypeAlias = Literal["=", "!=", ">", ">=", "<", "<="]
DateField: TypeAlias = Literal["first_seen", "last_seen", "timestamp"]

#: ``is:`` values: the issue status, or the substatus of an unresolved issue (Sentry's
#: ``STATUS_QUERY_CHOICES`` and ``SUBSTATUS_UPDATE_CHOICES``).
IS_STATUS = {"unresolved": "unresolved", "resolved": "resolved", "ignored": "ignored",
             "archived": "ignored", "muted": "ignored"}
IS_SUBSTATUS = ("new", "ongoing", "regressed", "escalating")

#: Well-known event fields: one value per event (storage/search_sql.py maps each to its
#: ``events`` column) ...
EVENT_FIELDS = frozenset({
    "level", "release", "environment", "dist", "platform", "transaction", "logger",
    "server_name", "title", "culprit", "user.id", "user.email", "user.username", "user.ip",
    "sdk.name", "sdk.version", "event.type"})
#: ... and fields with several values per event (any element matches).
ARRAY_FIELDS = frozenset({
    "error.type", "error.value", "stack.function", "stack.module", "stack.filename"})
#: Keys as typed → canonical name, for keys with several spellings.
KEY_ALIASES = {
    "firstRelease": "first_release", "first-release": "first_release",
    "timesSeen": "times_seen", "firstSeen": "first_seen", "age": "first_seen",
    "lastSeen": "last_seen", "event.timestamp": "timestamp",
    "assigned_to": "assigned", "assignee": "assigned",
}
DATE_FIELDS: tuple[DateField, ...] = ("first_seen", "last_seen", "timestamp")
#: Keys only the issues table answers (not valid after ``has:``).
ISSUE_ONLY_KEYS = ("is", "times_seen", "first_seen", "last_seen", "first_release",
                   "assigned", "bookmarks", "subscribed")
#: ``is:`` values about triage rather than status (Sentry's ``is:assigned``,
#: ``is:unassigned``; ``is:bookmarked`` is ``bookmarks:me``).
IS_TRIAGE = ("assigned", "unassigned", "bookmarked")

_OPERATORS: dict[str, Operator] = {o: o for o in ("=", "!=", ">", ">=", "<", "<=")}
_DATE_FIELDS: dict[str, DateField] = {f: f for f in DATE_FIELDS}
_NEGATED: dict[Operator, Operator] = {"=": "!=", "!=": "=", ">": "<=", ">=": "<",
                                      "<": ">=", "<=": ">"}
_WHITESPACE = " \t\r\n"
_FILTER_START = re.compile(r"(!?)(?:tags\[([a-zA-Z0-9_.:-]+)\]|([a-zA-Z0-9_.-]+)):")
_KEY = re.compile(r"tags\[([a-zA-Z0-9_.:-]+)\]|([a-zA-Z0-9_.-]+)")
_NUMBER = re.compile(r"(>=|<=|!=|>|<|=)?([0-9]{1,30}(?:\.[0-9]{1,30})?)([kmb]?)")
_NUMBER_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000}
_RELATIVE = re.compile(r"([+-])([0-9]{1,12})([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_ABSOLUTE = re.compile(r"(>=|<=|>|<)?([0-9]{4}-[0-9]{2}-[0-9]{2})"
                       r"(T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?"
                       r"(?:Z|[+-][0-9]{2}:[0-9]{2})?)?")
#: Sentry's window around a bare date-time (``parse_datetime_value``).
_EXACT_BEFORE, _EXACT_AFTER = dt.timedelta(minutes=5), dt.timedelta(minutes=6)
_PARAM_PREFIX = re.compile(r"[a-z_][a-z0-9_]{0,30}")


class SearchSyntaxError(BadRequest):
    """The query cannot be parsed; ``position`` is the 0-based offset of the bad part and
    ``problem`` says what was expected there."""

    code = "invalid_search"

    def __init__(self, position: int, problem: str) -> None:
        super().__init__(f"query position {position}: {problem}")
        self.position = position
        self.problem = problem


# --- the typed query ------------------------------------------------------------------
@dataclass(frozen=True)
class Pattern:
    """A value as the user meant it: literal pieces between ``*`` wildcards
    (``a*b`` → ``("a", "b")``, ``a\\*b`` → ``("a*b",)``)."""

    parts: tuple[str, ...]

    @property
    def is_wildcard(self) -> bool:
        return len(self.parts) > 1

    @property
    def text(self) -> str:
        """The value for an exact match (only meaningful when not a wildcard)."""
        return "*".join(self.parts)



@dataclass(frozen=True)
class Key:
    """A field by its canonical name (``level``, ``user.email``, ``first_release``), or a
    tag (``is_tag``) by its name as typed."""

    name: str
    is_tag: bool = False


@dataclass(frozen=True)
class TextFilter:
    """``key:value``: any of ``values`` matches; ``negated``: none does."""

    key: Key
    values: tuple[Pattern, ...]
    negated: bool = False


@dataclass(frozen=True)
class HasFilter:
    key: Key
    negated: bool = False


@dataclass(frozen=True)
class StatusFilter:
    """``is:``: issues with one of ``statuses`` or one of ``substatuses``; ``negated``:
    issues with neither."""

    statuses: frozenset[str] = frozenset()
    substatuses: frozenset[str] = frozenset()
    negated: bool = False


@dataclass(frozen=True)
class NumberFilter:
    field: Literal["times_seen"]
    operator: Operator
    value: int


@dataclass(frozen=True)
class DateFilter:
    field: DateField
    operator: Operator
    value: dt.datetime  # UTC


@dataclass(frozen=True)
class Person:
    """Whom a triage term names: ``me`` (the caller), ``my_teams`` (the caller's teams),
    ``none`` / ``any`` (nobody / anybody), or a ``user`` (username or e-mail) or ``team``
    (slug) of the organization searched."""

    kind: Literal["me", "my_teams", "none", "any", "user", "team"]
    name: str = ""


@dataclass(frozen=True)
class AssigneeFilter:
    """``assigned:``: issues assigned to any of ``people``; ``negated``: to none of them."""

    people: tuple[Person, ...]
    negated: bool = False


@dataclass(frozen=True)
class ViewerFilter:
    """``bookmarks:me`` / ``subscribed:me``: issues ``person`` bookmarked or follows."""

    relation: Literal["bookmarks", "subscribed"]
    person: Person
    negated: bool = False


TriageFilter: TypeAlias = AssigneeFilter | ViewerFilter
Filter: TypeAlias = (TextFilter | HasFilter | StatusFilter | NumberFilter | DateFilter
                     | AssigneeFilter | ViewerFilter)


@dataclass(frozen=True)
class SearchQuery:
    """Filters and free-text phrases, all ANDed."""

    filters: tuple[Filter, ...] = ()
    text: tuple[str, ...] = ()


# --- parsing --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Raw:
    """One value as typed: its text (quotes removed, escapes kept) and offset."""

    text: str
    quoted: bool
    position: int


@dataclass(frozen=True)
class _Text:
    """A free-text word, or a quoted phrase (escapes kept)."""

    text: str
    quoted: bool


@dataclass(frozen=True)
class _Term:
    """One ``key:value`` term."""

    key: Key
    key_text: str  # as typed, for messages: 'level:', 'tags[a]:'
    negated: bool
    values: tuple[_Raw, ...]
    is_list: bool
    position: int  # of the value


def parse_search(query: str, now: dt.datetime) -> SearchQuery:
    """Parse Sentry's issue search syntax (see the module docstring); relative dates count
    back from ``now`` (timezone-aware)."""
    if now.tzinfo is None:
        raise ValueError("parse_search needs a timezone-aware now")
    if len(query) > MAX_QUERY_CHARS:
        raise SearchSyntaxError(MAX_QUERY_CHARS, f"the query is {len(query)} characters long;"
                                f" at most {MAX_QUERY_CHARS} are allowed")
    filters: list[Filter] = []
    text: list[str] = []
    words: list[str] = []  # consecutive unquoted free-text words: one phrase
    now_utc = now.astimezone(dt.UTC)
    values, pos = 0, _skip_space(query, 0)
    while pos < len(query):
        term, end = _read_term(query, pos)
        values += len(term.values) if isinstance(term, _Term) else 1
        if values > MAX_VALUES:
            raise SearchSyntaxError(pos, f"at most {MAX_VALUES} values are allowed in a query"
                                    " (each word, filter and list item counts one)")
        if isinstance(term, _Text) and not term.quoted:
            words.append(term.text)
        else:
            _flush_words(words, text)
        if isinstance(term, _Text) and term.quoted and term.text:
            text.append(_unescape(term.text))
        if isinstance(term, _Term):
            filters.extend(_filters(term, now_utc))
        pos = _skip_space(query, end)
    _flush_words(words, text)
    return SearchQuery(tuple(filters), tuple(text))


def _flush_words(words: list[str], text: list[str]) -> None:
    if words:
        text.append(" ".join(_unescape(word) for word in words))
        words.clear()


def _skip_space(query: str, pos: int) -> int:
    while pos < len(query) and query[pos] in _WHITESPACE:
        pos += 1
    return pos


def _word_end(query: str, pos: int) -> int:
    while pos < len(query) and query[pos] not in _WHITESPACE:
        pos += 1
    return pos


def _read_term(query: str, pos: int) -> tuple[_Term | _Text, int]:
    """A ``key:value`` term, or free text: a quoted phrase or a word."""
    if query[pos] == '"':
        raw, end = _read_quoted(query, pos)
        return _Text(raw, quoted=True), end
    match = _FILTER_START.match(query, pos)
    if match is None:
        end = _free_text_end(query, pos)
        word = query[pos:end]
        _refuse_boolean_operators(word, pos)
        return _Text(word, quoted=False), end
    negated, tag, name = match[1] == "!", match[2], match[3]
    key = Key(tag, is_tag=True) if tag is not None else _field_key(name)
    key_text = match[0][len(match[1]):]
    values, is_list, end = _read_values(query, match.end(), key_text)
    return _Term(key, key_text, negated, values, is_list, match.end()), end


def _free_text_end(query: str, pos: int) -> int:
    """The end of an unquoted free-text word. Parentheses must balance, as in Sentry's
    grammar (``free_parens``, ``paren_group``); within them a space does not end the word,
    so ``(a b)`` is one piece of free text."""
    opened: list[int] = []
    end = pos
    while end < len(query) and (opened or query[end] not in _WHITESPACE):
        if query[end] == "(":
            opened.append(end)
        elif query[end] == ")":
            if not opened:
                raise SearchSyntaxError(end, 'this ")" closes no "("; quote the text'
                                        ' ("...") to search for a parenthesis')
            opened.pop()
        end += 1
    if opened:
        raise SearchSyntaxError(opened[-1], 'this "(" is never closed; close it with ")" or'
                                ' quote the text ("...") to search for a parenthesis')
    return end


def _refuse_boolean_operators(text: str, pos: int) -> None:
    for offset, word in _words_with_offsets(text):
        bare = word.strip("()")
        if bare.upper() in ("OR", "AND"):
            raise SearchSyntaxError(pos + offset + word.index(bare),
                                    f'boolean operators such as "{bare}" are not supported'
                                    " in issue search: terms are always ANDed; quote it"
                                    f' ("{bare}") to search for the word')


def _words_with_offsets(text: str) -> list[tuple[int, str]]:
    return [(m.start(), m.group()) for m in re.finditer(r"[^ \t\r\n]+", text)]


def _field_key(name: str) -> Key:
    canonical = KEY_ALIASES.get(name, name)
    known = (canonical in EVENT_FIELDS or canonical in ARRAY_FIELDS
             or canonical in ISSUE_ONLY_KEYS or canonical in DATE_FIELDS
             or canonical in ("has", "message"))
    return Key(canonical) if known else Key(name, is_tag=True)


def _read_quoted(query: str, start: int, may_follow: str = "") -> tuple[str, int]:
    """The text between the quote at ``start`` and its closing quote (escapes kept), and
    the offset after the closing quote; a space, the end or ``may_follow`` must come next."""
    pos = start + 1
    while pos < len(query):
        if query[pos] == "\\" and pos + 1 < len(query):
            pos += 2
            continue
        if query[pos] == '"':
            if pos + 1 < len(query) and query[pos + 1] not in _WHITESPACE + may_follow:
                expected = 'a space, "," or "]"' if may_follow else "a space"
                raise SearchSyntaxError(pos + 1, f"expected {expected} after the closing quote")
            return query[start + 1:pos], pos + 1
        pos += 1
    raise SearchSyntaxError(start, 'this quoted value has no closing quote (")')


def _read_values(query: str, pos: int, key_text: str) -> tuple[tuple[_Raw, ...], bool, int]:
    """The value(s) after ``key:``: quoted, a ``[list]``, or up to the next space."""
    if pos >= len(query) or query[pos] in _WHITESPACE:
        raise SearchSyntaxError(pos, f'expected a value after "{key_text}"')
    if query[pos] == '"':
        raw, end = _read_quoted(query, pos)
        return (_Raw(raw, True, pos),), False, end
    if query[pos] == "[":
        items, end = _read_list(query, pos, key_text)
        return items, True, end
    end = _word_end(query, pos)
    return (_Raw(query[pos:end], False, pos),), False, end


def _read_list(query: str, start: int, key_text: str) -> tuple[tuple[_Raw, ...], int]:
    items: list[_Raw] = []
    pos = _skip_space(query, start + 1)
    while pos < len(query):
        if query[pos] == '"':
            raw, end = _read_quoted(query, pos, may_follow=",]")
        else:
            end = pos
            while end < len(query) and query[end] not in _WHITESPACE + ",]":
                end += 1
            if end == pos:
                raise SearchSyntaxError(pos, f'expected a value in the list after "{key_text}"')
            raw = query[pos:end]
        items.append(_Raw(raw, query[pos] == '"', pos))
        pos = _skip_space(query, end)
        if pos < len(query) and query[pos] == "]":
            if pos + 1 < len(query) and query[pos + 1] not in _WHITESPACE:
                raise SearchSyntaxError(pos + 1, 'expected a space after "]"')
            return tuple(items), pos + 1
        if pos < len(query) and query[pos] != ",":
            raise SearchSyntaxError(pos, f'expected "," or "]" in the list after "{key_text}"')
        pos = _skip_space(query, pos + 1)
    raise SearchSyntaxError(start, f'expected "]" to close the list after "{key_text}"'
                            ' (quote a value that starts with "[")')


def _decode(raw: str, wildcards: bool) -> tuple[str, ...]:
    """Literal pieces of ``raw`` between unescaped ``*`` (when ``wildcards``); a backslash
    escapes ``*``, ``"`` and ``\\`` and is literal before anything else."""
    parts, current, pos = [], [], 0
    while pos < len(raw):
        char = raw[pos]
        if char == "\\" and pos + 1 < len(raw) and raw[pos + 1] in '*"\\':
            current.append(raw[pos + 1])
            pos += 2
            continue
        if char == "*" and wildcards:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        pos += 1
    parts.append("".join(current))
    return tuple(parts)


def _unescape(raw: str) -> str:
    return _decode(raw, wildcards=False)[0]


# --- terms → filters ------------------------------------------------------------------
def _filters(term: _Term, now: dt.datetime) -> list[Filter]:
    if term.key.is_tag:
        return [_text_filter(term)]
    builders: dict[str, Callable[[_Term, dt.datetime], list[Filter]]] = {
        "is": _status_filters, "has": _has_filters, "times_seen": _number_filters,
        "first_seen": _date_filters, "last_seen": _date_filters, "timestamp": _date_filters,
        "assigned": _assignee_filters, "bookmarks": _viewer_filters,
        "subscribed": _viewer_filters}
    build = builders.get(term.key.name)
    return [_text_filter(term)] if build is None else build(term, now)


def _text_filter(term: _Term) -> TextFilter:
    # message: is the free-text search, which has no wildcards.
    wildcards = term.key != Key("message")
    values = tuple(Pattern(_decode(raw.text, wildcards)) for raw in term.values)
    return TextFilter(term.key, values, term.negated)


def _single(term: _Term, what: str) -> _Raw:
    if term.is_list:
        raise SearchSyntaxError(term.position, f'"{term.key_text}" takes one {what}, not a list')
    return term.values[0]


def _status_filters(term: _Term, now: dt.datetime) -> list[Filter]:
    triage = _is_triage(term)
    if triage is not None:
        return [triage]
    statuses, substatuses = set(), set()
    for raw in term.values:
        value = _unescape(raw.text).lower()
        if value in IS_STATUS:
            statuses.add(IS_STATUS[value])
        elif value in IS_SUBSTATUS:
            substatuses.add(value)
        else:
            known = ", ".join([*IS_STATUS, *IS_SUBSTATUS, *IS_TRIAGE])
            raise SearchSyntaxError(raw.position, f'unknown value {_shown(raw.text)} after'
                                    f' "is:"; expected one of {known}')
    return [StatusFilter(frozenset(statuses), frozenset(substatuses), term.negated)]


def _is_triage(term: _Term) -> Filter | None:
    """``is:assigned``, ``is:unassigned``, ``is:bookmarked`` (None: a status term)."""
    values = [_unescape(raw.text).lower() for raw in term.values]
    if not any(v in IS_TRIAGE for v in values):
        return None
    if term.is_list:
        raise SearchSyntaxError(term.position, f'"is:{"/".join(IS_TRIAGE)}" take no list;'
                                ' write one "is:" term each')
    if values[0] == "bookmarked":
        return ViewerFilter("bookmarks", Person("me"), term.negated)
    if values[0] == "assigned":
        return AssigneeFilter((Person("any"),), term.negated)
    return AssigneeFilter((Person("none"),), term.negated)


def _person(raw: _Raw, *, teams: bool) -> Person:
    text = _unescape(raw.text)
    special = text.lower()
    if special in ("me", "none") or (teams and special in ("my_teams", "any")):
        return Person(special)  # type: ignore[arg-type]  # one of the literal kinds
    if teams and text.startswith("#") and len(text) > 1:
        return Person("team", text[1:])
    if not text or text.startswith("#"):
        raise SearchSyntaxError(raw.position, "expected me, none, my_teams, #team-slug or a"
                                f" username or e-mail; got {_shown(raw.text)}")
    return Person("user", text)


def _assignee_filters(term: _Term, now: dt.datetime) -> list[Filter]:
    """``assigned:me``, ``assigned:#team``, ``assigned:ada``, ``assigned:[me, none]``."""
    return [AssigneeFilter(tuple(_person(raw, teams=True) for raw in term.values),
                           term.negated)]


def _viewer_filters(term: _Term, now: dt.datetime) -> list[Filter]:
    """``bookmarks:me``, ``subscribed:ada`` (one user; ``none`` is not a bookmarker)."""
    raw = _single(term, "user")
    person = _person(raw, teams=False)
    if person.kind == "none":
        raise SearchSyntaxError(raw.position, f'"{term.key_text}" takes me or a username')
    relation: Literal["bookmarks", "subscribed"] = (
        "bookmarks" if term.key.name == "bookmarks" else "subscribed")
    return [ViewerFilter(relation, person, term.negated)]


def _has_filters(term: _Term, now: dt.datetime) -> list[Filter]:
    raw = _single(term, "field or tag name")
    match = None if raw.quoted else _KEY.fullmatch(raw.text)
    if match is None:
        raise SearchSyntaxError(raw.position, 'expected a field or tag name after "has:",'
                                f" such as has:user or has:tags[browser]; got {_shown(raw.text)}")
    if match[1] is not None:
        return [HasFilter(Key(match[1], is_tag=True), term.negated)]
    key = Key("user") if match[2] == "user" else _field_key(match[2])
    if key.name in ISSUE_ONLY_KEYS or key.name in ("has", "timestamp"):
        raise SearchSyntaxError(raw.position, f'"has:" applies to event fields and tags;'
                                f' "{match[2]}" is always set')
    return [HasFilter(key, term.negated)]


def _number_filters(term: _Term, now: dt.datetime) -> list[Filter]:
    raw = _single(term, "number")
    match = None if raw.quoted else _NUMBER.fullmatch(raw.text)
    value = Decimal(match[2]) * _NUMBER_SUFFIX[match[3]] if match else Decimal("0.5")
    if match is None or value != int(value):
        raise SearchSyntaxError(raw.position, f'expected a whole number after'
                                f' "{term.key_text}" such as 10, >10, <=5 or 1.5k (operators'
                                " >, >=, <, <=, !=; suffixes k, m, b); got"
                                f" {_shown(raw.text)}")
    if value > MAX_TIMES_SEEN:
        raise SearchSyntaxError(raw.position, f"{_shown(raw.text)} is too large: at most"
                                f" {MAX_TIMES_SEEN}")
    operator = _OPERATORS[match[1] or "="]
    return [NumberFilter("times_seen", _NEGATED[operator] if term.negated else operator,
                         int(value))]


def _date_filters(term: _Term, now: dt.datetime) -> list[Filter]:
    raw = _single(term, "date")
    date_field = _DATE_FIELDS[term.key.name]
    relative = None if raw.quoted else _RELATIVE.fullmatch(raw.text)
    if relative is not None:
        operator = _OPERATORS[">=" if relative[1] == "-" else "<="]
        when = _seconds_before(now, int(relative[2]) * _UNIT_S[relative[3]])
        return [DateFilter(date_field, _NEGATED[operator] if term.negated else operator, when)]
    operator_text, when, has_time = _absolute_date(term, raw)
    if operator_text:
        operator = _OPERATORS[operator_text]
        return [DateFilter(date_field, _NEGATED[operator] if term.negated else operator, when)]
    if term.negated:
        raise SearchSyntaxError(raw.position, "a negated exact date is not supported; use"
                                f' "{term.key_text}<{raw.text}" or "{term.key_text}>={raw.text}"')
    start, end = ((when - _EXACT_BEFORE, when + _EXACT_AFTER) if has_time
                  else (when, when + dt.timedelta(days=1)))
    return [DateFilter(date_field, ">=", start), DateFilter(date_field, "<", end)]


def _seconds_before(now: dt.datetime, seconds: int) -> dt.datetime:
    """``now`` minus ``seconds``, but not before the epoch (nothing stored is older, and a
    huge count such as -99999999999w must not overflow)."""
    if seconds >= (now - EPOCH).total_seconds():
        return EPOCH
    return now - dt.timedelta(seconds=seconds)


def _absolute_date(term: _Term, raw: _Raw) -> tuple[str, dt.datetime, bool]:
    """The operator ("" for none), the UTC date-time and whether a time was given."""
    match = None if raw.quoted else _ABSOLUTE.fullmatch(raw.text)
    when = None if match is None else _datetime(match[2] + (match[3] or ""))
    if match is None or when is None:
        raise SearchSyntaxError(raw.position, f'expected a date after "{term.key_text}": -24h'
                                " (within the last 24 hours) or +7d (more than 7 days ago),"
                                " units s, m, h, d, w; or an ISO 8601 date such as >2026-01-01"
                                f" or <=2026-01-01T10:00:00; got {_shown(raw.text)}")
    if not MIN_YEAR <= when.year <= MAX_YEAR:
        raise SearchSyntaxError(raw.position, f"expected a year from {MIN_YEAR} to {MAX_YEAR};"
                                f" got {_shown(raw.text)}")
    return match[1] or "", when, match[3] is not None


def _datetime(text: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:  # such as month 13: the shape was right, the date is not
        return None
    return parsed.astimezone(dt.UTC) if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _shown(text: str) -> str:
    return f'"{text}"' if len(text) <= 40 else f'"{text[:40]}..."'


# --- which store answers what ----------------------------------------------------------
@dataclass(frozen=True)
class IssueFilters:
    """What the ``issues`` table answers, as plain data (storage/search_sql.py renders it).
    Each tuple's items are ANDed."""

    statuses: tuple[StatusFilter, ...] = ()
    times_seen: tuple[NumberFilter, ...] = ()
    first_seen: tuple[DateFilter, ...] = ()
    last_seen: tuple[DateFilter, ...] = ()
    first_release: tuple[TextFilter, ...] = ()
    level: tuple[TextFilter, ...] = ()
    #: Assignee, bookmark and subscription terms (storage needs the caller for ``me``).
    triage: tuple[TriageFilter, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not any((self.statuses, self.times_seen, self.first_seen, self.last_seen,
                        self.first_release, self.level, self.triage))


def issue_filters(q: SearchQuery, *, include_level: bool = False) -> IssueFilters:
    """The filters of ``q`` that PostgreSQL's ``issues`` table answers; ``level`` only with
    ``include_level`` (see the module docstring: Sentry matches level against events)."""
    def texts(name: str) -> tuple[TextFilter, ...]:
        return tuple(f for f in q.filters
                     if isinstance(f, TextFilter) and f.key == Key(name))

    def dates(name: str) -> tuple[DateFilter, ...]:
        return tuple(f for f in q.filters if isinstance(f, DateFilter) and f.field == name)

    return IssueFilters(
        statuses=tuple(f for f in q.filters if isinstance(f, StatusFilter)),
        times_seen=tuple(f for f in q.filters if isinstance(f, NumberFilter)),
        first_seen=dates("first_seen"), last_seen=dates("last_seen"),
        first_release=texts("first_release"),
        level=texts("level") if include_level else (),
        triage=tuple(f for f in q.filters if isinstance(f, AssigneeFilter | ViewerFilter)))


EventFilter: TypeAlias = TextFilter | HasFilter | DateFilter


@dataclass(frozen=True)
class EventFilters:
    """What the ``events`` table answers: every filter but the issue-only ones (``is:``,
    times_seen, age/firstSeen, lastSeen, firstRelease), ``timestamp`` dates, and the
    free-text phrases; all ANDed."""

    filters: tuple[EventFilter, ...] = ()
    text: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.filters or self.text)


def event_filters(q: SearchQuery) -> EventFilters:
    kept: list[EventFilter] = []
    for f in q.filters:
        if (isinstance(f, TextFilter) and f.key != Key("first_release")) or isinstance(f, HasFilter) or (isinstance(f, DateFilter) and f.field == "timestamp"):
            kept.append(f)
    return EventFilters(tuple(kept), q.text)


def needs_events(q: SearchQuery) -> bool:
    """Whether the events table filters anything for ``q`` (else ClickHouse can be skipped)."""
    return not event_filters(q).is_empty


def in_environments(filters: EventFilters, environments: Sequence[str]) -> EventFilters:
    """``filters`` narrowed to events of any of ``environments`` (the stream's
    ``environment`` parameter); unchanged when there are none."""
    if not environments:
        return filters
    only = TextFilter(Key("environment"), tuple(Pattern((e,)) for e in environments))
    return EventFilters((*filters.filters, only), filters.text)


#: The release value Sentry reads as "the latest release" (a release cannot be named so).
LATEST_RELEASE: Final = "latest"
#: What ``latest`` becomes when the projects searched have no release: a version no release
#: has (Sentry refuses releases with control characters; a NUL matches no PostgreSQL text),
#: so the term matches nothing, as in Sentry.
NO_RELEASE: Final = Pattern(("\x00",))
_RELEASE_KEYS: Final = (Key("release"), Key("first_release"))


def uses_latest_release(q: SearchQuery) -> bool:
    """Whether ``q`` has ``release:latest`` or ``firstRelease:latest`` (then the caller
    looks the latest releases up and calls ``with_latest_release``)."""
    return any(isinstance(f, TextFilter) and f.key in _RELEASE_KEYS
               and Pattern((LATEST_RELEASE,)) in f.values for f in q.filters)


def with_latest_release(q: SearchQuery, versions: Sequence[str]) -> SearchQuery:
    """``q`` with ``latest`` among the release and first-release values replaced by
    ``versions`` (the latest release of each project searched), or by a value matching
    nothing when there are none."""
    latest = tuple(Pattern((v,)) for v in versions) or (NO_RELEASE,)

    def resolved(f: Filter) -> Filter:
        if not isinstance(f, TextFilter) or f.key not in _RELEASE_KEYS:
            return f
        values = [p for v in f.values for p in (latest if v == Pattern((LATEST_RELEASE,))
                                                   else (v,))]
        return replace(f, values=tuple(dict.fromkeys(values)))
    return replace(q, filters=tuple(resolved(f) for f in q.filters))
