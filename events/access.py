"""Who may do what in an organization: Sentry's roles, scopes and project access (pure).

Roles (Sentry's organization roles, least to most):

* ``member``: reads everything of the projects it can see, acts on their issues;
* ``admin``: also changes the projects of its teams (settings, keys), and their teams;
* ``manager``: also manages members and teams of the whole organization, every project;
* ``owner``: everything, including the organization itself and its tokens.

Projects a member sees: every project of the organization when the organization has open
membership (Sentry's default), else the projects of its teams. Managers and owners see all.

A caller's scopes in an organization are its token's scopes (or all scopes, for a browser
session) cut down to what its role allows; organization auth tokens have no role and keep
their scopes, within their one organization.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from events.errors import BadRequest

ROLES: Final = ("member", "admin", "manager", "owner")

_MEMBER: Final = frozenset({
    "org:read", "project:read", "project:releases", "team:read", "member:read",
    "event:read", "event:write", "event:admin", "alerts:read", "alerts:write"})
_ADMIN: Final = _MEMBER | {"project:write", "project:admin", "team:write", "team:admin"}
_MANAGER: Final = _ADMIN | {"member:write", "member:admin", "org:write", "org:integrations"}
_OWNER: Final = _MANAGER | {"org:admin"}

ROLE_SCOPES: Final = {"member": _MEMBER, "admin": _ADMIN, "manager": _MANAGER,
                      "owner": _OWNER}
#: Every scope a token can carry.
ALL_SCOPES: Final = _OWNER
#: Roles that see every project whatever their teams.
ROLES_SEEING_ALL: Final = frozenset({"manager", "owner"})


class AccessError(BadRequest):
    """An unknown role or scope name."""

    code = "invalid_access"


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccessError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return role


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    wanted = frozenset(scopes)
    unknown = sorted(wanted - ALL_SCOPES)
    if unknown:
        raise AccessError(f"unknown scopes {', '.join(unknown)}; known:"
                          f" {', '.join(sorted(ALL_SCOPES))}")
    return wanted


@dataclass(frozen=True)
class Membership:
    role: str
    team_ids: frozenset[int]


def effective_scopes(token_scopes: frozenset[str] | None, membership: Membership | None
                     ) -> frozenset[str]:
    """A caller's scopes in one organization. ``token_scopes`` None: a browser session (all
    its role allows). ``membership`` None: an organization token (its own scopes)."""
    if membership is None:
        return token_scopes or frozenset()
    allowed = ROLE_SCOPES[membership.role]
    return allowed if token_scopes is None else allowed & token_scopes


def visible_projects(membership: Membership | None, open_membership: bool,
                     project_teams: dict[int, frozenset[int]]) -> frozenset[int]:
    """The projects (ids, from ``project_teams``: project → its teams) the caller sees."""
    if membership is None or open_membership or membership.role in ROLES_SEEING_ALL:
        return frozenset(project_teams)
    return frozenset(p for p, teams in project_teams.items() if teams & membership.team_ids)
