"""The ``crashray`` command as a user runs it: ``crashray up`` refuses to start, at once and
with a clear message, when it cannot run; when it runs it prints only its own lines; the
management commands find its port, and refuse with a message and exit code 2, never a
traceback, when the input is wrong."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cluster.leftovers import instance_processes
from cluster.runtime import INSTANCE_FILE, DataDirLock, instance_paths
from tests.e2e.conftest import CrashrayProcess, start_crashray, stop_crashray
from tests.support import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def crashray_up(data_dir: Path, port: int, **settings: str
                ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRASHRAY_")}
    env.update(settings)
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


def test_an_unreachable_postgresql_is_refused_naming_the_setting_and_leaves_nothing_running(
        tmp_path: Path) -> None:
    """PostgreSQL starts while Ray does (cluster/runtime.py ``Runtime.start``): when it
    cannot be reached, the user reads why and what to check, not a traceback, and the Ray
    that started meanwhile is stopped."""
    data_dir = tmp_path / "data"
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = crashray_up(data_dir, free_port(),
                         CRASHRAY_POSTGRES_URL=f"postgresql://postgres@127.0.0.1:{port}/x")
    assert result.returncode == 1, result.stderr
    assert "cannot reach PostgreSQL" in result.stderr
    assert f"port {port} failed" in result.stderr
    assert "check CRASHRAY_POSTGRES_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert not instance_processes(instance_paths(data_dir))


def crashray(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """A management command in its own process, without a terminal (stdin a pipe or
    /dev/null), as from a script."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRASHRAY_")}
    return subprocess.run([sys.executable, "-m", "cluster.cli", *argv], input=stdin,
                          stdin=subprocess.DEVNULL if stdin is None else None,
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=env)


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashrayProcess]:
    """One ``crashray up`` on a port that is not the default, for the checks below; the
    last test stops it and reads everything it printed."""
    running = start_crashray(tmp_path_factory.mktemp("cli"), free_port())
    yield running
    if running.process.poll() is None:
        stop_crashray(running)


def test_project_create_prints_a_dsn_with_the_running_instances_port(
        instance: CrashrayProcess) -> None:
    result = crashray("project", "create", "web", "--org", "crashray", "--data-dir",
                      str(instance.data_dir))
    assert result.returncode == 0, result.stderr
    dsn = urlsplit(result.stdout.split()[-1])
    assert (dsn.hostname, dsn.port) == ("127.0.0.1", instance.port)
    assert result.stderr == ""  # no warning either (pgserver's XDG_RUNTIME_DIR one was)


def test_an_organization_that_does_not_exist_is_refused_with_exit_code_2(
        instance: CrashrayProcess) -> None:
    result = crashray("quota", "list", "--org", "nope", "--data-dir", str(instance.data_dir))
    assert result.returncode == 2
    assert result.stderr == "crashray quota list: no organization 'nope'\n"
    assert result.stdout == ""


def test_user_create_without_a_terminal_or_a_password_says_how_to_give_one(
        tmp_path: Path) -> None:
    result = crashray("user", "create", "alice", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr == ("crashray user create: no terminal to ask for the password: pipe"
                             " it with --password-stdin or set CRASHRAY_PASSWORD\n")
    created = crashray("user", "create", "alice", "--password-stdin", "--data-dir",
                       str(tmp_path), stdin="a long password\n")
    assert created.returncode == 0, created.stderr
    assert created.stdout == "Created user alice\n"


#: Everything ``crashray up`` prints on a first start and a stop (stdout and stderr, as a
#: terminal shows them): Crashray's own lines, nothing from Ray, Serve or pgserver.
def expected_up_lines(data_dir: Path, port: int) -> list[str]:
    base = re.escape(f"http://127.0.0.1:{port}")
    where = re.escape(str(data_dir))
    return [
        rf"Starting Crashray \(data in {where}\) \.\.\.",
        rf"DSN: http://[0-9a-f]{{32}}@{re.escape(f'127.0.0.1:{port}')}/1",
        rf"Dashboard: {base}/",
        r"No dashboard login yet: make one with `crashray user create NAME --org crashray"
        rf" --role owner --data-dir {where}`",
        r"API token: crs_[0-9a-f]{64}",
        r"Crashray is running; Ctrl-C stops it\.",
        r"Stopping Crashray \.\.\.",
        r"Stopped\.",
    ]


def test_up_prints_only_its_own_lines_and_forgets_its_address_when_stopped(
        instance: CrashrayProcess) -> None:
    assert (instance.data_dir / INSTANCE_FILE).exists()
    assert stop_crashray(instance) == 0
    assert not (instance.data_dir / INSTANCE_FILE).exists()
    deadline = time.monotonic() + 10
    while not "".join(instance.output).endswith("Stopped.\n") and time.monotonic() < deadline:
        time.sleep(0.1)  # the reader thread takes the last lines off the pipe
    lines = "".join(instance.output).splitlines()
    expected = expected_up_lines(instance.data_dir, instance.port)
    assert len(lines) == len(expected), "\n".join(lines)
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), f"{line!r} is not {pattern!r}"
