"""The processes one Crashray instance runs besides itself, found and ended by proof.

``crashray up`` starts Ray (GCS server, raylet, agents, one worker process per actor and
replica), and Serve's HAProxy below a worker. Stopped in an orderly way, Ray ends them all;
after a crash, or when a service manager's SIGTERM reaches Ray's own processes before
Crashray could stop Serve, some outlive the instance: an HAProxy keeps the HTTP port, Ray
workers keep running with nothing to talk to. This module finds them so that ``stop`` can
end them and the next start can clear them.

A process is taken as the instance's only on proof (``instance_process_kind``), never by
name alone: its command line names the instance's Ray temp dir or HAProxy dir, or it is a
Ray worker (``ray::…`` title) with files open in that temp dir. Both directories are
derived from the data directory (``cluster.runtime.ray_temp_dir``/``haproxy_dir``), and
the data-directory lock guarantees that no other live ``crashray up`` uses them. The
PostgreSQL server is proved by its ``postmaster.pid`` (``cluster.embedded_postgres``).

Linux only (``/proc``); elsewhere nothing is found and nothing is ended.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
#: Ray's own executables (ray/core/src/ray/…), which take the temp dir as an argument.
RAY_EXECUTABLES = frozenset({"gcs_server", "raylet"})
#: How often ``end_processes`` looks whether the processes are gone.
POLL_S = 0.05


@dataclass(frozen=True)
class InstancePaths:
    """The directories that only this instance's processes name."""

    ray_temp_dir: Path
    haproxy_dir: Path
    #: Where the ``ray`` package is installed: Ray's Python processes run scripts from it.
    ray_package_dir: Path


@dataclass(frozen=True)
class ProcessView:
    """What ``/proc`` tells of one process."""

    pid: int
    argv: tuple[str, ...]
    open_files: tuple[str, ...]
    #: Clock ticks after boot at which it started (``/proc/PID/stat`` field 22): a pid
    #: reused by another process has another start time.
    started: int
    #: ``/proc/PID/stat`` state; "Z" is a zombie, already ended.
    state: str = "R"
    #: The parent's pid.
    parent: int = 0


def names(text: str, directory: Path) -> bool:
    """Whether ``text`` (an argument) names ``directory`` or a path below it, alone or as
    a ``--flag=value`` value, also within a command line passed as one argument."""
    base = str(directory)
    return any(token == base or token.startswith(base + "/")
               for token in re.split(r"[\s=]", text))


def instance_process_kind(view: ProcessView, paths: InstancePaths) -> str | None:
    """"haproxy" or "ray" when ``view`` is one of the instance's processes, else None."""
    argv = view.argv
    if not argv:
        return None
    program = Path(argv[0]).name
    if program == "haproxy":
        return "haproxy" if any(names(a, paths.haproxy_dir) for a in argv[1:]) else None
    in_temp_dir = any(names(a, paths.ray_temp_dir) for a in argv[1:])
    if program in RAY_EXECUTABLES and in_temp_dir:
        return "ray"  # GCS server, raylet
    if in_temp_dir and any(names(a, paths.ray_package_dir) for a in argv):
        return "ray"  # log monitor, dashboard, agents, a worker before it names itself
    if argv[0].startswith("ray::") and any(names(f, paths.ray_temp_dir)
                                           for f in view.open_files):
        return "ray"  # a worker or agent after setproctitle (its logs are in the temp dir)
    return None


@dataclass(frozen=True)
class Found:
    view: ProcessView
    kind: str


def instance_processes(paths: InstancePaths, views: Iterable[ProcessView] | None = None
                       ) -> list[Found]:
    """The instance's live processes (zombies and this process left out)."""
    found = []
    for view in views if views is not None else live_processes():
        if view.pid == os.getpid() or view.state == "Z":
            continue
        kind = instance_process_kind(view, paths)
        if kind is not None:
            found.append(Found(view, kind))
    return found


def live_processes() -> Iterator[ProcessView]:
    """Every process this user may look at; ones that end while being read are skipped."""
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            view = read_process(int(entry.name))
            if view is not None:
                yield view


def read_process(pid: int) -> ProcessView | None:
    base = PROC / str(pid)
    try:
        argv = tuple(a.decode(errors="replace")
                     for a in (base / "cmdline").read_bytes().split(b"\0") if a)
        # The name in parentheses may hold spaces; the fields after it are fixed.
        fields = (base / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Open files are only looked at for Ray's workers (the one rule that needs them).
    files = _open_files(base) if argv and argv[0].startswith("ray::") else ()
    return ProcessView(pid, argv, files, int(fields[19]), fields[0], int(fields[1]))


def _open_files(base: Path) -> tuple[str, ...]:
    files = []
    try:
        for fd in (base / "fd").iterdir():
            try:
                files.append(os.readlink(fd))
            except OSError:
                continue
    except OSError:  # another user's process, or gone
        pass
    return tuple(files)


def still_running(view: ProcessView) -> bool:
    """Whether the process ``view`` describes runs (the same one, not a reused pid)."""
    now = read_process(view.pid)
    return now is not None and now.started == view.started and now.state != "Z"


def end_processes(views: Iterable[ProcessView], grace_s: float, patience_s: float = 0.0,
                  clock: Callable[[], float] = time.monotonic) -> list[ProcessView]:
    """Wait up to ``patience_s`` for the processes to end by themselves, then SIGTERM what
    runs, SIGKILL what still runs ``grace_s`` later; returns the ones that did not end
    even then (another user's, say). A process is signalled only while it is provably the
    one that was found (same pid and start time)."""
    remaining = _wait_ended([v for v in views if still_running(v)], patience_s, clock)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, max(grace_s, 1.0))):
        if not remaining:
            break
        for view in remaining:
            send_signal(view, sig)
        remaining = _wait_ended(remaining, wait_s, clock)
    return remaining


def _wait_ended(views: list[ProcessView], wait_s: float, clock: Callable[[], float]
                ) -> list[ProcessView]:
    deadline = clock() + wait_s
    while views and clock() < deadline:
        time.sleep(POLL_S)
        views = [v for v in views if still_running(v)]
    return views


def send_signal(view: ProcessView, sig: signal.Signals) -> None:
    """Signal the process ``view`` describes, if it still runs."""
    # A pidfd pins the process: once it is open and the start time still matches, the
    # signal cannot reach a process that took over the pid in between.
    try:
        pidfd = os.pidfd_open(view.pid)
    except OSError:
        return  # gone already
    try:
        if still_running(view):
            signal.pidfd_send_signal(pidfd, sig)
    except OSError:
        pass  # ended meanwhile, or not ours to signal; end_processes reports what is left
    finally:
        os.close(pidfd)
