"""End-to-end: ``crashray up`` as a user runs it (embedded PostgreSQL and ClickHouse under a
temp data dir), driven by the official SDKs in their own processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import free_port

#: A first start installs nothing but still starts Ray, Serve and PostgreSQL.
STARTUP_TIMEOUT_S = 180
SHUTDOWN_TIMEOUT_S = 120


@dataclass
class CrashrayProcess:
    process: subprocess.Popen[str]
    data_dir: Path
    port: int
    dsn: str
    token: str | None
    output: list[str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_crashray(data_dir: Path, port: int, env: dict[str, str] | None = None,
                   new_session: bool = False) -> CrashrayProcess:
    """``crashray up`` in its own process; with ``new_session`` also in its own session and
    process group, as a service manager starts it (a test can then signal the group)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CRASHRAY_")}
    environment.update(env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", "up", "--data-dir", str(data_dir),
         "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=environment, cwd=Path(__file__).resolve().parents[2],
        start_new_session=new_session)
    output: list[str] = []
    dsn = token = None
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if m := re.match(r"^DSN: (\S+)", line):
            dsn = m[1]
        elif m := re.match(r"^API token: (crs_\w+)", line):
            token = m[1]
        elif line.startswith("Crashray is running"):
            break
    if dsn is None or not output[-1].startswith("Crashray is running"):
        process.kill()
        pytest.fail("crashray up did not start:\n" + "".join(output[-40:]))
    _drain_in_background(process, output)
    return CrashrayProcess(process, data_dir, port, dsn, token, output)


def _drain_in_background(process: subprocess.Popen[str], output: list[str]) -> None:
    import threading

    def drain() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)

    threading.Thread(target=drain, daemon=True).start()


def processes_using(data_dir: Path) -> list[str]:
    """Command lines of live processes that mention ``data_dir``, Ray's temp dir for it or
    its HAProxy dir (orphans after a stop)."""
    from cluster.runtime import haproxy_dir, ray_temp_dir

    marks = {str(data_dir), str(ray_temp_dir(data_dir)), str(haproxy_dir(ray_temp_dir(data_dir)))}
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(mark in text for mark in marks):
            found.append(text)
    return found


def stop_crashray(c: CrashrayProcess) -> int:
    c.process.send_signal(signal.SIGTERM)
    return c.process.wait(timeout=SHUTDOWN_TIMEOUT_S)


@pytest.fixture(scope="session")
def crashray_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashrayProcess]:
    data_dir = tmp_path_factory.mktemp("e2e")
    instance = start_crashray(data_dir, free_port())
    yield instance
    code = stop_crashray(instance)
    assert code == 0, "".join(instance.output[-40:])
