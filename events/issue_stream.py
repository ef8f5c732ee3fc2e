"""The issue stream's query string (Sentry's ``GET …/issues/``): pure parsing and the
cursor ``Link`` header. The search itself is events/search.py; the issues router runs it.

Parameters: ``query`` (Sentry's search syntax; absent means ``is:unresolved``, as Sentry's
API assumes; present but empty means everything), ``sort`` (``date`` last seen, ``new``
first seen, ``freq`` events, ``user`` users), ``statsPeriod`` (``24h``, ``14d``, …: only
issues seen within it) or ``start``/``end`` (ISO 8601), ``environment`` (repeatable),
``limit`` (1 … the page cap), ``cursor`` (Sentry's ``<value>:<offset>:<is_prev>``; only the
offset is used).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from events.errors import BadRequest
from events.search import EPOCH, MAX_YEAR, MIN_YEAR

SORTS = ("date", "new", "freq", "user")
_PERIOD = re.compile(r"^(\d{1,5})([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_CURSOR = re.compile(r"^(-?\d+(?:\.\d+)?):(\d{1,9}):([01])$")


class StreamQueryError(BadRequest):
    code = "invalid_stream_query"


@dataclass(frozen=True)
class StreamRequest:
    query: str
    sort: str
    limit: int
    offset: int
    since: dt.datetime | None
    until: dt.datetime | None
    environments: tuple[str, ...]


def _last(params: Sequence[tuple[str, str]], name: str) -> str | None:
    values = [v for k, v in params if k == name]
    return values[-1] if values else None


def _time(name: str, value: str) -> dt.datetime:
    """An ISO 8601 time in the years ClickHouse can store (as events/search.py and
    events/stats.py), UTC unless it names an offset."""
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise StreamQueryError(f"{name} {value[:40]!r} is not an ISO 8601 time") from None
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise StreamQueryError(f"{name} {value[:40]!r}: expected a year from {MIN_YEAR} to"
                               f" {MAX_YEAR}")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _period_start(now: dt.datetime, seconds: int) -> dt.datetime:
    """``now`` minus the period, but not before the epoch: nothing stored is older, and a
    period such as 99999w must not overflow the calendar."""
    if seconds >= (now - EPOCH).total_seconds():
        return EPOCH
    return now - dt.timedelta(seconds=seconds)


def parse_page(params: Sequence[tuple[str, str]], default_limit: int, max_limit: int
               ) -> tuple[int, int]:
    """``limit`` (1 … ``max_limit``) and the offset of Sentry's ``cursor`` parameter, for
    every paginated list."""
    raw_limit = _last(params, "limit")
    if raw_limit is not None and (not raw_limit.isdigit() or not int(raw_limit) >= 1):
        raise StreamQueryError(f"limit {raw_limit!r} must be a whole number from 1 to"
                               f" {max_limit}")
    limit = min(int(raw_limit) if raw_limit else default_limit, max_limit)
    cursor = _last(params, "cursor")
    offset = 0
    if cursor:
        match = _CURSOR.match(cursor)
        if match is None:
            raise StreamQueryError(f"cursor {cursor!r} is not one this API gave out")
        offset = int(match[2])
    return limit, offset


def parse_stream_request(params: Sequence[tuple[str, str]], default_limit: int,
                         max_limit: int, now: dt.datetime) -> StreamRequest:
    query = _last(params, "query")
    sort = _last(params, "sort") or "date"
    if sort not in SORTS:
        raise StreamQueryError(f"sort {sort[:40]!r} is not one of {', '.join(SORTS)}")
    limit, offset = parse_page(params, default_limit, max_limit)
    since = until = None
    period = _last(params, "statsPeriod")
    if period:
        match = _PERIOD.match(period)
        if match is None:
            raise StreamQueryError(f"statsPeriod {period[:40]!r}: expected a number and a unit,"
                                   " e.g. 24h or 14d")
        since = _period_start(now, int(match[1]) * _UNIT_S[match[2]])
    else:
        start, end = _last(params, "start"), _last(params, "end")
        if (start is None) != (end is None):
            raise StreamQueryError("give both start and end, or statsPeriod")
        if start is not None and end is not None:
            since, until = _time("start", start), _time("end", end)
            if since >= until:
                raise StreamQueryError("start must be before end")
    environments = tuple(v for k, v in params if k == "environment" and v)
    return StreamRequest("is:unresolved" if query is None else query, sort, limit, offset,
                         since, until, environments)


def link_header(url: str, params: Sequence[tuple[str, str]], offset: int, limit: int,
                has_more: bool) -> str:
    """Sentry's pagination header: a previous and a next cursor, each saying whether it
    has results."""
    kept = [(k, v) for k, v in params if k != "cursor"]

    def link(rel: str, cursor: str, results: bool) -> str:
        query = urlencode([*kept, ("cursor", cursor)])
        return (f'<{url}?{query}>; rel="{rel}"; results="{str(results).lower()}";'
                f' cursor="{cursor}"')

    previous = f"0:{max(offset - limit, 0)}:1"
    return ", ".join([link("previous", previous, offset > 0),
                      link("next", f"0:{offset + limit}:0", has_more)])
