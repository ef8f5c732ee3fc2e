"""Several of Crashray's side services in one Ray worker process, on a single node.

Ray gives every actor a worker process of its own, and each costs ~70-85 MB of PSS before
it does anything (the interpreter, Ray's core worker, the imports; bench/RESULTS.md).
The notifier, the metrics sampler and the detectors each run a loop in a thread of their
own and are called only for ``stats``, ``stop`` and the like, so on one node (``crashray
up`` on its own Ray) they share one process: a ``SharedProcess`` actor, named
``crashray-shared``, builds each of them from its plain class and runs their calls. On a
cluster (``crashray deploy``, ``crashray up --address``) each stays an actor of its own,
placed as before.

A ``HostedHandle`` stands for one of them where the code holds an actor handle:
``handle.stop.remote()`` is the same call either way. Ray restarts the shared process when
it dies (``max_restarts=-1``), building every service in it again, as it restarts each of
their own actors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import ray

from actors.placement import LOCAL, NAMESPACE, Placement

log = logging.getLogger(__name__)

SHARED_NAME: Final = "crashray-shared"
#: Concurrent calls the shared process runs: the sum of what the services allow on their
#: own (notifier 4, metrics sampler 2, each detector 4) for the built-ins with headroom;
#: their loops run in threads of their own, outside this pool.
SHARED_CONCURRENCY: Final = 16


@dataclass(frozen=True)
class Part:
    """One service of the shared process: its name (the actor name it would have on its
    own), its plain class and the arguments it is built with."""

    name: str
    cls: type
    args: tuple[Any, ...]


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=SHARED_CONCURRENCY)  # type: ignore[call-overload]
class SharedProcess:
    """Builds each part in this process, in order, and runs the calls made to them."""

    def __init__(self, parts: Sequence[Part]) -> None:
        self._parts: dict[str, Any] = {}
        for part in parts:
            self._parts[part.name] = part.cls(*part.args)

    def call(self, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            service = self._parts[name]
        except KeyError:
            raise LookupError(f"no service {name!r} in the shared process; it holds"
                              f" {', '.join(sorted(self._parts))}") from None
        return getattr(service, method)(*args, **kwargs)

    def names(self) -> list[str]:
        return list(self._parts)


class _HostedMethod:
    def __init__(self, host: Any, name: str, method: str) -> None:
        self._host = host
        self._name = name
        self._method = method

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._host.call.remote(self._name, self._method, *args, **kwargs)


class HostedHandle:
    """One part of a shared process, called like its own actor (``.method.remote(…)``)."""

    def __init__(self, host: Any, name: str) -> None:
        self.host = host
        self.name = name

    def __getattr__(self, method: str) -> _HostedMethod:
        if method.startswith("_"):
            raise AttributeError(method)
        return _HostedMethod(self.host, self.name, method)

    def __repr__(self) -> str:
        return f"HostedHandle({self.name!r} in {SHARED_NAME})"


def start_shared(parts: Sequence[Part], placement: Placement = LOCAL,
                 name: str = SHARED_NAME) -> tuple[Any, dict[str, HostedHandle]]:
    """The shared process holding ``parts`` and a handle for each part. Placed as a home
    actor: the metrics sampler measures the data directory's disk."""
    host = SharedProcess.options(**placement.home(name)).remote(list(parts))  # type: ignore[attr-defined]
    return host, {part.name: HostedHandle(host, part.name) for part in parts}


def find(name: str) -> Any:
    """The actor named ``name``, or the part of that name in the shared process; raises
    ``ValueError`` (as ``ray.get_actor`` does) when neither runs."""
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        host = ray.get_actor(SHARED_NAME, namespace=NAMESPACE)
        if name not in ray.get(host.names.remote()):
            raise ValueError(f"no actor and no shared-process part named {name!r}") from None
        return HostedHandle(host, name)


def end_actor(handle: Any) -> None:
    """Kill an actor that has stopped its work; a hosted part's process is ended with the
    shared process, once all of its parts are stopped (``end_shared``)."""
    if not isinstance(handle, HostedHandle):
        ray.kill(handle, no_restart=True)


def end_shared(host: Any) -> None:
    ray.kill(host, no_restart=True)
