"""The triage search terms (``assigned:``, ``is:assigned``, ``is:unassigned``,
``is:bookmarked``, ``bookmarks:``, ``subscribed:``): parsed to typed filters, answered by
PostgreSQL only, rendered with bound values scoped to the searched organization. Pure
(tests/integration/test_assign.py runs the SQL)."""

from __future__ import annotations

import pytest

from events.errors import BadRequest
from events.search import (
    AssigneeFilter,
    Person,
    ViewerFilter,
    issue_filters,
    needs_events,
)
from events.triage import AssigneeRef, TriageInputError, mentions_of, parse_assigned_to
from storage.search_sql import SearchViewer, issue_where
from tests.unit.test_search import only, parse, refused

VIEWER = SearchViewer(organization_id=41, user_id=7)


@pytest.mark.parametrize(("query", "expected"), [
    ("assigned:me", AssigneeFilter((Person("me"),))),
    ("assigned_to:ada", AssigneeFilter((Person("user", "ada"),))),
    ("assigned:#backend", AssigneeFilter((Person("team", "backend"),))),
    ("!assigned:[me, none, my_teams]",
     AssigneeFilter((Person("me"), Person("none"), Person("my_teams")), negated=True)),
    ("is:assigned", AssigneeFilter((Person("any"),))),
    ("is:unassigned", AssigneeFilter((Person("none"),))),
    ("!is:unassigned", AssigneeFilter((Person("none"),), negated=True)),
    ("is:bookmarked", ViewerFilter("bookmarks", Person("me"))),
    ("bookmarks:ada", ViewerFilter("bookmarks", Person("user", "ada"))),
    ("subscribed:me", ViewerFilter("subscribed", Person("me"))),
])
def test_triage_terms_parse_to_issue_only_filters(query: str, expected: object) -> None:
    assert only(query) == expected
    assert issue_filters(parse(query)).triage == (expected,)
    assert not needs_events(parse(query))  # ClickHouse is never asked


@pytest.mark.parametrize(("query", "says"), [
    ("assigned:#", "expected me, none, my_teams, #team-slug"),
    ("is:[assigned, resolved]", 'take no list'),
    ("bookmarks:none", '"bookmarks:" takes me or a username'),
    ("bookmarks:#backend", "expected me, none"),
    ("has:assigned", '"has:" applies to event fields'),
])
def test_bad_triage_terms_are_refused_saying_what_is_expected(query: str, says: str) -> None:
    assert says in str(refused(query))


def test_names_are_bound_values_looked_up_in_the_searched_organization_only() -> None:
    sql, args = issue_where(issue_filters(parse("assigned:ada assigned:#backend")), VIEWER)
    assert "ada" not in sql and "backend" not in sql
    assert "m.organization_id = %s" in sql and "teams WHERE organization_id = %s" in sql
    assert args == [41, "ada", "ada", 41, "backend"]
    assert sql.count("%s") == len(args)


def test_me_is_the_viewer_and_an_organization_token_is_told_to_name_the_user() -> None:
    sql, args = issue_where(issue_filters(parse("assigned:me is:bookmarked")), VIEWER)
    assert args == [7, 7] and "issue_bookmarks" in sql
    with pytest.raises(BadRequest, match="assigned:<username>"):
        issue_where(issue_filters(parse("assigned:me")), SearchViewer(41, None))
    with pytest.raises(BadRequest, match="issue stream only"):
        issue_where(issue_filters(parse("is:assigned")))  # no viewer: no tenant to scope


@pytest.mark.parametrize(("value", "ref"), [
    ("user:12", AssigneeRef("user_id", "12")), ("team:3", AssigneeRef("team_id", "3")),
    ("12", AssigneeRef("user_id", "12")), (12, AssigneeRef("user_id", "12")),
    ("ada@example.com", AssigneeRef("name", "ada@example.com")),
    (" ada ", AssigneeRef("name", "ada")), ("#backend", AssigneeRef("team_slug", "backend")),
    ("", None), (None, None),
])
def test_assigned_to_takes_sentrys_actor_forms(value: object, ref: AssigneeRef | None) -> None:
    assert parse_assigned_to(value) == ref  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["user:abc", "team:", "x" * 255])
def test_a_malformed_assigned_to_is_refused(value: str) -> None:
    with pytest.raises(TriageInputError, match=r"^assignedTo: "):
        parse_assigned_to(value)


def test_mentions_are_read_from_the_text_and_the_listed_actors() -> None:
    found = mentions_of("thanks @ada. cc @#backend, mail ada@example.com @ada",
                        ["user:4", "team:9"])
    assert found.usernames == ("ada",) and found.team_slugs == ("backend",)
    assert found.user_ids == (4,) and found.team_ids == (9,)
