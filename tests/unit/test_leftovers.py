"""Which processes belong to an instance, and ending them (``cluster/leftovers.py``), and
what a crash leaves of the private PostgreSQL (``cluster/embedded_postgres.py``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.embedded_postgres import clear_leftover_server, is_postmaster_of, live_handles
from cluster.leftovers import (
    InstancePaths,
    ProcessView,
    end_processes,
    instance_process_kind,
    instance_processes,
    names,
    read_process,
    still_running,
)
from cluster.runtime import StartError, private_dir

RAY = "/venv/lib/python3.11/site-packages/ray"
PATHS = InstancePaths(Path("/data/ray"), Path("/tmp/crhap-0123456789"), Path(RAY))
SESSION = "/data/ray/session_2026-12-03_14-46-24_277416_22151"


def view(*argv: str, files: tuple[str, ...] = ()) -> ProcessView:
    return ProcessView(4242, argv, files, started=1000)


@pytest.mark.parametrize(("process", "kind"), [
    (view("/venv/bin/haproxy", "-db", "-f", "/tmp/crhap-0123456789/abc/haproxy.cfg", "-dR"),
     "haproxy"),
    (view(f"{RAY}/core/src/ray/gcs/gcs_server", f"--log_dir={SESSION}/logs"), "ray"),
    (view(f"{RAY}/core/src/ray/raylet/raylet", "--temp_dir=/data/ray"), "ray"),
    (view("/venv/bin/python", "-u", f"{RAY}/_private/log_monitor.py",
          f"--logs-dir={SESSION}/logs"), "ray"),
    (view("ray::ServeReplica:ingest:ingest", files=(f"{SESSION}/logs/raylet.err",)), "ray"),
    (view("ray::IDLE", files=("/dev/null", f"{SESSION}/logs/python-core-worker-1.log")),
     "ray"),
])
def test_the_instances_processes_are_recognised(process: ProcessView, kind: str) -> None:
    assert instance_process_kind(process, PATHS) == kind


@pytest.mark.parametrize("process", [
    # another instance's (its directories only share a prefix with ours)
    view("/venv/bin/haproxy", "-db", "-f", "/tmp/crhap-0123456789x/abc/haproxy.cfg"),
    view(f"{RAY}/core/src/ray/raylet/raylet", "--temp_dir=/data/ray2"),
    view("ray::IDLE", files=("/other/ray/session_1/logs/raylet.err",)),
    # someone reading the instance's logs, or the `crashray up` that names its data dir
    view("tail", "-f", f"{SESSION}/logs/raylet.out"),
    view("/venv/bin/python", "-m", "cluster.cli", "up", "--data-dir", "/data"),
    view("/usr/sbin/haproxy", "-f", "/etc/haproxy/haproxy.cfg"),
    view(),
])
def test_processes_without_proof_are_not_the_instances(process: ProcessView) -> None:
    assert instance_process_kind(process, PATHS) is None


def test_a_directory_is_named_alone_as_a_flag_value_or_inside_a_command_line() -> None:
    here = Path("/data/ray")
    assert names("/data/ray", here) and names("--temp-dir=/data/ray", here)
    assert names("python setup_worker.py --temp-dir=/data/ray/x --y=1", here)
    assert not names("/data/ray2/x", here) and not names("/data", here)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process that ignores SIGTERM, as a hung worker might."""
    process = subprocess.Popen([sys.executable, "-c", "import signal, time;"
                                " signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                                " print('ready', flush=True); time.sleep(60)"],
                               stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == b"ready\n"
    yield process
    process.kill()
    process.wait()


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(
        sleeper: subprocess.Popen[bytes]) -> None:
    found = read_process(sleeper.pid)
    assert found is not None and still_running(found)
    assert end_processes([found], grace_s=0.2) == []
    assert sleeper.wait(timeout=5) == -signal.SIGKILL


def test_a_process_that_took_over_the_pid_is_left_alone(
        sleeper: subprocess.Popen[bytes]) -> None:
    found = read_process(sleeper.pid)
    assert found is not None
    impostor = ProcessView(found.pid, found.argv, found.open_files, found.started + 1)
    assert not still_running(impostor)
    assert end_processes([impostor], grace_s=0.1) == []
    assert sleeper.poll() is None  # the real one was not signalled


def test_this_process_is_never_its_own_leftover(tmp_path: Path) -> None:
    me = read_process(os.getpid())
    assert me is not None
    paths = InstancePaths(tmp_path, tmp_path, tmp_path)
    mine = ProcessView(me.pid, ("ray::Driver",), (str(tmp_path / "log"),), me.started)
    assert instance_process_kind(mine, paths) == "ray"
    assert instance_processes(paths, [mine]) == []


# --- PostgreSQL ----------------------------------------------------------------------


def test_a_postmaster_is_known_by_its_data_directory() -> None:
    pgdata = Path("/data/postgres")
    assert is_postmaster_of(["/pg/bin/postgres", "-D", "/data/postgres", "-h", ""], pgdata)
    assert not is_postmaster_of(["/pg/bin/postgres", "-D", "/data/postgres2"], pgdata)
    assert not is_postmaster_of(["/bin/sleep", "-D", "/data/postgres"], pgdata)


def finished_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_users_of_the_server_that_died_are_forgotten(tmp_path: Path) -> None:
    """pgserver stops the server when its last user leaves; a crashed user must not count."""
    (tmp_path / ".handle_pids.json").write_text(json.dumps([finished_pid(), os.getpid()]))
    assert live_handles(tmp_path) == [os.getpid()]
    assert json.loads((tmp_path / ".handle_pids.json").read_text()) == [os.getpid()]


def test_a_postmaster_pid_of_some_other_process_is_removed(tmp_path: Path) -> None:
    # After a crash and a reboot the recorded pid may belong to anything; PostgreSQL
    # would refuse to start over it.
    (tmp_path / "postmaster.pid").write_text(f"{os.getpid()}\n{tmp_path}\n")
    cleared = clear_leftover_server(tmp_path)
    assert cleared is not None and "stale postmaster.pid" in cleared
    assert not (tmp_path / "postmaster.pid").exists()
    assert clear_leftover_server(tmp_path) is None


# --- the HAProxy directory -----------------------------------------------------------


def test_the_haproxy_directory_is_made_private(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "crhap-0123456789")
    assert made.stat().st_mode & 0o777 == 0o700
    made.chmod(0o755)  # left open by an older Crashray
    assert private_dir(made).stat().st_mode & 0o777 == 0o700


def test_a_symlink_in_place_of_the_haproxy_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "crhap-0123456789").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StartError, match="not a directory of this user"):
        private_dir(tmp_path / "crhap-0123456789")
