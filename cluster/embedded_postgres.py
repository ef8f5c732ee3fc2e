"""A private PostgreSQL under the data directory, for the embedded default.

Started from the ``pgserver`` wheel (PostgreSQL binaries inside a PyPI package), so a
laptop needs no database installed. pgserver runs the server as an unprivileged user when
started as root, as PostgreSQL requires.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "postgres"
        self._server: Any = None

    def start(self) -> str:
        """Start (or join an already running) server; returns its connection URL."""
        import pgserver  # imported here: only the embedded default needs it

        self.path.mkdir(parents=True, exist_ok=True)
        # cleanup_mode="stop": stop the server when the last user of it stops.
        get_server = pgserver.get_server  # type: ignore[attr-defined]
        self._server = get_server(self.path, cleanup_mode="stop")
        return str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
