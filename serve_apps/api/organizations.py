"""Organizations, teams, members and a user's own tokens, in Sentry's shapes.

    GET    /api/0/organizations/                    the caller    its organizations
    POST   /api/0/organizations/                    a user        {"slug", "name"} → owner
    GET    /api/0/organizations/{org}/              org:read
    PUT    /api/0/organizations/{org}/              org:write     {"name", "openMembership"}
    GET    /api/0/organizations/{org}/teams/        team:read
    POST   /api/0/organizations/{org}/teams/        team:write    {"slug", "name"}
    PUT    /api/0/teams/{org}/{team}/               team:write    {"name"}
    GET    /api/0/organizations/{org}/members/      member:read
    POST   /api/0/organizations/{org}/members/      member:write  {"username", "role", "teams"}
    GET    /api/0/api-tokens/                       a user        its tokens (no secrets)
    POST   /api/0/api-tokens/                       a logged-in user {"scopes", "name"}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import Field, StringConstraints

from events.access import ROLES, check_scopes
from events.errors import BadRequest, Forbidden
from serve_apps.api.deps import (
    Svc,
    TeamAccess,
    caller,
    caller_access,
    org_access,
    team_access,
    user_access,
)
from serve_apps.api.shapes import Body, iso
from storage import tenancy
from storage.tenancy import Access, Caller, OrganizationRow

router = APIRouter(tags=["organizations"])

Text = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"\S")]
Role = Literal["member", "admin", "manager", "owner"]
assert set(Role.__args__) == set(ROLES)  # type: ignore[attr-defined]


def organization_json(row: OrganizationRow) -> dict[str, Any]:
    return {"id": str(row.id), "slug": row.slug, "name": row.name,
            "openMembership": row.open_membership, "dateCreated": iso(row.date_added)}


@router.get("/organizations/")
def organizations(who: Annotated[Caller, Depends(caller_access())],
                  svc: Svc) -> list[dict[str, Any]]:
    with svc.pool.connection() as conn:
        rows = tenancy.organizations_by_slug(conn, tenancy.caller_organizations(conn, who))
    return [organization_json(r) for r in rows]


class NewOrganization(Body):
    slug: Text
    name: Text | None = None


#: A token must carry one of these to create an organization, as Sentry's
#: ``OrganizationPermission`` asks of a POST (src/sentry/api/bases/organization.py); a
#: login session may.
CREATE_ORGANIZATION_SCOPES = frozenset({"org:write", "org:admin"})


@router.post("/organizations/", status_code=201)
def create_organization(body: NewOrganization, who: Annotated[Caller, Depends(user_access())],
                        svc: Svc) -> dict[str, Any]:
    """The user creating it becomes its owner."""
    assert who.user_id is not None  # user_access refuses organization tokens
    if who.token_scopes is not None and not who.token_scopes & CREATE_ORGANIZATION_SCOPES:
        raise Forbidden("this token lacks the scope org:write")
    name = (body.name or body.slug).strip()
    with svc.pool.connection() as conn, conn.transaction():
        org_id = tenancy.create_organization(conn, body.slug.strip(), name, who.user_id)
    return {"id": str(org_id), "slug": body.slug.strip(), "name": name}


@router.get("/organizations/{org}/")
def organization(access: Annotated[Access, Depends(org_access("org:read"))],
                 svc: Svc) -> dict[str, Any]:
    with svc.pool.connection() as conn:
        row = tenancy.get_organization(conn, access.organization_id)
    return organization_json(row)


class OrganizationUpdate(Body):
    name: Text | None = None
    #: Sentry's "Open Membership": members see every project, not only their teams'.
    openMembership: bool | None = None


@router.put("/organizations/{org}/")
def update_organization(body: OrganizationUpdate,
                        access: Annotated[Access, Depends(org_access("org:write"))],
                        svc: Svc) -> dict[str, Any]:
    with svc.pool.connection() as conn, conn.transaction():
        row = tenancy.update_organization(
            conn, access.organization_id, name=None if body.name is None else body.name.strip(),
            open_membership=body.openMembership)
    return organization_json(row)


@router.get("/organizations/{org}/teams/")
def teams(access: Annotated[Access, Depends(org_access("team:read"))],
          svc: Svc) -> list[dict[str, Any]]:
    with svc.pool.connection() as conn:
        rows = tenancy.list_teams(conn, access.organization_id)
    return [{"id": str(r.id), "slug": r.slug, "name": r.name, "dateCreated": iso(r.date_added),
             "memberCount": r.member_count} for r in rows]


class NewTeam(Body):
    slug: Text
    name: Text | None = None


@router.post("/organizations/{org}/teams/", status_code=201)
def create_team(body: NewTeam, access: Annotated[Access, Depends(org_access("team:write"))],
                svc: Svc) -> dict[str, Any]:
    slug = body.slug.strip()
    name = (body.name or slug).strip()
    with svc.pool.connection() as conn, conn.transaction():
        team_id = tenancy.create_team(conn, access.organization_id, slug, name)
    return {"id": str(team_id), "slug": slug, "name": name}


class TeamUpdate(Body):
    name: Text


@router.put("/teams/{org}/{team}/")
def update_team(body: TeamUpdate, team: Annotated[TeamAccess, Depends(team_access("team:write"))],
                svc: Svc) -> dict[str, Any]:
    """A team's ``name`` (its slug stays)."""
    with svc.pool.connection() as conn, conn.transaction():
        tenancy.rename_team(conn, team.access.organization_id, team.team_id, body.name.strip())
    return {"id": str(team.team_id), "slug": team.slug, "name": body.name.strip()}


@router.get("/organizations/{org}/members/")
def members(access: Annotated[Access, Depends(org_access("member:read"))],
            svc: Svc) -> list[dict[str, Any]]:
    with svc.pool.connection() as conn:
        rows = tenancy.list_members(conn, access.organization_id)
    # No e-mail addresses: members are added without their consent (no invitations yet),
    # so an organization must not learn a user's address by adding them.
    return [{"id": str(r.id), "user": {"username": r.username}, "role": r.role,
             "orgRole": r.role, "dateCreated": iso(r.date_added), "teams": list(r.team_slugs)}
            for r in rows]


class NewMember(Body):
    username: Text
    role: Role = "member"
    teams: list[str] = Field(default_factory=list)


@router.post("/organizations/{org}/members/", status_code=201)
def add_member(body: NewMember, access: Annotated[Access, Depends(org_access("member:write"))],
               who: Annotated[Caller, Depends(caller)], svc: Svc) -> dict[str, Any]:
    """Adds an existing user (Crashray has no e-mail invitations yet), or changes the role
    of a member; only owners make or unmake owners, and an organization keeps one.

    Only users the caller may add are found (tenancy.addable_user): a user of another
    tenant answers exactly as a username that does not exist, so adding cannot be used to
    learn who has an account elsewhere."""
    if body.role == "owner" and "org:admin" not in access.scopes:
        raise Forbidden("only owners make owners")
    org_id = access.organization_id
    with svc.pool.connection() as conn, conn.transaction():
        user = tenancy.addable_user(conn, org_id, body.username.strip(), who)
        if tenancy.member_role(conn, org_id, user) == "owner" and body.role != "owner":
            if "org:admin" not in access.scopes:
                raise Forbidden("only owners change an owner's role")
            if tenancy.owner_count(conn, org_id) <= 1:
                raise BadRequest("an organization keeps at least one owner")
        member = tenancy.add_member(conn, org_id, user, body.role)
        for slug in body.teams:
            tenancy.add_team_member(conn, tenancy.team_id(conn, org_id, slug), org_id, user)
    return {"id": str(member), "user": {"username": body.username.strip()}, "role": body.role,
            "teams": sorted(body.teams)}


@router.get("/api-tokens/")
def tokens(who: Annotated[Caller, Depends(user_access())],
           svc: Svc) -> list[dict[str, Any]]:
    assert who.user_id is not None
    with svc.pool.connection() as conn:
        rows = tenancy.user_tokens(conn, who.user_id)
    return [{"id": str(r.id), "name": r.name, "scopes": list(r.scopes),
             "dateCreated": iso(r.date_added)} for r in rows]


class NewToken(Body):
    scopes: list[str] = Field(min_length=1)
    name: Text | None = None


@router.post("/api-tokens/", status_code=201)
def create_token(body: NewToken, who: Annotated[Caller, Depends(user_access())],
                 svc: Svc) -> dict[str, Any]:
    """A user token, made from a login session (a token cannot mint tokens); shown once."""
    assert who.user_id is not None
    if who.token_scopes is not None:
        raise Forbidden("user tokens are made from a login session")
    scopes = sorted(check_scopes(body.scopes))
    name = (body.name or "created in the dashboard").strip()
    with svc.pool.connection() as conn, conn.transaction():
        token = tenancy.create_token(conn, name, scopes, user=who.user_id)
    return {"token": token, "name": name, "scopes": scopes}
