"""The typed issue search rendered to SQL (storage/search_sql.py): PostgreSQL and ClickHouse
fragments with bound parameters only, against hostile input; pure
(tests/integration/test_search_sql.py runs the ClickHouse SQL on chDB)."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from events.search import (
    DateFilter,
    IssueFilters,
    Key,
    NumberFilter,
    SearchSyntaxError,
    StatusFilter,
    TextFilter,
    issue_filters,
    needs_events,
)
from storage.search_sql import (
    EVENT_ARRAYS,
    EVENT_COLUMNS,
    issue_where,
    like_pattern,
)
from tests.unit.test_search import (
    NOW,
    UTC,
    ch,
    event_conditions,
    exact,
    only,
    parse,
    pg,
)


# --- wildcards ------------------------------------------------------------------------
@pytest.mark.parametrize(("raw", "like"), [
    ("Chrome*", "Chrome%"), ("*mid*", "%mid%"), ("a*b", "a%b"), ("100%*", "100\\%%"),
    ("snake_*", "snake\\_%"), (r"C:\dir*", "C:\\\\dir%"), (r"x\*y*", "x*y%"),
])
def test_wildcard_becomes_an_escaped_like_pattern(raw: str, like: str) -> None:
    value = only(f"k:{raw}").values[0]
    assert value.is_wildcard and like_pattern(value) == like


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
    sql, params = ch("a.b-c_d:1 tags[x:y.z-]:2 has:q-1 ';DROP:1 {p0:String}:1")
    assert params["p0"] == "a.b-c_d" and params["p2"] == "x:y.z-" and params["p4"] == "q-1"
    assert "';DROP:1 {p0:String}:1" in params.values()
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
