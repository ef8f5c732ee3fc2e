"""What every ``crashray`` sub-command shares: its settings (``--data-dir``, ``--port``,
``--host`` over ``CRASHRAY_*``), the instance's PostgreSQL (found as ``crashray up`` finds
it, whether or not the instance runs), the running instance's address, and the one place
that turns an error into what the user sees.

Errors are Crashray's one tree (events/errors.py); the runner maps them here only::

    CrashrayError with a 4xx status   →  "crashray <command>: <message>", exit 2
    │   (BadRequest, NotFound, Conflict, Throttled, …: the user can fix the input)
    ├── BadRequest
    │   └── CliError                  a mistake on the command line
    CrashrayError with a 5xx status   →  "crashray <command>: <message>", exit 1
    Ctrl-C                            →  exit 130 (128 + SIGINT, as shells report it)

Anything else is a bug and keeps its traceback.

This module imports no other CLI module; ``cli``, ``quota_cli`` and ``tenancy_cli`` import it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from events.errors import BadRequest, CrashrayError

if TYPE_CHECKING:
    import psycopg

    from cluster.runtime import Runtime, StartInfo
    from cluster.settings import Settings

#: Exit codes: a refusal the user can fix (argparse uses 2 for its own usage errors too),
#: a failure of Crashray or its databases, and an interrupt.
EXIT_USER_ERROR = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130

#: A sub-command: returns None (success) or its own exit code.
Command = Callable[[argparse.Namespace], int | None]


class CliError(BadRequest):
    """A mistake on the command line (a missing or contradictory option)."""

    code = "invalid_command_line"


def exit_code(error: CrashrayError) -> int:
    return EXIT_USER_ERROR if 400 <= error.status < 500 else EXIT_FAILURE


def message(error: CrashrayError) -> str:
    return "; ".join([error.detail, *error.causes])


def command(parser: argparse.ArgumentParser, function: Command) -> None:
    """Make ``function`` what ``parser``'s sub-command runs; errors name the sub-command as
    typed (``crashray quota add: …``, argparse's ``prog`` of the sub-parser)."""
    parser.set_defaults(func=function, prog=parser.prog)


def run(args: argparse.Namespace) -> int:
    """Run the parsed sub-command: the one place that maps errors to exit codes."""
    function: Command = args.func
    try:
        code = function(args)
    except CrashrayError as exc:
        print(f"{getattr(args, 'prog', 'crashray')}: {message(exc)}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if code is None else code


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="the instance's data dir (CRASHRAY_DATA_DIR,"
                        " ~/.crashray)")


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings ``crashray up`` would use, with this command line's overrides."""
    import pydantic

    from cluster.settings import Settings

    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir).expanduser()
    if getattr(args, "port", None):
        overrides["port"] = args.port
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "address", None):
        overrides["ray_address"] = args.address
    try:
        return Settings(**overrides)
    except pydantic.ValidationError as exc:
        problems = [f"CRASHRAY_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                    f" (seen {e['input']!r})" for e in exc.errors()]
        raise CliError(f"invalid setting: {'; '.join(problems)}") from exc


@contextmanager
def database(args: argparse.Namespace) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the instance's PostgreSQL (``CRASHRAY_POSTGRES_URL``, or the private
    one under the data dir: joined if ``crashray up`` runs, else started for this command
    and stopped after it), migrated; committed when the block ends without an error."""
    from cluster.runtime import Runtime

    runtime = Runtime(settings_from(args))
    try:
        with _connect(runtime) as conn:
            yield conn
            conn.commit()
    finally:
        runtime.stop()


def _connect(runtime: Runtime) -> psycopg.Connection[Any]:
    """Start (or join) the databases and connect; an unreachable PostgreSQL is Crashray's
    StorageError (exit 1) with the settings to check, not a psycopg traceback."""
    runtime.start_databases()
    return runtime.connect()


def instance_base_url(args: argparse.Namespace) -> str:
    """Where SDKs and browsers reach the instance: ``--host``/``--port`` when given, else
    the address the running ``crashray up`` of this data dir recorded, else the settings."""
    from cluster.runtime import running_instance

    settings = settings_from(args)
    if getattr(args, "host", None) or getattr(args, "port", None):
        return settings.base_url()
    instance = running_instance(settings.data_dir)
    return instance.base_url if instance is not None else settings.base_url()


def print_start_info(info: StartInfo, settings: Settings) -> None:
    """The lines ``crashray up`` and ``crashray deploy`` print once Crashray answers."""
    print(f"DSN: {info.dsn}")
    print(f"Dashboard: {info.dashboard_url}")
    if not info.has_users:
        print("No dashboard login yet: make one with `crashray user create NAME --org"
              f" {info.organization_slug} --role owner --data-dir {settings.data_dir}`")
    if info.api_token:
        print(f"API token: {info.api_token}")
    else:
        print("API token: printed on the first start only (it is stored hashed); make a"
              f" new one with `crashray token create --data-dir {settings.data_dir}`",
              flush=True)
