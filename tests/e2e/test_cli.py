"""``crashray up`` refuses to start, at once and with a clear message, when it cannot run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.runtime import DataDirLock
from tests.support import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def crashray_up(data_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRASHRAY_")}
    return subprocess.run([sys.executable, "-m", "cluster.cli", "up", "--data-dir",
                           str(data_dir), "--port", str(port)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)


def test_a_busy_port_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = crashray_up(tmp_path / "data", port)
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert "CRASHRAY_PORT" in result.stderr


def test_a_second_crashray_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    lock = DataDirLock(data_dir)  # what a running `crashray up` holds
    lock.acquire()
    try:
        result = crashray_up(data_dir, free_port())
    finally:
        lock.release()
    assert result.returncode == 2
    assert f"another Crashray (pid {os.getpid()}) is running" in result.stderr
    assert "--data-dir" in result.stderr
