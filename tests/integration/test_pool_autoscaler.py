"""The consumer pool autoscaler on real Ray, PostgreSQL and the embedded ClickHouse: a
backlog grows the pool, every item is counted exactly once, the pool shrinks back to its
minimum once quiet, and consumers retired while items still wait lose nothing.

Each test runs a pool of its own (``crashray-test-pool-N``, its own autoscaler) over a
scratch database, storing through the running Crashray's ClickHouse owner, so the
session's consumers never see these items and the counts are the test's alone."""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
import ray

from actors.consumer import consumer_name, start_consumers
from actors.placement import NAMESPACE
from actors.pool_autoscaler import AutoscalerConfig, start_pool_autoscaler, stop_pool_autoscaler
from events.pool_scaling import PoolPolicy
from storage.clickhouse import ClickHouseStore
from storage.queue import QueuedItem
from tests.integration.conftest import RunningCrashray
from tests.integration.consumer_harness import Harness, OwnerStore, counts_seen, harness
from tests.support import error_event, wait_until

pytestmark = pytest.mark.integration

POOL = "crashray-test-pool"
AUTOSCALER = "crashray-test-pool-autoscaler"



@pytest.fixture
def h(crashray: RunningCrashray) -> Iterator[Harness]:
    store = OwnerStore(crashray.runtime.clickhouse_dsn)
    yield from harness(cast(ClickHouseStore, store), "crashray_pool")


@pytest.fixture
def pool(h: Harness, crashray: RunningCrashray) -> Iterator[str]:
    """A pool name of this test; its autoscaler and consumers are ended afterwards."""
    name = f"{POOL}-{uuid.uuid4().hex[:6]}"
    yield name
    stop_pool_autoscaler(120.0, name=f"{AUTOSCALER}-{name}")
    for index in range(8):
        try:
            consumer = ray.get_actor(consumer_name(index, name), namespace=NAMESPACE)
        except ValueError:
            continue
        with contextlib.suppress(ray.exceptions.RayActorError):
            ray.get(consumer.stop.remote(), timeout=120)
        ray.kill(consumer, no_restart=True)


def backlog(h: Harness, corpus_dir: Path, titles: list[str], per_title: int,
            waited_s: float) -> list[QueuedItem]:
    """Events of ``titles``, received ``waited_s`` ago (a backlog that has been waiting)."""
    received = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=waited_s)
    return [replace(h.event_item(error_event(corpus_dir, title)), received_at=received)
            for title in titles for _ in range(per_title)]


def start_pool(h: Harness, crashray: RunningCrashray, pool: str, consumers: int,
               policy: PoolPolicy) -> tuple[Any, list[Any]]:
    """The autoscaler, and the handles of the consumers this test started (they live as
    long as a handle does, as the runtime's own)."""
    config = replace(crashray.runtime.consumer_config(), postgres_url=h.url)
    started = list(start_consumers(consumers, config, (), pool=pool))
    return start_pool_autoscaler(AutoscalerConfig(policy, config, (), interval_s=0.5,
                                                  pool=pool), name=f"{AUTOSCALER}-{pool}"), started


def issue_counts(h: Harness) -> Counter[str]:
    return Counter({i["title"]: int(i["count"]) for i in h.issues()})


def all_counted(h: Harness, titles: list[str], per_title: int) -> dict[str, int] | None:
    total = len(titles) * per_title
    seen = counts_seen(h)
    if issue_counts(h) == Counter(dict.fromkeys(titles, per_title)) and all(
            n == total for n in seen.values()):
        return seen
    return None


def test_a_backlog_grows_the_pool_which_drains_it_exactly_once_and_shrinks_back(
        h: Harness, crashray: RunningCrashray, corpus_dir: Path, pool: str) -> None:
    titles = [f"PoolGrowth{n}_{pool[-6:]}: backlog" for n in range(3)]
    h.enqueue(backlog(h, corpus_dir, titles, 2_000, waited_s=60.0))
    policy = PoolPolicy(min_consumers=1, max_consumers=3, scale_up_age_s=5.0, quiet_age_s=1.0,
                        min_backlog_items=500, scale_up_cooldown_s=1.0,
                        scale_down_delay_s=4.0, max_step_up=2)
    autoscaler, _minimum = start_pool(h, crashray, pool, 1, policy)

    wait_until(lambda: h.queue_size() == 0, 300, "the backlog to drain")
    grown = ray.get(autoscaler.stats.remote())
    assert max(c["to"] for c in grown["changes"]) == 3, grown["changes"]

    shrunk = wait_until(lambda: (s := ray.get(autoscaler.stats.remote()))["size"] == 1 and s,
                        60, "the pool back to its minimum")
    assert [c["to"] for c in shrunk["changes"]][-2:] == [2, 1]
    assert all(c["reason"].startswith("quiet") for c in shrunk["changes"] if c["to"] < c["from"])
    # The consumers the autoscaler added did part of the work, and are gone.
    assert sum(shrunk["retired_processed"].values()) > 0, shrunk
    for index in (1, 2):
        with pytest.raises(ValueError):
            ray.get_actor(consumer_name(index, pool), namespace=NAMESPACE)
    wait_until(lambda: all_counted(h, titles, 2_000), 60,
               "every event counted once in issues, stats and outcomes")


def test_consumers_retired_while_items_wait_lose_and_double_count_nothing(
        h: Harness, crashray: RunningCrashray, corpus_dir: Path, pool: str) -> None:
    titles = [f"PoolRetire{n}_{pool[-6:]}: backlog" for n in range(4)]
    h.enqueue(backlog(h, corpus_dir, titles, 2_000, waited_s=0.0))
    # Never behind, always quiet: the autoscaler retires a consumer every second down to
    # one, whatever waits, each finishing the batch in hand.
    policy = PoolPolicy(min_consumers=1, max_consumers=3, scale_up_age_s=3_600.0,
                        quiet_age_s=3_600.0, min_backlog_items=10**9, scale_up_cooldown_s=0.0,
                        scale_down_delay_s=1.0)
    autoscaler, _started = start_pool(h, crashray, pool, 3, policy)

    stats = wait_until(lambda: (s := ray.get(autoscaler.stats.remote()))["size"] == 1 and s,
                       120, "two consumers retired")
    retirements = [c for c in stats["changes"] if c["to"] < c["from"]]
    assert [c["to"] for c in retirements] == [2, 1]
    assert all(c["waiting"] > 0 for c in retirements), retirements
    wait_until(lambda: h.queue_size() == 0, 300, "the backlog to drain")
    wait_until(lambda: all_counted(h, titles, 2_000), 60,
               "every event counted once in issues, stats and outcomes")
