"""A private PostgreSQL under the data directory, for the embedded default.

Started from the ``pgserver`` wheel (PostgreSQL binaries inside a PyPI package), so a
laptop needs no database installed. pgserver runs the server as an unprivileged user when
started as root, as PostgreSQL requires.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


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
        import pgserver  # imported here: only the embedded default needs it

        self.path.mkdir(parents=True, exist_ok=True)
        self._owned = running_postmaster_pid(self.path) is None
        get_server = pgserver.get_server  # type: ignore[attr-defined]
        self._server = get_server(self.path, cleanup_mode="stop" if self._owned else None)
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None and self._owned:
            self._server.cleanup()
        self._server = None
