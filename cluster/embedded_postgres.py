"""A private PostgreSQL under the data directory, for the embedded default.

Started from the ``pgserver`` wheel (PostgreSQL binaries inside a PyPI package), so a
laptop needs no database installed. pgserver runs the server as an unprivileged user when
started as root, as PostgreSQL requires.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

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
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "postgres"
        self._server: Any = None
        self._owned = False

    def start(self) -> str:
        """Start the server, or join the one a running ``crashray up`` started; returns its
        connection URL. Only a server started here is stopped by ``stop()``."""
        pgserver = import_pgserver()  # imported here: only the embedded default needs it
        self.path.mkdir(parents=True, exist_ok=True)
        self._owned = running_postmaster_pid(self.path) is None
        get_server = pgserver.get_server  # type: ignore[attr-defined]
        self._server = get_server(self.path, cleanup_mode="stop" if self._owned else None)
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None and self._owned:
            self._server.cleanup()
        self._server = None
