"""Sentry's issue search syntax: one parser, a typed query, and two translators.

Used by the issue list (``GET /api/0/projects/{org}/{project}/issues/?query=...``) and an
issue's event list (``GET /api/0/issues/{id}/events/?query=...``)::

    q = parse_search(query, now)                  # pure; SearchSyntaxError → 400
    sql, args = issue_where(issue_filters(q))     # PostgreSQL ``issues``: psycopg %s
    sql, params = event_conditions(q)             # ClickHouse ``events``: {p0:String}
    needs_events(q)                               # False: ClickHouse can be skipped

Neither fragment is ever empty ("TRUE" / "1" when there is nothing to filter), both are
meant to be ANDed after the caller's own scope, and neither ever contains a value typed by
the user: every value is a bound parameter. The ClickHouse fragment never includes the
tenant scope — the caller always writes ``organization_id = {org:UInt64} AND project_id IN
{projects:Array(UInt64)} AND <fragment>`` itself (storage/clickhouse.py: no read without
a tenant scope).

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
* Anything else is free text: consecutive words form one phrase (Sentry's
  ``free_text_unquoted``), a quoted string is a phrase of its own; each phrase must occur,
  case-insensitively, in the title, message or culprit or in an exception value. ``*`` is
  literal there (the search is already a substring search).

Where each filter is answered:

* PostgreSQL ``issues`` only (``issue_filters``): ``is:``, times_seen, age/firstSeen,
  lastSeen, firstRelease. ``event_conditions`` leaves them out.
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
(quote it to search for the word); parentheses are ordinary free-text characters, as they
are there. On text keys an operator is part of the value (``release:>1.0`` looks for the
release ">1.0"), as Sentry does for tags.

Left out: ``is:assigned`` and the other assignment, bookmark, link and ownership keys,
``release:latest``, semver comparisons, quoted keys (``"a:b":c``), unix-timestamp dates,
numeric lists (``times_seen:[1, 2]``), negated exact dates (``!firstSeen:2026-01-01``),
operators on relative dates (``age:>-24h``) and wildcards in free text.

Errors::

    events.errors.BadRequest
    └── SearchSyntaxError   400   the query cannot be parsed; ``position`` is the offset
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, TypeAlias

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

#: Well-known event fields and their ``events`` columns.
EVENT_COLUMNS = {
    "level": "level", "release": "release", "environment": "environment", "dist": "dist",
    "platform": "platform", "transaction": "transaction", "logger": "logger",
    "server_name": "server_name", "title": "title", "culprit": "culprit",
    "user.id": "user_id", "user.email": "user_email", "user.username": "user_username",
    "user.ip": "user_ip", "sdk.name": "sdk_name", "sdk.version": "sdk_version",
    "event.type": "type",
}
EVENT_ARRAYS = {
    "error.type": "exception_types", "error.value": "exception_values",
    "stack.function": "frame_functions", "stack.module": "frame_modules",
    "stack.filename": "frame_filenames",
}
USER_COLUMNS = ("user_id", "user_email", "user_username", "user_ip")
#: Columns the free-text search looks in, and the array whose elements it also searches.
TEXT_COLUMNS = ("title", "message", "culprit")
TEXT_ARRAY = "exception_values"
#: Keys as typed → canonical name, for keys with several spellings.
KEY_ALIASES = {
    "firstRelease": "first_release", "first-release": "first_release",
    "timesSeen": "times_seen", "firstSeen": "first_seen", "age": "first_seen",
    "lastSeen": "last_seen", "event.timestamp": "timestamp",
}
DATE_FIELDS: tuple[DateField, ...] = ("first_seen", "last_seen", "timestamp")
#: Keys only the issues table answers (not valid after ``has:``).
ISSUE_ONLY_KEYS = ("is", "times_seen", "first_seen", "last_seen", "first_release")

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

    @property
    def like(self) -> str:
        """The LIKE pattern, ``%``, ``_`` and ``\\`` escaped (ClickHouse and PostgreSQL
        both take backslash as LIKE's escape character)."""
        return "%".join(_escape_like(part) for part in self.parts)


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


Filter: TypeAlias = TextFilter | HasFilter | StatusFilter | NumberFilter | DateFilter


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
        end = _word_end(query, pos)
        word = query[pos:end]
        if word.upper() in ("OR", "AND"):
            raise SearchSyntaxError(pos, f'boolean operators such as "{word}" are not'
                                    " supported in issue search: terms are always ANDed;"
                                    f' quote it ("{word}") to search for the word')
        return _Text(word, quoted=False), end
    negated, tag, name = match[1] == "!", match[2], match[3]
    key = Key(tag, is_tag=True) if tag is not None else _field_key(name)
    key_text = match[0][len(match[1]):]
    values, is_list, end = _read_values(query, match.end(), key_text)
    return _Term(key, key_text, negated, values, is_list, match.end()), end


def _field_key(name: str) -> Key:
    canonical = KEY_ALIASES.get(name, name)
    known = (canonical in EVENT_COLUMNS or canonical in EVENT_ARRAYS
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


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# --- terms → filters ------------------------------------------------------------------
def _filters(term: _Term, now: dt.datetime) -> list[Filter]:
    if term.key.is_tag:
        return [_text_filter(term)]
    builders: dict[str, Callable[[_Term, dt.datetime], list[Filter]]] = {
        "is": _status_filters, "has": _has_filters, "times_seen": _number_filters,
        "first_seen": _date_filters, "last_seen": _date_filters, "timestamp": _date_filters}
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
    statuses, substatuses = set(), set()
    for raw in term.values:
        value = _unescape(raw.text).lower()
        if value in IS_STATUS:
            statuses.add(IS_STATUS[value])
        elif value in IS_SUBSTATUS:
            substatuses.add(value)
        else:
            known = ", ".join([*IS_STATUS, *IS_SUBSTATUS])
            raise SearchSyntaxError(raw.position, f'unknown value {_shown(raw.text)} after'
                                    f' "is:"; expected one of {known}')
    return [StatusFilter(frozenset(statuses), frozenset(substatuses), term.negated)]


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


# --- PostgreSQL -----------------------------------------------------------------------
@dataclass(frozen=True)
class IssueFilters:
    """What the ``issues`` table answers, as plain data; ``issue_where`` makes SQL of it.
    Each tuple's items are ANDed."""

    statuses: tuple[StatusFilter, ...] = ()
    times_seen: tuple[NumberFilter, ...] = ()
    first_seen: tuple[DateFilter, ...] = ()
    last_seen: tuple[DateFilter, ...] = ()
    first_release: tuple[TextFilter, ...] = ()
    level: tuple[TextFilter, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not any((self.statuses, self.times_seen, self.first_seen, self.last_seen,
                        self.first_release, self.level))


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
        level=texts("level") if include_level else ())


def issue_where(filters: IssueFilters) -> tuple[str, list[Any]]:
    """A WHERE fragment over ``issues`` (psycopg ``%s`` placeholders, columns from a fixed
    list) and its arguments, in order; ``"TRUE"`` when nothing is filtered."""
    parts: list[str] = []
    args: list[Any] = []
    for s in filters.statuses:
        parts.append(_pg_status(s, args))
    for n in filters.times_seen:
        parts.append(f"times_seen {n.operator} %s")
        args.append(n.value)
    for column, dates in (("first_seen", filters.first_seen), ("last_seen", filters.last_seen)):
        for d in dates:
            parts.append(f"{column} {d.operator} %s")
            args.append(d.value)
    for column, texts in (("first_release", filters.first_release), ("level", filters.level)):
        for t in texts:
            parts.append(_pg_text(column, t, args))
    return " AND ".join(parts) or "TRUE", args


def _pg_status(s: StatusFilter, args: list[Any]) -> str:
    alternatives = []
    if s.statuses:
        alternatives.append("status = ANY(%s)")
        args.append(sorted(s.statuses))
    if s.substatuses:
        alternatives.append("substatus = ANY(%s)")  # NULL for resolved and ignored
        args.append(sorted(s.substatuses))
    matched = f"coalesce({' OR '.join(alternatives) or 'FALSE'}, FALSE)"
    return f"NOT {matched}" if s.negated else matched


def _pg_text(column: str, t: TextFilter, args: list[Any]) -> str:
    alternatives = []
    for value in t.values:
        # PostgreSQL text never holds NUL and psycopg refuses to send one: such a value
        # matches no issue (ClickHouse strings may hold NUL; there it is bound as is).
        if "\x00" in value.text:
            alternatives.append("FALSE")
        elif value.is_wildcard:
            alternatives.append(f"{column} LIKE %s")
            args.append(value.like)
        else:
            alternatives.append(f"{column} = %s")
            args.append(value.text)
    matched = f"coalesce({' OR '.join(alternatives)}, FALSE)"  # first_release may be NULL
    return f"NOT {matched}" if t.negated else matched


# --- ClickHouse -----------------------------------------------------------------------
@dataclass
class _Binder:
    """Names bound parameters ``{prefix}0``, ``{prefix}1``, … (mutable; one per call)."""

    prefix: str
    params: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any, ch_type: str) -> str:
        name = f"{self.prefix}{len(self.params)}"
        self.params[name] = value
        return "{" + name + ":" + ch_type + "}"


def event_conditions(q: SearchQuery, *, param_prefix: str = "p") -> tuple[str, dict[str, Any]]:
    """A ClickHouse WHERE fragment over ``events`` (AND-joined; ``"1"`` when nothing is
    filtered) and its server-side parameters, named ``{param_prefix}0``, ``…1``, ….

    Issue-only filters (``is:``, times_seen, age/firstSeen, lastSeen, firstRelease) are not
    part of it: the caller applies them with ``issue_filters``. The caller adds the tenant
    scope (organization_id, project_id) itself."""
    if not _PARAM_PREFIX.fullmatch(param_prefix):
        raise ValueError(f"param_prefix {param_prefix!r} must match {_PARAM_PREFIX.pattern}")
    binder = _Binder(param_prefix)
    parts = [c for f in q.filters if (c := _event_condition(f, binder)) is not None]
    parts.extend(_text_search(phrase, binder) for phrase in q.text)
    return " AND ".join(parts) or "1", binder.params


def needs_events(q: SearchQuery) -> bool:
    """Whether ``event_conditions(q)`` filters anything (else ClickHouse can be skipped)."""
    return bool(q.text) or any(_event_condition(f, _Binder("p")) is not None
                               for f in q.filters)


def _event_condition(f: Filter, binder: _Binder) -> str | None:
    if isinstance(f, TextFilter):
        return _ch_text(f, binder)
    if isinstance(f, HasFilter):
        condition = _ch_has(f.key, binder)
        return f"NOT {condition}" if f.negated else condition
    if isinstance(f, DateFilter) and f.field == "timestamp":
        micros = (f.value - EPOCH) // dt.timedelta(microseconds=1)
        return f"timestamp {f.operator} fromUnixTimestamp64Micro({binder.bind(micros, 'Int64')})"
    return None  # issue-only: status, times_seen, first_seen, last_seen


def _ch_text(f: TextFilter, binder: _Binder) -> str | None:
    key = f.key
    if key == Key("message"):
        alternatives = [_text_search(v.text, binder) for v in f.values]
    elif key.is_tag:
        tag = f"tags[{binder.bind(key.name, 'String')}]"
        alternatives = [_ch_match(tag, v, binder) for v in f.values]
    elif key.name in EVENT_COLUMNS:
        alternatives = [_ch_match(EVENT_COLUMNS[key.name], v, binder) for v in f.values]
    elif key.name in EVENT_ARRAYS:
        column = EVENT_ARRAYS[key.name]
        alternatives = [f"arrayExists(x -> {_ch_match('x', v, binder)}, {column})"
                        for v in f.values]
    else:
        return None  # first_release: issue-only
    matched = " OR ".join(alternatives)
    return f"NOT ({matched})" if f.negated else f"({matched})"


def _ch_match(expression: str, value: Pattern, binder: _Binder) -> str:
    if value.is_wildcard:
        return f"{expression} LIKE {binder.bind(value.like, 'String')}"
    return f"{expression} = {binder.bind(value.text, 'String')}"


def _ch_has(key: Key, binder: _Binder) -> str:
    if key.is_tag:
        return f"mapContains(tags, {binder.bind(key.name, 'String')})"
    if key == Key("user"):
        return "(" + " OR ".join(f"notEmpty({c})" for c in USER_COLUMNS) + ")"
    if key == Key("message"):
        return "notEmpty(message)"
    column = EVENT_COLUMNS.get(key.name) or EVENT_ARRAYS[key.name]
    return f"notEmpty({column})"


def _text_search(phrase: str, binder: _Binder) -> str:
    needle = binder.bind(phrase, "String")
    columns = [f"positionCaseInsensitiveUTF8({c}, {needle}) > 0" for c in TEXT_COLUMNS]
    array = f"arrayExists(v -> positionCaseInsensitiveUTF8(v, {needle}) > 0, {TEXT_ARRAY})"
    return "(" + " OR ".join([*columns, array]) + ")"

