"""Issue search parsing (events/search.py): Sentry's syntax → the typed query and its split
between PostgreSQL and ClickHouse (tests/unit/test_search_sql.py: its rendering to SQL)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from events.search import (
    ARRAY_FIELDS,
    EPOCH,
    EVENT_FIELDS,
    MAX_QUERY_CHARS,
    MAX_VALUES,
    DateFilter,
    HasFilter,
    Key,
    NumberFilter,
    Pattern,
    SearchQuery,
    SearchSyntaxError,
    StatusFilter,
    TextFilter,
    event_filters,
    issue_filters,
    needs_events,
    parse_search,
)
from storage.search_sql import event_where, issue_where

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


def event_conditions(q: SearchQuery, param_prefix: str = "p") -> tuple[str, dict[str, Any]]:
    return event_where(event_filters(q), param_prefix=param_prefix)


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
    error = refused("level:error is:linked")
    assert error.position == 15
    assert 'unknown value "linked" after "is:"' in str(error) and "escalating" in str(error)
    assert "unassigned" in str(error)


@pytest.mark.parametrize("name", [*sorted(EVENT_FIELDS), *sorted(ARRAY_FIELDS), "message"])
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


def test_unbalanced_parentheses_refused_at_their_position_as_in_sentry() -> None:
    error = refused("level:error (")
    assert error.position == 12 and 'this "(" is never closed' in str(error)
    assert refused("a ) b").position == 2
    assert refused("a (b c").position == 2


def test_balanced_parentheses_are_free_text_and_may_hold_spaces() -> None:
    assert parse("(a b) c").text == ("(a b) c",)
    assert parse("f(x) level:error").text == ("f(x)",)
    assert refused("(a OR b)").position == 3


def test_environments_narrow_the_event_side_only() -> None:
    from events.search import in_environments

    q = parse("is:unresolved level:error")
    narrowed = in_environments(event_filters(q), ["prod", "staging"])
    assert narrowed.filters[-1] == TextFilter(Key("environment"), exact("prod", "staging"))
    assert in_environments(event_filters(q), []) == event_filters(q)
