"""Crashray deployed onto a real two-node Ray cluster on this machine (issue 11).

The fixture runs ``ray start --head`` (with the ``crashray_head`` resource, as
ray-cluster.yaml gives the head) and ``ray start --address`` (a second raylet with its own
CPUs), with the Serve environment ray-cluster.yaml's start commands set. Both nodes share
this machine's address, so Serve's HTTP proxy runs on the head only
(``CRASHRAY_PROXY_LOCATION=HeadOnly``); on separate machines every node runs one.

``crashray deploy`` then runs the deployment detached; the official ``sentry-sdk`` sends
events to it. Losing a node is a real ``kill -9`` of the second raylet and every process
it started (its workers: replicas, consumers, shards). Throughout, every envelope that got
a 200 must be stored exactly once: the loads count the 200s they got (with plain HTTP
envelopes, as an SDK would send them, because an SDK does not tell which of its sends were
accepted) and compare them with the issue's count.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from cluster.runtime import RAY_SERVE_ENV
from tests.support import free_port, wait_until

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RAY_START_TIMEOUT_S = 180
DEPLOY_TIMEOUT_S = 300


@dataclass
class TwoNodes:
    address: str
    temp_dir: Path
    data_dir: Path
    port: int
    env: dict[str, str]
    head_node: str = ""
    second_node: str = ""
    dsn: str = ""
    token: str = ""
    deploy_output: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def public_key(self) -> str:
        return self.dsn.split("//", 1)[1].split("@", 1)[0]


def ray_command(*args: str) -> list[str]:
    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    return [ray, *args]


def crashray(cluster: TwoNodes, *args: str, check: bool = True
             ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args, "--address", cluster.address,
         "--data-dir", str(cluster.data_dir)], capture_output=True, text=True,
        timeout=DEPLOY_TIMEOUT_S, cwd=ROOT, env=cluster.env)
    if check and result.returncode != 0:
        pytest.fail(f"crashray {' '.join(args)} failed ({result.returncode}):\n"
                    f"{result.stdout}\n{result.stderr[-4000:]}")
    return result


def node_ids(cluster: TwoNodes) -> list[tuple[str, bool, dict[str, float]]]:
    script = (f"import json, ray; ray.init(address={cluster.address!r}, log_to_driver=False);"
              " print(json.dumps([(n['NodeID'], n['Alive'], n['Resources'])"
              " for n in ray.nodes()]))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, env=cluster.env, check=True).stdout
    return [tuple(row) for row in json.loads(out.strip().splitlines()[-1])]  # type: ignore[misc]


def _processes() -> Iterator[tuple[int, int, str]]:
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        yield int(proc.name), ppid, argv


def _uses(pid: int, mark: str) -> bool:
    try:
        return any(mark in os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def kill_tree(roots: list[int]) -> list[int]:
    """``kill -9`` the processes ``roots`` and all their descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in _processes():
        children.setdefault(ppid, []).append(pid)
    victims, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        victims.append(pid)
        todo.extend(children.get(pid, []))
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return victims


def end_cluster(cluster: TwoNodes) -> None:
    """End every process of this cluster (never ``ray stop``: it stops every Ray here)."""
    marks = [str(cluster.temp_dir)] + [n[:16] for n in (cluster.head_node,
                                                         cluster.second_node) if n]
    mine = [pid for pid, _, argv in _processes()
            if pid != os.getpid() and (any(m in argv for m in marks)
                                       or _uses(pid, str(cluster.temp_dir)))]
    kill_tree(mine)


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[TwoNodes]:
    # Ray's unix sockets need a short path; everything of the cluster lives below it.
    temp_dir = Path(tempfile.mkdtemp(prefix="crt-", dir="/tmp"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRASHRAY_", "RAY_"))}
    env.update(RAY_SERVE_ENV)
    env.update({"RAY_AUTH_MODE": "disabled", "CRASHRAY_PROXY_LOCATION": "HeadOnly",
                "CRASHRAY_CONSUMERS": "4", "CRASHRAY_INGEST_REPLICAS": "2",
                "CRASHRAY_MAX_REPLICAS_PER_NODE": "1",
                "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
                "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
                "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(temp_dir / "haproxy" / "h.cfg"),
                "RAY_SERVE_HAPROXY_SOCKET_PATH": str(temp_dir / "haproxy" / "admin.sock"),
                "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(temp_dir / "haproxy"),
                "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(temp_dir / "haproxy" / "state")})
    cluster = TwoNodes(f"127.0.0.1:{free_port()}", temp_dir, temp_dir / "data", port, env)
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "2",
              "--object-store-memory", str(150 * 2**20), "--disable-usage-stats"]
    try:
        subprocess.run(ray_command(
            "start", "--head", "--port", cluster.address.rsplit(":", 1)[1],
            "--resources", '{"crashray_head": 1}', "--temp-dir", str(temp_dir / "ray"),
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(free_port()),
            *common), env=env, check=True, capture_output=True, timeout=RAY_START_TIMEOUT_S)
        head = [n for n in node_ids(cluster) if "crashray_head" in n[2]]
        cluster.head_node = head[0][0]
        subprocess.run(ray_command("start", "--address", cluster.address,
                                   "--resources", '{"second_node": 1}', *common),
                       env=env, check=True, capture_output=True, timeout=RAY_START_TIMEOUT_S)
        cluster.second_node = next(n[0] for n in node_ids(cluster) if "second_node" in n[2])
        yield cluster
    finally:
        end_cluster(cluster)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def deployed(two_nodes: TwoNodes) -> TwoNodes:
    result = crashray(two_nodes, "deploy", "--port", str(two_nodes.port))
    two_nodes.deploy_output = result.stdout
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    two_nodes.dsn, two_nodes.token = lines["DSN"], lines["API token"]
    assert lines["Dashboard"] == f"{two_nodes.base_url}/"
    return two_nodes


def issue_count(cluster: TwoNodes, title: str) -> int:
    response = httpx.get(f"{cluster.base_url}/api/0/projects/crashray/default/issues/",
                         params={"query": ""}, timeout=10,
                         headers={"Authorization": f"Bearer {cluster.token}"})
    response.raise_for_status()
    return sum(int(i["count"]) for i in response.json() if i["title"] == title)


@dataclass
class Load:
    """Envelopes sent one after another from a thread; counts the 200s."""

    cluster: TwoNodes
    marker: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    accepted: int = 0
    failed: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def error_type(self) -> str:
        # Its own exception type per load: grouping parameterizes hex in messages, so two
        # loads' "load <marker>" messages would make one issue.
        return f"LoadError{self.marker}"

    @property
    def title(self) -> str:
        return f"{self.error_type}: sent by a test load"

    def start(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def _run(self) -> None:
        url = f"{self.cluster.base_url}/api/1/envelope/"
        auth = {"X-Sentry-Auth": f"Sentry sentry_key={self.cluster.public_key},"
                                 " sentry_version=7"}
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                event_id = uuid.uuid4().hex
                body = "\n".join(json.dumps(part) for part in (
                    {"event_id": event_id}, {"type": "event"},
                    {"event_id": event_id, "level": "error", "platform": "python",
                     "exception": {"values": [{"type": self.error_type,
                                               "value": "sent by a test load"}]}}))
                try:
                    ok = client.post(url, content=body, headers=auth).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.accepted += 1
                else:
                    self.failed += 1
                    time.sleep(0.2)  # as an SDK backs off
                time.sleep(0.01)


def actors_by_node(cluster: TwoNodes) -> dict[str, str]:
    """The ``Actors by node`` lines of ``crashray status``: node-id prefix → names."""
    out = crashray(cluster, "status").stdout
    section = out.split("Actors by node:\n", 1)[1].split("\nQueue:", 1)[0]
    return dict(line.strip().split(": ", 1) for line in section.splitlines())


def test_deploy_spreads_over_both_nodes_and_stores_sdk_events(deployed: TwoNodes) -> None:
    status = crashray(deployed, "status").stdout
    assert "Nodes: 2 alive of 2" in status, status
    by_node = actors_by_node(deployed)
    head, second = by_node[deployed.head_node[:12]], by_node[deployed.second_node[:12]]
    # Home actors on the head; the pools on both nodes.
    assert "crashray-keeper" in head and "crashray-clickhouse" in head, by_node
    assert "crashray-consumer" in head and "crashray-consumer" in second, by_node
    assert "ingest#ingest" in head and "ingest#ingest" in second, by_node
    marker = uuid.uuid4().hex[:8]
    subprocess.run([sys.executable, str(HERE / "send_python_exceptions.py"), marker, "5",
                    f"ClusterError{marker}"], env={**os.environ, "CRASHRAY_DSN": deployed.dsn},
                   check=True, timeout=60, capture_output=True)
    title = f"ClusterError{marker}: card {marker} declined"
    wait_until(lambda: issue_count(deployed, title) == 5, 60, "5 SDK events in one issue")


def test_a_second_deploy_upgrades_in_place_without_losing_accepted_events(
        deployed: TwoNodes) -> None:
    load = Load(deployed).start()
    wait_until(lambda: load.accepted >= 20, 60, "a load running")
    again = crashray(deployed, "deploy", "--port", str(deployed.port)).stdout
    time.sleep(2)
    load.stop()
    assert "API token: printed on the first start only" in again, again
    assert again.splitlines()[1] == f"DSN: {deployed.dsn}"
    wait_until(lambda: issue_count(deployed, load.title) == load.accepted, 90,
               f"all {load.accepted} accepted envelopes stored once")
    assert load.accepted > 20


def test_losing_a_node_loses_no_accepted_event(deployed: TwoNodes) -> None:
    load = Load(deployed).start()
    wait_until(lambda: load.accepted >= 30, 60, "a load running")
    raylet = [pid for pid, _, argv in _processes()
              if "/raylet " in argv and f"--node_id={deployed.second_node}" in argv]
    assert len(raylet) == 1, raylet
    killed = kill_tree(raylet)
    at_kill = load.accepted
    # Serve replaces the lost replicas and Ray restarts the consumers on the head.
    wait_until(lambda: load.accepted >= at_kill + 50, 120, "ingest answering again")
    load.stop()
    try:
        wait_until(lambda: issue_count(deployed, load.title) == load.accepted, 120,
                   f"all {load.accepted} accepted envelopes stored once")
    except AssertionError:
        issues = httpx.get(f"{deployed.base_url}/api/0/projects/crashray/default/issues/",
                           params={"query": ""}, timeout=10,
                           headers={"Authorization": f"Bearer {deployed.token}"}).json()
        letters = subprocess.run([sys.executable, "-m", "cluster.cli", "dead-letters", "list",
                                  "--data-dir", str(deployed.data_dir)], capture_output=True,
                                 text=True, timeout=120, cwd=ROOT, env=deployed.env)
        pytest.fail(f"{issue_count(deployed, load.title)} stored of {load.accepted} accepted"
                    f" ({load.failed} refused):\n{crashray(deployed, 'status').stdout}\n"
                    f"issues: {[(i['title'], i['count']) for i in issues]}\n"
                    f"dead letters: {letters.stdout} {letters.stderr[-2000:]}")
    status = crashray(deployed, "status").stdout
    assert "Nodes: 1 alive of 2" in status, status
    by_node = actors_by_node(deployed)
    assert deployed.second_node[:12] not in by_node
    assert by_node[deployed.head_node[:12]].count("crashray-consumer") == 4, by_node
    assert len(killed) > 1


def test_undeploy_removes_it_and_status_says_so(deployed: TwoNodes) -> None:
    out = crashray(deployed, "undeploy").stdout
    assert f"the data stays in {deployed.data_dir}" in out, out
    gone = crashray(deployed, "status", check=False)
    assert gone.returncode == 2 and "no Crashray is deployed" in gone.stderr, gone
    assert not any(str(deployed.data_dir) in argv for _, _, argv in _processes()), \
        "the private PostgreSQL still runs"
