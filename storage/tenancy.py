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
from events.login_throttle import LoginLimits, RecentFailures, address_key, wait_s
from storage.keys import add_project_key
from storage.postgres import create_api_token, hash_token

_SCRYPT_N: Final = 2**15
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_LOGIN_LOCK: Final = 0x6C6F67
#: Compared against when the username is unknown (a hash of a random password).
_DUMMY_HASH: Final = ("scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA==$"
                      "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==")
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


def addable_user(conn: psycopg.Connection[Any], org_id: int, username: str,
                 adder: Caller) -> int:
    """The user ``adder`` may add to organization ``org_id``: one that is a member already
    (a role change), shares an organization with the adder, or belongs to none yet (an
    account an operator made to be added); anyone for a superuser. Everyone else, and a
    username that does not exist, is the same NotFound: adding must not tell whether an
    account exists in another tenant."""
    row = conn.execute(
        "SELECT u.id FROM users u WHERE u.username = %(name)s AND ("
        " EXISTS (SELECT 1 FROM users a WHERE a.id = %(adder)s AND a.is_superuser)"
        " OR NOT EXISTS (SELECT 1 FROM organization_members m WHERE m.user_id = u.id)"
        " OR EXISTS (SELECT 1 FROM organization_members m WHERE m.user_id = u.id"
        "  AND (m.organization_id = %(org)s OR m.organization_id IN (SELECT organization_id"
        "  FROM organization_members WHERE user_id = %(adder)s))))",
        {"name": username, "adder": adder.user_id, "org": org_id}).fetchone()
    if row is None:
        raise NotFound(f"no user {username!r} that this organization can add (ask an"
                       " instance superuser to add users of other organizations)")
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


#: Longest username and password a login takes (Sentry's login form: usernames of at most
#: 128 characters, web/forms/accounts.py); anything longer cannot be an account here.
MAX_USERNAME_CHARS: Final = 128
MAX_PASSWORD_CHARS: Final = 1024
#: Rows of expired login state one login removes at most (bounded work per request; each
#: login adds at most one row, so the tables shrink while logins happen).
PRUNE_BATCH_ROWS: Final = 1000


def login(conn: psycopg.Connection[Any], username: str, password: str, client_ip: str,
          limits: LoginLimits) -> int | None:
    """The user id when the password is right; failures are recorded. Raises
    ``LoginThrottled`` while the failures before it say to wait (events/login_throttle.py),
    even with the right password."""
    # One attempt per username at a time: concurrent guesses cannot all read the old count.
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOGIN_LOCK, username))
    address = address_key(client_ip)
    wait = wait_s(recent_failures(conn, username, address, limits.window_s), limits)
    if wait:
        raise LoginThrottled(wait)
    row = conn.execute("SELECT id, password_hash FROM users WHERE username = %s",
                       (username,)).fetchone()
    # An unknown user costs the same scrypt as a known one: timing does not tell them apart.
    if not password_matches(password, row[1] if row is not None else _DUMMY_HASH) \
            or row is None:
        conn.execute("INSERT INTO login_failures (username, client_ip) VALUES (%s, %s)",
                     (username, address))
        return None
    return int(row[0])


def recent_failures(conn: psycopg.Connection[Any], username: str, address: str,
                    window_s: float) -> RecentFailures:
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE username = %(u)s AND client_ip = %(a)s),"
        " extract(epoch FROM now() - max(at) FILTER (WHERE username = %(u)s"
        " AND client_ip = %(a)s)),"
        " count(*) FILTER (WHERE username = %(u)s),"
        " extract(epoch FROM now() - max(at) FILTER (WHERE username = %(u)s)),"
        " count(*) FILTER (WHERE client_ip = %(a)s),"
        " extract(epoch FROM now() - min(at) FILTER (WHERE client_ip = %(a)s))"
        " FROM login_failures WHERE at > now() - make_interval(secs => %(w)s)"
        " AND (username = %(u)s OR client_ip = %(a)s)",
        {"u": username, "a": address, "w": window_s}).fetchone()
    assert row is not None
    return RecentFailures(int(row[0]), float(row[1] or 0), int(row[2]), float(row[3] or 0),
                          int(row[4]), float(row[5] or 0))


def prune_login_state(conn: psycopg.Connection[Any], window_s: float,
                      batch_rows: int = PRUNE_BATCH_ROWS) -> int:
    """Removes at most ``batch_rows`` failed logins older than the window and as many
    expired sessions (the oldest first); answers how many rows went."""
    failures = conn.execute(
        "DELETE FROM login_failures WHERE id IN (SELECT id FROM login_failures"
        " WHERE at < now() - make_interval(secs => %s) ORDER BY id LIMIT %s)",
        (window_s, batch_rows)).rowcount
    sessions = conn.execute(
        "DELETE FROM user_sessions WHERE session_hash IN (SELECT session_hash FROM"
        " user_sessions WHERE expires_at <= now() ORDER BY expires_at LIMIT %s)",
        (batch_rows,)).rowcount
    return max(failures, 0) + max(sessions, 0)


class LoginThrottled(Throttled):
    code = "login_throttled"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


# --- reads and changes for the organizations API ---------------------------------------------


@dataclass(frozen=True)
class OrganizationRow:
    id: int
    slug: str
    name: str
    open_membership: bool
    date_added: dt.datetime


_ORG_COLUMNS: Final = "id, slug, name, open_membership, date_added"


def organizations_by_slug(conn: psycopg.Connection[Any], slugs: list[str]
                          ) -> list[OrganizationRow]:
    """The organizations named (those a caller can act in, from ``caller_organizations``)."""
    rows = conn.execute(f"SELECT {_ORG_COLUMNS} FROM organizations WHERE slug = ANY(%s)"
                        " ORDER BY slug", (slugs,)).fetchall()
    return [OrganizationRow(int(r[0]), str(r[1]), str(r[2]), bool(r[3]), r[4]) for r in rows]


def update_organization(conn: psycopg.Connection[Any], org_id: int, *,
                        name: str | None = None, open_membership: bool | None = None
                        ) -> OrganizationRow:
    if name is not None:
        conn.execute("UPDATE organizations SET name = %s WHERE id = %s", (name, org_id))
    if open_membership is not None:
        conn.execute("UPDATE organizations SET open_membership = %s WHERE id = %s",
                     (open_membership, org_id))
    return get_organization(conn, org_id)


def get_organization(conn: psycopg.Connection[Any], org_id: int) -> OrganizationRow:
    row = conn.execute(f"SELECT {_ORG_COLUMNS} FROM organizations WHERE id = %s",
                       (org_id,)).fetchone()
    if row is None:
        raise NotFound(f"no organization {org_id}")
    return OrganizationRow(int(row[0]), str(row[1]), str(row[2]), bool(row[3]), row[4])


def find_team(conn: psycopg.Connection[Any], org_id: int, slug: str) -> int | None:
    row = conn.execute("SELECT id FROM teams WHERE organization_id = %s AND slug = %s",
                       (org_id, slug)).fetchone()
    return None if row is None else int(row[0])


@dataclass(frozen=True)
class TeamRow:
    id: int
    slug: str
    name: str
    date_added: dt.datetime
    member_count: int


def list_teams(conn: psycopg.Connection[Any], org_id: int) -> list[TeamRow]:
    rows = conn.execute(
        "SELECT t.id, t.slug, t.name, t.date_added, count(tm.member_id)"
        " FROM teams t LEFT JOIN team_members tm ON tm.team_id = t.id"
        " WHERE t.organization_id = %s GROUP BY t.id ORDER BY t.slug", (org_id,)).fetchall()
    return [TeamRow(int(r[0]), str(r[1]), str(r[2]), r[3], int(r[4])) for r in rows]


def rename_team(conn: psycopg.Connection[Any], org_id: int, team: int, name: str) -> None:
    conn.execute("UPDATE teams SET name = %s WHERE organization_id = %s AND id = %s",
                 (name, org_id, team))


@dataclass(frozen=True)
class MemberRow:
    id: int
    username: str
    role: str
    date_added: dt.datetime
    team_slugs: tuple[str, ...]


def list_members(conn: psycopg.Connection[Any], org_id: int) -> list[MemberRow]:
    rows = conn.execute(
        "SELECT m.id, u.username, m.role, m.date_added,"
        " coalesce(array_agg(t.slug ORDER BY t.slug) FILTER (WHERE t.slug IS NOT"
        " NULL), '{}') FROM organization_members m JOIN users u ON u.id = m.user_id"
        " LEFT JOIN team_members tm ON tm.member_id = m.id"
        " LEFT JOIN teams t ON t.id = tm.team_id WHERE m.organization_id = %s"
        " GROUP BY m.id, u.username ORDER BY u.username", (org_id,)).fetchall()
    return [MemberRow(int(r[0]), str(r[1]), str(r[2]), r[3], tuple(r[4])) for r in rows]


def member_role(conn: psycopg.Connection[Any], org_id: int, user: int) -> str | None:
    row = conn.execute("SELECT role FROM organization_members WHERE organization_id = %s"
                       " AND user_id = %s", (org_id, user)).fetchone()
    return None if row is None else str(row[0])


def owner_count(conn: psycopg.Connection[Any], org_id: int) -> int:
    row = conn.execute("SELECT count(*) FROM organization_members WHERE organization_id = %s"
                       " AND role = 'owner'", (org_id,)).fetchone()
    return 0 if row is None else int(row[0])


@dataclass(frozen=True)
class TokenRow:
    id: int
    name: str
    scopes: tuple[str, ...]
    date_added: dt.datetime


def user_tokens(conn: psycopg.Connection[Any], user: int) -> list[TokenRow]:
    """A user's own tokens (never their secrets: only hashes are stored)."""
    rows = conn.execute("SELECT id, name, scopes, date_added FROM api_tokens"
                        " WHERE user_id = %s AND organization_id IS NULL ORDER BY id",
                        (user,)).fetchall()
    return [TokenRow(int(r[0]), str(r[1]), tuple(r[2]), r[3]) for r in rows]


def has_users(conn: psycopg.Connection[Any]) -> bool:
    """Whether anyone can log in to the dashboard yet."""
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM users)").fetchone()
    return bool(row and row[0])


def team_project_ids(conn: psycopg.Connection[Any], organization_id: int, team_id: int
                     ) -> list[int]:
    """Ids of the projects of one team of one organization."""
    return [int(r[0]) for r in conn.execute(
        "SELECT pt.project_id FROM project_teams pt JOIN teams t ON t.id = pt.team_id"
        " WHERE t.organization_id = %s AND t.id = %s", (organization_id, team_id)).fetchall()]
