"""The one way to reach ClickHouse from Ray code.

Embedded (chDB): exactly one process may open the data path, so a single named actor,
``ClickHouseOwner``, holds the ``ClickHouseStore`` and every other process calls it.
Server mode: each process opens its own HTTP client. ``clickhouse_store()`` hides which.
"""

from __future__ import annotations

from typing import Any

import ray

from storage.clickhouse import ClickHouseStore

OWNER_ACTOR_NAME = "crashray-clickhouse"
NAMESPACE = "crashray"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class ClickHouseOwner:
    """Holds the embedded ClickHouse engine; methods mirror ``ClickHouseStore``."""

    def __init__(self, dsn: str) -> None:
        self._store = ClickHouseStore(dsn)
        self._store.migrate()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._store, method)(*args, **kwargs)

    def ready(self) -> bool:
        return True


class RemoteStore:
    """``ClickHouseStore``'s interface, answered by the owner actor."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner
        self.is_embedded = True

    def __getattr__(self, method: str) -> Any:
        def invoke(*args: Any, **kwargs: Any) -> Any:
            return ray.get(self._owner.call.remote(method, *args, **kwargs))
        return invoke


def start_owner(dsn: str) -> Any:
    """Create (or find) the owner actor for an embedded ``dsn`` and wait until migrated."""
    owner = ClickHouseOwner.options(  # type: ignore[attr-defined]
        name=OWNER_ACTOR_NAME, namespace=NAMESPACE,
        get_if_exists=True).remote(dsn)
    ray.get(owner.ready.remote())
    return owner


def clickhouse_store(dsn: str) -> Any:
    """A store for this process: local for a server, the owner actor for chDB."""
    if dsn.startswith("chdb:"):
        return RemoteStore(ray.get_actor(OWNER_ACTOR_NAME, namespace=NAMESPACE))
    store = ClickHouseStore(dsn)
    return store
