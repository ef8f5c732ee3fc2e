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
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from events.errors import BadRequest
from events.quotas import CATEGORIES, SCOPES, InvalidQuota, Quota


class CliError(BadRequest):
    """A mistake in the command line: printed as ``crashray <command>: <message>``."""


@contextmanager
def _database(args: argparse.Namespace) -> Iterator[Any]:
    from cluster.cli import _settings
    from cluster.runtime import Runtime
    from storage import postgres

    runtime = Runtime(_settings(args))
    runtime.start_databases()  # joins a running instance's embedded PostgreSQL if any
    try:
        with postgres.connect(runtime.postgres_url) as conn:
            yield conn
            conn.commit()
    finally:
        runtime.stop()


def _organization(conn: Any, slug: str) -> int:
    row = conn.execute("SELECT id FROM organizations WHERE slug = %s", (slug,)).fetchone()
    if row is None:
        raise CliError(f"no organization {slug!r}; the first `crashray up` creates 'crashray'")
    return int(row[0])


def _project(conn: Any, organization_id: int, slug: str | None) -> int:
    if not slug:
        raise CliError("--project SLUG is needed for this")
    row = conn.execute("SELECT id FROM projects WHERE organization_id = %s AND slug = %s",
                       (organization_id, slug)).fetchone()
    if row is None:
        raise CliError(f"no project {slug!r} in this organization")
    return int(row[0])


def _key(conn: Any, project_id: int, public_key: str | None) -> Any:
    from storage import keys as key_store
    from storage.projects import project_by_id

    project = project_by_id(conn, _org_of_project(conn, project_id), project_id)
    assert project is not None
    keys = key_store.project_keys(conn, project)
    if public_key is None:
        if len(keys) != 1:
            raise CliError(f"the project has {len(keys)} keys; name one with --key")
        return keys[0]
    key = key_store.find_key(conn, project, public_key)
    if key is None:
        raise CliError(f"no key {public_key!r} in this project")
    return key


def _org_of_project(conn: Any, project_id: int) -> int:
    row = conn.execute("SELECT organization_id FROM projects WHERE id = %s",
                       (project_id,)).fetchone()
    return int(row[0])


def cmd_list(args: argparse.Namespace) -> None:
    from storage import quotas as quota_store

    with _database(args) as conn:
        org = _organization(conn, args.org)
        stored = quota_store.list_quotas(conn, org)
        keys = conn.execute(
            "SELECT p.slug, k.public_key, k.rate_limit_count, k.rate_limit_window_s"
            " FROM project_keys k JOIN projects p ON p.id = k.project_id"
            " WHERE p.organization_id = %s AND k.rate_limit_count IS NOT NULL ORDER BY k.id",
            (org,)).fetchall()
    for s in stored:
        q = s.quota
        print(f"quota {s.id}: {q.scope} {q.scope_id if q.scope_id is not None else '(each)'}"
              f" {','.join(sorted(q.categories)) or 'all categories'}:"
              f" {'no limit' if q.limit is None else q.limit} per {q.window_s} s"
              f"{f' ({q.reason_code})' if q.reason_code else ''}")
    for project, key, count, window in keys:
        print(f"key {key} of project {project}: {count} events per {window} s")
    if not stored and not keys:
        print("no quotas and no key rate limits")


def cmd_add(args: argparse.Namespace) -> None:
    from storage import quotas as quota_store

    with _database(args) as conn:
        org = _organization(conn, args.org)
        scope_id: int | None = org
        if args.scope == "project":
            scope_id = _project(conn, org, args.project) if args.project else None
        elif args.scope == "key":
            scope_id = _key(conn, _project(conn, org, args.project), args.key).id \
                if args.project else None
        try:
            quota = Quota("new", org, args.scope, scope_id, frozenset(args.category or ()),
                          args.limit, args.window, args.reason)
        except InvalidQuota as exc:
            raise CliError(str(exc)) from exc
        quota_id = quota_store.add_quota(conn, quota)
    print(f"Added quota {quota_id}")


def cmd_delete(args: argparse.Namespace) -> None:
    from storage import quotas as quota_store

    with _database(args) as conn:
        if not quota_store.delete_quota(conn, _organization(conn, args.org), args.id):
            raise CliError(f"no quota {args.id} in organization {args.org!r}")
    print(f"Deleted quota {args.id}")


def cmd_usage(args: argparse.Namespace) -> None:
    from serve_apps.api.quotas import usage_json
    from storage import quotas as quota_store

    with _database(args) as conn:
        rows = quota_store.current_usage(conn, _organization(conn, args.org))
    for row in (usage_json(u) for u in rows):
        print(f"{row['quota']} {row['scope']} {row['scopeId']}: {row['used']} until"
              f" {row['windowEnds']}")
    if not rows:
        print("nothing counted in the windows running now")


def cmd_spike(args: argparse.Namespace) -> None:
    from storage.projects import set_spike_protection

    if args.multiplier is not None and args.multiplier <= 0:
        raise CliError("--multiplier must be > 0")
    with _database(args) as conn:
        project = _project(conn, _organization(conn, args.org), args.project)
        set_spike_protection(conn, project, args.on, args.multiplier,
                                         args.floor_per_hour)
    print(f"Spike protection {'on' if args.on else 'off'} for project {args.project}")


def cmd_key_rate_limit(args: argparse.Namespace) -> None:
    from storage import keys as key_store

    if not args.clear and (args.window is None or args.count is None):
        raise CliError("give --window SECONDS and --count EVENTS, or --clear")
    if not args.clear and (args.window < 1 or args.count < 0):
        raise CliError("--window must be ≥ 1 second and --count ≥ 0")
    with _database(args) as conn:
        project = _project(conn, _organization(conn, args.org), args.project)
        key = _key(conn, project, args.key)
        key_store.update_key(conn, key, rate_limit=None if args.clear
                               else (args.window, args.count))
    print("Rate limit removed" if args.clear
          else f"Rate limit set: {args.count} events per {args.window} s")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="the instance's data dir (CRASHRAY_DATA_DIR)")
    parser.add_argument("--org", default="crashray", help="organization slug")


def _run(command: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from storage.tenancy import TenancyError

        try:
            command(args)
        except (CliError, TenancyError) as exc:  # the message says what was wrong
            print(f"crashray {args.command}: {exc}", file=sys.stderr)
            return 2
        return 0
    return run


def add_parsers(sub: Any) -> None:
    quota = sub.add_parser("quota", help="quotas, spike protection and usage")
    qsub = quota.add_subparsers(dest="quota_command", required=True)
    listing = qsub.add_parser("list", help="the organization's quotas and key rate limits")
    _common(listing)
    listing.set_defaults(func=_run(cmd_list))
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
    add.set_defaults(func=_run(cmd_add))
    delete = qsub.add_parser("delete", help="delete a quota")
    _common(delete)
    delete.add_argument("id", type=int)
    delete.set_defaults(func=_run(cmd_delete))
    usage = qsub.add_parser("usage", help="what the running windows have counted")
    _common(usage)
    usage.set_defaults(func=_run(cmd_usage))
    spike = qsub.add_parser("spike", help="a project's spike protection")
    _common(spike)
    spike.add_argument("--project", required=True)
    switch = spike.add_mutually_exclusive_group(required=True)
    switch.add_argument("--on", action="store_true", dest="on")
    switch.add_argument("--off", action="store_false", dest="on")
    spike.add_argument("--multiplier", type=float, help="times the hourly average (default: the"
                       " instance's CRASHRAY_SPIKE_MULTIPLIER)")
    spike.add_argument("--floor-per-hour", type=int, help="events an hour always allowed")
    spike.set_defaults(func=_run(cmd_spike))
    key = sub.add_parser("key", help="DSN keys")
    ksub = key.add_subparsers(dest="key_command", required=True)
    limit = ksub.add_parser("rate-limit", help="set or clear a key's rate limit")
    _common(limit)
    limit.add_argument("--project", required=True)
    limit.add_argument("--key", help="public key (default: the project's only key)")
    limit.add_argument("--window", type=int, help="seconds")
    limit.add_argument("--count", type=int, help="events per window")
    limit.add_argument("--clear", action="store_true")
    limit.set_defaults(func=_run(cmd_key_rate_limit))
