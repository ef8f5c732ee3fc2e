"""``crashray up`` facing hostile clients and stopped or killed as machines do it.

One data directory and one port through the whole module, as an operator's machine has:
the first instance meets slow clients (and another server on Serve's default fallback
port) and is stopped with SIGTERM to its whole process group (what systemd does); the second is started on the same port and data directory and
then crashes (SIGKILL); the third starts over what the crash left and must keep what the
second accepted. The tests run in file order and hand the instance on."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from cluster.embedded_postgres import postmaster_pid
from cluster.leftovers import end_processes, instance_processes
from cluster.runtime import haproxy_dir, instance_paths, ray_temp_dir
from cluster.settings import Settings
from tests.e2e.conftest import CrashrayProcess, start_crashray, stop_crashray
from tests.support import envelope_bytes, error_event, free_port, python_sdk_headers, wait_until

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sdk"
#: Short timeouts so that the slow clients are dealt with within the test.
HTTP_REQUEST_TIMEOUT_S = 2
KEEP_ALIVE_TIMEOUT_S = 2
#: Connections that send part of a request's headers and then nothing, as a slowloris
#: attack opens them (Serve's HAProxy held each for an hour; 4,096 stalled it).
SLOW_CLIENTS = 2000
#: Generous: HAProxy checks its timeouts on its own schedule, and the machine is shared.
CLOSED_WITHIN_S = 30
#: The default ``CRASHRAY_SHUTDOWN_TIMEOUT_S`` (the instances run with the defaults).
STOP_WITHIN_S = float(Settings.model_fields["shutdown_timeout_s"].default)


@dataclass
class Machine:
    """The operator's machine: one data dir and port, the instance now running on them."""

    data_dir: Path
    port: int
    env: dict[str, str]
    instance: CrashrayProcess
    #: The API token the first start printed (it is printed once).
    token: str
    accepted: list[str] = field(default_factory=list)


#: Where Ray Serve's fallback proxy listens unless told otherwise, with SO_REUSEPORT
#: (RAY_SERVE_FALLBACK_PROXY_HTTP_PORT, ray/serve/_private/constants.py).
SERVE_FALLBACK_PROXY_PORT = 8500


@pytest.fixture(scope="module")
def other_server() -> Iterator[socket.socket | None]:
    """Another server on the machine listening where Serve's fallback proxy would, as the
    fallback proxy of another Serve (another Crashray, a test run) does."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        server.bind(("127.0.0.1", SERVE_FALLBACK_PROXY_PORT))
    except OSError:
        server.close()
        yield None  # a server that does not share the port holds it
        return
    server.listen()
    yield server
    server.close()


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory, other_server: socket.socket | None
            ) -> Iterator[Machine]:
    data_dir = tmp_path_factory.mktemp("lifecycle") / "data"
    env = {"CRASHRAY_HAPROXY_HTTP_REQUEST_TIMEOUT_S": str(HTTP_REQUEST_TIMEOUT_S),
           "CRASHRAY_HAPROXY_KEEP_ALIVE_TIMEOUT_S": str(KEEP_ALIVE_TIMEOUT_S),
           "CRASHRAY_HAPROXY_STATS_PORT": str(free_port()),
           "CRASHRAY_HAPROXY_METRICS_PORT": str(free_port())}
    port = free_port()
    first = start_crashray(data_dir, port, env, new_session=True)
    assert first.token is not None
    m = Machine(data_dir, port, env, first, first.token)
    try:
        yield m
    finally:
        _leave_nothing_behind(m)


def _leave_nothing_behind(m: Machine) -> None:
    """Stop whatever instance a failed test left running, and anything it left over."""
    if m.instance.process.poll() is None:
        try:
            stop_crashray(m.instance)
        finally:
            if m.instance.process.poll() is None:
                m.instance.process.kill()
    leftovers = [f.view for f in instance_processes(instance_paths(m.data_dir))]
    pid = postmaster_pid((m.data_dir / "postgres").resolve())
    if pid is not None and psutil.pid_exists(pid):
        os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
    end_processes(leftovers, grace_s=3.0)


# --- hostile clients ---------------------------------------------------------------


def slow_clients(port: int, count: int) -> list[socket.socket]:
    """Connections that each send an unfinished request: a request line and one header,
    never the empty line that ends the headers (slowloris)."""
    clients = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /api/1/envelope/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/x-sentry-envelope\r\n")
        s.setblocking(False)
        clients.append(s)
    return clients


def closed_by_server(clients: list[socket.socket], received: dict[int, bytes]) -> bool:
    """Read what is there; True once the server has closed every connection."""
    for client in clients:
        if client.fileno() == -1:
            continue
        try:
            data = client.recv(4096)
        except BlockingIOError:
            continue  # open, nothing sent
        except ConnectionResetError:
            data = b""
        if data:
            received[id(client)] = received.get(id(client), b"") + data
        else:
            client.close()  # end of stream: the server closed it
    return all(c.fileno() == -1 for c in clients)


def send_event(m: Machine, title: str) -> str:
    """One error event, framed as the Python SDK sends it; its id once accepted."""
    public_key = m.instance.dsn.split("//", 1)[1].split("@", 1)[0]
    project_id = m.instance.dsn.rsplit("/", 1)[1]
    event_id = uuid.uuid4().hex
    response = httpx.post(f"{m.instance.base_url}/api/{project_id}/envelope/",
                          content=envelope_bytes(error_event(FIXTURES, title), event_id),
                          headers=python_sdk_headers(public_key, gzipped=False), timeout=10)
    assert response.status_code == 200, response.text
    return event_id


def stored_event_ids(m: Machine) -> set[str]:
    response = httpx.get(f"{m.instance.base_url}/api/0/projects/crashray/default/events/",
                         headers={"Authorization": f"Bearer {m.token}"}, timeout=10)
    response.raise_for_status()
    events: list[dict[str, Any]] = response.json()
    return {e["eventID"] for e in events}


def test_unfinished_requests_are_closed_while_others_are_answered(machine: Machine) -> None:
    clients = slow_clients(machine.port, SLOW_CLIENTS)
    try:
        # While they hang there, a whole request is answered as always.
        machine.accepted.append(send_event(machine, "ValueError: sent beside slow clients"))
        received: dict[int, bytes] = {}
        wait_until(lambda: closed_by_server(clients, received), CLOSED_WITHIN_S,
                   f"the server to close {SLOW_CLIENTS} connections with unfinished headers")
        # HAProxy says why before it closes: 408 Request Timeout.
        assert {data.split(b"\r\n", 1)[0] for data in received.values()} <= {
            b"HTTP/1.1 408 Request Time-out"}
    finally:
        for client in clients:
            client.close()


def test_an_idle_keep_alive_connection_is_closed(machine: Machine) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", machine.port, timeout=10)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        assert response.getheader("Connection", "keep-alive").lower() != "close"
        sock = connection.sock
        assert sock is not None
        sock.setblocking(False)
        wait_until(lambda: closed_by_server([sock], {}), CLOSED_WITHIN_S,
                   "the server to close an idle keep-alive connection")
    finally:
        connection.close()


def non_loopback_addresses() -> list[str]:
    return [a.address for addresses in psutil.net_if_addrs().values() for a in addresses
            if a.family == socket.AF_INET and not a.address.startswith("127.")]


def listening_addresses(port: int) -> set[str]:
    """The IPv4 addresses something listens on at ``port`` (``/proc/net/tcp``)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_statistics_and_metrics_listen_on_loopback_only(machine: Machine) -> None:
    for name in ("CRASHRAY_HAPROXY_STATS_PORT", "CRASHRAY_HAPROXY_METRICS_PORT"):
        port = int(machine.env[name])
        assert listening_addresses(port) == {"127.0.0.1"}, name
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # reachable here
        for address in non_loopback_addresses():
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((address, port), timeout=5).close()
    stats = httpx.get(f"http://127.0.0.1:{machine.env['CRASHRAY_HAPROXY_STATS_PORT']}/stats",
                      timeout=10)
    assert stats.status_code == 200


#: Ray's head processes a one-node instance leaves out (cluster/ray_head.py), by the script
#: each runs.
LEFT_OUT_SCRIPTS = ("dashboard/dashboard.py", "_private/log_monitor.py",
                    "autoscaler/_private/monitor.py")


def loads_pandas(pid: int) -> bool:
    try:
        return "/pandas/" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False  # ended meanwhile


def test_the_local_ray_runs_without_its_api_server_log_monitor_autoscaler_or_pandas(
        machine: Machine) -> None:
    """cluster/ray_head.py and cluster/worker_setup.py: ~400 MiB of a one-node instance."""
    send_event(machine, "works without Ray's head tools")  # an Arrow table reached chDB
    views = [f.view for f in instance_processes(instance_paths(machine.data_dir))]
    running = [" ".join(view.argv) for view in views]
    assert any("raylet" in argv for argv in running), running  # the instance's Ray is seen
    for script in LEFT_OUT_SCRIPTS:
        assert not [argv for argv in running if script in argv], script
    serve = sorted(view.argv[0].split(":")[2] for view in views
                   if view.argv[0].startswith("ray::Serve"))
    # The controller and the ingest replica, which on one node answers the API too: no
    # replica of an api application (serve_apps/api/app.py, ApiAnswer).
    assert serve == ["ServeController", "ServeReplica"], running
    assert [v for v in views if v.argv[0].startswith("ray::ServeReplica:ingest")], running
    assert not [view.argv[0] for view in views if loads_pandas(view.pid)]
    assert not loads_pandas(machine.instance.process.pid)  # ``crashray up`` itself


def test_the_admin_socket_is_only_for_its_owner(machine: Machine) -> None:
    directory = haproxy_dir(ray_temp_dir(machine.data_dir))
    sockets = list(directory.glob("*/admin.sock"))
    assert sockets, f"no admin socket below {directory}"
    for path in sockets:
        info = path.stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o600, oct(info.st_mode)
    info = directory.lstat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, os.geteuid())


def listening_ports() -> dict[int, set[int]]:
    """TCP ports each process listens on (its descriptors matched to ``/proc/net/tcp*``)."""
    inode_port = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                inode_port[f"socket:[{fields[9]}]"] = int(fields[1].rsplit(":", 1)[1], 16)
    ports: dict[int, set[int]] = {}
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            links = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:
            continue
        found = {inode_port[link] for link in links if link in inode_port}
        if found:
            ports[int(fd_dir.parent.name)] = found
    return ports


def test_no_port_of_the_instance_is_shared_with_another_server(
        machine: Machine, other_server: socket.socket | None) -> None:
    """A port two servers listen on with SO_REUSEPORT gets each one's connections at random:
    requests meant for this instance would be answered, events accepted, by the other."""
    if other_server is None:
        pytest.skip(f"port {SERVE_FALLBACK_PROXY_PORT} is held by a server that shares it"
                    " with no one")
    ours = {p.pid for p in processes_of(machine.instance, machine.data_dir)}
    by_pid = listening_ports()
    instance_ports = set().union(*(by_pid.get(pid, set()) for pid in ours))
    others = set().union(*(ports for pid, ports in by_pid.items() if pid not in ours))
    assert instance_ports, "the instance listens nowhere?"
    assert instance_ports & others == set()


# --- stopping and crashing -----------------------------------------------------------


def processes_of(instance: CrashrayProcess, data_dir: Path) -> list[psutil.Process]:
    """Every process of a running instance: ``crashray up``, all it started (Ray, its
    workers, their HAProxy) and its private PostgreSQL (which pg_ctl detaches)."""
    root = psutil.Process(instance.process.pid)
    found = [root, *root.children(recursive=True)]
    pid = postmaster_pid((data_dir / "postgres").resolve())
    assert pid is not None, "the private PostgreSQL is not running"
    postmaster = psutil.Process(pid)
    return [*found, postmaster, *postmaster.children(recursive=True)]


def all_ended(processes: list[psutil.Process]) -> bool:
    def running(p: psutil.Process) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    return not any(running(p) for p in processes)


def test_sigterm_to_the_process_group_ends_every_process_and_frees_the_port(
        machine: Machine) -> None:
    first = machine.instance
    processes = processes_of(first, machine.data_dir)
    assert any("haproxy" in " ".join(p.cmdline()) for p in processes)
    os.killpg(first.process.pid, signal.SIGTERM)  # systemd's default: every process at once
    wait_until(lambda: all_ended(processes), STOP_WITHIN_S,
               "every process of the instance to end")
    assert first.process.wait(timeout=5) == 0, "".join(first.output[-40:])
    # The port and the data directory are free again for the next start; consumers are
    # held off in it, so that what it accepts is still queued when it crashes.
    machine.instance = start_crashray(machine.data_dir, machine.port,
                                      {**machine.env, "CRASHRAY_CONSUMERS": "0"},
                                      new_session=True)


def test_a_crash_leaves_nothing_that_stops_the_next_start_or_loses_events(
        machine: Machine) -> None:
    second = machine.instance
    queued = [send_event(machine, "ValueError: accepted just before a crash")
              for _ in range(3)]
    postgres = postmaster_pid((machine.data_dir / "postgres").resolve())
    second.process.kill()  # a crash: nothing of Crashray runs on its way out
    second.process.wait(timeout=10)
    assert postgres is not None and psutil.pid_exists(postgres)  # left running by the crash

    third = start_crashray(machine.data_dir, machine.port, machine.env, new_session=True)
    machine.instance = third
    fresh = send_event(machine, "ValueError: accepted after the restart")
    expected = {*machine.accepted, *queued, fresh}
    wait_until(lambda: expected <= stored_event_ids(machine), 60,
               "the events accepted before the crash and after it to be stored")

    processes = processes_of(third, machine.data_dir)
    assert stop_crashray(third) == 0, "".join(third.output[-40:])
    wait_until(lambda: all_ended(processes), 10, "every process of the instance to end")
