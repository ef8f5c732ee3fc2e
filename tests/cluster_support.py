"""A real Ray cluster of several nodes on this machine, for tests and bench/scale.py.

``ray start --head`` (with the ``crashray_head`` resource, as ray-cluster.yaml gives the
head) and ``ray start --address`` for each further node: each node is a raylet with its
own resources and worker processes, as on separate machines, but sharing this machine's
address, so Serve's HTTP proxy runs on the head only (``CRASHRAY_PROXY_LOCATION=HeadOnly``;
on separate machines every node runs one). Each node gets the environment
``python -m cluster.node_env`` writes for ray-cluster.yaml's start commands.

Everything of the cluster lives under one short temp dir and is ended by pid (never
``ray stop``: it stops every Ray on the machine).
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
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY_START_TIMEOUT_S = 180
COMMAND_TIMEOUT_S = 300
#: Ray's object store per node: Crashray moves small batches.
OBJECT_STORE_BYTES = 150 * 2**20


@dataclass
class LocalCluster:
    address: str
    temp_dir: Path
    data_dir: Path
    port: int
    env: dict[str, str]
    #: Node ids, the head's first.
    nodes: list[str] = field(default_factory=list)
    dsn: str = ""
    token: str = ""

    @property
    def head_node(self) -> str:
        return self.nodes[0]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def public_key(self) -> str:
        return self.dsn.split("//", 1)[1].split("@", 1)[0]


def ray_command(*args: str) -> list[str]:
    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    return [ray, *args]


class CommandFailed(RuntimeError):
    pass


def crashray(cluster: LocalCluster, *args: str, check: bool = True
             ) -> subprocess.CompletedProcess[str]:
    """``crashray ARGS --address … --data-dir …`` against the cluster."""
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", *args, "--address", cluster.address,
         "--data-dir", str(cluster.data_dir)], capture_output=True, text=True,
        timeout=COMMAND_TIMEOUT_S, cwd=ROOT, env=cluster.env)
    if check and result.returncode != 0:
        raise CommandFailed(f"crashray {' '.join(args)} failed ({result.returncode}):\n"
                            f"{result.stdout}\n{result.stderr[-4000:]}")
    return result


def deploy(cluster: LocalCluster) -> str:
    """``crashray deploy``; keeps the DSN and token it prints; returns its output."""
    out = crashray(cluster, "deploy", "--port", str(cluster.port)).stdout
    lines = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    cluster.dsn = lines["DSN"]
    if lines["API token"].startswith("crs_"):
        cluster.token = lines["API token"]
    return out


def ray_nodes(cluster: LocalCluster) -> list[tuple[str, bool, dict[str, float]]]:
    script = (f"import json, ray; ray.init(address={cluster.address!r}, log_to_driver=False);"
              " print(json.dumps([(n['NodeID'], n['Alive'], n['Resources'])"
              " for n in ray.nodes()]))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, env=cluster.env, check=True).stdout
    return [tuple(row) for row in json.loads(out.strip().splitlines()[-1])]  # type: ignore[misc]


def processes() -> Iterator[tuple[int, int, str]]:
    """(pid, parent pid, command line) of every live process."""
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


def kill_tree(roots: Sequence[int]) -> list[int]:
    """``kill -9`` the processes ``roots`` and all their descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in processes():
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


def kill_node(cluster: LocalCluster, node_id: str) -> list[int]:
    """``kill -9`` a node's raylet and every process it started (its workers)."""
    raylet = [pid for pid, _, argv in processes()
              if "/raylet " in argv and f"--node_id={node_id}" in argv]
    if len(raylet) != 1:
        raise RuntimeError(f"raylet of node {node_id}: found {raylet}")
    return kill_tree(raylet)


def end_cluster(cluster: LocalCluster) -> None:
    """End every process of this cluster."""
    marks = [str(cluster.temp_dir)] + [n[:16] for n in cluster.nodes]
    mine = [pid for pid, _, argv in processes()
            if pid != os.getpid() and (any(m in argv for m in marks)
                                       or _uses(pid, str(cluster.temp_dir)))]
    kill_tree(mine)


def node_environment(temp_dir: Path, free_port: int, free_port_2: int) -> dict[str, str]:
    """What ray-cluster.yaml's start commands export (``cluster.node_env``), with this
    cluster's own HAProxy directory and side ports."""
    from cluster.node_env import node_environment as serve_environment
    from cluster.settings import Settings

    settings = Settings(haproxy_stats_port=free_port, haproxy_metrics_port=free_port_2)
    return serve_environment(settings, temp_dir / "haproxy")


#: Starts of the head tried until its dashboard answers, and seconds each may take.
HEAD_START_ATTEMPTS = 3
DASHBOARD_START_TIMEOUT_S = 60.0


def dashboard_answers(port: int, timeout_s: float) -> bool:
    """Whether Ray's dashboard answers on ``port`` within ``timeout_s``."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/version", timeout=5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(1)
    return False


@contextlib.contextmanager
def local_cluster(nodes: int = 2, cpus_per_node: int = 2,
                  settings: dict[str, str] | None = None) -> Iterator[LocalCluster]:
    """A cluster of ``nodes`` raylets on this machine; ``settings``: ``CRASHRAY_*`` for the
    ``crashray`` commands run against it."""
    from tests.support import free_port

    # Ray's unix sockets need a short path; everything of the cluster lives below it.
    temp_dir = Path(tempfile.mkdtemp(prefix="crt-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRASHRAY_", "RAY_"))}
    env.update(node_environment(temp_dir, free_port(), free_port()))
    env.update({"RAY_AUTH_MODE": "disabled", "CRASHRAY_PROXY_LOCATION": "HeadOnly",
                # These tests are about spreading, node loss and upgrades: the anomaly
                # detectors (tested on their own) would only add processes to 2 cores.
                "CRASHRAY_DETECTORS": "[]", "CRASHRAY_DETECTOR_ENTRY_POINTS": "false"})
    env.update(settings or {})
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus_per_node),
              "--object-store-memory", str(OBJECT_STORE_BYTES), "--disable-usage-stats"]
    cluster = LocalCluster(f"127.0.0.1:{free_port()}", temp_dir, temp_dir / "data",
                           free_port(), env)
    try:
        for attempt in range(1, HEAD_START_ATTEMPTS + 1):
            # The head's dashboard serves Ray's state API, as an operator's ``ray start
            # --head`` has it. Its port is picked free, then bound by the dashboard seconds
            # later: a process may take it meanwhile. Start the head again on other ports
            # when the dashboard does not answer.
            dashboard_port = free_port()
            subprocess.run(ray_command(
                "start", "--head", "--port", cluster.address.rsplit(":", 1)[1],
                "--resources", '{"crashray_head": 1}', "--temp-dir", str(temp_dir / "ray"),
                "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port),
                *common), env=env, check=True, capture_output=True,
                timeout=RAY_START_TIMEOUT_S)
            if dashboard_answers(dashboard_port, DASHBOARD_START_TIMEOUT_S):
                break
            end_cluster(cluster)
            if attempt == HEAD_START_ATTEMPTS:
                raise RuntimeError(f"the head's dashboard (Ray's state API) did not answer on"
                                   f" port {dashboard_port} in {attempt} starts")
            cluster = LocalCluster(f"127.0.0.1:{free_port()}", temp_dir, temp_dir / "data",
                                   free_port(), env)
        cluster.nodes = [n[0] for n in ray_nodes(cluster)]
        for index in range(1, nodes):
            subprocess.run(ray_command("start", "--address", cluster.address, "--resources",
                                       json.dumps({f"node_{index}": 1}), *common),
                           env=env, check=True, capture_output=True,
                           timeout=RAY_START_TIMEOUT_S)
            cluster.nodes.append(next(n[0] for n in ray_nodes(cluster)
                                      if f"node_{index}" in n[2]))
        yield cluster
    finally:
        from cluster.runtime import haproxy_dir

        end_cluster(cluster)
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(haproxy_dir(temp_dir / "haproxy"), ignore_errors=True)
