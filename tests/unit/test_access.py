"""Roles, scopes and project visibility (pure)."""

from __future__ import annotations

import pytest

from events.access import (
    AccessError,
    Membership,
    check_role,
    check_scopes,
    effective_scopes,
    visible_projects,
)

PROJECTS = {1: frozenset({10}), 2: frozenset({20}), 3: frozenset()}


def test_a_token_is_cut_down_to_what_its_users_role_allows() -> None:
    member = Membership("member", frozenset())
    scopes = effective_scopes(frozenset({"event:read", "project:write", "org:admin"}), member)
    assert scopes == {"event:read"}
    owner = Membership("owner", frozenset())
    assert "org:admin" in effective_scopes(frozenset({"org:admin"}), owner)


def test_a_session_gets_its_roles_scopes_and_an_organization_token_its_own() -> None:
    admin = effective_scopes(None, Membership("admin", frozenset()))
    assert {"project:write", "event:admin"} <= admin and "member:admin" not in admin
    assert effective_scopes(frozenset({"event:read"}), None) == {"event:read"}


def test_members_see_their_teams_projects_unless_membership_is_open() -> None:
    bob = Membership("member", frozenset({20}))
    assert visible_projects(bob, open_membership=False, project_teams=PROJECTS) == {2}
    assert visible_projects(bob, open_membership=True, project_teams=PROJECTS) == {1, 2, 3}
    manager = Membership("manager", frozenset())
    assert visible_projects(manager, open_membership=False, project_teams=PROJECTS) == {1, 2, 3}


def test_unknown_roles_and_scopes_are_refused_by_name() -> None:
    with pytest.raises(AccessError, match="role 'root'"):
        check_role("root")
    with pytest.raises(AccessError, match="unknown scopes project:delete"):
        check_scopes(["event:read", "project:delete"])
