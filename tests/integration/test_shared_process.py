"""On one node the embedded ClickHouse's owner, the grouping and rate-limit shards, the
notifier, the metrics sampler and the detectors that ask for no resources of their own share
one Ray worker process (actors/shared_process.py): they answer from it under their usual
names, a shard's calls still run one at a time and are retried as before, the owner's reads
and writes keep threads of their own, they come back together when it dies, and they stop
as they did on their own.

Real parts: the integration suite's Ray and running Crashray, a scratch PostgreSQL database."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import ray

from actors.clickhouse import OWNER_ACTOR_NAME, RemoteStore, owner_part
from actors.detectors import DetectorConfig, plan_detectors, stop_detectors
from actors.metrics_sampler import SAMPLER_NAME
from actors.notifier import NOTIFIER_NAME
from actors.placement import NAMESPACE
from actors.shared_process import (
    SERIAL,
    SHARED_NAME,
    HostedHandle,
    Part,
    PartNotRunning,
    Route,
    end_shared,
    find,
    start_shared,
)
from events.anomaly import BUILTIN_DETECTORS
from storage.scope import ProjectScope
from tests.integration.conftest import RunningCrashray
from tests.support import migrated_project_database, wait_until

pytestmark = pytest.mark.integration


def worker_of(handle: Any) -> str:
    return str(ray.get(handle.stats.remote(), timeout=60)["worker_id"])


def test_the_notifier_and_the_sampler_run_in_one_process_that_restarts_whole(
        crashray: RunningCrashray) -> None:
    notifier, sampler = find(NOTIFIER_NAME), find(SAMPLER_NAME)
    assert isinstance(notifier, HostedHandle) and isinstance(sampler, HostedHandle)
    with pytest.raises(ValueError):  # no actor (and process) of its own
        ray.get_actor(NOTIFIER_NAME, namespace=NAMESPACE)
    before = worker_of(notifier)
    assert worker_of(sampler) == before

    ray.kill(ray.get_actor(SHARED_NAME, namespace=NAMESPACE), no_restart=False)

    def both_back() -> str | None:
        try:
            workers = {worker_of(notifier), worker_of(sampler)}
        except ray.exceptions.RayError:
            return None
        [worker] = workers  # still one process for both
        return worker if worker != before else None

    wait_until(both_back, 120, "the shared process restarted by Ray, with both services")
    samples = ray.get(sampler.stats.remote(), timeout=60)["samples"]
    wait_until(lambda: ray.get(sampler.stats.remote(), timeout=60)["samples"] > samples, 60,
               "the restarted sampler's loop to sample again")


def test_the_shards_are_parts_retried_as_their_actors_were(crashray: RunningCrashray) -> None:
    grouping, limiter = find("crashray-grouping-0"), find("crashray-ratelimit-0")
    for name in ("crashray-grouping-0", "crashray-ratelimit-0"):
        with pytest.raises(ValueError):
            ray.get_actor(name, namespace=NAMESPACE)
    assert (grouping.route.max_task_retries, limiter.route.max_task_retries) == (-1, 0)
    # Each in a concurrency group of its own, of one thread.
    assert grouping.route.concurrency_group == "crashray-grouping-0"
    assert limiter.route.concurrency_group == "crashray-ratelimit-0"
    assert set(ray.get(grouping.stats.remote(), timeout=60)) >= {"hits", "misses"}
    assert "checked" in ray.get(limiter.stats.remote(), timeout=60)


class Napper:
    """Records when each nap began and ended (a part for the test below)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans: list[tuple[float, float]] = []

    def nap(self) -> None:
        began = time.monotonic()
        time.sleep(0.2)
        with self._lock:
            self.spans.append((began, time.monotonic()))

    def naps(self) -> list[tuple[float, float]]:
        return sorted(self.spans)


def overlapping(spans: list[tuple[float, float]]) -> bool:
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def test_a_serial_parts_calls_run_one_at_a_time_while_others_overlap(
        crashray: RunningCrashray) -> None:
    parts = [Part("serial", Napper, (), threads=SERIAL), Part("free", Napper, ()),
             Part("serial-too", Napper, (), threads=SERIAL)]
    host, handles = start_shared(parts, name=f"crashray-test-shared-{uuid.uuid4().hex[:6]}")
    try:
        names = ("serial", "free", "serial-too")
        ray.get([handles[name].nap.remote() for name in names for _ in range(4)], timeout=60)
        serial, free, serial_too = (ray.get(handles[name].naps.remote(), timeout=60)
                                    for name in names)
        assert len(serial) == len(free) == len(serial_too) == 4
        assert not overlapping(serial), serial
        assert not overlapping(serial_too), serial_too
        assert overlapping(free), free  # the pool runs the other part's calls meanwhile
        # The two serial parts do not wait for each other: each has its own thread.
        assert overlapping(sorted(serial + serial_too))
    finally:
        end_shared(host)


class Store:
    """Records when each read and write began and ended (a part for the test below)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans: list[tuple[str, float, float]] = []

    def _nap(self, kind: str, seconds: float) -> None:
        began = time.monotonic()
        time.sleep(seconds)
        with self._lock:
            self.spans.append((kind, began, time.monotonic()))

    def read(self) -> None:
        self._nap("read", 0.6)

    def write(self) -> None:
        self._nap("write", 0.05)

    def recorded(self) -> list[tuple[str, float, float]]:
        return sorted(self.spans, key=lambda span: span[1])


def most_at_once(spans: list[tuple[float, float]]) -> int:
    return max(sum(1 for b, e in spans if b <= moment < e) for moment, _ in spans)


def test_a_parts_threads_bound_its_calls_and_its_writes_have_threads_of_their_own(
        crashray: RunningCrashray) -> None:
    """The embedded ClickHouse's shape (actors/clickhouse.py owner_part): reads on a group
    of their own threads, writes on another, so reads holding every read thread never
    delay a write."""
    parts = [Part("store", Store, (), threads=2, method_groups={"write": ("store-writes", 1)})]
    host, handles = start_shared(parts, name=f"crashray-test-shared-{uuid.uuid4().hex[:6]}")
    store = handles["store"]
    try:
        assert store.route.group_of("read") == "store"
        assert store.route.group_of("write") == "store-writes"
        reads = [store.read.remote() for _ in range(4)]
        time.sleep(0.2)  # both read threads taken, two reads waiting
        ray.get(store.write.remote(), timeout=60)
        ray.get(reads, timeout=60)
        spans = ray.get(store.recorded.remote(), timeout=60)
        read_spans = [(b, e) for kind, b, e in spans if kind == "read"]
        [(_, write_began, _)] = [span for span in spans if span[0] == "write"]
        assert most_at_once(read_spans) == 2, spans  # two threads, used both
        assert write_began < max(e for _, e in read_spans[:2]), spans  # not queued behind
    finally:
        end_shared(host)


def test_the_embedded_clickhouse_is_a_part_with_its_reads_and_writes_apart(
        crashray: RunningCrashray) -> None:
    owner = find(OWNER_ACTOR_NAME)
    assert isinstance(owner, HostedHandle)
    with pytest.raises(ValueError):  # no actor (and process) of its own
        ray.get_actor(OWNER_ACTOR_NAME, namespace=NAMESPACE)
    # Its groups as the part asked for them (tests/unit/test_shared_process_parts.py).
    assert owner.route == Route.of(owner_part(crashray.runtime.clickhouse_dsn))
    assert RemoteStore(owner).ping()  # on the writes' threads


class NeedsAFile:
    """Cannot be built until its file exists (a database that is not up yet)."""

    def __init__(self, path: str) -> None:
        self.said = Path(path).read_text()

    def say(self) -> str:
        return self.said


def test_a_part_that_cannot_be_built_leaves_the_others_running_and_comes_up_later(
        crashray: RunningCrashray, tmp_path: Path) -> None:
    needed = tmp_path / "needed"
    parts = [Part("needs-a-file", NeedsAFile, (str(needed),), threads=SERIAL),
             Part("free", Napper, ())]
    host, handles = start_shared(parts, name=f"crashray-test-shared-{uuid.uuid4().hex[:6]}")
    try:
        ray.get(handles["free"].nap.remote(), timeout=60)  # the process came up
        with pytest.raises(PartNotRunning, match="FileNotFoundError"):
            ray.get(handles["needs-a-file"].say.remote(), timeout=60)
        needed.write_text("up")

        def said() -> str | None:
            try:
                return str(ray.get(handles["needs-a-file"].say.remote(), timeout=60))
            except PartNotRunning:
                return None

        assert wait_until(said, 30, "the part built again once it can be") == "up"
    finally:
        end_shared(host)


def test_a_call_to_a_service_it_does_not_hold_names_what_it_holds(
        crashray: RunningCrashray) -> None:
    host = ray.get_actor(SHARED_NAME, namespace=NAMESPACE)
    with pytest.raises(LookupError, match="crashray-metrics-sampler"):
        ray.get(HostedHandle(host, "crashray-nothing").stats.remote(), timeout=60)
    with pytest.raises(ValueError):
        find("crashray-nothing")


@pytest.fixture
def project() -> Iterator[tuple[str, ProjectScope]]:
    with migrated_project_database("crashray_shared_detectors") as made:
        yield made


def test_built_in_detectors_share_a_process_and_checkpoint_when_stopped(
        crashray: RunningCrashray, project: tuple[str, ProjectScope]) -> None:
    url, _ = project
    config = DetectorConfig(postgres_url=url, clickhouse_dsn=None,
                            detectors=BUILTIN_DETECTORS, entry_points=False, shards=2)
    planned = plan_detectors(config)
    assert not any(d.resources for d in planned)  # all of them hosted, as on one node
    parts = [d.part(config) for d in planned]
    assert len(parts) == 2 * len(BUILTIN_DETECTORS)
    host, handles = start_shared(parts, name=f"crashray-test-shared-{uuid.uuid4().hex[:6]}")
    try:
        assert len({worker_of(h) for h in handles.values()}) == 1
        names = {ray.get(h.stats.remote(), timeout=60)["detector"] for h in handles.values()}
        assert names == {"escalating", "seasonal"}
        stop_detectors(dict(handles), timeout_s=60)  # each checkpoints what it learnt
        with psycopg.connect(url) as conn:
            saved = conn.execute("SELECT detector, shard FROM detector_checkpoints"
                                 " ORDER BY 1, 2").fetchall()
        assert saved == [("escalating", 0), ("escalating", 1), ("seasonal", 0),
                         ("seasonal", 1)]
    finally:
        end_shared(host)
