"""Crashray deployed onto an existing Ray cluster: ``crashray deploy``, ``undeploy`` and
``status`` (``--address ADDR`` or ``CRASHRAY_RAY_ADDRESS``).

``crashray up --address`` runs Crashray on a cluster for as long as the command runs.
``crashray deploy`` leaves it running: every actor is detached, named and restartable
(``actors/placement.py``), the Serve applications live in Serve's own (detached)
controller, and the command exits once everything answers.

The **keeper** (``crashray-keeper``) is the deployment's home: a detached actor on the
node that holds the data directory (the node with the ``crashray_head`` resource, else
the node ``crashray deploy`` runs on). It owns the private PostgreSQL when no
``CRASHRAY_POSTGRES_URL`` is set, runs the migrations and the first-start bootstrap,
and answers ``status`` with the queue's lag. The embedded ClickHouse owner is pinned to
the same node; consumers, shards and Serve replicas may run anywhere.

A second ``deploy`` upgrades in place: the keeper, the ClickHouse owner, and the grouping
and rate-limit shards are found by name and kept (with their caches and windows); the
consumers are retired one by one (each finishes its batch; what it had claimed is claimed
again) and started anew with the new code and settings; the Serve applications are
updated by Serve's rolling update. Accepted events wait in the queue meanwhile: nothing
accepted is lost, and ingest keeps answering.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Final

import ray

from actors.detectors import ACTOR_PREFIX as DETECTOR_PREFIX
from actors.detectors import stop_detectors
from actors.metrics_sampler import SAMPLER_NAME
from actors.notifier import NOTIFIER_NAME
from actors.placement import NAMESPACE, Placement, cluster_placement
from actors.pool_autoscaler import stop_pool_autoscaler
from cluster import cluster_state
from cluster.cluster_state import CONSUMER_PREFIX, actor_nodes, our_actor_names
from cluster.runtime import (
    RETIRED_SERVE_APPS,
    SERVE_APPS,
    Runtime,
    StartInfo,
    check_reachable_databases,
    running_apps,
)
from cluster.settings import Settings
from events.errors import BadRequest, NotFound

log = logging.getLogger("crashray.deploy")

KEEPER_NAME: Final = "crashray-keeper"
#: Seconds ``status`` waits for the consumers' ``stats()`` (all asked at once).
CONSUMER_STATS_TIMEOUT_S: Final = 10.0
#: Seconds a retired consumer gets to finish the batch in hand.
CONSUMER_STOP_TIMEOUT_S: Final = 60.0
#: Seconds ``undeploy`` waits for Serve to delete the applications (replicas drain).
APP_DELETE_TIMEOUT_S: Final = 60.0


class NotDeployed(NotFound):
    """No Crashray is deployed on that cluster."""

    code = "not_deployed"


class NoClusterAddress(BadRequest):
    code = "no_cluster_address"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Keeper:
    """The deployment's home on the data directory's node (see the module docstring).
    Restarted by Ray, it joins the private PostgreSQL again (pgserver finds the running
    server under the data dir) and runs the idempotent migrations."""

    def __init__(self, settings: Settings) -> None:
        from cluster.runtime import DataDirLock

        self._runtime = Runtime(settings)
        # One Crashray per data dir, as ``crashray up`` (which would refuse to start on it).
        self._runtime._lock = DataDirLock(settings.data_dir)
        self._runtime._lock.acquire()
        self._runtime.start_databases()

    def urls(self) -> tuple[str, str]:
        """(PostgreSQL URL, ClickHouse DSN) every other actor uses."""
        return self._runtime.postgres_url, self._runtime.clickhouse_dsn

    def bootstrap(self) -> dict[str, Any]:
        """The first organization, project, DSN key and API token (made on the first
        deploy only; later ones answer ``api_token`` None, as ``crashray up`` does)."""
        from events.grouping import DEFAULT_GROUPING_CONFIG
        from storage import postgres, tenancy
        from storage.bootstrap import bootstrap

        with postgres.connect(self._runtime.postgres_url) as conn:
            boot = bootstrap(conn, grouping_config=DEFAULT_GROUPING_CONFIG)
            self._runtime.upgrade_grouping(conn)
            has_users = tenancy.has_users(conn)
        return {"public_key": boot.public_key, "project_id": boot.project_id,
                "api_token": boot.api_token, "organization_slug": boot.organization_slug,
                "project_slug": boot.project_slug, "has_users": has_users}

    def queue_lag(self) -> dict[str, Any]:
        from storage import postgres
        from storage.queue import queue_lag

        with postgres.connect(self._runtime.postgres_url) as conn:
            return queue_lag(conn)

    def node_id(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def stop(self) -> str:
        """Stop the private PostgreSQL (if this keeper runs one); returns the data dir."""
        self._runtime.stop()
        return str(self._runtime.settings.data_dir)


def connect(settings: Settings) -> None:
    """Join the cluster ``settings.ray_address`` names."""
    from cluster.runtime import RAY_DRIVER_LOG_LEVEL, apply_ray_environment

    if not settings.ray_address:
        raise NoClusterAddress("which Ray cluster? give --address ADDR (or set"
                               " CRASHRAY_RAY_ADDRESS), e.g. --address 10.0.0.5:6379")
    apply_ray_environment(settings)
    if not ray.is_initialized():
        from cluster import worker_setup

        ray.init(address=settings.ray_address, namespace=NAMESPACE,
                 logging_level=RAY_DRIVER_LOG_LEVEL, log_to_driver=False,
                 runtime_env=worker_setup.runtime_env(settings, leave_out_modules=True))


def _keeper(settings: Settings, placement: Placement) -> Any:
    keeper = Keeper.options(  # type: ignore[attr-defined]
        get_if_exists=True, **placement.home(KEEPER_NAME)).remote(settings)
    ray.get(keeper.node_id.remote())  # constructed: databases up and migrated
    return keeper


def retire_consumers(names: list[str]) -> None:
    """Stop the named consumers (each finishes its batch, bounded) and end them (any actor
    with a ``stop`` that finishes its work in progress: the notifier too)."""
    for name in names:
        try:
            consumer = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            continue
        try:
            ray.get(consumer.stop.remote(), timeout=CONSUMER_STOP_TIMEOUT_S)
        except Exception:
            log.warning("%s did not stop cleanly; its claimed items are claimed again", name,
                        exc_info=True)
        ray.kill(consumer, no_restart=True)


def retire_detectors(names: list[str]) -> None:
    """Stop the named detector actors (each checkpoints first) and end them."""
    handles = {}
    for name in names:
        try:
            handles[name] = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            continue
    stop_detectors(handles, CONSUMER_STOP_TIMEOUT_S)
    for handle in handles.values():
        ray.kill(handle, no_restart=True)


def deploy(settings: Settings) -> StartInfo:
    """Deploy (or upgrade in place) Crashray onto the cluster; returns what to print."""
    connect(settings)
    check_reachable_databases(settings)
    placement = cluster_placement(detached=True)
    keeper = _keeper(settings, placement)
    boot = ray.get(keeper.bootstrap.remote())
    runtime = Runtime(settings, placement=placement)
    runtime.postgres_url, runtime.clickhouse_dsn = ray.get(keeper.urls.remote())
    # The autoscaler first, or it would refill the pool it scales (and keep old settings).
    stop_pool_autoscaler(CONSUMER_STOP_TIMEOUT_S)
    retire_consumers([n for n in our_actor_names() if n.startswith(CONSUMER_PREFIX)])
    # The notifier too (its sends in progress finish): the new one has the new settings;
    # what it had not sent waits in PostgreSQL's outbox.
    retire_consumers([n for n in our_actor_names() if n == NOTIFIER_NAME])
    # And the metrics sampler, so the new one samples with the new settings.
    retire_consumers([n for n in our_actor_names() if n == SAMPLER_NAME])
    retire_detectors([n for n in our_actor_names() if n.startswith(DETECTOR_PREFIX)])
    runtime.start_actors()
    runtime.wait_for_actors()  # an upgrade whose actors fail leaves Serve's apps as they are
    runtime.start_serve()
    base = settings.base_url()
    public_key, project_id = boot["public_key"], boot["project_id"]
    dsn = f"{base.replace('://', f'://{public_key}@', 1)}/{project_id}"
    return StartInfo(dsn, f"{base}/", boot["api_token"], boot["organization_slug"],
                     boot["project_slug"], boot["has_users"])


def undeploy(settings: Settings) -> Removed:
    """Remove the deployed Crashray: its Serve applications, then its actors (consumers
    finish their batch first), then the private PostgreSQL. Data stays in the data dir
    and the databases; a later ``deploy`` continues from it. Returns what was removed."""
    from ray import serve

    connect(settings)
    names = our_actor_names()
    if KEEPER_NAME not in names:
        raise NotDeployed(f"no Crashray is deployed on {settings.ray_address}; nothing to"
                          " remove")
    # An earlier version's applications too, if a deploy of it is what runs.
    apps = running_apps((*SERVE_APPS, *RETIRED_SERVE_APPS))
    for app in apps:  # all at once: each drains its replicas for a while
        serve.delete(app, _blocking=False)
    deadline = time.monotonic() + APP_DELETE_TIMEOUT_S
    while set(apps) & set(serve.status().applications):
        if time.monotonic() > deadline:
            log.warning("Serve applications still being deleted after %.0f s; going on",
                        APP_DELETE_TIMEOUT_S)
            break
        time.sleep(0.5)
    removed = [f"Serve application {app}" for app in apps]
    stop_pool_autoscaler(CONSUMER_STOP_TIMEOUT_S)
    names = our_actor_names()
    retire_consumers([n for n in names if n.startswith(CONSUMER_PREFIX)])
    for name in names:
        if name == KEEPER_NAME or name.startswith(CONSUMER_PREFIX):
            continue
        try:
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
        except ValueError:  # gone meanwhile
            continue
    keeper = ray.get_actor(KEEPER_NAME, namespace=NAMESPACE)
    data_dir = str(ray.get(keeper.stop.remote()))
    ray.kill(keeper, no_restart=True)
    return Removed(removed + [f"actor {n}" for n in names], data_dir)


@dataclass(frozen=True)
class Removed:
    parts: list[str]
    #: The data dir the deployment used (on the home node).
    data_dir: str


@dataclass(frozen=True)
class ClusterStatus:
    nodes: list[dict[str, Any]]
    #: app → deployment → {"status": …, "replicas": {state: count}}
    applications: dict[str, dict[str, Any]]
    #: node id → actor names
    actors_by_node: dict[str, list[str]]
    queue: dict[str, Any]
    consumers: list[dict[str, Any]]


def status(settings: Settings) -> ClusterStatus:
    connect(settings)
    names = our_actor_names()
    if KEEPER_NAME not in names:
        raise NotDeployed(f"no Crashray is deployed on {settings.ray_address}")
    keeper = ray.get_actor(KEEPER_NAME, namespace=NAMESPACE)
    queue: dict[str, Any] = dict(ray.get(keeper.queue_lag.remote(), timeout=30))
    return ClusterStatus(cluster_state.nodes(), cluster_state.applications(),
                         actor_nodes(names), queue,
                         cluster_state.consumer_stats(names, CONSUMER_STATS_TIMEOUT_S))


def wait_until_serving(settings: Settings, timeout_s: float = 60.0) -> None:
    """Wait until the ingest route answers on this node (the Serve proxy is up)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    url = f"http://{settings.resolved_public_host()}:{settings.port}/api/0/"
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
