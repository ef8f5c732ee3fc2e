"""The issue search (events/search.py's typed query) rendered to SQL, for the storage
functions that run it.

    where, args = issue_where(issue_filters(q))       # PostgreSQL ``issues``: psycopg %s
    where, params = event_where(event_filters(q))     # ClickHouse ``events``: {p0:String}

Neither fragment is ever empty ("TRUE" / "1" when there is nothing to filter), neither
ever contains a value typed by the user (every value is a bound parameter; column names
come from the fixed tables below), and neither includes the tenant scope: these fragments
never leave ``storage/`` — the functions of storage/issues.py and storage/clickhouse.py
that take a typed filter write the scope (organization, projects) themselves and AND the
fragment after it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Final

from events.errors import BadRequest
from events.search import (
    ARRAY_FIELDS,
    EPOCH,
    EVENT_FIELDS,
    AssigneeFilter,
    EventFilter,
    EventFilters,
    HasFilter,
    IssueFilters,
    Key,
    Pattern,
    Person,
    StatusFilter,
    TextFilter,
    TriageFilter,
)

#: Event fields and their ``events`` columns (every name of events.search.EVENT_FIELDS).
EVENT_COLUMNS: Final = {
    "level": "level", "release": "release", "environment": "environment", "dist": "dist",
    "platform": "platform", "transaction": "transaction", "logger": "logger",
    "server_name": "server_name", "title": "title", "culprit": "culprit",
    "user.id": "user_id", "user.email": "user_email", "user.username": "user_username",
    "user.ip": "user_ip", "sdk.name": "sdk_name", "sdk.version": "sdk_version",
    "event.type": "type",
}
#: Array fields and their ``events`` columns (events.search.ARRAY_FIELDS).
EVENT_ARRAYS: Final = {
    "error.type": "exception_types", "error.value": "exception_values",
    "stack.function": "frame_functions", "stack.module": "frame_modules",
    "stack.filename": "frame_filenames",
}
USER_COLUMNS: Final = ("user_id", "user_email", "user_username", "user_ip")
#: Columns the free-text search looks in, and the array whose elements it also searches.
TEXT_COLUMNS: Final = ("title", "message", "culprit")
TEXT_ARRAY: Final = "exception_values"
_PARAM_PREFIX: Final = re.compile(r"[a-z_][a-z0-9_]{0,30}")

if set(EVENT_COLUMNS) != EVENT_FIELDS or set(EVENT_ARRAYS) != ARRAY_FIELDS:
    raise ImportError("storage/search_sql.py must map every field events/search.py knows")


def like_pattern(value: Pattern) -> str:
    """The LIKE pattern of a wildcard value: ``%``, ``_`` and ``\\`` escaped (ClickHouse and
    PostgreSQL both take backslash as LIKE's escape character), ``*`` → ``%``."""
    return "%".join(part.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                    for part in value.parts)


@dataclass(frozen=True)
class SearchViewer:
    """Who searches, for the triage terms: ``me`` is ``user_id`` (None: an organization
    token, which is nobody), and names are looked up among ``organization_id``'s members
    and teams only, so a search cannot reach another tenant's users."""

    organization_id: int
    user_id: int | None


# --- PostgreSQL -----------------------------------------------------------------------
def issue_where(filters: IssueFilters, viewer: SearchViewer | None = None
                ) -> tuple[str, list[Any]]:
    """A WHERE fragment over ``issues`` (psycopg ``%s`` placeholders, columns from a fixed
    list) and its arguments, in order; ``"TRUE"`` when nothing is filtered. Triage terms
    (``assigned:``, ``bookmarks:``, ``subscribed:``) need the ``viewer``."""
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
    for f in filters.triage:
        if viewer is None:
            raise BadRequest("assigned:, bookmarks: and subscribed: are answered by the issue"
                             " stream only (they need the organization and the caller)")
        parts.append(_pg_triage(f, viewer, args))
    return " AND ".join(parts) or "TRUE", args


#: Users who are members of an organization (first %s), by username or e-mail (then two).
_MEMBER_BY_NAME: Final = (
    "SELECT u.id FROM users u JOIN organization_members m ON m.user_id = u.id"
    " WHERE m.organization_id = %s AND (u.username = %s OR lower(u.email) = lower(%s))")
_UNASSIGNED: Final = "(assignee_user_id IS NULL AND assignee_team_id IS NULL)"


def _pg_triage(f: TriageFilter, viewer: SearchViewer, args: list[Any]) -> str:
    if isinstance(f, AssigneeFilter):
        matched = " OR ".join(_pg_assignee(p, viewer, args) for p in f.people)
    else:
        table = "issue_bookmarks" if f.relation == "bookmarks" else "issue_subscriptions"
        active = " AND is_active" if f.relation == "subscribed" else ""
        matched = (f"id IN (SELECT issue_id FROM {table} WHERE user_id IN"
                   f" ({_pg_user_ids(f.person, viewer, args)}){active})")
    matched = f"coalesce({matched}, FALSE)"
    return f"NOT {matched}" if f.negated else matched


def _pg_assignee(p: Person, viewer: SearchViewer, args: list[Any]) -> str:
    if p.kind == "none":
        return _UNASSIGNED
    if p.kind == "any":
        return f"NOT {_UNASSIGNED}"
    if p.kind == "my_teams":
        args.extend([_me(viewer), viewer.organization_id])
        return ("assignee_team_id IN (SELECT tm.team_id FROM team_members tm JOIN"
                " organization_members m ON m.id = tm.member_id WHERE m.user_id = %s"
                " AND m.organization_id = %s)")
    if p.kind == "team":
        args.extend([viewer.organization_id, p.name])
        return "assignee_team_id IN (SELECT id FROM teams WHERE organization_id = %s AND slug = %s)"
    return f"assignee_user_id IN ({_pg_user_ids(p, viewer, args)})"


def _pg_user_ids(p: Person, viewer: SearchViewer, args: list[Any]) -> str:
    """A SELECT of the user ids ``p`` names (``me`` or a member's name)."""
    if p.kind == "me":
        args.append(_me(viewer))
        return "SELECT %s::bigint"
    args.extend([viewer.organization_id, p.name, p.name])
    return _MEMBER_BY_NAME


def _me(viewer: SearchViewer) -> int:
    if viewer.user_id is None:
        raise BadRequest("\"me\" in a search names the user asking, and an organization"
                         " token is no user; name the user (assigned:<username>) instead")
    return viewer.user_id


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
            args.append(like_pattern(value))
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


def event_where(filters: EventFilters, *, param_prefix: str = "p"
                ) -> tuple[str, dict[str, Any]]:
    """A ClickHouse WHERE fragment over ``events`` (AND-joined; ``"1"`` when nothing is
    filtered) and its server-side parameters, named ``{param_prefix}0``, ``…1``, …"""
    if not _PARAM_PREFIX.fullmatch(param_prefix):
        raise ValueError(f"param_prefix {param_prefix!r} must match {_PARAM_PREFIX.pattern}")
    binder = _Binder(param_prefix)
    parts = [_event_condition(f, binder) for f in filters.filters]
    parts.extend(_text_search(phrase, binder) for phrase in filters.text)
    return " AND ".join(parts) or "1", binder.params


def _event_condition(f: EventFilter, binder: _Binder) -> str:
    if isinstance(f, TextFilter):
        return _ch_text(f, binder)
    if isinstance(f, HasFilter):
        condition = _ch_has(f.key, binder)
        return f"NOT {condition}" if f.negated else condition
    micros = (f.value - EPOCH) // dt.timedelta(microseconds=1)  # a ``timestamp`` date
    return f"timestamp {f.operator} fromUnixTimestamp64Micro({binder.bind(micros, 'Int64')})"


def _ch_text(f: TextFilter, binder: _Binder) -> str:
    key = f.key
    if key == Key("message"):
        alternatives = [_text_search(v.text, binder) for v in f.values]
    elif key.is_tag:
        tag = f"tags[{binder.bind(key.name, 'String')}]"
        alternatives = [_ch_match(tag, v, binder) for v in f.values]
    elif key.name in EVENT_COLUMNS:
        alternatives = [_ch_match(EVENT_COLUMNS[key.name], v, binder) for v in f.values]
    else:
        column = EVENT_ARRAYS[key.name]
        alternatives = [f"arrayExists(x -> {_ch_match('x', v, binder)}, {column})"
                        for v in f.values]
    matched = " OR ".join(alternatives)
    return f"NOT ({matched})" if f.negated else f"({matched})"


def _ch_match(expression: str, value: Pattern, binder: _Binder) -> str:
    if value.is_wildcard:
        return f"{expression} LIKE {binder.bind(like_pattern(value), 'String')}"
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
