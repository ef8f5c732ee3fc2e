"""The issue stream's query string and its Link header (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from events.issue_stream import StreamQueryError, link_header, parse_stream_request

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def test_defaults_are_sentrys() -> None:
    request = parse_stream_request([], 25, 100, NOW)
    assert (request.query, request.sort, request.limit, request.offset) == (
        "is:unresolved", "date", 25, 0)
    assert parse_stream_request([("query", "")], 25, 100, NOW).query == ""


def test_period_cursor_limit_and_environments_are_read() -> None:
    request = parse_stream_request([("statsPeriod", "24h"), ("cursor", "0:50:0"),
                                    ("limit", "500"), ("environment", "prod"),
                                    ("environment", "staging"), ("sort", "freq")], 25, 100,
                                   NOW)
    assert request.since == NOW - dt.timedelta(hours=24) and request.until is None
    assert (request.offset, request.limit, request.sort) == (50, 100, "freq")
    assert request.environments == ("prod", "staging")


@pytest.mark.parametrize(("params", "message"), [
    ([("sort", "random")], "sort 'random'"),
    ([("limit", "0")], "limit '0'"),
    ([("cursor", "abc")], "cursor 'abc'"),
    ([("statsPeriod", "1y")], "statsPeriod '1y'"),
    ([("start", "2026-11-01T00:00:00Z")], "both start and end"),
    ([("start", "2026-11-02T00:00:00Z"), ("end", "2026-11-01T00:00:00Z")], "before end"),
])
def test_bad_parameters_are_named(params: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(StreamQueryError, match=message):
        parse_stream_request(params, 25, 100, NOW)


def test_the_link_header_has_a_previous_and_a_next_cursor() -> None:
    link = link_header("http://h/api/0/x/", [("query", "is:unresolved"), ("cursor", "0:25:0")],
                       25, 25, has_more=True)
    previous, following = link.split(", <")
    assert previous == ('<http://h/api/0/x/?query=is%3Aunresolved&cursor=0%3A0%3A1>;'
                        ' rel="previous"; results="true"; cursor="0:0:1"')
    assert following.endswith('rel="next"; results="true"; cursor="0:50:0"')
    last = link_header("http://h/x/", [], 0, 25, has_more=False)
    assert 'rel="previous"; results="false"' in last and 'rel="next"; results="false"' in last
