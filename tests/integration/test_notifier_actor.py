"""The notifier as a Ray actor on the integration suite's real Ray: it sends what is queued,
and when it is killed Ray restarts it and it goes on sending (its claims come back after
the lease). It runs over a scratch database of its own and under a name of its own, so
the running Crashray's notifier never sees these deliveries."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import ray

from actors.notifier import DELIVERY_HEADER, start_notifier
from events.notify import WEBHOOK_ACTION
from tests.integration.conftest import RunningCrashray
from tests.integration.test_notifier import (
    Db,
    config,
    enqueue,
    new_delivery,
    receiver,
    settled,
)
from tests.support import migrated_project_database, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def actor_db() -> Iterator[Db]:
    with migrated_project_database("crashray_notify_actor") as (url, scope):
        yield Db(url, scope, scope)


def test_notifier_actor_sends_and_resumes_after_being_killed(
        crashray: RunningCrashray, actor_db: Db) -> None:
    name = f"crashray-test-notifier-{uuid.uuid4().hex[:6]}"
    actor = start_notifier(config(actor_db, lease_s=2.0), name=name)
    try:
        with receiver() as server:
            action = {"id": WEBHOOK_ACTION, "url": server.url("/hook")}
            [first] = enqueue(actor_db, new_delivery(actor_db.project, action))
            wait_until(settled(actor_db, [first]), 30, "the actor's first delivery")
            stats = ray.get(actor.stats.remote(), timeout=30)
            assert stats["delivered"] == 1

            ray.kill(actor, no_restart=False)
            wait_until(lambda: _restarted(actor), 60, "the notifier restarted by Ray")
            [second] = enqueue(actor_db, new_delivery(actor_db.project, action))
            rows = wait_until(settled(actor_db, [second]), 60,
                              "a delivery queued after the restart")
            assert rows[second].status == "delivered"
            sent = [int(r.headers[DELIVERY_HEADER]) for r in server.to("/hook")]
            assert sent == [first, second]
    finally:
        ray.get(actor.stop.remote(), timeout=60)
        ray.kill(actor, no_restart=True)


def _restarted(actor: Any) -> bool:
    """The actor answers again, as a new instance (its counts start from zero)."""
    try:
        stats: dict[str, Any] = ray.get(actor.stats.remote(), timeout=5)
        return int(stats.get("delivered", 0)) == 0
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return False
