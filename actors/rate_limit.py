"""Rate-limiter actors: per-tenant quotas, key rate limits and spike protection.

Shards are named ``crashray-ratelimit-{i}`` and own the organizations with ``organization_id
% shards == i``, so every counter of an organization lives in one actor and its decisions are
exact however many ingest replicas ask. Ingest asks once per ``@serve.batch`` batch, never
once per event. Each batch's counter increments are written to PostgreSQL (``quota_counters``)
before the answer, so a shard that Ray restarts (``max_restarts``) reloads the windows still
running and does not reset them.

Leases: where every quota on a sender's category has room to spare, the answer also grants
the replica a ``Lease`` (at most 1 % of a limit, for at most a second), counted at once; the
replica admits that sender's requests on it without asking, and hands back what it did not
use with its next call. So a busy, unlimited sender costs about one call a second per
replica, while a sender near its limit is decided request by request.

Spike protection: each project's accepted events per hour are counted (the ``spike`` quota's
counter, kept 72 hours); its limit for the current hour is ``spike_limit`` of those hours,
recomputed when the hour changes or the project's settings are re-read.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg
import ray

from actors.placement import LOCAL, Placement
from actors.shared_process import SERIAL, Part
from cluster import metrics
from events.quotas import (
    LEASE_TTL_S,
    SPIKE_BASELINE_HOURS,
    SPIKE_WINDOW_S,
    CounterKey,
    Decision,
    Quota,
    Return,
    SpikeProtection,
    Usage,
    decide,
    spike_limit,
    spike_quota,
    window_at,
)
from storage import quotas as quota_store
from storage.postgres import connect
from storage.projects import spike_protection

log = logging.getLogger("crashray.rate_limit")

#: Seconds after a lease ends during which its unused units may still come back.
LEASE_RETURN_GRACE_S = 2.0
#: Seconds between two passes that delete ended windows from ``quota_counters``.
PRUNE_INTERVAL_S = 300.0


@dataclass(frozen=True)
class RateLimiterConfig:
    postgres_url: str
    #: Seconds an organization's quotas and projects' spike settings are cached.
    settings_refresh_s: float
    spike_defaults: SpikeProtection


class RateLimiter:
    """The shard's state and its one operation, without Ray (tests drive it directly)."""

    def __init__(self, config: RateLimiterConfig, clock: Callable[[], float] = time.time
                 ) -> None:
        self.config = config
        self.clock = clock
        # Counter writes need no flush to disk before the answer: an actor restart loses
        # nothing (PostgreSQL has them), only a crash of PostgreSQL itself could forget the
        # last few milliseconds of counts, which lets at most that much more through.
        self.conn = connect(config.postgres_url, autocommit=True, durable_commits=False)
        self.counters: dict[CounterKey, int] = quota_store.load_counters(
            self.conn, dt.datetime.fromtimestamp(clock(), dt.UTC))
        self._expires_at: dict[CounterKey, float] = {}
        self._quotas: dict[int, tuple[float, list[Quota]]] = {}
        self._spike: dict[int, tuple[float, int, int | None]] = {}  # loaded, hour slot, limit
        self._pruned_at = clock()
        self.checked = 0
        #: Leased units per counter, until (end of the lease + grace).
        self._outstanding: list[tuple[float, CounterKey, int]] = []

    def check(self, usages: Sequence[Usage], returns: Sequence[Return] = ()
              ) -> list[Decision]:
        """Decide ``usages`` (granting leases where quotas have room), after taking back
        the unused units of ended leases (``returns``)."""
        now = self.clock()
        self._refresh(usages, now)
        self._outstanding = [o for o in self._outstanding if o[0] > now]
        for _, key, _, units in returns:  # an ended lease no longer holds its units
            match = next((o for o in self._outstanding if o[1] == key and o[2] == units), None)
            if match is not None:
                self._outstanding.remove(match)
        leased: dict[CounterKey, int] = {}
        for _, key, units in self._outstanding:
            leased[key] = leased.get(key, 0) + units
        verdicts = decide(usages, self._quotas_for, self.counters, now, leases=True,
                          leased=leased)
        # A lease holds its units until it ends and the replica has had a chance to hand
        # back what it did not use (its next call, or the once-a-second flush).
        self._outstanding += [(now + LEASE_TTL_S + LEASE_RETURN_GRACE_S, key, lease.units)
                              for decision in verdicts.decisions for lease in decision.leases
                              for key in lease.counters]
        for _, key, units, _ in returns:
            if units and key in self.counters:  # a window that ended is gone anyway
                verdicts.increments[key] = verdicts.increments.get(key, 0) - units
                verdicts.expires_at[key] = self._expires_at.get(
                    key, verdicts.expires_at.get(key, now))
        # One statement, atomic on its own (autocommit): one round trip per batch.
        quota_store.add_to_counters(self.conn, verdicts.increments, verdicts.expires_at)
        for key, quantity in verdicts.increments.items():
            self.counters[key] = self.counters.get(key, 0) + quantity
            self._expires_at[key] = verdicts.expires_at[key]
        self.checked += len(usages)
        self._forget_ended(now)
        return verdicts.decisions

    def _quotas_for(self, usage: Usage) -> list[Quota]:
        _, _, limit = self._spike[usage.project_id]
        return [*self._quotas[usage.organization_id][1],
                spike_quota(usage.organization_id, usage.project_id, limit)]

    def _refresh(self, usages: Sequence[Usage], now: float) -> None:
        stale_orgs = {u.organization_id for u in usages
                      if now - self._quotas.get(u.organization_id, (-1e9, []))[0]
                      > self.config.settings_refresh_s}
        for org in stale_orgs:
            self._quotas[org] = (now, quota_store.organization_quotas(self.conn, org))
        projects = {u.project_id: u.organization_id for u in usages}
        stale = [p for p, org in projects.items() if self._spike_stale(p, org, now)]
        if stale:
            settings = spike_protection(self.conn, stale,
                                                    self.config.spike_defaults)
            for project_id in stale:
                self._spike[project_id] = self._spike_state(
                    projects[project_id], project_id,
                    settings.get(project_id, SpikeProtection(enabled=False)), now)

    def _spike_stale(self, project_id: int, organization_id: int, now: float) -> bool:
        loaded = self._spike.get(project_id)
        return loaded is None or now - loaded[0] > self.config.settings_refresh_s or \
            loaded[1] != window_at(organization_id, SPIKE_WINDOW_S, now).slot

    def _spike_state(self, organization_id: int, project_id: int,
                     protection: SpikeProtection, now: float) -> tuple[float, int, int | None]:
        slot = window_at(organization_id, SPIKE_WINDOW_S, now).slot
        usage = Usage(organization_id, project_id, None, {})
        counter = spike_quota(organization_id, project_id, None).counter(usage)
        past = range(slot - SPIKE_BASELINE_HOURS, slot)
        history = quota_store.spike_history(self.conn, counter, list(past))
        return now, slot, spike_limit([history.get(s, 0) for s in past], protection)

    def _forget_ended(self, now: float) -> None:
        if now - self._pruned_at < PRUNE_INTERVAL_S:
            return
        self._pruned_at = now
        ended = [k for k, expires in self._expires_at.items() if expires < now]
        for key in ended:
            self.counters.pop(key, None)
            self._expires_at.pop(key, None)
        with self.conn.transaction():
            quota_store.prune_counters(self.conn, (SPIKE_BASELINE_HOURS + 1) * SPIKE_WINDOW_S)

    def stats(self) -> dict[str, int]:
        return {"checked": self.checked, "counters": len(self.counters)}


#: A check that dies with its process is not retried (its increments may be stored):
#: ingest answers those requests 503 and the SDKs send again.
RATE_LIMIT_TASK_RETRIES: Final = 0


class RateLimiterService:
    """One shard. Calls run one at a time (an actor of its own, or a serial part of the
    shared process), which keeps each decision atomic."""

    def __init__(self, config: RateLimiterConfig) -> None:
        metrics.record_actor_start("rate_limiter")
        self._config = config
        self._limiter = RateLimiter(config)

    def check(self, usages: Sequence[Usage], returns: Sequence[Return] = ()
              ) -> list[Decision]:
        try:
            decisions = self._limiter.check(usages, returns)
            record_decisions(decisions, returns)
            return decisions
        except psycopg.OperationalError:
            log.warning("rate limiter lost its PostgreSQL connection; reconnecting")
            self._limiter = RateLimiter(self._config)
            raise

    def stats(self) -> dict[str, int]:
        return self._limiter.stats()


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=RATE_LIMIT_TASK_RETRIES)  # type: ignore[call-overload]
class RateLimiterShard(RateLimiterService):
    pass


def record_decisions(decisions: Sequence[Decision], returns: Sequence[Return]) -> None:
    """The shard's metrics: one decision per usage and category (accepted, or refused
    by the quota's scope), the leases granted and the lease units handed back."""
    for decision in decisions:
        for category in decision.accepted:
            metrics.inc("crashray_rate_limit_decisions_total", category=category,
                        outcome="accepted", scope="")
        for limit in decision.limits:
            for category in limit.categories:
                metrics.inc("crashray_rate_limit_decisions_total", category=category,
                            outcome="refused", scope=limit.scope)
        for lease in decision.leases:
            metrics.inc("crashray_rate_limit_leases_total", category=lease.category)
            metrics.inc("crashray_rate_limit_lease_units_total", lease.units,
                        outcome="granted")
    returned = sum(given_back[3] for given_back in returns)
    metrics.inc("crashray_rate_limit_lease_units_total", returned, outcome="returned")


def rate_limiter_name(index: int) -> str:
    return f"crashray-ratelimit-{index}"


def rate_limiter_parts(count: int, config: RateLimiterConfig) -> list[Part]:
    """The shards as serial parts of the shared process (one node)."""
    return [Part(rate_limiter_name(i), RateLimiterService, (config,), threads=SERIAL,
                 max_task_retries=RATE_LIMIT_TASK_RETRIES) for i in range(count)]


def start_rate_limiters(count: int, config: RateLimiterConfig,
                        placement: Placement = LOCAL) -> list[Any]:
    """The shards, or those of a running deployment (found by name and kept, with the
    windows and leases they hold)."""
    return [RateLimiterShard.options(  # type: ignore[attr-defined]
        get_if_exists=True, **placement.pool(rate_limiter_name(i))).remote(config)
        for i in range(count)]


async def check_usages(shards: Sequence[Any], usages: Sequence[Usage],
                       returns: Sequence[Return] = ()) -> list[Decision]:
    """Ask the shards that own the usages' organizations (and those owed lease returns),
    one call each, concurrently."""
    by_shard: dict[int, list[int]] = {}
    for index, usage in enumerate(usages):
        by_shard.setdefault(usage.organization_id % len(shards), []).append(index)
    returned: dict[int, list[Return]] = {}
    for given_back in returns:
        returned.setdefault(given_back[0] % len(shards), []).append(given_back)
    refs = {shard: shards[shard].check.remote([usages[i] for i in by_shard.get(shard, [])],
                                              returned.get(shard, []))
            for shard in by_shard.keys() | returned.keys()}
    decisions: list[Decision | None] = [None] * len(usages)
    for shard, ref in refs.items():
        for index, decision in zip(by_shard.get(shard, []), await ref, strict=True):
            decisions[index] = decision
    return [d for d in decisions if d is not None]
