"""A private PostgreSQL under the data directory, for the embedded default.

Started from the ``pgserver`` wheel (PostgreSQL binaries inside a PyPI package), so a
laptop needs no database installed. pgserver runs the server as an unprivileged user when
started as root, as PostgreSQL requires.

pg_ctl detaches the server (its own session), so no signal meant for ``crashray up`` or
its process group reaches it: ``crashray up`` stops it (``EmbeddedPostgres.stop``, bounded),
and a start after a crash clears what the crashed run left (``clear_leftover_server``).
pgserver counts the processes using a server in ``.handle_pids.json`` and the last to
leave stops it; entries of processes that died are dropped (``live_handles``).
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from cluster.leftovers import ProcessView, end_processes, read_process, send_signal, still_running

#: The XDG spec's runtime directory: owned by the user, mode 0700.
RUNTIME_DIR_MODE = 0o700


def usable_runtime_dir(path: Path) -> bool:
    """Whether ``path`` is what the XDG spec (and platformdirs) accept as a runtime dir: a
    real directory (not a symlink) of this user with mode 0700."""
    try:
        info = path.lstat()
    except OSError:
        return False
    return (stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid()
            and stat.S_IMODE(info.st_mode) == RUNTIME_DIR_MODE)


def runtime_dir() -> Path | None:
    """A runtime dir for pgserver when ``XDG_RUNTIME_DIR`` is unset (root in a container,
    cron, CI): the systemd one if it exists, else one of ours in the temp dir, made 0700.
    None when neither is usable (e.g. another user owns ours): platformdirs then warns,
    rightly, and falls back as it always did."""
    systemd = Path(f"/run/user/{os.geteuid()}")
    if usable_runtime_dir(systemd):
        return systemd
    ours = Path(tempfile.gettempdir()) / f"crashray-runtime-{os.geteuid()}"
    try:
        ours.mkdir(mode=RUNTIME_DIR_MODE)
    except FileExistsError:
        pass
    except OSError:
        return None
    return ours if usable_runtime_dir(ours) else None


def import_pgserver() -> ModuleType:
    """``import pgserver`` with the runtime dir it needs. pgserver asks platformdirs for the
    user's runtime dir when its module is imported (``PostgresServer.runtime_path``, for its
    machine-wide start lock and, when the data dir path is too long, its socket); without
    ``XDG_RUNTIME_DIR`` platformdirs prints a RuntimeDirWarning on every command. Set for
    the import only: nothing else of pgserver reads it, and the processes Crashray starts
    keep the environment they were given."""
    if "pgserver" in sys.modules or os.environ.get("XDG_RUNTIME_DIR"):
        import pgserver

        return pgserver
    given = os.environ.get("XDG_RUNTIME_DIR")
    chosen = runtime_dir()
    if chosen is not None:
        os.environ["XDG_RUNTIME_DIR"] = str(chosen)
    try:
        import pgserver
    finally:
        if given is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = given
    return pgserver


def running_postmaster_pid(pgdata: Path) -> int | None:
    """The pid of the PostgreSQL server running on ``pgdata``, if one is."""
    pid = postmaster_pid(pgdata)
    return pid if pid is not None and Path(f"/proc/{pid}").exists() else None


def postmaster_pid(pgdata: Path) -> int | None:
    """The pid ``postmaster.pid`` records (alive or not)."""
    try:
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def is_postmaster_of(argv: Sequence[str], pgdata: Path) -> bool:
    """Whether a command line is a PostgreSQL server's on ``pgdata`` (``postgres -D DIR``,
    as pg_ctl starts it)."""
    if not argv or Path(argv[0]).name != "postgres":
        return False
    return any(flag == "-D" and Path(value) == pgdata
               for flag, value in itertools.pairwise(argv))


#: Seconds a leftover server gets for a fast shutdown (SIGINT: sessions are ended,
#: a checkpoint is written) before an immediate one (SIGQUIT: recovery at the next start).
LEFTOVER_FAST_SHUTDOWN_S = 10.0
#: pgserver's record of the processes using a server (``PostgresServer``'s
#: ``global_process_id_list``): the last one to leave stops it.
HANDLES_FILE = ".handle_pids.json"


def live_handles(pgdata: Path) -> list[int]:
    """The processes recorded as using the server on ``pgdata`` that still run; the record
    is rewritten without the others. A crashed ``crashray up`` stays in it, and pgserver
    stops a server only when its last recorded user leaves (``PostgresServer._cleanup``),
    so one dead entry would keep the server running forever. Call with pgserver's lock."""
    path = pgdata / HANDLES_FILE
    try:
        recorded = [int(pid) for pid in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        return []
    alive = [pid for pid in recorded if Path(f"/proc/{pid}").exists()]
    if alive != recorded:
        path.write_text(json.dumps(alive))
    return alive


def clear_leftover_server(pgdata: Path) -> str | None:
    """Before joining or starting the server on ``pgdata``: a ``postmaster.pid`` whose
    process is not that server is removed (PostgreSQL would refuse to start over a pid
    another process now has); a server no live process uses (its ``crashray up`` crashed)
    is shut down, so the instance starts on a fresh one. Says what it did, if anything.
    Call with pgserver's lock."""
    pid = postmaster_pid(pgdata)
    if pid is None:
        return None
    view = read_process(pid)
    if view is None and Path(f"/proc/{pid}").exists():
        return None  # a process this user may not look at: nothing is proved, nothing done
    if view is None or view.state == "Z" or not is_postmaster_of(view.argv, pgdata):
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
        return f"removed a stale postmaster.pid (pid {pid} is no PostgreSQL on {pgdata})"
    if live_handles(pgdata):
        return None  # in use (a management command): joined, not ended
    _shut_down(view)
    return f"shut down PostgreSQL (pid {pid}) left running by a previous Crashray"


def _shut_down(view: ProcessView) -> None:
    """Fast shutdown, then immediate, then SIGKILL (PostgreSQL's shutdown signals,
    postgresql.org/docs/current/server-shutdown.html)."""
    for sig in (signal.SIGINT, signal.SIGQUIT):
        send_signal(view, sig)
        deadline = time.monotonic() + LEFTOVER_FAST_SHUTDOWN_S
        while still_running(view) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not still_running(view):
            return
    end_processes([view], grace_s=0.0)


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "postgres"
        self._server: Any = None
        self.cleared: str | None = None

    def start(self) -> str:
        """Start the server, or join the one a running ``crashray up`` or management
        command started; returns its connection URL. pgserver counts the processes using
        it, and the last one to stop it stops the server (``stop``)."""
        pgserver = import_pgserver()  # imported here: only the embedded default needs it
        self.path.mkdir(parents=True, exist_ok=True)
        pgdata = self.path.resolve()  # as pgserver records it and postgres -D names it
        with pgserver.PostgresServer._lock:  # type: ignore[attr-defined]
            self.cleared = clear_leftover_server(pgdata)
        get_server = pgserver.get_server  # type: ignore[attr-defined]
        self._server = get_server(self.path, cleanup_mode="stop")
        return str(self._server.get_uri())

    def stop(self, timeout_s: float = 60.0) -> None:
        """Leave the server; the last process using it stops it (fast shutdown), within
        ``timeout_s``, else it is shut down immediately (SIGQUIT) and, failing that,
        killed: PostgreSQL recovers from its WAL at the next start."""
        server, self._server = self._server, None
        if server is None:
            return
        import threading

        pgserver = import_pgserver()
        atexit.unregister(server._cleanup)  # left here, bounded; not again at exit
        with pgserver.PostgresServer._lock:  # type: ignore[attr-defined]
            live_handles(self.path.resolve())
        leaving = threading.Thread(target=server.cleanup, daemon=True,
                                   name="crashray-postgres-stop")
        leaving.start()
        leaving.join(timeout_s)
        pgdata = self.path.resolve()
        if leaving.is_alive():
            view = _postmaster_view(pgdata)
            if view is not None:
                _shut_down(view)
            return
        with pgserver.PostgresServer._lock:  # type: ignore[attr-defined]
            if live_handles(pgdata):
                return  # another process still uses it (a management command)
            # pgserver stops only the server process it started or found
            # (PostgresServer._cleanup checks that one process): a server restarted since
            # (pg_ctl by an operator, tests/e2e/test_faults.py) would outlive the instance.
            view = _postmaster_view(pgdata)
            if view is not None:
                _shut_down(view)


def _postmaster_view(pgdata: Path) -> ProcessView | None:
    pid = postmaster_pid(pgdata)
    view = read_process(pid) if pid is not None else None
    return view if view is not None and is_postmaster_of(view.argv, pgdata) else None
