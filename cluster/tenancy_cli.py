"""``crashray user|org|team|project create``: tenants from the shell. Like the other
management commands these find the instance's PostgreSQL from the same settings and
``--data-dir`` as ``crashray up``, whether or not it is running.

    crashray user create USERNAME [--email E] [--password-stdin] [--org SLUG --role ROLE]
    crashray org create SLUG [--name NAME] [--owner USERNAME]
    crashray team create --org SLUG TEAM [--member USERNAME ...]
    crashray project create --org SLUG PROJECT [--team TEAM] [--platform P]   (prints the DSN)

The password of ``user create``: the first line of stdin with ``--password-stdin``, else
``CRASHRAY_PASSWORD``, else asked twice on the terminal; with no terminal (a script, CI)
and neither of the others, the command refuses rather than wait for input that cannot come.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from cluster.cli_common import CliError, add_data_dir, command, database, instance_base_url
from events.access import ROLES

#: The environment variable ``user create`` takes the password from (after
#: ``--password-stdin``, before asking on the terminal).
PASSWORD_ENV = "CRASHRAY_PASSWORD"
NO_TERMINAL = ("no terminal to ask for the password: pipe it with --password-stdin or set"
               f" {PASSWORD_ENV}")


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        if not line:
            raise CliError("--password-stdin: stdin is empty; pipe the password in")
        return line.rstrip("\n")
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise CliError(NO_TERMINAL)
    try:
        first = getpass.getpass("Password: ")
        again = getpass.getpass("Password (again): ")
    except EOFError as exc:  # Ctrl-D at the prompt
        raise CliError("no password given") from exc
    if again != first:
        raise CliError("the two passwords differ")
    return first


def cmd_user_create(args: argparse.Namespace) -> None:
    from storage import tenancy

    password = _password(args)
    with database(args) as conn:
        user = tenancy.create_user(conn, args.username, args.email, password,
                                   superuser=args.superuser)
        if args.org:
            tenancy.add_member(conn, tenancy.organization_id(conn, args.org), user,
                               args.role)
    where = f" ({args.role} of {args.org})" if args.org else ""
    print(f"Created user {args.username}{where}")


def cmd_org_create(args: argparse.Namespace) -> None:
    from storage import tenancy

    with database(args) as conn:
        owner = tenancy.user_id(conn, args.owner) if args.owner else None
        tenancy.create_organization(conn, args.slug, args.name or args.slug, owner)
    print(f"Created organization {args.slug}")


def cmd_team_create(args: argparse.Namespace) -> None:
    from storage import tenancy

    with database(args) as conn:
        org = tenancy.organization_id(conn, args.org)
        team = tenancy.create_team(conn, org, args.slug, args.slug)
        for username in args.member or ():
            tenancy.add_team_member(conn, team, org, tenancy.user_id(conn, username))
    print(f"Created team {args.slug} in {args.org}")


def cmd_project_create(args: argparse.Namespace) -> None:
    from events.grouping import DEFAULT_GROUPING_CONFIG
    from storage import tenancy

    with database(args) as conn:
        org = tenancy.organization_id(conn, args.org)
        team = tenancy.team_id(conn, org, args.team) if args.team else None
        project = tenancy.create_project(conn, org, args.slug, args.slug,
                                         DEFAULT_GROUPING_CONFIG, team=team,
                                         platform=args.platform)
    base = instance_base_url(args)
    print(f"Created project {args.org}/{args.slug}; DSN:")
    print(f"{base.replace('://', f'://{project.public_key}@', 1)}/{project.id}")


def add_parsers(sub: Any) -> None:
    user = sub.add_parser("user", help="users").add_subparsers(dest="user_command",
                                                               required=True)
    create = user.add_parser(
        "create", help="create a user (for the dashboard and tokens)",
        description="Create a user. The password (at least 8 characters) is read from the"
        " first line of stdin with --password-stdin, else from the environment variable"
        f" {PASSWORD_ENV}, else asked for twice on the terminal.")
    create.add_argument("username")
    create.add_argument("--email")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of stdin (without it:"
                        f" {PASSWORD_ENV}, else the terminal)")
    create.add_argument("--superuser", action="store_true")
    create.add_argument("--org", help="make the user a member of this organization")
    create.add_argument("--role", choices=ROLES, default="member")
    add_data_dir(create)
    command(create, cmd_user_create)

    org = sub.add_parser("org", help="organizations").add_subparsers(dest="org_command",
                                                                     required=True)
    create = org.add_parser("create", help="create an organization")
    create.add_argument("slug")
    create.add_argument("--name")
    create.add_argument("--owner", help="username of its first owner")
    add_data_dir(create)
    command(create, cmd_org_create)

    team = sub.add_parser("team", help="teams").add_subparsers(dest="team_command",
                                                               required=True)
    create = team.add_parser("create", help="create a team")
    create.add_argument("slug")
    create.add_argument("--org", required=True)
    create.add_argument("--member", action="append", help="username (repeat)")
    add_data_dir(create)
    command(create, cmd_team_create)

    project = sub.add_parser("project", help="projects").add_subparsers(
        dest="project_command", required=True)
    create = project.add_parser("create", help="create a project with a DSN key")
    create.add_argument("slug")
    create.add_argument("--org", required=True)
    create.add_argument("--team", help="the team that owns it")
    create.add_argument("--platform")
    add_data_dir(create)
    create.add_argument("--port", type=int, help="the port in the printed DSN (default: the"
                        " running instance's, else CRASHRAY_PORT)")
    create.add_argument("--host", help="the host in the printed DSN (default: the running"
                        " instance's, else CRASHRAY_PUBLIC_HOST or CRASHRAY_HOST)")
    command(create, cmd_project_create)
