"""``crashray dead-letters …``: the queue items consumers gave up on, from the shell.

Consumers dead-letter an item only when it fails on its own (poison: say, its project was
deleted after ingest accepted it, or it keeps killing the consumer that holds it); a
storage outage never does (the items wait in the queue). Like ``crashray quota``, these
find the instance's PostgreSQL from the same settings and ``--data-dir`` as ``crashray up``,
whether or not it is running.

    crashray dead-letters list [--org SLUG] [--limit N]
    crashray dead-letters replay [--org SLUG] (--id N [--id N ...] | --all)
    crashray dead-letters drop [--org SLUG] (--id N [--id N ...] | --all)

``replay`` puts items back into the queue as if never claimed (a running instance picks
them up at once; a stopped one when it starts); ``drop`` deletes them for good. Without
``--org`` they act on the whole instance.
"""

from __future__ import annotations

import argparse
from typing import Any

from cluster.cli_common import CliError, add_data_dir, command, database

#: Characters of an error shown per line by ``list``.
ERROR_PREVIEW_CHARS = 160


def _organization(conn: Any, slug: str | None) -> int | None:
    from storage import tenancy

    return None if slug is None else tenancy.organization_id(conn, slug)


def _ids(args: argparse.Namespace) -> list[int] | None:
    """The ``--id`` values, or None for ``--all``; one of them is required."""
    if args.all and args.id:
        raise CliError("give --id N or --all, not both")
    if not args.all and not args.id:
        raise CliError("name the dead letters: --id N (repeatable) or --all")
    return None if args.all else list(args.id)


def cmd_list(args: argparse.Namespace) -> None:
    from storage import queue

    with database(args) as conn:
        found = queue.dead_letters(conn, _organization(conn, args.org), args.limit)
    for d in found:
        error = " ".join(d.error.split())
        if len(error) > ERROR_PREVIEW_CHARS:
            error = error[:ERROR_PREVIEW_CHARS - 1] + "…"
        project = d.project_slug or f"project {d.project_id} (deleted)"
        print(f"{d.id}\t{project}\t{d.item_type}\t{d.event_id or '-'}\t{d.attempts} attempts"
              f"\tfailed {d.failed_at.isoformat(timespec='seconds')}\t{d.payload_bytes} bytes"
              f"\t{error}")
    if not found:
        print("no dead letters")


def cmd_replay(args: argparse.Namespace) -> None:
    from storage import queue

    ids = _ids(args)
    with database(args) as conn:
        replayed = queue.replay_dead_letters(conn, _organization(conn, args.org), ids)
    _report("replayed", replayed, ids)


def cmd_drop(args: argparse.Namespace) -> None:
    from storage import queue

    ids = _ids(args)
    with database(args) as conn:
        dropped = queue.drop_dead_letters(conn, _organization(conn, args.org), ids)
    _report("dropped", dropped, ids)


def _report(done: str, found: list[int], asked: list[int] | None) -> None:
    from events.errors import NotFound

    missing = sorted(set(asked or ()) - set(found))
    if missing and not found:
        raise NotFound(f"no dead letter {', '.join(map(str, missing))} here"
                       " (see crashray dead-letters list)")
    print(f"{done} {len(found)} dead letter{'' if len(found) == 1 else 's'}"
          + (f": {', '.join(map(str, found))}" if found else ""))
    if missing:
        print(f"not found: {', '.join(map(str, missing))}")


def add_parsers(sub: Any) -> None:
    dead = sub.add_parser("dead-letters", help="queue items consumers gave up on: list,"
                          " replay or drop them")
    dsub = dead.add_subparsers(dest="dead_letters_command", required=True)
    listing = dsub.add_parser("list", help="the newest dead letters, with their errors")
    listing.add_argument("--limit", type=int, default=100, help="most to list (100)")
    command(listing, cmd_list)
    for name, function, verb in (("replay", cmd_replay, "put back into the queue"),
                                 ("drop", cmd_drop, "delete for good")):
        action = dsub.add_parser(name, help=f"dead letters to {verb}")
        action.add_argument("--id", type=int, action="append", help="a dead letter's id"
                            " (repeatable)")
        action.add_argument("--all", action="store_true", help="every dead letter in scope")
        command(action, function)
    for parser in (listing, *(dsub.choices[n] for n in ("replay", "drop"))):
        parser.add_argument("--org", help="only this organization's (default: all)")
        add_data_dir(parser)
