"""Users, organizations, teams, members, tokens and browser sessions (PostgreSQL).

Passwords are hashed with scrypt (stdlib ``hashlib.scrypt``, n=2^15, r=8, p=1, 16-byte salt)
and compared in constant time; tokens and session cookies are random and stored as sha256
only. ``caller_access`` turns a token or session into what it may do in one organization:
its scopes there and the projects it sees (``events/access.py`` decides).

Errors (events/errors.py's tree)::

    BadRequest
    └── TenancyError        400  a slug, password or token owner that is not allowed
    Conflict
    └── NameTaken           409  a slug or username already exists
    Throttled
    └── LoginThrottled      429  too many failed logins
    NotFound                404  no such organization, user, team or project
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any, Final

import psycopg

from events.access import (
    Membership,
    check_role,
    check_scopes,
    effective_scopes,
    visible_projects,
)
from events.errors import BadRequest, Conflict, NotFound, Throttled
from storage.postgres import add_project_key, create_api_token, hash_token

_SCRYPT_N: Final = 2**15
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_LOGIN_LOCK: Final = 0x6C6F67
#: Compared against when the username is unknown (a hash of a random password).
_DUMMY_HASH: Final = ("scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA==$"
                      "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==")
#: An address may fail this many times more than one username before it is locked out.
IP_FAILURE_FACTOR: Final = 4
SLUG: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")


class TenancyError(BadRequest):
    code = "invalid_tenancy"


class NameTaken(Conflict):
    code = "name_taken"


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R,
                            p=_SCRYPT_P, maxmem=64 * 1024 * 1024)
    return "$".join(["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def password_matches(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, n, r, p, salt, digest = stored.split("$")
    candidate = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                               r=int(r), p=int(p), maxmem=64 * 1024 * 1024)
    return hmac.compare_digest(candidate, base64.b64decode(digest))


def check_slug(kind: str, slug: str) -> str:
    if not SLUG.match(slug):
        raise TenancyError(f"{kind} slug {slug!r} must be 1-50 lowercase letters, digits, '-'"
                           " or '_', starting with a letter or digit")
    return slug


def create_user(conn: psycopg.Connection[Any], username: str, email: str | None,
                password: str, *, superuser: bool = False) -> int:
    if len(password) < 8:
        raise TenancyError("the password must have at least 8 characters")
    if conn.execute("SELECT 1 FROM users WHERE username = %s", (username,)).fetchone():
        raise NameTaken(f"user {username!r} exists already")
    row = conn.execute("INSERT INTO users (username, email, password_hash, is_superuser)"
                       " VALUES (%s, %s, %s, %s) RETURNING id",
                       (username, email, hash_password(password), superuser)).fetchone()
    assert row is not None
    return int(row[0])


def user_id(conn: psycopg.Connection[Any], username: str) -> int:
    row = conn.execute("SELECT id FROM users WHERE username = %s", (username,)).fetchone()
    if row is None:
        raise NotFound(f"no user {username!r}")
    return int(row[0])


def create_organization(conn: psycopg.Connection[Any], slug: str, name: str,
                        owner_user_id: int | None) -> int:
    check_slug("organization", slug)
    if conn.execute("SELECT 1 FROM organizations WHERE slug = %s", (slug,)).fetchone():
        raise NameTaken(f"organization {slug!r} exists already")
    row = conn.execute("INSERT INTO organizations (slug, name) VALUES (%s, %s) RETURNING id",
                       (slug, name)).fetchone()
    assert row is not None
    org_id = int(row[0])
    if owner_user_id is not None:
        add_member(conn, org_id, owner_user_id, "owner")
    return org_id


def organization_id(conn: psycopg.Connection[Any], slug: str) -> int:
    row = conn.execute("SELECT id FROM organizations WHERE slug = %s", (slug,)).fetchone()
    if row is None:
        raise NotFound(f"no organization {slug!r}")
    return int(row[0])


def add_member(conn: psycopg.Connection[Any], org_id: int, user: int, role: str) -> int:
    row = conn.execute(
        "INSERT INTO organization_members (organization_id, user_id, role) VALUES (%s, %s, %s)"
        " ON CONFLICT (organization_id, user_id) DO UPDATE SET role = excluded.role"
        " RETURNING id", (org_id, user, check_role(role))).fetchone()
    assert row is not None
    return int(row[0])


def create_team(conn: psycopg.Connection[Any], org_id: int, slug: str, name: str) -> int:
    check_slug("team", slug)
    row = conn.execute("INSERT INTO teams (organization_id, slug, name) VALUES (%s, %s, %s)"
                       " ON CONFLICT (organization_id, slug) DO NOTHING RETURNING id",
                       (org_id, slug, name)).fetchone()
    if row is None:
        raise NameTaken(f"team {slug!r} exists already")
    return int(row[0])


def team_id(conn: psycopg.Connection[Any], org_id: int, slug: str) -> int:
    row = conn.execute("SELECT id FROM teams WHERE organization_id = %s AND slug = %s",
                       (org_id, slug)).fetchone()
    if row is None:
        raise NotFound(f"no team {slug!r} in this organization")
    return int(row[0])


def add_team_member(conn: psycopg.Connection[Any], team: int, org_id: int, user: int) -> None:
    member = conn.execute("SELECT id FROM organization_members WHERE organization_id = %s"
                          " AND user_id = %s", (org_id, user)).fetchone()
    if member is None:
        raise NotFound("the user is not a member of the team's organization")
    conn.execute("INSERT INTO team_members (team_id, member_id) VALUES (%s, %s)"
                 " ON CONFLICT DO NOTHING", (team, int(member[0])))


@dataclass(frozen=True)
class CreatedProject:
    id: int
    slug: str
    public_key: str


def create_project(conn: psycopg.Connection[Any], org_id: int, slug: str, name: str,
                   grouping_config: str, *, team: int | None = None,
                   platform: str | None = None) -> CreatedProject:
    check_slug("project", slug)
    row = conn.execute(
        "INSERT INTO projects (organization_id, slug, name, platform, grouping_config)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (organization_id, slug) DO NOTHING"
        " RETURNING id", (org_id, slug, name, platform, grouping_config)).fetchone()
    if row is None:
        raise NameTaken(f"project {slug!r} exists already in this organization")
    project_id = int(row[0])
    key = add_project_key(conn, project_id)
    if team is not None:
        conn.execute("INSERT INTO project_teams (project_id, team_id) VALUES (%s, %s)",
                     (project_id, team))
    return CreatedProject(project_id, slug, key)


def create_token(conn: psycopg.Connection[Any], name: str, scopes: list[str], *,
                 user: int | None = None, org_id: int | None = None) -> str:
    """A user token (``user``) or an organization token (``org_id``); shown once."""
    if (user is None) == (org_id is None):
        raise TenancyError("a token belongs to a user or to an organization")
    return create_api_token(conn, org_id, name, sorted(check_scopes(scopes)), user)


# --- callers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who is asking: a user (by token or session) or an organization token."""

    name: str
    user_id: int | None
    organization_id: int | None  # an organization token's organization
    token_scopes: frozenset[str] | None  # None: a session (all its roles allow)


def token_caller(conn: psycopg.Connection[Any], token: str) -> Caller | None:
    row = conn.execute("SELECT t.name, t.user_id, t.organization_id, t.scopes, u.username"
                       " FROM api_tokens t LEFT JOIN users u ON u.id = t.user_id"
                       " WHERE t.token_hash = %s", (hash_token(token),)).fetchone()
    if row is None:
        return None
    name = str(row[4]) if row[4] is not None and row[2] is None else str(row[0])
    # A token of a user that also names an organization is confined to it.
    return Caller(name, row[1], row[2], frozenset(row[3]))


@dataclass(frozen=True)
class Access:
    """What a caller may do in one organization."""

    organization_id: int
    organization_slug: str
    scopes: frozenset[str]
    project_ids: frozenset[int]
    actor: str
    #: An admin's write scopes reach only its teams and their projects (None: no limit).
    writable_team_ids: frozenset[int] | None = None
    writable_project_ids: frozenset[int] | None = None

    def may_change_project(self, project_id: int) -> bool:
        return self.writable_project_ids is None or project_id in self.writable_project_ids

    def may_change_team(self, team_id: int) -> bool:
        return self.writable_team_ids is None or team_id in self.writable_team_ids


def caller_access(conn: psycopg.Connection[Any], caller: Caller, org_slug: str
                  ) -> Access | None:
    """The caller's access to organization ``org_slug``; None when it has none (the API
    then answers 404, so that organizations cannot be probed)."""
    org = conn.execute("SELECT id, open_membership FROM organizations WHERE slug = %s",
                       (org_slug,)).fetchone()
    if org is None:
        return None
    org_id, open_membership = int(org[0]), bool(org[1])
    if caller.organization_id is not None and caller.organization_id != org_id:
        return None
    membership = None
    if caller.user_id is not None:
        member = conn.execute(
            "SELECT m.role, coalesce(array_agg(tm.team_id) FILTER (WHERE tm.team_id IS NOT"
            " NULL), '{}') FROM organization_members m LEFT JOIN team_members tm"
            " ON tm.member_id = m.id WHERE m.organization_id = %s AND m.user_id = %s"
            " GROUP BY m.role", (org_id, caller.user_id)).fetchone()
        if member is None:
            if caller.organization_id is None:
                return None
        else:
            membership = Membership(str(member[0]), frozenset(int(t) for t in member[1]))
    teams: dict[int, frozenset[int]] = {}
    for project_id, team_ids in conn.execute(
            "SELECT p.id, coalesce(array_agg(pt.team_id) FILTER (WHERE pt.team_id IS NOT"
            " NULL), '{}') FROM projects p LEFT JOIN project_teams pt ON pt.project_id = p.id"
            " WHERE p.organization_id = %s GROUP BY p.id", (org_id,)).fetchall():
        teams[int(project_id)] = frozenset(int(t) for t in team_ids)
    writable_teams = writable_projects = None
    if membership is not None and membership.role == "admin":
        writable_teams = membership.team_ids
        writable_projects = frozenset(p for p, t in teams.items() if t & membership.team_ids)
    return Access(org_id, org_slug, effective_scopes(caller.token_scopes, membership),
                  visible_projects(membership, open_membership, teams), caller.name,
                  writable_teams, writable_projects)


def organization_of_issue(conn: psycopg.Connection[Any], issue_id: int) -> str | None:
    row = conn.execute("SELECT o.slug FROM issues i JOIN projects p ON p.id = i.project_id"
                       " JOIN organizations o ON o.id = p.organization_id WHERE i.id = %s",
                       (issue_id,)).fetchone()
    return None if row is None else str(row[0])


def caller_organizations(conn: psycopg.Connection[Any], caller: Caller) -> list[str]:
    """Slugs of the organizations the caller can act in."""
    if caller.organization_id is not None:
        rows = conn.execute("SELECT slug FROM organizations WHERE id = %s",
                            (caller.organization_id,)).fetchall()
    else:
        rows = conn.execute("SELECT o.slug FROM organizations o JOIN organization_members m"
                            " ON m.organization_id = o.id WHERE m.user_id = %s ORDER BY o.slug",
                            (caller.user_id,)).fetchall()
    return [str(r[0]) for r in rows]


# --- browser sessions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    cookie: str
    csrf_token: str
    expires_at: dt.datetime


def start_session(conn: psycopg.Connection[Any], user: int, lifetime_s: float) -> Session:
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lifetime_s)
    conn.execute("INSERT INTO user_sessions (session_hash, user_id, csrf_token, expires_at)"
                 " VALUES (%s, %s, %s, %s)", (hash_token(cookie), user, csrf, expires))
    return Session(cookie, csrf, expires)


@dataclass(frozen=True)
class SessionUser:
    user_id: int
    username: str
    csrf_token: str


def session_user(conn: psycopg.Connection[Any], cookie: str) -> SessionUser | None:
    row = conn.execute("SELECT s.user_id, u.username, s.csrf_token FROM user_sessions s"
                       " JOIN users u ON u.id = s.user_id WHERE s.session_hash = %s"
                       " AND s.expires_at > now()", (hash_token(cookie),)).fetchone()
    return None if row is None else SessionUser(int(row[0]), str(row[1]), str(row[2]))


def end_session(conn: psycopg.Connection[Any], cookie: str) -> None:
    conn.execute("DELETE FROM user_sessions WHERE session_hash = %s", (hash_token(cookie),))


def login(conn: psycopg.Connection[Any], username: str, password: str, client_ip: str,
          max_failures: int, window_s: float) -> int | None:
    """The user id when the password is right, unless the username has failed
    ``max_failures`` times in the last ``window_s`` seconds, or the client address
    ``IP_FAILURE_FACTOR`` times as often (an address may be shared by several people);
    failures are recorded. Raises ``LoginThrottled`` while locked out (even with the right
    password)."""
    # One attempt per username at a time: concurrent guesses cannot all read the old count.
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOGIN_LOCK, username))
    recent = conn.execute(
        "SELECT count(*) FILTER (WHERE username = %s), count(*) FILTER (WHERE client_ip = %s)"
        " FROM login_failures WHERE at > now() - make_interval(secs => %s)"
        " AND (username = %s OR client_ip = %s)",
        (username, client_ip, window_s, username, client_ip)).fetchone()
    assert recent is not None
    if int(recent[0]) >= max_failures or int(recent[1]) >= max_failures * IP_FAILURE_FACTOR:
        raise LoginThrottled(f"too many failed logins; try again in {int(window_s)} s")
    row = conn.execute("SELECT id, password_hash FROM users WHERE username = %s",
                       (username,)).fetchone()
    # An unknown user costs the same scrypt as a known one: timing does not tell them apart.
    if not password_matches(password, row[1] if row is not None else _DUMMY_HASH) \
            or row is None:
        conn.execute("INSERT INTO login_failures (username, client_ip) VALUES (%s, %s)",
                     (username, client_ip))
        return None
    return int(row[0])


class LoginThrottled(Throttled):
    code = "login_throttled"


# --- for the management commands (crashray up, crashray quota list) ------------------------


def has_users(conn: psycopg.Connection[Any]) -> bool:
    """Whether anyone can log in to the dashboard yet."""
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM users)").fetchone()
    return bool(row and row[0])


@dataclass(frozen=True)
class KeyRateLimit:
    project_slug: str
    public_key: str
    count: int
    window_s: int


def keys_with_rate_limits(conn: psycopg.Connection[Any], org_id: int) -> list[KeyRateLimit]:
    """The DSN keys of organization ``org_id``'s projects that have a rate limit."""
    rows = conn.execute(
        "SELECT p.slug, k.public_key, k.rate_limit_count, k.rate_limit_window_s"
        " FROM project_keys k JOIN projects p ON p.id = k.project_id"
        " WHERE p.organization_id = %s AND k.rate_limit_count IS NOT NULL ORDER BY k.id",
        (org_id,)).fetchall()
    return [KeyRateLimit(str(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]
