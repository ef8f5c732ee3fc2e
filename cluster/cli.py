"""The ``crashray`` command.

    crashray up [--data-dir DIR] [--port N] [--host H]   run Crashray until Ctrl-C/SIGTERM
    crashray token create [--org SLUG|--user NAME] [--scopes a,b]   a new API token (last word)
    crashray user|org|team|project create ...            tenants (project create prints the DSN)
    crashray grouping hash [--fingerprinting-rules F] [--enhancements F] < event.json
                                                         why an event groups as it does
    crashray quota list|add|delete|usage|spike           quotas and spike protection
    crashray key rate-limit --project SLUG ...           a DSN key's rate limit
    crashray dead-letters list|replay|drop               queue items consumers gave up on
    crashray up --address ADDR                           run on an existing Ray cluster
    crashray deploy|undeploy|status --address ADDR       leave it deployed there; remove; inspect
    crashray export --project SLUG [--since T] [--until T] --to DIR
                                                         a project's events as Parquet files
    crashray rollups rebuild --project SLUG              recompute a project's derived counts
    crashray storage                                     sizes, and what retention removes next
    crashray backup DIR / crashray restore DIR           the databases to / from a folder
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from cluster import (
    backup_cli,
    cli_common,
    dead_letters_cli,
    deploy_cli,
    grouping_cli,
    pipelines_cli,
    quota_cli,
    storage_cli,
    tenancy_cli,
)
from cluster.cli_common import command


def _on_stop_signals(stop: threading.Event) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


def cmd_up(args: argparse.Namespace) -> None:
    from cluster.runtime import Runtime, apply_ray_environment
    settings = cli_common.settings_from(args)
    apply_ray_environment(settings)
    runtime = Runtime(settings, own_job=True)
    stop = threading.Event()
    _on_stop_signals(stop)
    print(f"Starting Crashray (data in {settings.data_dir}) ...", flush=True)
    try:
        info = runtime.start()
        _on_stop_signals(stop)  # again: ray.init installs its own SIGTERM handler
        cli_common.print_start_info(info, settings)
        print("Crashray is running; Ctrl-C stops it.", flush=True)
        stop.wait()
        print("Stopping Crashray ...", flush=True)
    finally:
        orderly = runtime.stop()
    print("Stopped.", flush=True)
    if not orderly:
        # Ray's processes went away under it (a service manager signalled them too): its
        # client in this process would wait for them, then crash, while Python exits.
        # Everything of the instance has ended; leave without running exit hooks.
        sys.stderr.flush()
        os._exit(0)


def default_token_scopes() -> list[str]:
    """What ``crashray token create`` gives without ``--scopes``: an owner's scopes (Sentry's
    owner role), so the token can also manage teams (``team:*``) and members (``member:*``)."""
    from events.access import ROLE_SCOPES

    return sorted(ROLE_SCOPES["owner"])


def cmd_token_create(args: argparse.Namespace) -> None:
    """A new API token, of an organization (``--org``) or of a user (``--user``: it acts in
    that user's organizations, within its roles); the token is the last word printed."""
    from events.access import check_scopes
    from storage import tenancy

    scopes = args.scopes.split(",") if args.scopes else default_token_scopes()
    check_scopes(scopes)
    with cli_common.database(args) as conn:
        if args.user:
            owner = f"user {args.user}"
            token = tenancy.create_token(conn, args.name, scopes,
                                         user=tenancy.user_id(conn, args.user))
        else:
            owner = f"organization {args.org}"
            token = tenancy.create_token(conn, args.name, scopes,
                                         org_id=tenancy.organization_id(conn, args.org))
    print(f"Token for {owner} with scopes {','.join(scopes)}: {token}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crashray", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run Crashray on this machine until stopped")
    up.add_argument("--data-dir", help="where data lives (CRASHRAY_DATA_DIR, ~/.crashray)")
    up.add_argument("--port", type=int, help="HTTP port (CRASHRAY_PORT, 9000)")
    up.add_argument("--host", help="HTTP address (CRASHRAY_HOST, 127.0.0.1)")
    up.add_argument("--address", help="run on this existing Ray cluster instead of a local"
                    " Ray (CRASHRAY_RAY_ADDRESS), e.g. 10.0.0.5:6379")
    command(up, cmd_up)
    token = sub.add_parser("token", help="API tokens")
    tsub = token.add_subparsers(dest="token_command", required=True)
    create = tsub.add_parser("create", help="create an API token (printed once)")
    cli_common.add_data_dir(create)
    create.add_argument("--org", default="crashray", help="organization slug")
    create.add_argument("--user", help="a user's token instead (acts in its organizations)")
    create.add_argument("--scopes", help="comma-separated scopes (default: an owner's:"
                        f" {','.join(default_token_scopes())})")
    create.add_argument("--name", default="created by crashray token create")
    command(create, cmd_token_create)
    grouping_cli.add_parsers(sub)
    quota_cli.add_parsers(sub)
    tenancy_cli.add_parsers(sub)
    dead_letters_cli.add_parsers(sub)
    deploy_cli.add_parsers(sub)
    pipelines_cli.add_parsers(sub)
    storage_cli.add_parsers(sub)
    backup_cli.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    return cli_common.run(args)


if __name__ == "__main__":
    sys.exit(main())
