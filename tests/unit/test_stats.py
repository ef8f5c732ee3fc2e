"""Organization stats (events/stats.py): Sentry's stats_v2 query string and response body,
from hand-made rows (no ClickHouse; tests/integration/test_outcome_stats.py runs the SQL)."""

from __future__ import annotations

import datetime as dt

import pytest

from events.stats import (
    MAX_INTERVALS,
    MAX_STATS_ROWS,
    StatsQuery,
    StatsQueryError,
    StatsRow,
    parse_stats_query,
    stats_response,
)

NOW = dt.datetime(2026, 11, 28, 13, 37, 12, tzinfo=dt.UTC)
BASE = [("field", "sum(quantity)"), ("groupBy", "category")]


def at(hour: int, day: int = 27) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, tzinfo=dt.UTC)


def parse(*pairs: tuple[str, str], base: bool = True) -> StatsQuery:
    return parse_stats_query([*(BASE if base else []), *pairs], now=NOW)


def refused(*pairs: tuple[str, str], base: bool = True) -> StatsQueryError:
    with pytest.raises(StatsQueryError) as caught:
        parse(*pairs, base=base)
    return caught.value


def hours_query(hours: int, group_by: tuple[str, ...] = ("outcome",)) -> StatsQuery:
    return StatsQuery(fields=("sum(quantity)",), group_by=group_by, start=at(10),
                      end=at(10 + hours), interval_s=3600)


# --- parameters: defaults and time range ------------------------------------------------------


def test_defaults_are_the_last_24h_by_hour_aligned_outward() -> None:
    query = parse()
    assert (query.start, query.end, query.interval_s) == (at(13), at(14, day=28), 3600)
    assert len(query.interval_starts()) == 25
    assert query.fields == ("sum(quantity)",)
    assert query.project_ids == query.key_ids == ()
    assert query.outcomes == query.reasons == query.categories == ()


def test_stats_period_and_daily_interval_align_to_utc_midnight() -> None:
    query = parse(("statsPeriod", "14d"), ("interval", "1d"))
    assert query.start == dt.datetime(2026, 11, 14, tzinfo=dt.UTC)
    assert query.end == dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    assert query.interval_s == 86_400
    assert len(query.interval_starts()) == 15


def test_six_hour_interval_starts_on_multiples_of_six_hours() -> None:
    query = parse(("statsPeriod", "24h"), ("interval", "6h"))
    assert query.start == at(12)
    assert query.end == at(18, day=28)
    assert [s.hour for s in query.interval_starts()] == [12, 18, 0, 6, 12]


def test_start_and_end_are_rounded_outward_to_the_interval() -> None:
    query = parse(("start", "2026-11-27T09:30:00Z"), ("end", "2026-11-27T11:30:00Z"))
    assert (query.start, query.end) == (at(9), at(12))


def test_an_aligned_end_is_exclusive() -> None:
    query = parse(("start", "2026-11-27T00:00:00Z"), ("end", "2026-11-28T00:00:00Z"))
    assert len(query.interval_starts()) == 24
    assert query.interval_starts()[-1] == at(23)


def test_start_without_offset_is_utc_and_offsets_are_converted() -> None:
    query = parse(("start", "2026-11-27T10:00:00"), ("end", "2026-11-27T13:00:00+02:00"))
    assert (query.start, query.end) == (at(10), at(11))


def test_stats_period_wins_over_start_and_end_as_in_sentry() -> None:
    query = parse(("statsPeriod", "2h"), ("start", "2020-01-01T00:00:00Z"),
                  ("end", "2020-01-02T00:00:00Z"))
    assert (query.start, query.end) == (at(11, day=28), at(14, day=28))


def test_a_start_in_the_future_is_moved_back_to_now() -> None:
    query = parse(("start", "2026-12-01T00:00:00Z"), ("end", "2026-12-02T00:00:00Z"))
    assert query.start == at(13, day=28)


def test_last_value_of_a_repeated_single_parameter_wins_like_django() -> None:
    assert parse(("interval", "1d"), ("interval", "6h")).interval_s == 6 * 3600


# --- parameters: fields, groupBy and filters ---------------------------------------------------


def test_repeated_group_by_keeps_first_order_without_duplicates() -> None:
    query = parse(("groupBy", "outcome"), ("groupBy", "project"), ("groupBy", "category"),
                  ("groupBy", "reason"), ("groupBy", "key_id"))
    assert query.group_by == ("category", "outcome", "project", "reason", "key_id")


def test_category_error_matches_error_default_and_security() -> None:
    query = parse(("field", "sum(quantity)"), ("category", "error"), ("category", "transaction"),
                  base=False)
    assert query.categories == ("default", "error", "security", "transaction")
    assert query.group_by == ()


def test_outcome_filter_is_case_insensitive() -> None:
    query = parse(("outcome", "ACCEPTED"), ("outcome", "rate_limited"), ("outcome", "accepted"))
    assert query.outcomes == ("accepted", "rate_limited")


def test_project_minus_one_means_every_visible_project() -> None:
    assert parse(("project", "3"), ("project", "-1")).project_ids == ()
    assert parse(("project", "3"), ("project", "5"), ("project", "3")).project_ids == (3, 5)


def test_reason_and_key_id_filters_are_kept() -> None:
    query = parse(("reason", "discarded_hash"), ("reason", ""), ("key_id", "42"))
    assert query.reasons == ("discarded_hash", "")
    assert query.key_ids == (42,)


# --- refusals name the parameter, the value and what is expected -------------------------------


def test_missing_field_is_refused() -> None:
    error = refused(("groupBy", "category"), base=False)
    assert error.parameter == "field"
    assert "is missing" in str(error) and "sum(quantity)" in str(error)


@pytest.mark.parametrize("field", ["sum(times_seen)", "count()", "quantity"])
def test_unsupported_field_is_refused(field: str) -> None:
    error = refused(("field", field), ("groupBy", "category"), base=False)
    assert error.parameter == "field"
    assert repr(field) in str(error) and "sum(quantity)" in str(error)


def test_unknown_group_by_is_refused() -> None:
    error = refused(("groupBy", "release"))
    assert error.parameter == "groupBy"
    assert "'release'" in str(error) and "outcome, category, project" in str(error)


@pytest.mark.parametrize("interval", ["30m", "90m", "5h", "2d", "1x", "h", "-1h"])
def test_interval_that_is_not_whole_hours_dividing_a_day_is_refused(interval: str) -> None:
    error = refused(("interval", interval))
    assert error.parameter == "interval"
    assert repr(interval) in str(error)


@pytest.mark.parametrize("period", ["30m", "59m", "abc", "99999999w", "1" * 30 + "h", "\u0661h"])
def test_stats_period_shorter_than_an_hour_or_malformed_is_refused(period: str) -> None:
    error = refused(("statsPeriod", period))
    assert error.parameter == "statsPeriod"
    assert repr(period) in str(error)


def test_too_many_intervals_are_refused_naming_the_limit() -> None:
    error = refused(("statsPeriod", "90d"), ("interval", "1h"))
    assert error.parameter == "interval"
    assert f"more than {MAX_INTERVALS}" in str(error) and "2161 intervals" in str(error)
    assert len(parse(("statsPeriod", "90d"), ("interval", "1d")).interval_starts()) == 91


def test_start_without_end_is_refused() -> None:
    error = refused(("start", "2026-11-27T00:00:00Z"))
    assert error.parameter == "end"
    assert "is missing" in str(error)


@pytest.mark.parametrize("value", ["yesterday", "2026-13-01T00:00:00", "1900-01-01T00:00:00"])
def test_malformed_start_is_refused(value: str) -> None:
    error = refused(("start", value), ("end", "2026-11-27T00:00:00Z"))
    assert error.parameter == "start"
    assert repr(value) in str(error)


def test_end_before_start_is_refused() -> None:
    error = refused(("start", "2026-11-27T10:00:00Z"), ("end", "2026-11-27T10:00:00Z"))
    assert error.parameter == "end"
    assert "must be after start" in str(error)


def test_query_without_category_filter_or_group_is_refused_as_in_sentry() -> None:
    error = refused(("field", "sum(quantity)"), ("groupBy", "outcome"), base=False)
    assert error.parameter == "category"


@pytest.mark.parametrize(("parameter", "value"), [
    ("category", "errors"), ("category", "ERROR"), ("outcome", "dropped"),
    ("project", "abc"), ("project", "-2"), ("key_id", "1.5"), ("key_id", "1" * 21),
])
def test_bad_filter_values_are_refused(parameter: str, value: str) -> None:
    error = refused((parameter, value))
    assert error.parameter == parameter
    assert repr(value) in str(error)


def test_attachments_cannot_be_summed_with_other_categories() -> None:
    error = refused(("category", "attachment"), ("category", "error"))
    assert error.parameter == "category"
    assert "bytes" in str(error)


def test_stats_query_error_answers_400_naming_its_code() -> None:
    error = refused(("interval", "1m"))
    assert (error.status, error.code) == (400, "bad_request")


def test_long_bad_value_is_shortened_in_the_message() -> None:
    error = refused(("groupBy", "x" * 5000))
    assert error.value == "x" * 5000
    assert len(str(error)) < 300


# --- response ----------------------------------------------------------------------------------


def test_response_has_sentry_shape_with_zero_filled_series() -> None:
    query = hours_query(4, group_by=("outcome", "category"))
    rows: list[StatsRow] = [(at(11), ("accepted", "error"), 3), (at(12), ("accepted", "error"), 7)]
    assert stats_response(query, rows) == {
        "start": "2026-11-27T10:00:00Z", "end": "2026-11-27T14:00:00Z",
        "intervals": ["2026-11-27T10:00:00Z", "2026-11-27T11:00:00Z",
                      "2026-11-27T12:00:00Z", "2026-11-27T13:00:00Z"],
        "groups": [{"by": {"outcome": "accepted", "category": "error"},
                    "totals": {"sum(quantity)": 10},
                    "series": {"sum(quantity)": [0, 3, 7, 0]}}],
    }


def test_groups_are_ordered_by_total_then_by_values() -> None:
    query = hours_query(2, group_by=("project", "outcome"))
    rows: list[StatsRow] = [
        (at(10), (12, "accepted"), 5), (at(10), (3, "filtered"), 5),
        (at(11), (3, "accepted"), 5), (at(10), (40, "invalid"), 9),
    ]
    groups = stats_response(query, rows)["groups"]
    assert [g["by"] for g in groups] == [
        {"project": 40, "outcome": "invalid"}, {"project": 3, "outcome": "accepted"},
        {"project": 3, "outcome": "filtered"}, {"project": 12, "outcome": "accepted"},
    ]


def test_rows_of_the_same_group_and_interval_add_up() -> None:
    query = hours_query(2)
    rows: list[StatsRow] = [(at(11), ("accepted",), 2), (at(11), ("accepted",), 3)]
    group = stats_response(query, rows)["groups"][0]
    assert group["series"]["sum(quantity)"] == [0, 5]
    assert group["totals"]["sum(quantity)"] == 5


def test_row_times_in_another_zone_match_their_utc_interval() -> None:
    query = hours_query(2)
    cet = dt.timezone(dt.timedelta(hours=1))
    rows: list[StatsRow] = [(dt.datetime(2026, 11, 27, 12, tzinfo=cet), ("accepted",), 4)]
    assert stats_response(query, rows)["groups"][0]["series"]["sum(quantity)"] == [0, 4]


def test_ungrouped_query_answers_one_group_even_without_rows() -> None:
    query = hours_query(3, group_by=())
    assert stats_response(query, [])["groups"] == [
        {"by": {}, "totals": {"sum(quantity)": 0}, "series": {"sum(quantity)": [0, 0, 0]}}]


def test_grouped_query_without_rows_has_no_groups() -> None:
    body = stats_response(hours_query(3), [])
    assert body["groups"] == []
    assert len(body["intervals"]) == 3


def test_row_outside_the_intervals_is_an_error_not_dropped() -> None:
    with pytest.raises(ValueError, match="not an interval start"):
        stats_response(hours_query(2), [(at(15), ("accepted",), 1)])


def test_more_rows_than_the_limit_are_refused_not_truncated() -> None:
    query = hours_query(1, group_by=("key_id",))
    rows: list[StatsRow] = [(at(10), (n,), 1) for n in range(MAX_STATS_ROWS + 1)]
    with pytest.raises(StatsQueryError, match=f"more than {MAX_STATS_ROWS}"):
        stats_response(query, rows)
