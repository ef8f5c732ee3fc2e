"""Organization stats over outcomes: Sentry's ``GET /api/0/organizations/{org}/stats_v2/``.

The HTTP route reads the query string, and three steps answer it::

    query = parse_stats_query(params)                       # pure; StatsQueryError → 400
    rows = store.outcome_stats(org_id, project_ids, query)  # storage/clickhouse.py
    body = stats_response(query, rows)                      # pure; StatsQueryError → 400

Parameters and shapes follow Sentry's ``src/sentry/snuba/outcomes.py`` (``QueryDefinition``)
and ``src/sentry/snuba/sessions_v2.py`` (``get_constrained_date_range``,
``massage_sessions_result``, ``to_intervals``); what is left out is listed in
``parse_stats_query``.

Errors::

    ValueError
    └── StatsQueryError   400   a query-string parameter is missing, unknown or out of range
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sentry_relay.consts import DataCategory

from events.errors import BadRequest

#: Outcomes are stored per hour (ClickHouse ``outcomes.hour``): no finer interval exists.
MIN_INTERVAL_S = 3600
#: Sentry refuses intervals longer than a day, and ones that do not divide a day, so that
#: every interval starts on a UTC hour or day boundary (``get_constrained_date_range``).
MAX_INTERVAL_S = 86_400
#: Sentry's MIN_STATS_PERIOD (sentry/api/utils.py): an hour, the smallest stored bucket.
MIN_STATS_PERIOD_S = 3600
#: The longest period any interval can answer within MAX_INTERVALS (checked before date
#: arithmetic, so that ``statsPeriod=99999999w`` is refused rather than overflowing).
MAX_STATS_PERIOD_S = 1000 * 86_400
#: Dates outside ClickHouse's ``DateTime`` range (1970 to 2106) cannot match a row.
MIN_YEAR, MAX_YEAR = 1970, 2105
#: ClickHouse ``UInt64`` columns (project_id, key_id).
MAX_ID = 2**64 - 1
#: Sentry's ``MAX_POINTS``: a longer response is refused, not truncated.
MAX_INTERVALS = 1000
#: Snuba's row limit for outcome queries (``Limit(10000)`` in sentry/snuba/outcomes.py).
#: Sentry truncates silently; Crashray refuses, so that no total is ever short.
MAX_STATS_ROWS = 10_000

DEFAULT_INTERVAL = "1h"
#: When neither ``statsPeriod`` nor ``start``/``end`` is given.
DEFAULT_STATS_PERIOD = "24h"

#: ``sum(times_seen)`` is refused: Sentry's hourly table counts the outcomes it rolled up,
#: Crashray's SummingMergeTree keeps only quantities.
SUPPORTED_FIELDS = ("sum(quantity)",)
GROUP_BY_NAMES = ("outcome", "category", "project", "reason", "key_id")
#: Sentry's ``Outcome`` enum (sentry/utils/outcomes.py), by API name.
OUTCOME_NAMES = ("accepted", "filtered", "rate_limited", "invalid", "abuse",
                 "client_discard", "cardinality_limited")
#: Stored categories Sentry reports as ``error`` ("combine DEFAULT, ERROR, and SECURITY as
#: errors", outcomes.py ``CategoryDimension``): a filter on ``error`` matches all three,
#: and grouping by category sums them into one ``error`` group.
ERROR_CATEGORIES: tuple[str, ...] = tuple(sorted(
    c.api_name() for c in DataCategory.error_categories()))  # type: ignore[no-untyped-call]

_DURATION = re.compile(r"([0-9]{1,12})([smhdw]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}

#: One row of ``ClickHouseStore.outcome_stats``: interval start, the group's values in
#: ``StatsQuery.group_by`` order (project and key_id as int), and sum(quantity).
StatsRow = tuple[dt.datetime, tuple[str | int, ...], int]


class StatsQueryError(BadRequest):
    """A stats query parameter the API refuses; the message names it, the value seen and
    what is expected."""

    def __init__(self, parameter: str, value: str | None, expected: str) -> None:
        shown = value if value is None or len(value) <= 80 else value[:80] + "..."
        seen = "is missing" if shown is None else f"is {shown!r}"
        super().__init__(f"query parameter {parameter!r} {seen}: {expected}")
        self.parameter = parameter
        self.value = value


@dataclass(frozen=True)
class StatsQuery:
    """What to count: ``[start, end)`` cut into ``interval_s`` intervals, both ends aligned
    to the interval (UTC). Empty filters match everything the caller may see."""

    fields: tuple[str, ...]
    group_by: tuple[str, ...]
    start: dt.datetime
    end: dt.datetime
    interval_s: int
    project_ids: tuple[int, ...] = ()
    categories: tuple[str, ...] = ()  # stored names: "error" already widened
    outcomes: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    key_ids: tuple[int, ...] = ()

    def interval_starts(self) -> list[dt.datetime]:
        step = dt.timedelta(seconds=self.interval_s)
        count = int((self.end - self.start) / step)
        return [self.start + n * step for n in range(count)]


def _values(params: Sequence[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in params if key == name]


def _last(params: Sequence[tuple[str, str]], name: str) -> str | None:
    """The last value, as Django's ``QueryDict.get`` answers Sentry; an empty value counts
    as not given (Sentry tests ``params.get("start")`` for truth)."""
    values = [v for v in _values(params, name) if v]
    return values[-1] if values else None


def _unique(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def duration_s(parameter: str, value: str) -> int:
    """Seconds in a Sentry period such as ``24h``, ``14d`` or ``3600``
    (``parse_stats_period``: units s, m, h, d, w; none means seconds)."""
    match = _DURATION.fullmatch(value)
    if match is None:
        raise StatsQueryError(parameter, value,
                              "expected a number and a unit s, m, h, d or w, such as 24h or 14d")
    return int(match[1]) * _UNIT_S[match[2]]


def parse_interval_s(value: str) -> int:
    seconds = duration_s("interval", value)
    if seconds < MIN_INTERVAL_S or seconds % MIN_INTERVAL_S:
        raise StatsQueryError("interval", value, "outcomes are hourly: the interval must be a"
                              " whole number of hours, such as 1h, 6h or 1d")
    if seconds > MAX_INTERVAL_S or MAX_INTERVAL_S % seconds:
        raise StatsQueryError("interval", value, "the interval must divide one day: 1h, 2h,"
                              " 3h, 4h, 6h, 8h, 12h or 1d")
    return seconds


def parse_datetime(parameter: str, value: str) -> dt.datetime:
    """ISO 8601; without an offset the time is UTC, as in Sentry."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise StatsQueryError(parameter, value, "expected an ISO 8601 date and time, such as"
                              " 2026-11-27T13:00:00Z") from None
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise StatsQueryError(parameter, value, f"expected a year from {MIN_YEAR} to {MAX_YEAR}")
    return parsed.astimezone(dt.UTC) if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def requested_range(params: Sequence[tuple[str, str]], now: dt.datetime
                    ) -> tuple[dt.datetime, dt.datetime]:
    """``statsPeriod`` back from ``now``, else ``start`` and ``end``, else the default
    period. Like Sentry, ``statsPeriod`` wins over ``start``/``end`` and a start in the
    future is moved back to ``now``."""
    period, start_raw, end_raw = (_last(params, n) for n in ("statsPeriod", "start", "end"))
    if period is None and start_raw is None and end_raw is None:
        period = DEFAULT_STATS_PERIOD
    if period is not None:
        seconds = duration_s("statsPeriod", period)
        if seconds < MIN_STATS_PERIOD_S:
            raise StatsQueryError("statsPeriod", period, "outcomes are hourly: the period"
                                  " must be at least 1h")
        if seconds > MAX_STATS_PERIOD_S:
            raise StatsQueryError("statsPeriod", period, "the period can be at most 1000d")
        return now - dt.timedelta(seconds=seconds), now
    if start_raw is None or end_raw is None:
        missing = "start" if start_raw is None else "end"
        raise StatsQueryError(missing, None, "give both start and end, or statsPeriod")
    start, end = parse_datetime("start", start_raw), parse_datetime("end", end_raw)
    if start >= end:
        raise StatsQueryError("end", end_raw, f"must be after start ({start_raw})")
    return min(start, now), end


def aligned_range(start: dt.datetime, end: dt.datetime, interval_s: int
                  ) -> tuple[dt.datetime, dt.datetime]:
    """``start`` rounded down and ``end`` rounded up to the interval, as Sentry's
    ``to_intervals`` does (09:30 to 11:30 by 1h is 09:00 to 12:00)."""
    start_s = math.floor(start.timestamp()) // interval_s * interval_s
    end_s = -(-math.ceil(end.timestamp()) // interval_s) * interval_s
    return (dt.datetime.fromtimestamp(start_s, dt.UTC),
            dt.datetime.fromtimestamp(max(end_s, start_s + interval_s), dt.UTC))


def parse_fields(params: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    fields = _unique(_values(params, "field"))
    if not fields:
        raise StatsQueryError("field", None, "at least one field is required: sum(quantity)")
    for field in fields:
        if field not in SUPPORTED_FIELDS:
            raise StatsQueryError("field", field, "the supported field is sum(quantity)"
                                  " (sum(times_seen) is not kept by Crashray)")
    return fields


def parse_group_by(params: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    group_by = _unique(_values(params, "groupBy"))
    for name in group_by:
        if name not in GROUP_BY_NAMES:
            raise StatsQueryError("groupBy", name, f"expected one of {', '.join(GROUP_BY_NAMES)}")
    return group_by


def parse_categories(params: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """Stored category names to match; ``error`` widened to ERROR_CATEGORIES."""
    stored: list[str] = []
    for value in _values(params, "category"):
        category = DataCategory.parse(value)  # type: ignore[no-untyped-call]
        if category is None:
            raise StatsQueryError("category", value, "expected a data category such as"
                                  " error, transaction, attachment or session")
        name = str(category.api_name())
        stored.extend(ERROR_CATEGORIES if name == "error" else (name,))
    categories = _unique(stored)
    # Attachments count bytes, every other category counts items (outcomes.py).
    if "attachment" in categories and len(categories) > 1:
        raise StatsQueryError("category", ",".join(_values(params, "category")),
                              "attachment (counted in bytes) cannot be combined with"
                              " other categories")
    return categories


def parse_outcomes(params: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    outcomes = []
    for value in _values(params, "outcome"):
        if value.lower() not in OUTCOME_NAMES:
            raise StatsQueryError("outcome", value, f"expected one of {', '.join(OUTCOME_NAMES)}")
        outcomes.append(value.lower())
    return _unique(outcomes)


def parse_ids(params: Sequence[tuple[str, str]], parameter: str, all_marker: str | None = None
              ) -> tuple[int, ...]:
    """Ids in repeated ``parameter``; empty when none is given or ``all_marker`` is."""
    values = _values(params, parameter)
    if all_marker is not None and all_marker in values:
        return ()
    ids = []
    for value in values:
        if not (len(value) <= 20 and value.isascii() and value.isdigit() and int(value) <= MAX_ID):
            marker = f" (or {all_marker} for all)" if all_marker else ""
            raise StatsQueryError(parameter, value, f"expected a numeric id{marker}")
        ids.append(int(value))
    return tuple(dict.fromkeys(ids))


def parse_stats_query(params: Sequence[tuple[str, str]], now: dt.datetime | None = None
                      ) -> StatsQuery:
    """The query of a stats_v2 request; ``params`` are the query string's pairs in order
    (keys may repeat). ``now`` defaults to the current time.

    Left out of Sentry's contract: ``sum(times_seen)``, ``statsPeriodStart``/
    ``statsPeriodEnd``, minute intervals (outcomes are hourly here), and the ``reason``
    alias ``spike_protection`` (Crashray has no spike protection)."""
    fields, group_by = parse_fields(params), parse_group_by(params)
    categories = parse_categories(params)
    if not categories and "category" not in group_by:
        # Sentry: "Query must have category as groupby or filter" — sums across
        # categories would add attachment bytes to event counts.
        raise StatsQueryError("category", None, "filter with category=... or give"
                              " groupBy=category")
    interval_s = parse_interval_s(_last(params, "interval") or DEFAULT_INTERVAL)
    start, end = aligned_range(*requested_range(params, now or dt.datetime.now(dt.UTC)),
                               interval_s)
    intervals = int((end - start).total_seconds()) // interval_s
    if intervals > MAX_INTERVALS:
        raise StatsQueryError("interval", _last(params, "interval") or DEFAULT_INTERVAL,
                              f"{start:%Y-%m-%dT%H:%M:%SZ} to {end:%Y-%m-%dT%H:%M:%SZ} makes"
                              f" {intervals} intervals, more than {MAX_INTERVALS}; use a"
                              " larger interval or a shorter period")
    return StatsQuery(fields=fields, group_by=group_by, start=start, end=end,
                      interval_s=interval_s, project_ids=parse_ids(params, "project", "-1"),
                      categories=categories, outcomes=parse_outcomes(params),
                      reasons=_unique(_values(params, "reason")),
                      key_ids=parse_ids(params, "key_id"))


def isoformat_z(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _group_order(total: int, key: tuple[str | int, ...]) -> tuple[int, tuple[tuple[int, str], ...]]:
    # Each position of a key holds one type (project and key_id ints, the rest strings).
    return -total, tuple((v, "") if isinstance(v, int) else (0, v) for v in key)


def series_by_group(query: StatsQuery, rows: Sequence[StatsRow]
                    ) -> dict[tuple[str | int, ...], list[int]]:
    """One zero-filled series per group; rows of the same group and interval add up."""
    index_of = {start: n for n, start in enumerate(query.interval_starts())}
    series: dict[tuple[str | int, ...], list[int]] = {}
    if not query.group_by:
        # An ungrouped sum is one group even over no rows, as SQL's sum() is.
        series[()] = [0] * len(index_of)
    for start, key, quantity in rows:
        n = index_of.get(start.astimezone(dt.UTC))
        if n is None:
            raise ValueError(f"stats row at {start.isoformat()} is not an interval start of"
                             f" {isoformat_z(query.start)}..{isoformat_z(query.end)}"
                             f" by {query.interval_s} s")
        series.setdefault(tuple(key), [0] * len(index_of))[n] += int(quantity)
    return series


def stats_response(query: StatsQuery, rows: Sequence[StatsRow]) -> dict[str, Any]:
    """Sentry's stats_v2 body: ``start``, ``end``, ``intervals`` and ``groups``, each
    group with ``by``, ``totals`` and ``series`` per field; groups by total, largest first,
    then by their values."""
    if len(rows) > MAX_STATS_ROWS:
        raise StatsQueryError("groupBy", ",".join(query.group_by), f"more than"
                              f" {MAX_STATS_ROWS} (group, interval) rows; filter by project,"
                              " category or outcome, group by less, or use a larger interval")
    series = series_by_group(query, rows)
    ordered = sorted(series.items(), key=lambda item: _group_order(sum(item[1]), item[0]))
    return {
        "start": isoformat_z(query.start),
        "end": isoformat_z(query.end),
        "intervals": [isoformat_z(s) for s in query.interval_starts()],
        "groups": [{"by": dict(zip(query.group_by, key, strict=True)),
                    "totals": {f: sum(values) for f in query.fields},
                    "series": {f: list(values) for f in query.fields}}
                   for key, values in ordered],
    }
