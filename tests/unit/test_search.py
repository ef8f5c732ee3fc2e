"""Issue search (events/search.py): Sentry's syntax → typed query → PostgreSQL and ClickHouse
fragments, pure (tests/integration/test_search_sql.py runs the ClickHouse SQL on chDB)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.search import (
    EPOCH,
    EVENT_ARRAYS,
    EVENT_COLUMNS,
    MAX_QUERY_CHARS,
    MAX_VALUES,
    DateFilter,
    HasFilter,
    IssueFilters,
    Key,
    NumberFilter,
    Pattern,
    SearchQuery,
    SearchSyntaxError,
    StatusFilter,
    TextFilter,
    event_conditions,
    issue_filters,
    issue_where,
    needs_events,
    parse_search,
)

NOW = dt.datetime(2026, 11, 28, 13, 37, 12, tzinfo=dt.UTC)
UTC = dt.UTC


def parse(query: str) -> SearchQuery:
    return parse_search(query, NOW)


def refused(query: str) -> SearchSyntaxError:
    with pytest.raises(SearchSyntaxError) as caught:
        parse(query)
    return caught.value


def only(query: str) -> Any:
    q = parse(query)
    assert len(q.filters) == 1 and q.text == ()
    return q.filters[0]


def ch(query: str) -> tuple[str, dict[str, Any]]:
    return event_conditions(parse(query))


def pg(query: str, include_level: bool = False) -> tuple[str, list[Any]]:
    return issue_where(issue_filters(parse(query), include_level=include_level))


def exact(*values: str) -> tuple[Pattern, ...]:
    return tuple(Pattern((v,)) for v in values)


# --- parsing: filters -----------------------------------------------------------------
def test_empty_query_filters_nothing_in_either_store() -> None:
    assert parse("   ") == SearchQuery()
    assert ch("") == ("1", {})
    assert pg("") == ("TRUE", [])
    assert issue_filters(parse("")).is_empty and not needs_events(parse(""))


@pytest.mark.parametrize(("value", "statuses", "substatuses"), [
    ("unresolved", {"unresolved"}, set()), ("resolved", {"resolved"}, set()),
    ("ignored", {"ignored"}, set()), ("archived", {"ignored"}, set()),
    ("muted", {"ignored"}, set()), ("new", set(), {"new"}), ("ongoing", set(), {"ongoing"}),
    ("regressed", set(), {"regressed"}), ("escalating", set(), {"escalating"}),
    ("Unresolved", {"unresolved"}, set()),
])
def test_is_value_names_a_status_or_substatus(value: str, statuses: set[str],
                                              substatuses: set[str]) -> None:
    assert only(f"is:{value}") == StatusFilter(frozenset(statuses), frozenset(substatuses))


def test_negated_is_and_is_list() -> None:
    assert only("!is:resolved") == StatusFilter(frozenset({"resolved"}), negated=True)
    assert only("is:[resolved, regressed]") == StatusFilter(
        frozenset({"resolved"}), frozenset({"regressed"}))


def test_unknown_is_value_refused_at_its_position_with_the_known_values() -> None:
    error = refused("level:error is:assigned")
    assert error.position == 15
    assert 'unknown value "assigned" after "is:"' in str(error) and "escalating" in str(error)


@pytest.mark.parametrize("name", [*EVENT_COLUMNS, *EVENT_ARRAYS, "message"])
def test_well_known_event_field_is_not_a_tag(name: str) -> None:
    assert only(f"{name}:x") == TextFilter(Key(name), exact("x"))


def test_unknown_key_is_a_tag_and_tags_brackets_force_a_tag() -> None:
    assert only("browser:Chrome") == TextFilter(Key("browser", is_tag=True), exact("Chrome"))
    assert only("tags[level]:x") == TextFilter(Key("level", is_tag=True), exact("x"))
    assert only("tags[sentry:user]:id:1") == TextFilter(Key("sentry:user", is_tag=True),
                                                        exact("id:1"))
    assert only("url:http://a/b") == TextFilter(Key("url", is_tag=True), exact("http://a/b"))


def test_key_aliases_use_canonical_names() -> None:
    for key in ("firstRelease", "first-release", "first_release"):
        assert only(f"{key}:1.0") == TextFilter(Key("first_release"), exact("1.0"))
    assert only("timesSeen:3") == NumberFilter("times_seen", "=", 3)
    assert only("last_seen:>2026-01-01") == only("lastSeen:>2026-01-01")
    assert only("event.timestamp:>2026-01-01") == DateFilter(
        "timestamp", ">", dt.datetime(2026, 1, 1, tzinfo=UTC))


def test_negation_quotes_and_lists() -> None:
    assert only('!release:"1.0 beta"') == TextFilter(Key("release"), exact("1.0 beta"), True)
    assert only('user.username:"a b \\"c\\""') == TextFilter(Key("user.username"),
                                                             exact('a b "c"'))
    assert only('level:[error, fatal,"a, b" ,  x]') == TextFilter(
        Key("level"), exact("error", "fatal", "a, b", "x"))
    assert only("!level:[error]") == TextFilter(Key("level"), exact("error"), True)
    assert only('environment:""') == TextFilter(Key("environment"), exact(""))


def test_operator_on_a_text_key_is_part_of_the_value_as_sentry_does_for_tags() -> None:
    assert only("release:>1.0") == TextFilter(Key("release"), exact(">1.0"))


def test_backslash_escapes_star_quote_and_backslash_only() -> None:
    assert only(r"path:C:\dir\file") == TextFilter(Key("path", True), exact(r"C:\dir\file"))
    assert only(r"k:a\*b") == TextFilter(Key("k", True), exact("a*b"))
    assert only(r"k:a\\b") == TextFilter(Key("k", True), exact("a\\b"))
    assert only(r"k:a\\*") == TextFilter(Key("k", True), (Pattern(("a\\", "")),))


def test_has_takes_a_field_tag_or_user() -> None:
    assert only("has:browser") == HasFilter(Key("browser", is_tag=True))
    assert only("!has:tags[level]") == HasFilter(Key("level", is_tag=True), negated=True)
    assert only("has:user.email") == HasFilter(Key("user.email"))
    assert only("has:error.type") == HasFilter(Key("error.type"))
    assert only("has:user") == HasFilter(Key("user"))


@pytest.mark.parametrize("query", ["has:is", "has:times_seen", "has:age", "has:firstSeen",
                                   "has:lastSeen", "has:firstRelease", "has:timestamp"])
def test_has_refuses_issue_fields_that_are_always_set(query: str) -> None:
    error = refused(query)
    assert error.position == 4 and '"has:" applies to event fields and tags' in str(error)


def test_has_refuses_lists_quotes_and_non_keys() -> None:
    assert refused("has:[a, b]").position == 4
    assert refused('has:"a"').position == 4
    assert "expected a field or tag name" in str(refused("has:a/b"))


# --- parsing: numbers and dates -------------------------------------------------------
@pytest.mark.parametrize(("query", "operator", "value"), [
    ("times_seen:10", "=", 10), ("times_seen:>10", ">", 10), ("times_seen:<=5", "<=", 5),
    ("times_seen:>=1k", ">=", 1000), ("times_seen:<1.5m", "<", 1_500_000),
    ("times_seen:2b", "=", 2_000_000_000), ("times_seen:!=3", "!=", 3),
    ("!times_seen:>10", "<=", 10), ("!times_seen:10", "!=", 10), ("!times_seen:<3", ">=", 3),
])
def test_times_seen_comparisons(query: str, operator: str, value: int) -> None:
    assert only(query) == NumberFilter("times_seen", operator, value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [">abc", "1.5", "ten", "1x", ">", "1e3", "-1", '"10"',
                                   "[1, 2]"])
def test_malformed_times_seen_refused_at_the_value(value: str) -> None:
    error = refused(f"is:unresolved times_seen:{value}")
    assert error.position == 25
    assert '"times_seen:"' in str(error)


def test_times_seen_beyond_bigint_refused() -> None:
    assert "too large" in str(refused("times_seen:>99999999999b"))


@pytest.mark.parametrize(("unit", "seconds"), [("s", 1), ("m", 60), ("h", 3600),
                                               ("d", 86_400), ("w", 604_800)])
def test_relative_date_units(unit: str, seconds: int) -> None:
    expected = NOW - dt.timedelta(seconds=3 * seconds)
    assert only(f"age:-3{unit}") == DateFilter("first_seen", ">=", expected)
    assert only(f"lastSeen:+3{unit}") == DateFilter("last_seen", "<=", expected)


def test_relative_dates_mean_within_and_older_than() -> None:
    day_ago = NOW - dt.timedelta(hours=24)
    assert only("age:-24h") == DateFilter("first_seen", ">=", day_ago)
    assert only("age:+7d") == DateFilter("first_seen", "<=", NOW - dt.timedelta(days=7))
    assert only("lastSeen:-1h") == DateFilter("last_seen", ">=", NOW - dt.timedelta(hours=1))
    assert only("!age:-24h") == DateFilter("first_seen", "<", day_ago)
    assert only("firstSeen:-24h") == only("age:-24h")


def test_relative_date_further_back_than_the_epoch_is_clamped() -> None:
    assert only("age:-999999999999w") == DateFilter("first_seen", ">=", EPOCH)


def test_relative_date_counts_back_from_now_in_utc() -> None:
    now = dt.datetime(2026, 11, 28, 15, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    q = parse_search("age:-1h", now)
    assert q.filters == (DateFilter("first_seen", ">=", dt.datetime(2026, 11, 28, 12,
                                                                     tzinfo=UTC)),)


def test_naive_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_search("age:-1h", dt.datetime(2026, 1, 1))


@pytest.mark.parametrize(("query", "expected"), [
    ("firstSeen:>2026-01-01", DateFilter("first_seen", ">", dt.datetime(2026, 1, 1, tzinfo=UTC))),
    ("firstSeen:<=2026-01-01T10:00:00",
     DateFilter("first_seen", "<=", dt.datetime(2026, 1, 1, 10, tzinfo=UTC))),
    ("lastSeen:>=2026-01-01T10:00:00.25Z",
     DateFilter("last_seen", ">=", dt.datetime(2026, 1, 1, 10, 0, 0, 250_000, tzinfo=UTC))),
    ("lastSeen:<2026-01-01T10:00+02:00",
     DateFilter("last_seen", "<", dt.datetime(2026, 1, 1, 8, tzinfo=UTC))),
    ("!timestamp:>2026-01-01", DateFilter("timestamp", "<=", dt.datetime(2026, 1, 1, tzinfo=UTC))),
])
def test_absolute_date_comparisons(query: str, expected: DateFilter) -> None:
    assert only(query) == expected


def test_bare_date_is_the_whole_utc_day_and_bare_datetime_a_window_as_sentry() -> None:
    day = dt.datetime(2026, 1, 1, tzinfo=UTC)
    assert parse("firstSeen:2026-01-01").filters == (
        DateFilter("first_seen", ">=", day),
        DateFilter("first_seen", "<", day + dt.timedelta(days=1)))
    at = dt.datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert parse("lastSeen:2026-01-01T10:00:00").filters == (
        DateFilter("last_seen", ">=", at - dt.timedelta(minutes=5)),
        DateFilter("last_seen", "<", at + dt.timedelta(minutes=6)))


@pytest.mark.parametrize("value", ["-5x", "5h", "-h", "2026-13-01", "2026-1-1", ">-24h",
                                   "yesterday", "2026-01-01T25:00:00", '"-24h"', "[-1h]"])
def test_malformed_date_refused_at_the_value(value: str) -> None:
    error = refused(f"level:error age:{value}")
    assert error.position == 16
    assert '"age:"' in str(error)


def test_malformed_date_message_names_the_accepted_forms() -> None:
    message = str(refused("age:-5x"))
    assert message.startswith("query position 4: expected a date after \"age:\"")
    assert "-24h" in message and "s, m, h, d, w" in message and '"-5x"' in message


def test_date_outside_clickhouse_range_and_negated_exact_date_refused() -> None:
    assert "year from 1970 to 2105" in str(refused("firstSeen:>1969-12-31"))
    error = refused("!firstSeen:2026-01-01")
    assert error.position == 11 and '"firstSeen:<2026-01-01"' in str(error)


# --- parsing: free text, booleans, errors ---------------------------------------------
def test_consecutive_words_form_one_phrase_split_by_filters_and_quotes() -> None:
    q = parse('  connection   reset level:error by peer "Time Out" again')
    assert q.text == ("connection reset", "by peer", "Time Out", "again")
    assert q.filters == (TextFilter(Key("level"), exact("error")),)


def test_free_text_keeps_stars_parens_and_unicode_literally() -> None:
    assert parse("foo* (bar) ünï").text == ("foo* (bar) ünï",)
    assert parse(r'"a \"b\" c\\" !x').text == ('a "b" c\\', "!x")
    assert parse('""').text == ()
    assert parse(":foo a/b:c").text == (":foo a/b:c",)


@pytest.mark.parametrize(("query", "position"), [
    ("level:error OR level:fatal", 12), ("a AND b", 2), ("error or warning", 6),
    ("(a OR b)", 3),
])
def test_boolean_operators_refused_as_in_sentry_issue_search(query: str, position: int) -> None:
    error = refused(query)
    assert error.position == position and "not supported" in str(error)


def test_quoted_or_is_a_phrase() -> None:
    assert parse('a "OR" b').text == ("a", "OR", "b")


def test_missing_value_error_names_the_key_and_points_after_it() -> None:
    error = refused("is:unresolved level:")
    assert str(error) == 'query position 20: expected a value after "level:"'
    assert error.status == 400 and error.code == "invalid_search" and error.position == 20
    assert error.problem == 'expected a value after "level:"'
    assert refused("!tags[a]: x").position == 9


@pytest.mark.parametrize(("query", "position", "fragment"), [
    ('k:"abc', 2, "no closing quote"),
    ('"abc', 0, "no closing quote"),
    ('k:"abc"def', 7, "space after the closing quote"),
    ("level:[error, fatal", 6, 'expected "]" to close the list'),
    ("level:[error fatal]", 13, 'expected "," or "]"'),
    ("level:[error,,fatal]", 13, "expected a value in the list"),
    ("level:[]", 7, "expected a value in the list"),
    ("level:[a]b", 9, 'space after "]"'),
    ('level:["a"b]', 10, 'expected a space, "," or "]" after the closing quote'),
])
def test_malformed_values_refused_at_the_bad_character(query: str, position: int,
                                                       fragment: str) -> None:
    error = refused(query)
    assert error.position == position and fragment in str(error)


def test_limits_on_query_length_and_values() -> None:
    assert f"at most {MAX_QUERY_CHARS}" in str(refused("a" * (MAX_QUERY_CHARS + 1)))
    words = " ".join(["w"] * MAX_VALUES)
    assert len(parse(words).text[0]) == 2 * MAX_VALUES - 1
    error = refused(words + " k:v")
    assert error.position == 2 * MAX_VALUES and f"at most {MAX_VALUES} values" in str(error)
    items = ",".join(["v"] * MAX_VALUES)
    assert len(only(f"k:[{items}]").values) == MAX_VALUES
    assert refused(f"x k:[{items}]").position == 2


# --- wildcards ------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "like"), [
    ("Chrome*", "Chrome%"), ("*mid*", "%mid%"), ("a*b", "a%b"), ("100%*", "100\\%%"),
    ("snake_*", "snake\\_%"), (r"C:\dir*", "C:\\\\dir%"), (r"x\*y*", "x*y%"),
])
def test_wildcard_becomes_an_escaped_like_pattern(raw: str, like: str) -> None:
    value = only(f"k:{raw}").values[0]
    assert value.is_wildcard and value.like == like


def test_star_less_values_with_like_metacharacters_stay_exact() -> None:
    sql, params = ch("k:100%_done")
    assert "LIKE" not in sql and params["p1"] == "100%_done"


def test_wildcards_in_every_store_use_like() -> None:
    assert ch("browser:Chr*") == ("(tags[{p0:String}] LIKE {p1:String})",
                                  {"p0": "browser", "p1": "Chr%"})
    assert ch("release:1.*_rc") == ("(release LIKE {p0:String})", {"p0": "1.%\\_rc"})
    assert ch("error.type:Value*") == (
        "(arrayExists(x -> x LIKE {p0:String}, exception_types))", {"p0": "Value%"})
    assert pg("firstRelease:1.*") == ("coalesce(first_release LIKE %s, FALSE)", ["1.%"])


# --- ClickHouse -----------------------------------------------------------------------
@pytest.mark.parametrize(("name", "column"), list(EVENT_COLUMNS.items()))
def test_event_field_maps_to_its_column(name: str, column: str) -> None:
    assert ch(f"{name}:v") == (f"({column} = {{p0:String}})", {"p0": "v"})


@pytest.mark.parametrize(("name", "column"), list(EVENT_ARRAYS.items()))
def test_array_field_matches_any_element(name: str, column: str) -> None:
    assert ch(f"!{name}:v") == (f"NOT (arrayExists(x -> x = {{p0:String}}, {column}))",
                                {"p0": "v"})


def test_tag_list_and_negation() -> None:
    assert ch("!browser:[Chrome, Firefox]") == (
        "NOT (tags[{p0:String}] = {p1:String} OR tags[{p0:String}] = {p2:String})",
        {"p0": "browser", "p1": "Chrome", "p2": "Firefox"})


def test_has_is_non_empty_column_or_present_tag() -> None:
    assert ch("has:browser") == ("mapContains(tags, {p0:String})", {"p0": "browser"})
    assert ch("!has:release") == ("NOT notEmpty(release)", {})
    assert ch("has:error.value") == ("notEmpty(exception_values)", {})
    assert ch("has:message") == ("notEmpty(message)", {})
    assert ch("has:user") == ("(notEmpty(user_id) OR notEmpty(user_email) OR"
                              " notEmpty(user_username) OR notEmpty(user_ip))", {})


def test_free_text_searches_title_message_culprit_and_exception_values() -> None:
    needle = "{p0:String}"
    expected = ("(" + " OR ".join(
        [f"positionCaseInsensitiveUTF8({c}, {needle}) > 0"
         for c in ("title", "message", "culprit")]
        + [f"arrayExists(v -> positionCaseInsensitiveUTF8(v, {needle}) > 0,"
           " exception_values)"]) + ")")
    assert ch("Connection Reset") == (expected, {"p0": "Connection Reset"})
    assert ch("message:Connection*") == (f"({expected})", {"p0": "Connection*"})


def test_event_timestamp_is_bound_as_microseconds() -> None:
    assert ch("timestamp:>=2026-01-01T00:00:00.000001") == (
        "timestamp >= fromUnixTimestamp64Micro({p0:Int64})", {"p0": 1_767_225_600_000_001})


def test_issue_only_filters_are_not_event_conditions() -> None:
    q = parse("is:unresolved !is:new times_seen:>1 age:-1d lastSeen:+1h firstSeen:2026-01-01"
              " firstRelease:1.0")
    assert event_conditions(q) == ("1", {}) and not needs_events(q)
    assert needs_events(parse("is:unresolved level:error")) and needs_events(parse("foo"))


def test_conditions_are_anded_in_query_order_with_text_last() -> None:
    sql, params = ch("word level:error is:resolved !has:browser")
    assert sql.startswith("(level = {p0:String}) AND NOT mapContains(tags, {p1:String}) AND"
                          " (positionCaseInsensitiveUTF8(title, {p2:String})")
    assert params == {"p0": "error", "p1": "browser", "p2": "word"}


def test_param_prefix_names_the_parameters_and_is_validated() -> None:
    assert event_conditions(parse("level:e"), param_prefix="s_") == (
        "(level = {s_0:String})", {"s_0": "e"})
    with pytest.raises(ValueError, match="param_prefix"):
        event_conditions(parse("level:e"), param_prefix="x}; DROP")


# --- PostgreSQL -----------------------------------------------------------------------
def test_issue_filters_collect_the_issue_fields() -> None:
    q = parse("is:unresolved times_seen:>3 age:-1h lastSeen:+1d firstRelease:2 level:error"
              " browser:x")
    filters = issue_filters(q)
    assert filters == IssueFilters(
        statuses=(StatusFilter(frozenset({"unresolved"})),),
        times_seen=(NumberFilter("times_seen", ">", 3),),
        first_seen=(DateFilter("first_seen", ">=", NOW - dt.timedelta(hours=1)),),
        last_seen=(DateFilter("last_seen", "<=", NOW - dt.timedelta(days=1)),),
        first_release=(TextFilter(Key("first_release"), exact("2")),))
    assert issue_filters(q, include_level=True).level == (
        TextFilter(Key("level"), exact("error")),)


def test_issue_where_status_and_substatus_are_null_safe() -> None:
    assert pg("is:[unresolved, ignored]") == ("coalesce(status = ANY(%s), FALSE)",
                                              [["ignored", "unresolved"]])
    assert pg("!is:new") == ("NOT coalesce(substatus = ANY(%s), FALSE)", [["new"]])
    assert pg("!is:[resolved, regressed]") == (
        "NOT coalesce(status = ANY(%s) OR substatus = ANY(%s), FALSE)",
        [["resolved"], ["regressed"]])


def test_issue_where_numbers_dates_release_and_level() -> None:
    sql, args = pg("times_seen:<=5 firstSeen:>2026-01-01 lastSeen:-1h !firstRelease:[1.0, 2.0]"
                   " level:fatal", include_level=True)
    assert sql == ("times_seen <= %s AND first_seen > %s AND last_seen >= %s AND"
                   " NOT coalesce(first_release = %s OR first_release = %s, FALSE) AND"
                   " coalesce(level = %s, FALSE)")
    assert args == [5, dt.datetime(2026, 1, 1, tzinfo=UTC), NOW - dt.timedelta(hours=1),
                    "1.0", "2.0", "fatal"]
    assert pg("level:fatal") == ("TRUE", [])


def test_issue_where_value_with_nul_matches_no_issue_instead_of_failing_in_psycopg() -> None:
    assert pg('firstRelease:"1\x00"') == ("coalesce(FALSE, FALSE)", [])
    assert pg('!firstRelease:["1\x00", 2]') == (
        "NOT coalesce(FALSE OR first_release = %s, FALSE)", ["2"])


def test_issue_where_has_no_percent_outside_placeholders() -> None:
    sql, _ = pg("is:new times_seen:1 age:-1h lastSeen:-1h firstRelease:a%b* level:x%",
                include_level=True)
    assert sql.count("%") == sql.count("%s")


# --- injection: values are bound, never part of the SQL text --------------------------
EVIL = [
    "'; DROP TABLE events; --",
    "x') OR 1=1 --",
    "\\'; SELECT 1; --",
    "trailing backslash \\",
    "\\\\server\\share",
    "ünïcødé ' 🎉 \u202e",
    "a\x00b",
    "{p0:String}",
    "{p1:Array(String)}) OR (1",
    "%_\\%",
    "tab\tnew\nline\r",
    "/* c */ `x` $$ $h$",
    "'" * 2000 + "\\" * 2000,
]
FIELDS = ["level", "release", "environment", "user.email", "user.id", "user.username",
          "user.ip", "transaction", "event.type", "error.value", "stack.filename",
          "browser", "tags[x.y]", "message"]
_SAFE_SQL = re.compile(r"[A-Za-z0-9_ ().,<>=!\[\]-]*")


def quoted(value: str) -> str:
    """``value`` as a quoted search value that means exactly ``value``."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("*", "\\*")
    return f'"{escaped}"'


def assert_safe_clickhouse(sql: str) -> None:
    without_placeholders = re.sub(r"\{p[0-9]+:(String|Int64)\}", "", sql)
    assert _SAFE_SQL.fullmatch(without_placeholders), sql
    assert "--" not in sql


@pytest.mark.parametrize("value", EVIL, ids=range(len(EVIL)))
@pytest.mark.parametrize("field", FIELDS)
def test_evil_value_in_any_event_field_is_only_a_bound_parameter(field: str, value: str) -> None:
    for template in ("{f}:{v}", "!{f}:{v}", "{f}:[a, {v}]"):
        sql, params = ch(template.format(f=field, v=quoted(value)))
        benign_sql, _ = ch(template.format(f=field, v="benign"))
        assert sql == benign_sql
        assert value in params.values()
        assert_safe_clickhouse(sql)


@pytest.mark.parametrize("value", EVIL, ids=range(len(EVIL)))
def test_evil_free_text_is_only_a_bound_parameter(value: str) -> None:
    sql, params = ch(quoted(value))
    assert sql == ch("benign")[0] and params == {"p0": value}
    assert_safe_clickhouse(sql)


@pytest.mark.parametrize("value", [v for v in EVIL if "\x00" not in v], ids=range(len(EVIL) - 1))
@pytest.mark.parametrize("field", ["firstRelease", "level"])
def test_evil_value_in_issue_fields_is_only_a_psycopg_argument(field: str, value: str) -> None:
    sql, args = pg(f"{field}:{quoted(value)}", include_level=True)
    assert sql == pg(f"{field}:benign", include_level=True)[0] and args == [value]
    assert "'" not in sql and ";" not in sql and sql.count("%") == sql.count("%s")


def test_evil_wildcard_value_is_escaped_and_bound() -> None:
    sql, params = ch("k:\"*'; DROP TABLE events; --\\\\ %_*\"")
    assert sql == "(tags[{p0:String}] LIKE {p1:String})"
    assert params["p1"] == "%'; DROP TABLE events; --\\\\ \\%\\_%"


def test_evil_keys_are_bound_or_become_free_text() -> None:
    sql, params = ch("a.b-c_d:1 tags[x:y.z-]:2 has:q-1 ');DROP:1 {p0:String}:1")
    assert params["p0"] == "a.b-c_d" and params["p2"] == "x:y.z-" and params["p4"] == "q-1"
    assert "');DROP:1 {p0:String}:1" in params.values()
    assert_safe_clickhouse(sql)


def test_very_long_value_is_bound_whole() -> None:
    value = "x'" * 3000
    sql, params = ch(f"k:{value}")
    assert sql == "(tags[{p0:String}] = {p1:String})" and params["p1"] == value


_QUERY_CHARS = st.sampled_from([
    *' :!"\\*[],()\'{}%_-><=.;ab1AOR\x00é\t', "is:", "has:", "age:", "times_seen:",
    "level:", "tags[", "]", "OR", "2026-01-01", "-1h", "{p0:String}", "user.email:",
    "firstRelease:", "message:"])


@given(st.lists(_QUERY_CHARS, max_size=40).map("".join))
def test_any_query_parses_or_is_refused_and_never_reaches_the_sql_text(query: str) -> None:
    try:
        q = parse(query)
    except SearchSyntaxError as error:
        assert 0 <= error.position <= len(query)
        return
    sql, params = event_conditions(q)
    assert_safe_clickhouse(sql)
    assert len(set(re.findall(r"\{(p[0-9]+):", sql))) == len(params)
    pg_sql, args = issue_where(issue_filters(q, include_level=True))
    assert re.fullmatch(r"[A-Za-z_ ().,<>=!%s]*", pg_sql), pg_sql
    assert pg_sql.count("%s") == len(args)
