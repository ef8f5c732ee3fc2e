"""``release:latest`` and ``firstRelease:latest``: the parser keeps the word, and
``with_latest_release`` (pure) puts the latest versions of the projects searched in its
place before any SQL is built; with no release at all the term matches nothing."""

from __future__ import annotations

import datetime as dt

from events.search import (
    NO_RELEASE,
    Key,
    Pattern,
    TextFilter,
    event_filters,
    issue_filters,
    parse_search,
    uses_latest_release,
    with_latest_release,
)
from storage.search_sql import issue_where

NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def test_latest_is_replaced_by_each_projects_latest_version_in_either_release_key() -> None:
    q = parse_search("release:latest !firstRelease:[latest, 0.9] level:error", NOW)
    assert uses_latest_release(q)
    resolved = with_latest_release(q, ["web@2.0", "api@7"])
    assert not uses_latest_release(resolved)
    (release,) = [f for f in event_filters(resolved).filters
                  if isinstance(f, TextFilter) and f.key == Key("release")]
    assert release.values == (Pattern(("web@2.0",)), Pattern(("api@7",)))
    (first,) = issue_filters(resolved).first_release
    assert first.negated
    assert first.values == (Pattern(("web@2.0",)), Pattern(("api@7",)), Pattern(("0.9",)))


def test_other_values_and_keys_are_left_alone() -> None:
    q = parse_search("release:1.0 environment:latest", NOW)
    assert not uses_latest_release(q)
    assert with_latest_release(q, ["2.0"]) == q


def test_latest_without_any_release_matches_no_issue() -> None:
    resolved = with_latest_release(parse_search("firstRelease:latest", NOW), [])
    (first,) = issue_filters(resolved).first_release
    assert first.values == (NO_RELEASE,)
    where, args = issue_where(issue_filters(resolved))
    assert where == "coalesce(FALSE, FALSE)" and args == []
