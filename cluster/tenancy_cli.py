"""``crashray user|org|team|project create``: tenants from the shell. Like the other
management commands these find the instance's PostgreSQL from the same settings and
``--data-dir`` as ``crashray up``, whether or not it is running.

    crashray user create USERNAME [--email E] [--password-stdin] [--org SLUG --role ROLE]
    crashray org create SLUG [--name NAME] [--owner USERNAME]
    crashray team create --org SLUG TEAM [--member USERNAME ...]
    crashray project create --org SLUG PROJECT [--team TEAM] [--platform P]   (prints the DSN)

Without ``--password-stdin`` the password is asked for on the terminal (or read from
``CRASHRAY_PASSWORD``).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from cluster.quota_cli import CliError, _database, _run
from events.access import ROLES


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if os.environ.get("CRASHRAY_PASSWORD"):
        return os.environ["CRASHRAY_PASSWORD"]
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != first:
        raise CliError("the two passwords differ")
    return first


def cmd_user_create(args: argparse.Namespace) -> None:
    from storage import tenancy

    password = _password(args)
    with _database(args) as conn:
        user = tenancy.create_user(conn, args.username, args.email, password,
                                   superuser=args.superuser)
        if args.org:
            tenancy.add_member(conn, tenancy.organization_id(conn, args.org), user,
                               args.role)
    where = f" ({args.role} of {args.org})" if args.org else ""
    print(f"Created user {args.username}{where}")


def cmd_org_create(args: argparse.Namespace) -> None:
    from storage import tenancy

    with _database(args) as conn:
        owner = tenancy.user_id(conn, args.owner) if args.owner else None
        tenancy.create_organization(conn, args.slug, args.name or args.slug, owner)
    print(f"Created organization {args.slug}")


def cmd_team_create(args: argparse.Namespace) -> None:
    from storage import tenancy

    with _database(args) as conn:
        org = tenancy.organization_id(conn, args.org)
        team = tenancy.create_team(conn, org, args.slug, args.slug)
        for username in args.member or ():
            tenancy.add_team_member(conn, team, org, tenancy.user_id(conn, username))
    print(f"Created team {args.slug} in {args.org}")


def cmd_project_create(args: argparse.Namespace) -> None:
    from cluster.cli import _settings
    from events.grouping import DEFAULT_GROUPING_CONFIG
    from storage import tenancy

    with _database(args) as conn:
        org = tenancy.organization_id(conn, args.org)
        team = tenancy.team_id(conn, org, args.team) if args.team else None
        project = tenancy.create_project(conn, org, args.slug, args.slug,
                                         DEFAULT_GROUPING_CONFIG, team=team,
                                         platform=args.platform)
    base = _settings(args).base_url()
    print(f"Created project {args.org}/{args.slug}; DSN:")
    print(f"{base.replace('://', f'://{project.public_key}@', 1)}/{project.id}")


def add_parsers(sub: Any) -> None:
    user = sub.add_parser("user", help="users").add_subparsers(dest="user_command",
                                                               required=True)
    create = user.add_parser("create", help="create a user (for the dashboard and tokens)")
    create.add_argument("username")
    create.add_argument("--email")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of stdin")
    create.add_argument("--superuser", action="store_true")
    create.add_argument("--org", help="make the user a member of this organization")
    create.add_argument("--role", choices=ROLES, default="member")
    create.add_argument("--data-dir", help="the instance's data dir (CRASHRAY_DATA_DIR)")
    create.set_defaults(func=_run(cmd_user_create))

    org = sub.add_parser("org", help="organizations").add_subparsers(dest="org_command",
                                                                     required=True)
    create = org.add_parser("create", help="create an organization")
    create.add_argument("slug")
    create.add_argument("--name")
    create.add_argument("--owner", help="username of its first owner")
    create.add_argument("--data-dir", help="the instance's data dir (CRASHRAY_DATA_DIR)")
    create.set_defaults(func=_run(cmd_org_create))

    team = sub.add_parser("team", help="teams").add_subparsers(dest="team_command",
                                                               required=True)
    create = team.add_parser("create", help="create a team")
    create.add_argument("slug")
    create.add_argument("--org", required=True)
    create.add_argument("--member", action="append", help="username (repeat)")
    create.add_argument("--data-dir", help="the instance's data dir (CRASHRAY_DATA_DIR)")
    create.set_defaults(func=_run(cmd_team_create))

    project = sub.add_parser("project", help="projects").add_subparsers(
        dest="project_command", required=True)
    create = project.add_parser("create", help="create a project with a DSN key")
    create.add_argument("slug")
    create.add_argument("--org", required=True)
    create.add_argument("--team", help="the team that owns it")
    create.add_argument("--platform")
    create.add_argument("--data-dir", help="the instance's data dir (CRASHRAY_DATA_DIR)")
    create.add_argument("--port", type=int, help="the instance's port, for the DSN")
    create.add_argument("--host", help="the instance's host, for the DSN")
    create.set_defaults(func=_run(cmd_project_create))
