"""Comments (Sentry's notes) on an issue through the Web API: posted with @mentions, listed,
shown in the activity feed, edited and deleted by their author only, and out of reach of
another organization's users. Real parts: see tests/integration/triage_world.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from storage.clickhouse import ClickHouseStore
from tests.integration.triage_world import World, build_world

pytestmark = pytest.mark.integration


@pytest.fixture
def w(chdb_store: ClickHouseStore) -> Iterator[World]:
    yield from build_world(chdb_store, "crashray_comments")


def comment(w: World, issue_id: int, who: str = "ada", **body: Any) -> dict[str, Any]:
    response = w.call(who, "POST", f"/issues/{issue_id}/comments/", json=body)
    assert response.status_code == 201, response.text
    note: dict[str, Any] = response.json()
    return note


def test_a_comment_is_a_note_in_sentrys_shape_listed_and_in_the_activity_feed(
        w: World) -> None:
    alpha = w.issues["Alpha"]
    note = comment(w, alpha, text="@bob can you look? the cart breaks @#backend")
    assert note["type"] == "note"
    assert note["data"]["text"] == "@bob can you look? the cart breaks @#backend"
    assert note["user"] == {"name": "ada", "id": str(w.user_ids["ada"]), "username": "ada"}
    assert sorted(note["data"]["mentions"]) == sorted(
        [f"user:{w.user_ids['bob']}", f"team:{w.backend_team}"])
    listed = w.call("bob", "GET", f"/issues/{alpha}/comments/").json()
    assert [n["id"] for n in listed] == [note["id"]]
    feed = w.issue("bob", alpha)["activity"]
    assert feed[0]["id"] == note["id"] and feed[0]["data"]["text"].startswith("@bob")


def test_the_author_and_everyone_mentioned_follow_the_issue(w: World) -> None:
    alpha = w.issues["Alpha"]
    comment(w, alpha, text="see @bob", mentions=[f"user:{w.user_ids['bob']}"])
    assert w.issue("ada", alpha)["subscriptionDetails"] == {"reason": "comment"}
    assert w.issue("bob", alpha)["subscriptionDetails"] == {"reason": "mentioned"}
    assert w.search("bob", "subscribed:me") == [alpha]


def test_only_the_author_edits_or_deletes_a_comment(w: World) -> None:
    alpha = w.issues["Alpha"]
    note = comment(w, alpha, text="first thought")
    path = f"/issues/{alpha}/comments/{note['id']}/"
    assert w.call("bob", "PUT", path, json={"text": "hijacked"}).status_code == 403
    assert w.call("bob", "DELETE", path).status_code == 403
    assert w.call("org-token", "DELETE", path).status_code == 403
    edited = w.call("ada", "PUT", path, json={"text": "second thought"})
    assert edited.status_code == 200 and edited.json()["data"]["text"] == "second thought"
    assert w.call("ada", "GET", f"/issues/{alpha}/comments/").json()[0]["data"]["text"] == \
        "second thought"
    assert w.call("ada", "DELETE", path).status_code == 204
    assert w.call("ada", "GET", f"/issues/{alpha}/comments/").json() == []
    assert w.call("ada", "DELETE", path).status_code == 404
    # A note is reached through its own issue only.
    assert w.call("ada", "PUT", f"/issues/{w.issues['Beta']}/comments/{note['id']}/",
                  json={"text": "x"}).status_code == 404


def test_another_organizations_user_can_neither_read_nor_post_comments(w: World) -> None:
    alpha = w.issues["Alpha"]
    note = comment(w, alpha, text="internal")
    assert w.call("eve", "GET", f"/issues/{alpha}/comments/").status_code == 404
    assert w.call("eve", "POST", f"/issues/{alpha}/comments/",
                  json={"text": "hi"}).status_code == 404
    assert w.call("eve", "DELETE", f"/issues/{alpha}/comments/{note['id']}/").status_code == 404
    assert len(w.call("ada", "GET", f"/issues/{alpha}/comments/").json()) == 1


def test_mentioning_another_organizations_user_or_team_is_refused(w: World) -> None:
    alpha = w.issues["Alpha"]
    for listed in ([f"user:{w.user_ids['eve']}"], [f"team:{w.rival_team}"]):
        response = w.call("ada", "POST", f"/issues/{alpha}/comments/",
                          json={"text": "psst", "mentions": listed})
        assert response.status_code == 400
        assert response.json()["detail"].startswith(f"mentions: {listed[0]} is no member")
    # An @name of someone outside is only text: nobody is subscribed, nothing leaks.
    note = comment(w, alpha, text="hello @eve")
    assert note["data"]["mentions"] == []
    assert w.call("ada", "GET", f"/issues/{alpha}/comments/").json()[0]["id"] == note["id"]


@pytest.mark.parametrize(("body", "says"), [
    ({"text": "   "}, "text: a comment needs some text"),
    ({"text": "x" * 8193}, "CRASHRAY_API_NOTE_MAX_CHARS"),
    ({"text": "hi", "mentions": ["bob"]}, "mentions: 'bob' must be user:<id> or team:<id>"),
    ({}, "text: Field required"),
])
def test_a_bad_comment_is_a_400_naming_the_field(w: World, body: dict[str, Any],
                                                 says: str) -> None:
    response = w.call("ada", "POST", f"/issues/{w.issues['Alpha']}/comments/", json=body)
    assert response.status_code == 400 and says in response.json()["detail"]
