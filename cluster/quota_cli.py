"""``crashray quota …`` and ``crashray key rate-limit``: quotas, DSN key rate limits, spike
protection and current usage, from the shell. Like ``crashray token create``, these find the
instance's PostgreSQL from the same settings and ``--data-dir`` as ``crashray up``, whether
or not it is running; changes apply within ``CRASHRAY_QUOTA_SETTINGS_REFRESH_S``.

    crashray quota list [--org SLUG]
    crashray quota add --scope project --project SLUG --window 60 --limit 100 \\
                       [--category error ...] [--reason CODE]
    crashray quota delete ID
    crashray quota usage                         counters of the windows running now
    crashray quota spike --project SLUG --off | --on [--multiplier X] [--floor-per-hour N]
    crashray key rate-limit --project SLUG [--key PUBLIC_KEY] --window 60 --count 100 | --clear
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import TYPE_CHECKING, Any

from cluster.cli_common import CliError, add_data_dir, command, database
from events.errors import NotFound
from events.quotas import CATEGORIES, SCOPES, Quota

if TYPE_CHECKING:  # imported lazily at run time: the CLI starts without storage loaded
    from storage.keys import ProjectKey
    from storage.projects import ProjectRef


def _organization(conn: Any, slug: str) -> int:
    from storage import tenancy

    return tenancy.organization_id(conn, slug)


def _project(conn: Any, organization_id: int, slug: str | None) -> ProjectRef:
    from storage import projects

    if not slug:
        raise CliError("--project SLUG is needed for this")
    project = projects.find_project(conn, organization_id, slug)
    if project is None:
        raise NotFound(f"no project {slug!r} in this organization")
    return project


def _key(conn: Any, project: ProjectRef, public_key: str | None) -> ProjectKey:
    from storage import keys as key_store

    if public_key is None:
        keys = key_store.project_keys(conn, project)
        if len(keys) != 1:
            raise CliError(f"the project has {len(keys)} keys; name one with --key")
        return keys[0]
    key = key_store.find_key(conn, project, public_key)
    if key is None:
        raise NotFound(f"no key {public_key!r} in this project")
    return key


def cmd_list(args: argparse.Namespace) -> None:
    from storage import keys as key_store
    from storage import quotas as quota_store

    with database(args) as conn:
        org = _organization(conn, args.org)
        stored = quota_store.list_quotas(conn, org)
        keys = key_store.rate_limited_keys(conn, org)
    for s in stored:
        q = s.quota
        print(f"quota {s.id}: {q.scope} {q.scope_id if q.scope_id is not None else '(each)'}"
              f" {','.join(sorted(q.categories)) or 'all categories'}:"
              f" {'no limit' if q.limit is None else q.limit} per {q.window_s} s"
              f"{f' ({q.reason_code})' if q.reason_code else ''}")
    for project_slug, k in keys:
        print(f"key {k.public_key} of project {project_slug}: {k.rate_limit_count} events"
              f" per {k.rate_limit_window_s} s")
    if not stored and not keys:
        print("no quotas and no key rate limits")


def cmd_add(args: argparse.Namespace) -> None:
    from storage import quotas as quota_store

    with database(args) as conn:
        org = _organization(conn, args.org)
        scope_id: int | None = org
        if args.scope == "project":
            scope_id = _project(conn, org, args.project).id if args.project else None
        elif args.scope == "key":
            scope_id = _key(conn, _project(conn, org, args.project), args.key).id \
                if args.project else None
        quota = Quota("new", org, args.scope, scope_id, frozenset(args.category or ()),
                      args.limit, args.window, args.reason)
        quota_id = quota_store.add_quota(conn, quota)
    print(f"Added quota {quota_id}")


def cmd_delete(args: argparse.Namespace) -> None:
    from storage import quotas as quota_store

    with database(args) as conn:
        if not quota_store.delete_quota(conn, _organization(conn, args.org), args.id):
            raise NotFound(f"no quota {args.id} in organization {args.org!r}")
    print(f"Deleted quota {args.id}")


def usage_line(counter: str, count: int, window_ends: dt.datetime) -> str:
    """One running counter: its quota, whose it is (scope and project/key id), how much
    it counted and when its window ends. Counters are named ``quota:org:scope:subject``
    (``events.quotas.Quota.counter``)."""
    quota_id, _, scope, subject = [*counter.split(":"), "", "", "", ""][:4]
    ends = window_ends.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    whose = subject if subject.isdigit() else "-"
    return f"{quota_id} {scope} {whose}: {count} until {ends}"


def cmd_usage(args: argparse.Namespace) -> None:
    from storage import quotas as quota_store

    with database(args) as conn:
        rows = quota_store.current_usage(conn, _organization(conn, args.org))
    for u in rows:
        print(usage_line(u.counter, u.count, u.expires_at))
    if not rows:
        print("nothing counted in the windows running now")


def cmd_spike(args: argparse.Namespace) -> None:
    from storage import projects

    if args.multiplier is not None and args.multiplier <= 0:
        raise CliError("--multiplier must be > 0")
    with database(args) as conn:
        project = _project(conn, _organization(conn, args.org), args.project)
        projects.set_spike_protection(conn, project.id, args.on, args.multiplier,
                                      args.floor_per_hour)
    print(f"Spike protection {'on' if args.on else 'off'} for project {args.project}")


def cmd_key_rate_limit(args: argparse.Namespace) -> None:
    from storage import keys as key_store

    if not args.clear and (args.window is None or args.count is None):
        raise CliError("give --window SECONDS and --count EVENTS, or --clear")
    if not args.clear and (args.window < 1 or args.count < 0):
        raise CliError("--window must be ≥ 1 second and --count ≥ 0")
    with database(args) as conn:
        project = _project(conn, _organization(conn, args.org), args.project)
        key = _key(conn, project, args.key)
        key_store.update_key(conn, key, rate_limit=None if args.clear
                             else (args.window, args.count))
    print("Rate limit removed" if args.clear
          else f"Rate limit set: {args.count} events per {args.window} s")


def _common(parser: argparse.ArgumentParser) -> None:
    add_data_dir(parser)
    parser.add_argument("--org", default="crashray", help="organization slug")


def add_parsers(sub: Any) -> None:
    quota = sub.add_parser("quota", help="quotas, spike protection and usage")
    qsub = quota.add_subparsers(dest="quota_command", required=True)
    listing = qsub.add_parser("list", help="the organization's quotas and key rate limits")
    _common(listing)
    command(listing, cmd_list)
    add = qsub.add_parser("add", help="add a quota")
    _common(add)
    add.add_argument("--scope", choices=SCOPES, default="organization")
    add.add_argument("--project", help="project slug (scope project or key; default: each)")
    add.add_argument("--key", help="public key (scope key)")
    add.add_argument("--category", action="append", choices=sorted(CATEGORIES),
                     help="a data category (repeat; default: all)")
    add.add_argument("--window", type=int, required=True, help="window in seconds")
    add.add_argument("--limit", type=int, help="most per window (default: count only)")
    add.add_argument("--reason", default="", help="reason code sent to SDKs")
    command(add, cmd_add)
    delete = qsub.add_parser("delete", help="delete a quota")
    _common(delete)
    delete.add_argument("id", type=int)
    command(delete, cmd_delete)
    usage = qsub.add_parser("usage", help="what the running windows have counted")
    _common(usage)
    command(usage, cmd_usage)
    spike = qsub.add_parser("spike", help="a project's spike protection")
    _common(spike)
    spike.add_argument("--project", required=True)
    switch = spike.add_mutually_exclusive_group(required=True)
    switch.add_argument("--on", action="store_true", dest="on")
    switch.add_argument("--off", action="store_false", dest="on")
    spike.add_argument("--multiplier", type=float, help="times the hourly average (default: the"
                       " instance's CRASHRAY_SPIKE_MULTIPLIER)")
    spike.add_argument("--floor-per-hour", type=int, help="events an hour always allowed")
    command(spike, cmd_spike)
    key = sub.add_parser("key", help="DSN keys")
    ksub = key.add_subparsers(dest="key_command", required=True)
    limit = ksub.add_parser("rate-limit", help="set or clear a key's rate limit")
    _common(limit)
    limit.add_argument("--project", required=True)
    limit.add_argument("--key", help="public key (default: the project's only key)")
    limit.add_argument("--window", type=int, help="seconds")
    limit.add_argument("--count", type=int, help="events per window")
    limit.add_argument("--clear", action="store_true")
    command(limit, cmd_key_rate_limit)
