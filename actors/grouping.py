"""Grouping actors: which issue each event belongs to, with a hash → issue cache.

Issues and their hashes live in PostgreSQL (``storage/issues.py``); a grouping shard keeps the
hash → issue pairs it has seen in memory, so a known hash costs no lookup of ``group_hashes``.
Shards are named ``crashray-grouping-{i}`` and own the projects with ``project_id % shards ==
i``: one shard decides for a project, so its new issues are created without contention. A shard
restarts empty (``max_restarts``) and refills from PostgreSQL, which stays the truth.

The cache follows merges, unmerges, deletes and grouping-version changes through the project's
``grouping_epoch`` (bumped by each of them in the same transaction): before a batch, a shard
reads the epochs of the batch's projects and forgets the entries of any project whose epoch
moved. Tombstoned hashes are not cached; they are looked up every time.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Final

import psycopg
import ray

from actors.placement import LOCAL, Placement
from actors.shared_process import SERIAL, Part
from cluster import metrics
from storage import issues as issue_store
from storage.projects import grouping_epochs

log = logging.getLogger("crashray.grouping")


class IssueResolver:
    """The issue of each candidate, from the cache where every hash of it is known, else
    from PostgreSQL (``issue_ids_for``, which creates issues for new hashes)."""

    def __init__(self, conn: psycopg.Connection[Any], max_cached_hashes: int) -> None:
        self.conn = conn
        self.max_cached_hashes = max_cached_hashes
        self._issue_of: OrderedDict[tuple[int, str], int] = OrderedDict()
        self._epochs: dict[int, int] = {}
        self.hits = 0
        self.misses = 0

    def issue_ids_for(self, candidates: Sequence[issue_store.IssueCandidate]
                      ) -> list[int | None]:
        if not candidates:
            return []
        self._follow_epochs({c.project_id for c in candidates})
        result: list[int | None] = [self._cached(c) for c in candidates]
        missing = [i for i, issue_id in enumerate(result) if issue_id is None]
        self.hits += len(candidates) - len(missing)
        self.misses += len(missing)
        if missing:
            found = issue_store.issue_ids_for(self.conn, [candidates[i] for i in missing])
            for i, issue_id in zip(missing, found, strict=True):
                result[i] = issue_id
            self._remember([candidates[i] for i in missing])
        return result

    def _follow_epochs(self, project_ids: set[int]) -> None:
        with self.conn.transaction():
            epochs = grouping_epochs(self.conn, sorted(project_ids))
        moved = {p for p, epoch in epochs.items() if self._epochs.get(p, epoch) != epoch}
        if moved:
            for key in [k for k in self._issue_of if k[0] in moved]:
                del self._issue_of[key]
        self._epochs.update(epochs)

    def _cached(self, c: issue_store.IssueCandidate) -> int | None:
        """The issue when every hash of ``c`` is cached for one issue (its hashes were all
        linked when it was cached), else None."""
        issue_ids = {self._issue_of.get((c.project_id, h)) for h in c.hashes}
        if len(issue_ids) != 1:
            return None
        issue_id = issue_ids.pop()
        if issue_id is not None:
            for h in c.hashes:
                self._issue_of.move_to_end((c.project_id, h))
        return issue_id

    def _remember(self, candidates: Sequence[issue_store.IssueCandidate]) -> None:
        """Cache where the candidates' hashes point now, as PostgreSQL says: a hash of an
        event can belong to another issue than the event joined (after an unmerge), and
        must not be cached as the event's."""
        by_project: dict[int, set[str]] = {}
        for c in candidates:
            by_project.setdefault(c.project_id, set()).update(c.hashes)
        with self.conn.transaction():
            for project_id, hashes in by_project.items():
                owners = issue_store.hash_owners(self.conn, project_id, sorted(hashes))
                for h, issue_id in owners.items():
                    self._issue_of[(project_id, h)] = issue_id
                    self._issue_of.move_to_end((project_id, h))
        while len(self._issue_of) > self.max_cached_hashes:
            self._issue_of.popitem(last=False)

    def stats(self) -> dict[str, int]:
        return {"cached_hashes": len(self._issue_of), "hits": self.hits, "misses": self.misses}


#: A grouping call is retried when its process dies: it only reads, or creates issues
#: idempotently by hash.
GROUPING_TASK_RETRIES: Final = -1


class GroupingService:
    """One shard of the grouping actors. Calls run one at a time (the actor's default
    concurrency, or a serial part of the shared process), which is what makes its cache and
    its issue creation race-free."""

    def __init__(self, postgres_url: str, max_cached_hashes: int) -> None:
        metrics.record_actor_start("grouping_shard")
        self._postgres_url = postgres_url
        self._max_cached_hashes = max_cached_hashes
        self._resolver = IssueResolver(psycopg.connect(postgres_url), max_cached_hashes)

    def issue_ids_for(self, candidates: Sequence[issue_store.IssueCandidate]
                      ) -> list[int | None]:
        try:
            return self._resolver.issue_ids_for(candidates)
        except psycopg.OperationalError:
            # PostgreSQL restarted or the connection broke: start over with a fresh one and
            # an empty cache; the caller retries its batch.
            log.warning("grouping shard lost its PostgreSQL connection; reconnecting")
            self._resolver = IssueResolver(psycopg.connect(self._postgres_url),
                                           self._max_cached_hashes)
            raise

    def stats(self) -> dict[str, int]:
        return self._resolver.stats()


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=GROUPING_TASK_RETRIES)  # type: ignore[call-overload]
class GroupingShard(GroupingService):
    pass


class ShardedResolver:
    """What consumers call: routes each candidate to the shard that owns its project."""

    def __init__(self, shards: Sequence[Any]) -> None:
        self.shards = list(shards)

    def issue_ids_for(self, candidates: Sequence[issue_store.IssueCandidate]
                      ) -> list[int | None]:
        by_shard: dict[int, list[int]] = {}
        for index, c in enumerate(candidates):
            by_shard.setdefault(c.project_id % len(self.shards), []).append(index)
        calls = {shard: self.shards[shard].issue_ids_for.remote([candidates[i] for i in idx])
                 for shard, idx in by_shard.items()}
        result: list[int | None] = [None] * len(candidates)
        for shard, ref in calls.items():
            for i, issue_id in zip(by_shard[shard], ray.get(ref), strict=True):
                result[i] = issue_id
        return result


def shard_name(index: int) -> str:
    return f"crashray-grouping-{index}"


def grouping_parts(count: int, postgres_url: str, max_cached_hashes: int) -> list[Part]:
    """The shards as serial parts of the shared process (one node)."""
    return [Part(shard_name(i), GroupingService, (postgres_url, max_cached_hashes),
                 threads=SERIAL, max_task_retries=GROUPING_TASK_RETRIES) for i in range(count)]


def start_grouping_shards(count: int, postgres_url: str, max_cached_hashes: int,
                          placement: Placement = LOCAL) -> list[Any]:
    """The shards, or those of a running deployment (found by name and kept: a shard's
    cache refills from PostgreSQL, and which shard owns a project depends on the count)."""
    return [GroupingShard.options(  # type: ignore[attr-defined]
        get_if_exists=True, **placement.pool(shard_name(i))).remote(
            postgres_url, max_cached_hashes) for i in range(count)]
