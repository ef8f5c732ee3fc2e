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

- a *serial* part (``threads=SERIAL``: the shards, whose "calls run one at a time" keeps a
  rate-limit decision atomic and a grouping cache race-free) has a Ray concurrency group of
  its own, of one thread: its calls run one at a time, as in an actor of its own (neither promises the order of
  calls from different callers),
  and while they queue they hold none of the threads the other parts' calls run on;
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
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import ray

from actors.placement import LOCAL, NAMESPACE, Placement

log = logging.getLogger(__name__)

SHARED_NAME: Final = "crashray-shared"
#: Concurrent calls the shared process runs for its parts without threads of their own:
#: about the sum of what they allowed as actors (notifier 4, metrics sampler 2, each
#: built-in detector 4); their loops run in threads of their own, outside this pool. A part
#: with threads of its own (a serial part: one) has them besides.
SHARED_CONCURRENCY: Final = 16
#: ``Part.threads`` of a part whose calls run one at a time, as in an actor with Ray's
#: default concurrency of 1.
SERIAL: Final = 1
#: Seconds between two attempts to build a part whose constructor failed.
PART_REBUILD_INTERVAL_S: Final = 5.0


@dataclass(frozen=True)
class Part:
    """One service of the shared process: its name (the actor name it would have on its
    own), its plain class and the arguments it is built with."""

    name: str
    cls: type
    args: tuple[Any, ...]
    #: Its calls run in a concurrency group of its own (named as the part) of this many
    #: threads, as in an actor with that ``max_concurrency`` (``SERIAL``: one at a time;
    #: None: on the shared pool).
    threads: int | None = None
    #: Its calls' ``max_task_retries`` (None: Ray's default, 0).
    max_task_retries: int | None = None
    #: Methods whose calls run in another group of their own, as an actor's methods
    #: declared with ``@ray.method(concurrency_group=…)``: method → (group, threads).
    method_groups: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    def concurrency_groups(self) -> dict[str, int]:
        """The concurrency groups the part's calls need, and their threads."""
        groups = {} if self.threads is None else {self.name: self.threads}
        groups.update(dict(self.method_groups.values()))
        return groups


@dataclass(frozen=True)
class Route:
    """How a part's calls are made: the concurrency group they run in (None: the shared
    pool), the groups of the methods that have one of their own, and their
    ``max_task_retries``."""

    concurrency_group: str | None
    max_task_retries: int | None
    method_groups: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, part: Part) -> Route:
        return cls(None if part.threads is None else part.name, part.max_task_retries,
                   {method: group for method, (group, _) in part.method_groups.items()})

    def group_of(self, method: str) -> str | None:
        return self.method_groups.get(method, self.concurrency_group)


#: The parts built in this process, by name (when it is a shared process): code running in
#: it reaches them directly (``hosted_here``), not by a call through Ray to its own process,
#: which a part's constructor could not make (the process takes calls once all are built).
_HERE: dict[str, Any] = {}


def hosted_here(name: str) -> Any | None:
    """The part ``name`` if this process is the shared process holding it, built."""
    return _HERE.get(name)


class PartNotRunning(RuntimeError):
    """A call to a part whose constructor failed; it is built again every
    ``PART_REBUILD_INTERVAL_S``."""


class SharedProcess:
    """Builds each part in this process, in order, and runs the calls made to them. A Ray
    actor through ``start_shared``, which gives each part its concurrency groups.

    A part whose constructor raises (PostgreSQL away when Ray restarts the process, a
    detector plugin's bug) does not take the others down: an actor whose constructor raises
    is not restarted by Ray, so the process must come up. Calls to that part raise
    ``PartNotRunning`` with the reason, and a thread builds it again every
    ``PART_REBUILD_INTERVAL_S`` until it comes up."""

    def __init__(self, parts: Sequence[Part]) -> None:
        self._routes = {part.name: Route.of(part) for part in parts}
        self._parts: dict[str, Any] = {}
        self._failed: dict[str, tuple[Part, str]] = {}
        for part in parts:
            self._build(part)
        if self._failed:
            threading.Thread(target=self._rebuild_failed, daemon=True,
                             name="shared-process-rebuild").start()

    def _build(self, part: Part) -> None:
        try:
            self._parts[part.name] = _HERE[part.name] = part.cls(*part.args)
        except Exception as exc:
            # Catch-all on purpose: whatever a part's constructor raises, the other parts
            # run; the failure is logged, told to each caller, and the part built again.
            log.exception("the shared process could not build %s; it tries again every"
                          " %g s", part.name, PART_REBUILD_INTERVAL_S)
            self._failed[part.name] = (part, f"{type(exc).__name__}: {exc}")
        else:
            self._failed.pop(part.name, None)

    def _rebuild_failed(self) -> None:
        while self._failed:
            time.sleep(PART_REBUILD_INTERVAL_S)
            for part, _ in list(self._failed.values()):
                self._build(part)

    def call(self, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        service = self._parts.get(name)
        if service is None:
            if name in self._failed:
                raise PartNotRunning(f"{name} is not running in the shared process: its"
                                     f" constructor failed ({self._failed[name][1]}); it is"
                                     f" built again every {PART_REBUILD_INTERVAL_S:g} s")
            raise LookupError(f"no service {name!r} in the shared process; it holds"
                              f" {', '.join(sorted(self._routes))}")
        return getattr(service, method)(*args, **kwargs)

    def routes(self) -> dict[str, Route]:
        """Each part's name and how its calls are made."""
        return dict(self._routes)


class _HostedMethod:
    def __init__(self, handle: HostedHandle, method: str) -> None:
        self._handle = handle
        self._method = method

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        route = self._handle.route
        options: dict[str, Any] = {}
        group = route.group_of(self._method)
        if group is not None:
            options["concurrency_group"] = group
        if route.max_task_retries is not None:
            options["max_task_retries"] = route.max_task_retries
        call = self._handle.host.call
        return (call.options(**options) if options else call).remote(
            self._handle.name, self._method, *args, **kwargs)


class HostedHandle:
    """One part of a shared process, called like its own actor (``.method.remote(…)``)."""

    def __init__(self, host: Any, name: str, route: Route = Route(None, None)) -> None:
        self.host = host
        self.name = name
        self.route = route

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
    actor: Any = ray.remote(  # type: ignore[call-overload]
        num_cpus=0, max_restarts=-1, max_concurrency=SHARED_CONCURRENCY,
        concurrency_groups={g: n for p in parts for g, n in p.concurrency_groups().items()}
        or None)(SharedProcess)
    host = actor.options(**placement.home(name)).remote(list(parts))
    return host, {part.name: HostedHandle(host, part.name, Route.of(part)) for part in parts}


def find(name: str) -> Any:
    """The actor named ``name``, or the part of that name in the shared process; raises
    ``ValueError`` (as ``ray.get_actor`` does) when neither runs."""
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        host = ray.get_actor(SHARED_NAME, namespace=NAMESPACE)
        # Retried: a consumer (re)starting while the shared process restarts still finds it.
        routes: dict[str, Route] = ray.get(  # type: ignore[assignment]
            host.routes.options(max_task_retries=-1).remote())
        if name not in routes:
            raise ValueError(f"no actor and no shared-process part named {name!r}") from None
        return HostedHandle(host, name, routes[name])


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
