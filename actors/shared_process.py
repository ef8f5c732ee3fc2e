"""Several of Crashray's side services in one Ray worker process, on a single node.

Ray gives every actor a worker process of its own, and each costs ~70-85 MB of PSS before
it does anything (the interpreter, Ray's core worker, the imports; bench/RESULTS.md). On
one node (``crashray up`` on its own Ray) the small services share one process instead: a
``SharedProcess`` actor, named ``crashray-shared``, builds each from its plain class and
runs the calls made to it. They are the notifier, the metrics sampler and the detectors
(each runs a loop in a thread of its own and is called only for ``stats``, ``stop`` and the
like), and the grouping and rate-limit shards. On a cluster (``crashray deploy``,
``crashray up --address``) each stays an actor of its own, placed as before.

What an actor of its own guaranteed, a part keeps:

- a *serial* part (the shards: "calls run one at a time", which keeps a rate-limit decision
  atomic and a grouping cache race-free) runs its calls under a lock of its own, while the
  other parts go on;
- its calls are retried as its own actor's were (``max_task_retries``: a grouping call is
  retried when the process dies, a rate-limit check is not);
- Ray restarts the shared process when it dies (``max_restarts=-1``), building every part
  again, as it restarted each actor.

A ``HostedHandle`` stands for a part where code holds an actor handle:
``handle.stop.remote()`` is the same call either way; ``find(name)`` gives the actor of that
name or the part.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import ray

from actors.placement import LOCAL, NAMESPACE, Placement

log = logging.getLogger(__name__)

SHARED_NAME: Final = "crashray-shared"
#: Concurrent calls the shared process runs: about the sum of what its parts allowed as
#: actors (notifier 4, metrics sampler 2, each built-in detector 4, each shard 1); their
#: loops run in threads of their own, outside this pool.
SHARED_CONCURRENCY: Final = 16


@dataclass(frozen=True)
class Part:
    """One service of the shared process: its name (the actor name it would have on its
    own), its plain class and the arguments it is built with."""

    name: str
    cls: type
    args: tuple[Any, ...]
    #: Its calls run one at a time (an actor with Ray's default concurrency of 1).
    serial: bool = False
    #: Its calls' ``max_task_retries`` (None: Ray's default, 0).
    max_task_retries: int | None = None


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=SHARED_CONCURRENCY)  # type: ignore[call-overload]
class SharedProcess:
    """Builds each part in this process, in order, and runs the calls made to them."""

    def __init__(self, parts: Sequence[Part]) -> None:
        self._specs = {part.name: part for part in parts}
        self._parts: dict[str, Any] = {}
        self._locks = {part.name: threading.Lock() for part in parts if part.serial}
        for part in parts:
            self._parts[part.name] = part.cls(*part.args)

    def call(self, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            service = self._parts[name]
        except KeyError:
            raise LookupError(f"no service {name!r} in the shared process; it holds"
                              f" {', '.join(sorted(self._parts))}") from None
        lock = self._locks.get(name)
        if lock is None:
            return getattr(service, method)(*args, **kwargs)
        with lock:
            return getattr(service, method)(*args, **kwargs)

    def retries(self) -> dict[str, int | None]:
        """Each part's name and its calls' ``max_task_retries``."""
        return {name: part.max_task_retries for name, part in self._specs.items()}


class _HostedMethod:
    def __init__(self, handle: HostedHandle, method: str) -> None:
        self._handle = handle
        self._method = method

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        call = self._handle.host.call
        if self._handle.max_task_retries is not None:
            call = call.options(max_task_retries=self._handle.max_task_retries)
        return call.remote(self._handle.name, self._method, *args, **kwargs)


class HostedHandle:
    """One part of a shared process, called like its own actor (``.method.remote(…)``)."""

    def __init__(self, host: Any, name: str, max_task_retries: int | None = None) -> None:
        self.host = host
        self.name = name
        self.max_task_retries = max_task_retries

    def __getattr__(self, method: str) -> _HostedMethod:
        if method.startswith("_"):
            raise AttributeError(method)
        return _HostedMethod(self, method)

    def __repr__(self) -> str:
        return f"HostedHandle({self.name!r} in {SHARED_NAME})"


def start_shared(parts: Sequence[Part], placement: Placement = LOCAL,
                 name: str = SHARED_NAME) -> tuple[Any, dict[str, HostedHandle]]:
    """The shared process holding ``parts`` and a handle for each part. Placed as a home
    actor: the metrics sampler measures the data directory's disk."""
    host = SharedProcess.options(**placement.home(name)).remote(list(parts))  # type: ignore[attr-defined]
    return host, {part.name: HostedHandle(host, part.name, part.max_task_retries)
                  for part in parts}


def find(name: str) -> Any:
    """The actor named ``name``, or the part of that name in the shared process; raises
    ``ValueError`` (as ``ray.get_actor`` does) when neither runs."""
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        host = ray.get_actor(SHARED_NAME, namespace=NAMESPACE)
        retries: dict[str, int | None] = ray.get(host.retries.remote())  # type: ignore[assignment]
        if name not in retries:
            raise ValueError(f"no actor and no shared-process part named {name!r}") from None
        return HostedHandle(host, name, retries[name])


def process_of(handle: Any) -> Any:
    """The actor whose process runs ``handle``'s calls (to kill it, in a test of a crash)."""
    return handle.host if isinstance(handle, HostedHandle) else handle


def end_actor(handle: Any) -> None:
    """Kill an actor that has stopped its work; a hosted part's process is ended with the
    shared process, once all of its parts are stopped (``end_shared``)."""
    if not isinstance(handle, HostedHandle):
        ray.kill(handle, no_restart=True)


def end_shared(host: Any) -> None:
    ray.kill(host, no_restart=True)
