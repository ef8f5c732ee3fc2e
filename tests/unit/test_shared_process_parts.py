"""What a part of the shared process finds in its own process (actors/shared_process.py),
and the concurrency groups a part asks for: pure, no Ray (the shared process on Ray is in
tests/integration/test_shared_process.py)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import pytest

from actors import shared_process
from actors.clickhouse import (
    OWNER_ACTOR_NAME,
    WRITE_METHODS,
    ClickHouseOwner,
    clickhouse_store,
    owner_part,
)
from actors.shared_process import SERIAL, Part, Route, SharedProcess, hosted_here


class Engine:
    """Stands for the embedded ClickHouse's owner: a process opens one chDB data path, and
    this test process's is the integration suite's engine (the real owner as a part is
    checked on the running instance, tests/integration/test_shared_process.py)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn


class Reader:
    """Built after the engine, it reads through ``clickhouse_store`` as a detector does."""

    def __init__(self, dsn: str) -> None:
        self.store = clickhouse_store(dsn)

    def reads_from(self) -> object:
        return self.store


@pytest.fixture
def clean_process() -> Iterator[None]:
    yield
    shared_process._HERE.clear()


@pytest.mark.usefixtures("clean_process")
def test_a_part_built_after_the_engine_uses_it_in_process() -> None:
    """No call through Ray to its own process: a part's constructor could not make one (the
    process takes calls once every part is built)."""
    dsn = "chdb:///nowhere"
    process = SharedProcess([Part(OWNER_ACTOR_NAME, Engine, (dsn,)),
                             Part("reader", Reader, (dsn,))])
    engine = hosted_here(OWNER_ACTOR_NAME)
    assert isinstance(engine, Engine) and engine.dsn == dsn
    assert process.call("reader", "reads_from") is engine
    assert hosted_here("nothing") is None


def test_the_owner_part_asks_for_its_reads_and_writes_threads() -> None:
    part = owner_part("chdb:///nowhere")
    assert part.concurrency_groups() == {OWNER_ACTOR_NAME: 4, f"{OWNER_ACTOR_NAME}-writes": 2}
    route = Route.of(part)
    assert route.max_task_retries == -1
    assert route.group_of("list_events") == OWNER_ACTOR_NAME
    assert all(route.group_of(m) == f"{OWNER_ACTOR_NAME}-writes" for m in WRITE_METHODS)
    serial = Part("shard", Engine, (), threads=SERIAL)
    assert serial.concurrency_groups() == {"shard": 1}
    assert Route.of(serial).group_of("anything") == "shard"
    free = Part("notifier", Engine, ())
    assert free.concurrency_groups() == {} and Route.of(free).group_of("stats") is None


def test_the_owner_actor_and_the_owner_part_put_the_same_methods_on_the_inserts_threads(
        ) -> None:
    """The actor (a cluster's) declares its write methods with ``@ray.method``, the part (one
    node's) names them in ``WRITE_METHODS``: the two lists must not drift apart."""
    actor_class = ClickHouseOwner.__ray_metadata__.modified_class  # type: ignore[attr-defined]
    on_writes = {name for name, method in inspect.getmembers(actor_class, inspect.isfunction)
                 if getattr(method, "__ray_concurrency_group__", None) is not None}
    assert on_writes == set(WRITE_METHODS)
