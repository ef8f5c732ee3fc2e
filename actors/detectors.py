"""Anomaly detectors as Ray actors (issue 13; the interface is events/anomaly.py).

Discovery: the classes listed by import path in ``CRASHRAY_DETECTORS`` (default: the
built-ins) and, with ``CRASHRAY_DETECTOR_ENTRY_POINTS``, every class an installed package
registers in the entry-point group ``crashray.detectors``::

    [project.entry-points."crashray.detectors"]
    my-detector = "my_package.detector:MyDetector"

Each detector runs as ``CRASHRAY_DETECTOR_SHARDS`` actors (``crashray-detector-<name>-<i>``),
shard ``i`` watching the projects whose id modulo the shard count is ``i``. An actor asks
Ray for the resources its class declares (``num_cpus``, ``num_gpus``, ``memory`` class
attributes; none: it takes no CPU, like Crashray's other actors), so a detector that wants
a GPU runs where there is one; Ray restarts it when it dies (``max_restarts=-1``). On a
single node (``crashray up`` on its own Ray) a shard whose class declares no resources runs
in the shared process instead (actors/shared_process.py), under the same name.

Every ``CRASHRAY_DETECTOR_INTERVAL_S`` the actor's ``DetectorHost`` reads the last
``CRASHRAY_DETECTOR_WINDOW_MINUTES`` minutes of counts per project and per issue from
ClickHouse (``EventStore.minute_counts``, tenant-scoped), feeds them to the detector,
records the anomalies (storage/anomalies.py), closes the episodes it stopped reporting
after ``CRASHRAY_ANOMALY_CLOSE_AFTER_S``, and checkpoints the detector to PostgreSQL every
``CRASHRAY_DETECTOR_CHECKPOINT_INTERVAL_S``; a (re)started actor restores the last
checkpoint first. An anomaly of kind ``"escalating"`` on an issue that is ignored until it
escalates moves the issue to unresolved with substatus ``escalating`` (an activity entry
``set_escalating`` records why), in the transaction that records the anomaly.

    events.errors.CrashrayError
    └── DetectorLoadError   a detector path or entry point that does not name a detector
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.metadata
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import ray

from actors.consumer_alerts import apply_anomaly_rules
from actors.placement import LOCAL, Placement
from actors.shared_process import Part, end_actor
from cluster import metrics
from cluster.worker_setup import allow_left_out_modules
from events.anomaly import BUILTIN_DETECTORS, Detector, Series
from events.errors import CrashrayError
from storage import anomalies as store
from storage.issues import set_status
from storage.postgres import connect
from storage.scope import ProjectScope

if TYPE_CHECKING:
    from cluster.settings import Settings
    from storage.clickhouse import EventStore, MinuteCount

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP: Final = "crashray.detectors"
ACTOR_PREFIX: Final = "crashray-detector"
#: Resource requests a detector class may declare, as Ray's ``.options`` names them.
RESOURCE_ATTRIBUTES: Final = ("num_cpus", "num_gpus", "memory")
#: Who the issue activity says moved an escalating issue.
ESCALATION_ACTOR: Final = "crashray:detector"
#: The kind of anomaly that moves an issue ignored until it escalates.
ESCALATING_KIND: Final = "escalating"

Clock = Callable[[], dt.datetime]


class DetectorLoadError(CrashrayError):
    """A configured detector cannot be loaded; the message names where it came from."""

    code = "detector_load_error"


@dataclass(frozen=True)
class DetectorSpec:
    """A detector to run: its name (the class's ``name``), import path and where it was
    configured."""

    name: str
    path: str
    origin: str


def load_detector_class(path: str, origin: str) -> type[Detector]:
    """The class ``path`` (``"module:Class"``) names; ``DetectorLoadError`` naming
    ``origin`` when it does not import or is no detector."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise DetectorLoadError(f"{origin}: {path!r} is not an import path; write"
                                " 'package.module:ClassName'")
    if path not in BUILTIN_DETECTORS:
        allow_left_out_modules()  # a plugin may want pandas (cluster/worker_setup.py)
    try:
        found = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise DetectorLoadError(f"{origin}: {path!r} does not import: {exc}") from exc
    missing = [m for m in ("name", "observe", "checkpoint", "restore") if not hasattr(found, m)]
    if not isinstance(found, type) or missing:
        raise DetectorLoadError(f"{origin}: {path!r} is not a detector class (it lacks"
                                f" {', '.join(missing) or 'being a class'}; see"
                                " events.anomaly.Detector)")
    return found


def discover(paths: Sequence[str], entry_points: bool = True) -> list[DetectorSpec]:
    """The detectors to run: ``paths`` (CRASHRAY_DETECTORS), then the entry points of the
    group ``crashray.detectors``; each class once, each name once."""
    candidates = [(p, "CRASHRAY_DETECTORS") for p in paths]
    if entry_points:
        candidates += [(ep.value, f"entry point {ep.name!r} of"
                        f" {ep.dist.name if ep.dist else 'an installed package'}")
                       for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)]
    specs: list[DetectorSpec] = []
    for path, origin in candidates:
        if any(s.path == path for s in specs):
            continue
        name = str(load_detector_class(path, origin).name)
        if any(s.name == name for s in specs):
            raise DetectorLoadError(f"{origin}: detector name {name!r} is taken by"
                                    f" {next(s.path for s in specs if s.name == name)}")
        specs.append(DetectorSpec(name, path, origin))
    return specs


def resource_options(cls: type) -> dict[str, Any]:
    """The Ray resources ``cls`` declares (only those it declares)."""
    return {a: getattr(cls, a) for a in RESOURCE_ATTRIBUTES if getattr(cls, a, None) is not None}


@dataclass(frozen=True)
class DetectorConfig:
    """The detectors' settings (CRASHRAY_DETECTOR* in cluster/settings.py)."""

    postgres_url: str
    #: None: the actors read nothing themselves and only observe what ``feed`` gives them.
    clickhouse_dsn: str | None
    detectors: tuple[str, ...] = BUILTIN_DETECTORS
    entry_points: bool = True
    shards: int = 1
    interval_s: float = 60.0
    window_minutes: int = 10
    checkpoint_interval_s: float = 300.0
    close_after_s: float = 300.0
    #: The instance's address, for links in the notifications anomalies fire.
    base_url: str = "http://127.0.0.1:9000"

    @classmethod
    def from_settings(cls, s: Settings, postgres_url: str, clickhouse_dsn: str | None
                      ) -> DetectorConfig:
        return cls(postgres_url=postgres_url, clickhouse_dsn=clickhouse_dsn,
                   detectors=tuple(s.detectors), entry_points=s.detector_entry_points,
                   shards=s.detector_shards, interval_s=s.detector_interval_s,
                   window_minutes=s.detector_window_minutes,
                   checkpoint_interval_s=s.detector_checkpoint_interval_s,
                   close_after_s=s.anomaly_close_after_s, base_url=s.base_url())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class DetectorHost:
    """One detector shard without Ray: reads series, observes, records, checkpoints."""

    def __init__(self, detector: Detector, shard: int, config: DetectorConfig,
                 events: EventStore | None = None, clock: Clock = _now) -> None:
        self.detector = detector
        self.name = str(type(detector).name)
        self.shard = shard
        self.config = config
        self.events = events
        self.clock = clock
        self.counts: dict[str, int] = defaultdict(int)
        self._conn = connect(config.postgres_url, autocommit=False)
        self._checkpointed_at = clock()
        state = store.load_checkpoint(self._conn, self.name, shard, config.shards)
        self._conn.commit()
        if state is not None:
            self.detector.restore(state)
            self.counts["restored"] += 1

    def projects(self) -> list[ProjectScope]:
        """The active projects of this shard."""
        found = store.shard_projects(self._conn, self.config.shards, self.shard)
        self._conn.commit()
        return found

    def read_series(self, now: dt.datetime) -> list[Series]:
        """The last ``window_minutes`` minutes (the one in progress included) of every
        project of the shard, zeros included, and of every issue with events in them."""
        if self.events is None:
            return []
        minute = now.replace(second=0, microsecond=0)
        minutes = tuple(minute - dt.timedelta(minutes=i)
                        for i in range(self.config.window_minutes - 1, -1, -1))
        by_org: dict[int, list[int]] = defaultdict(list)
        for p in self.projects():
            by_org[p.organization_id].append(p.id)
        batch: list[Series] = []
        for organization_id, project_ids in by_org.items():
            rows = self.events.minute_counts(organization_id, project_ids, minutes[0],
                                             minute + dt.timedelta(minutes=1))
            batch += self._series(organization_id, project_ids, minutes, rows)
        return batch

    def _series(self, organization_id: int, project_ids: Sequence[int],
                minutes: tuple[dt.datetime, ...], rows: Sequence[MinuteCount]) -> list[Series]:
        surviving = self._issues_of_groups(organization_id, project_ids,
                                           {r.group_id for r in rows if r.group_id})
        cells: dict[tuple[int, int], dict[dt.datetime, tuple[int, int]]] = defaultdict(dict)
        for r in rows:
            if r.group_id and r.group_id not in surviving:
                continue  # an issue deleted since
            key = (r.project_id, surviving[r.group_id][0] if r.group_id else 0)
            was = cells[key].get(r.minute, (0, 0))
            cells[key][r.minute] = (was[0] + r.events, was[1] + r.users)
        for project_id in project_ids:
            cells.setdefault((project_id, 0), {})
        until_escalating = {i for i, flag in surviving.values() if flag}
        return [Series("issue" if issue_id else "project", organization_id, project_id,
                       issue_id or None, minutes,
                       tuple(counts.get(m, (0, 0))[0] for m in minutes),
                       tuple(counts.get(m, (0, 0))[1] for m in minutes),
                       issue_id in until_escalating)
                for (project_id, issue_id), counts in sorted(cells.items())]

    def _issues_of_groups(self, organization_id: int, project_ids: Sequence[int],
                          group_ids: set[int]) -> dict[int, tuple[int, bool]]:
        """Group id → (the issue it counts for now, that issue is ignored until it
        escalates)."""
        found = store.issues_of_groups(self._conn, organization_id, project_ids, group_ids)
        self._conn.commit()
        return found

    def tick(self) -> list[store.Recorded]:
        """One observation of what ClickHouse holds now."""
        now = self.clock()
        return self.feed(self.read_series(now), now)

    def feed(self, batch: Sequence[Series], now: dt.datetime) -> list[store.Recorded]:
        """Observe ``batch``; record the anomalies, move escalating issues, close quiet
        episodes (one transaction); checkpoint when one is due."""
        found = self.detector.observe(list(batch), now)
        mine = {p.id for p in self.projects()}
        found = [a for a in found if a.project_id in mine]  # a shard records its own only
        with self._conn.transaction():
            recorded = store.record(self._conn, self.name, found)
            for r in recorded:
                if r.anomaly.kind == ESCALATING_KIND and r.anomaly.issue_id is not None:
                    self._escalate(r)
            apply_anomaly_rules(self._conn, [(r.id, r.anomaly) for r in recorded if r.opened],
                                self.config.base_url)
            closed = store.close_quiet(self._conn, self.name, sorted(mine),
                                       now - dt.timedelta(seconds=self.config.close_after_s))
        self._conn.commit()
        self.counts["observations"] += 1
        self.counts["anomalies"] += len(recorded)
        self.counts["opened"] += sum(r.opened for r in recorded)
        self.counts["closed"] += closed
        if (now - self._checkpointed_at).total_seconds() >= self.config.checkpoint_interval_s:
            self.checkpoint(now)
        return recorded

    def _escalate(self, recorded: store.Recorded) -> None:
        a = recorded.anomaly
        assert a.issue_id is not None
        scope = ProjectScope(a.organization_id, a.project_id)
        if not store.lock_if_until_escalating(self._conn, scope, a.issue_id):
            return
        set_status(self._conn, scope, a.issue_id,
                   "unresolved", "escalating", {}, "set_escalating",
                   {"forecast": a.evidence.get("limit"), "anomalyId": str(recorded.id),
                    "detector": self.name, "explanation": a.explanation},
                   f"{ESCALATION_ACTOR}:{self.name}")
        self.counts["escalated"] += 1

    def checkpoint(self, now: dt.datetime | None = None) -> None:
        store.save_checkpoint(self._conn, self.name, self.shard, self.config.shards,
                              self.detector.checkpoint())
        self._conn.commit()
        self._checkpointed_at = now or self.clock()
        self.counts["checkpoints"] += 1

    def reset_connection(self) -> None:
        """A fresh PostgreSQL connection after a failure (the old one may be broken or in a
        failed transaction)."""
        self._conn.close()
        self._conn = connect(self.config.postgres_url, autocommit=False)

    def close(self) -> None:
        self._conn.close()


class DetectorService:
    """One shard of one detector. With a ClickHouse DSN it observes every ``interval_s``
    in a thread started by its constructor (also after Ray restarts it). An actor of its
    own (``DetectorActor``) or a part of the shared process (actors/shared_process.py)."""

    def __init__(self, config: DetectorConfig, spec: DetectorSpec, shard: int) -> None:
        metrics.record_actor_start("detector")
        from actors.clickhouse import clickhouse_store

        cls = load_detector_class(spec.path, spec.origin)
        events = None if config.clickhouse_dsn is None else clickhouse_store(
            config.clickhouse_dsn)
        self._host = DetectorHost(cls(), shard, config, events)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if events is not None:
            self._thread = threading.Thread(target=self._serve, name="detector", daemon=True)
            self._thread.start()

    def _serve(self) -> None:
        while not self._stop.wait(self._host.config.interval_s):
            started = time.monotonic()
            try:
                with self._lock:
                    self._host.tick()
            except Exception:
                # Catch-all on purpose: a plugin's bug, or PostgreSQL or ClickHouse away for
                # a moment, must not end the loop. The next tick reads the overlapping window
                # again, so a passing failure loses nothing; logged and counted.
                log.exception("detector %s shard %d: observation failed", self._host.name,
                              self._host.shard)
                self._host.counts["failed_observations"] += 1
                self._host.reset_connection()
            log.debug("detector %s observed in %.3f s", self._host.name,
                      time.monotonic() - started)

    def feed(self, batch: list[Series], now: dt.datetime) -> list[int]:
        """Observe ``batch`` at ``now`` (tests, and callers with series of their own); the
        ids of the anomalies recorded."""
        with self._lock:
            return [r.id for r in self._host.feed(batch, now)]

    def checkpoint(self) -> None:
        with self._lock:
            self._host.checkpoint()

    def stats(self) -> dict[str, Any]:
        return {"detector": self._host.name, "shard": self._host.shard,
                "class": type(self._host.detector).__qualname__, **self._host.counts,
                "node_id": ray.get_runtime_context().get_node_id(),
                "worker_id": ray.get_runtime_context().get_worker_id(),
                "resources": ray.get_runtime_context().get_assigned_resources(),  # type: ignore[no-untyped-call]
                }

    def stop(self) -> None:
        """Stop observing and checkpoint what was learnt (a clean shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        with self._lock:
            self._host.checkpoint()
            self._host.close()


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)  # type: ignore[call-overload]
class DetectorActor(DetectorService):
    pass


def actor_name(spec: DetectorSpec, shard: int) -> str:
    return f"{ACTOR_PREFIX}-{spec.name}-{shard}"


@dataclass(frozen=True)
class PlannedDetector:
    """One shard of one detector, to start: its actor (or part) name and the resources its
    class declares (options of ``ray.remote``; empty when it declares none)."""

    name: str
    spec: DetectorSpec
    shard: int
    resources: dict[str, Any]

    def part(self, config: DetectorConfig) -> Part:
        """The shard as a part of the shared process (actors/shared_process.py)."""
        return Part(self.name, DetectorService, (config, self.spec, self.shard))

    def start(self, config: DetectorConfig, placement: Placement) -> Any:
        """The shard as an actor of its own, placed as a pool actor with its resources."""
        options = {**placement.pool(self.name), **self.resources}
        return DetectorActor.options(**options).remote(  # type: ignore[attr-defined]
            config, self.spec, self.shard)


def plan_detectors(config: DetectorConfig, name_prefix: str = ACTOR_PREFIX
                   ) -> list[PlannedDetector]:
    """Discover the detectors: ``config.shards`` of each. Raises ``DetectorLoadError``
    when a configured detector is broken (before anything is started)."""
    return [PlannedDetector(actor_name(spec, shard).replace(ACTOR_PREFIX, name_prefix, 1),
                            spec, shard, resources)
            for spec in discover(config.detectors, config.entry_points)
            for resources in [resource_options(load_detector_class(spec.path, spec.origin))]
            for shard in range(config.shards)]


def start_detectors(config: DetectorConfig, placement: Placement = LOCAL,
                    name_prefix: str = ACTOR_PREFIX) -> dict[str, Any]:
    """Discover the detectors and start ``config.shards`` actors of each, placed as pool
    actors with the resources their class declares; actor name → handle. Raises
    ``DetectorLoadError`` before starting anything when a configured detector is broken.
    (On one node, those that declare no resources run in the shared process instead:
    ``plan_detectors`` and ``PlannedDetector.part``.)"""
    return {planned.name: planned.start(config, placement)
            for planned in plan_detectors(config, name_prefix)}


def stop_detectors(handles: dict[str, Any], timeout_s: float = 60.0) -> None:
    """Stop the actors ``start_detectors`` started: each checkpoints what it has learnt,
    then ends. An actor that does not answer within ``timeout_s`` is killed (its last
    periodic checkpoint stands)."""
    pending = {name: handle.stop.remote() for name, handle in handles.items()}
    for name, ref in pending.items():
        try:
            ray.get(ref, timeout=timeout_s)
        except (ray.exceptions.RayError, TimeoutError):
            log.warning("detector actor %s did not stop cleanly", name, exc_info=True)
        end_actor(handles[name])
