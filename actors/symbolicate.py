"""Symbolication: where a consumer's events get their source maps applied (issue 12).

The pure work is ``events.symbolicate`` (a platform handler registry: JavaScript today;
native and ProGuard handlers register their platforms there later). This module holds its
state: the parsed-map cache (``SourceMapCaches``, bounded in bytes) and the per-project
artifact sources, in one of two places:

* ``LocalSymbolication``: inside the consumer process (one cache per consumer). What a
  consumer uses when no symbolication actors run.
* ``Symbolicator`` actors, ``crashray-symbolicate-{i}``: a pool; an event goes to the
  shard of its first source-map debug ID, else of its release (``shard_for``), so one
  build's maps are parsed and cached on one actor, not on every consumer.
  ``ShardedSymbolication`` is the consumer's side of the pool.

Both are an ``events.process.Symbolicator``: ``(event, project_id, organization_id) ->
event``. An event of a platform without a handler never leaves the consumer. A handler
that fails unexpectedly (a bug, a map that crashes the parser) must not cost the event:
it is stored unsymbolicated with a ``symbolication_failed`` error, logged and counted;
a ``CrashrayError`` (the artifact store's database is down: ``StorageError``) propagates,
so the consumer retries the item later, as it does for any storage failure.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ray

from actors.placement import LOCAL, Placement
from cluster import metrics
from events.errors import CrashrayError
from events.symbolicate import (
    SYMBOLICATION_FAILED,
    ArtifactSourceFactory,
    PlatformHandler,
    ProjectSymbolication,
    SourceMapCaches,
    SymbolicationLimits,
    default_handlers,
)

log = logging.getLogger("crashray.symbolicate")

@dataclass(frozen=True)
class SymbolicationConfig:
    """What symbolication needs (``CRASHRAY_SYMBOLICATION_*`` in cluster/settings.py)."""

    #: ``(organization_id, project_id) -> ArtifactSource``; must pickle (it travels to
    #: the actors): a module-level function or a ``functools.partial`` of one.
    artifacts_for: ArtifactSourceFactory
    cache_bytes: int = 256 * 1024 * 1024
    max_map_bytes: int = 64 * 1024 * 1024


def registry(config: SymbolicationConfig) -> tuple[SourceMapCaches,
                                                    dict[str, PlatformHandler]]:
    caches = SourceMapCaches(config.cache_bytes)
    return caches, default_handlers(caches, SymbolicationLimits(config.max_map_bytes))


class LocalSymbolication:
    """Symbolication in the calling process, with its own cache."""

    def __init__(self, config: SymbolicationConfig) -> None:
        self.caches, handlers = registry(config)
        self._project = ProjectSymbolication(config.artifacts_for, handlers)
        self.failures = 0

    @property
    def platforms(self) -> frozenset[str]:
        return frozenset(self._project.handlers)

    def __call__(self, event: dict[str, Any], project_id: int, organization_id: int | None
                 ) -> dict[str, Any]:
        try:
            return self._project(event, project_id, organization_id)
        except CrashrayError:
            raise  # the artifact store failed: the consumer retries the item
        except Exception as exc:
            # Optional side path: the event is worth more than its symbolication. Logged,
            # counted, and said in the event (its errors) so the user sees why.
            self.failures += 1
            metrics.inc("crashray_symbolication_failures_total")
            log.exception("symbolication of an event of project %s failed", project_id)
            return with_failure(event, exc)

    def stats(self) -> dict[str, Any]:
        return {"cached_maps": len(self.caches), "cached_bytes": self.caches.bytes,
                "hits": self.caches.hits, "misses": self.caches.misses,
                "failures": self.failures}


def with_failure(event: dict[str, Any], exc: Exception) -> dict[str, Any]:
    error = {"type": SYMBOLICATION_FAILED, "reason": f"{type(exc).__name__}: {exc}"}
    return {**event, "errors": [*(event.get("errors") or []), error]}


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)  # type: ignore[call-overload]
class Symbolicator:
    """One member of the symbolication pool; its cache holds the maps of its shard."""

    def __init__(self, config: SymbolicationConfig) -> None:
        metrics.record_actor_start("symbolicator")
        self._local = LocalSymbolication(config)

    def symbolicate(self, event: dict[str, Any], project_id: int,
                    organization_id: int | None) -> dict[str, Any]:
        return self._local(event, project_id, organization_id)

    def stats(self) -> dict[str, Any]:
        return self._local.stats()


def shard_for(event: Mapping[str, Any], project_id: int, shards: int) -> int:
    """The shard of an event: by its first source-map debug ID (one build, whatever its
    release), else by project and release, so a build's maps are parsed on one actor."""
    debug_meta = event.get("debug_meta")
    images = debug_meta.get("images") if isinstance(debug_meta, dict) else None
    for image in images if isinstance(images, list) else ():
        if isinstance(image, dict) and image.get("type") == "sourcemap" and isinstance(
                image.get("debug_id"), str):
            return zlib.crc32(image["debug_id"].lower().replace("-", "").encode()) % shards
    key = f"{project_id}:{event.get('release') or ''}"
    return zlib.crc32(key.encode()) % shards


class ShardedSymbolication:
    """The consumer's side of the pool: an event whose platform has a handler goes to its
    shard (one round trip); any other event stays here untouched."""

    def __init__(self, shards: Sequence[Any], platforms: frozenset[str]) -> None:
        self._shards = list(shards)
        self._platforms = platforms

    def __call__(self, event: dict[str, Any], project_id: int, organization_id: int | None
                 ) -> dict[str, Any]:
        if not self._shards or event.get("platform") not in self._platforms:
            return event
        shard = self._shards[shard_for(event, project_id, len(self._shards))]
        result: dict[str, Any] = ray.get(
            shard.symbolicate.remote(event, project_id, organization_id))
        return result


def symbolicator_name(index: int) -> str:
    return f"crashray-symbolicate-{index}"


def start_symbolicators(count: int, config: SymbolicationConfig,
                        placement: Placement = LOCAL) -> list[Any]:
    """The pool (found by name if it runs already: a restarted consumer finds it again)."""
    return [Symbolicator.options(  # type: ignore[attr-defined]
        get_if_exists=True, **placement.pool(symbolicator_name(i))).remote(config)
        for i in range(count)]
