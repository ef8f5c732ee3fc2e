"""How many consumers the pool should have, decided from the queue's lag (pure code).

The pool autoscaler (``actors/pool_autoscaler.py``) measures every few seconds what waits
in the hand-off queue and how fast the pool drains it, calls ``decide`` and keeps the
``History`` it returns; it only starts and retires consumers. (As Ray Serve's
``autoscaling_policy.calculate_desired_num_replicas`` is pure and its policy class only
keeps counters; here the signal is the queue, not requests in flight.)

The rules, first match wins:

1. **Bounds.** A pool outside ``[min_consumers, max_consumers]`` (a consumer went missing,
   the bounds changed on a redeploy) goes back inside at once, cool-downs or not.
2. **Behind → grow.** The pool is behind when at least ``min_backlog_items`` wait (fewer
   are taken whole by the current consumers' next claims; an empty pool is behind with any)
   and the oldest waiting item has waited longer than ``scale_up_age_s``, or the backlog at
   the measured rate would take longer than that to drain. It then grows to the size that
   drains the backlog within ``scale_up_age_s`` at the rate each consumer reached, by at
   least one and at most ``max_step_up``, unless
   - a consumer reports its storage down: it backs off and keeps its items queued
     (actors/consumer.py), so more consumers would drain nothing; or
   - the last change is less than ``scale_up_cooldown_s`` ago: consumers just started
     need a moment before they show in the rate and the lag.
3. **Quiet long enough → shrink.** The pool is quiet when fewer than ``min_backlog_items``
   wait and none has waited longer than ``quiet_age_s``. After ``scale_down_delay_s`` of
   quiet, and at least that long after the last change, it shrinks by ``max_step_down``
   (retired consumers finish their batch first).
4. Otherwise it stays. Between ``quiet_age_s`` and ``scale_up_age_s`` the pool neither
   grows nor counts as quiet: the hysteresis that keeps a pool sized for its load from
   flapping.

Times are seconds on one monotonic clock of the caller's choice (injected as ``now``).

    events.errors.BadRequest
    └── InvalidPoolPolicy   bounds, steps or delays that cannot work together
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from events.errors import BadRequest


class InvalidPoolPolicy(BadRequest):
    """A pool policy that cannot be applied; the message names the field and the value."""

    code = "invalid_pool_policy"


@dataclass(frozen=True)
class PoolPolicy:
    """The autoscaler's rules (see cluster/settings.py for the settings behind them)."""

    min_consumers: int
    max_consumers: int
    #: Longest an item should wait: the pool grows past it.
    scale_up_age_s: float
    #: An oldest item younger than this (and a small backlog) is a quiet pool.
    quiet_age_s: float
    #: Fewer waiting items than this never grow a pool that has consumers.
    min_backlog_items: int
    scale_up_cooldown_s: float
    scale_down_delay_s: float
    max_step_up: int = 2
    max_step_down: int = 1

    def __post_init__(self) -> None:
        problems = []
        if self.min_consumers < 0:
            problems.append(f"min_consumers is {self.min_consumers}, below 0")
        if self.max_consumers < max(self.min_consumers, 1):
            problems.append(f"max_consumers is {self.max_consumers}, below min_consumers"
                            f" ({self.min_consumers}) or 1")
        if not 0 <= self.quiet_age_s <= self.scale_up_age_s:
            problems.append(f"quiet_age_s is {self.quiet_age_s}, not between 0 and"
                            f" scale_up_age_s ({self.scale_up_age_s})")
        if self.max_step_up < 1 or self.max_step_down < 1:
            problems.append(f"steps are {self.max_step_up} up, {self.max_step_down} down;"
                            " each must be at least 1")
        if min(self.scale_up_cooldown_s, self.scale_down_delay_s, self.min_backlog_items) < 0:
            problems.append("cool-downs and min_backlog_items must not be negative")
        if problems:
            raise InvalidPoolPolicy("consumer pool policy: " + "; ".join(problems))


@dataclass(frozen=True)
class PoolLoad:
    """One measurement of the queue and the pool."""

    #: Items waiting to be claimed (unclaimed, or their lease ran out).
    waiting_items: int
    #: Seconds the oldest waiting item has waited since ingest received it (0: none).
    oldest_age_s: float
    #: Items the whole pool processed per second lately; None until measured.
    processed_per_s: float | None = None
    #: A consumer reports that ClickHouse does not answer (it is backing off).
    storage_down: bool = False


@dataclass(frozen=True)
class History:
    """What the autoscaler remembers between two decisions."""

    #: When the pool last changed size (or the autoscaler started).
    last_change_s: float
    #: When the pool was last seen not quiet (or the autoscaler started).
    last_busy_s: float


@dataclass(frozen=True)
class Decision:
    target: int
    history: History
    #: Why, for the autoscaler's log ("oldest item waited 42 s > 10 s").
    reason: str


def start_history(now: float) -> History:
    """The history of a pool that has just been started: no change is due at once."""
    return History(last_change_s=now, last_busy_s=now)


def is_quiet(load: PoolLoad, policy: PoolPolicy) -> bool:
    """Rule 3's quiet: a small backlog (nothing at all when ``min_backlog_items`` is 0)
    whose oldest item is young."""
    return (load.waiting_items < max(policy.min_backlog_items, 1)
            and load.oldest_age_s <= policy.quiet_age_s)


def behind_by(current: int, load: PoolLoad, policy: PoolPolicy) -> str | None:
    """Why the pool is behind (rule 2), or None when it is not."""
    if load.waiting_items <= 0:
        return None
    if current > 0 and load.waiting_items < policy.min_backlog_items:
        return None
    if load.oldest_age_s > policy.scale_up_age_s:
        return f"oldest item waited {load.oldest_age_s:.0f} s > {policy.scale_up_age_s:g} s"
    drain_s = drain_time_s(load)
    if drain_s is not None and drain_s > policy.scale_up_age_s:
        return (f"{load.waiting_items} items take {drain_s:.0f} s to drain"
                f" > {policy.scale_up_age_s:g} s")
    return None


def drain_time_s(load: PoolLoad) -> float | None:
    """Seconds the backlog takes at the measured rate (inf when nothing was processed);
    None before the rate is measured."""
    if load.processed_per_s is None:
        return None
    if load.processed_per_s <= 0:
        return math.inf
    return load.waiting_items / load.processed_per_s


def grown_size(current: int, load: PoolLoad, policy: PoolPolicy) -> int:
    """The size that drains the backlog within ``scale_up_age_s`` at the rate each current
    consumer reached; one more when that rate is unknown; within the step and ``max``."""
    wanted = current + 1
    # A rate too small to divide by (a float underflow) counts as unknown.
    rate = load.processed_per_s or 0.0
    if current > 0 and rate * policy.scale_up_age_s / current > 1e-9:
        per_consumer_per_s = rate / current
        needed = load.waiting_items / (per_consumer_per_s * policy.scale_up_age_s)
        wanted = math.ceil(min(needed, policy.max_consumers))  # a tiny rate needs them all
    return min(max(wanted, current + 1), current + policy.max_step_up, policy.max_consumers)


def decide(current: int, load: PoolLoad, now: float, history: History,
           policy: PoolPolicy) -> Decision:
    """The pool size to have now (see the module docstring for the rules)."""
    quiet = is_quiet(load, policy)
    seen = history if quiet else replace(history, last_busy_s=now)
    changed = replace(seen, last_change_s=now)
    if current < policy.min_consumers:
        return Decision(policy.min_consumers, changed,
                        f"{current} consumers, below the minimum {policy.min_consumers}")
    if current > policy.max_consumers:
        return Decision(policy.max_consumers, changed,
                        f"{current} consumers, above the maximum {policy.max_consumers}")
    since_change_s = now - history.last_change_s
    behind = behind_by(current, load, policy)
    if behind is not None:
        if current >= policy.max_consumers:
            return Decision(current, seen, f"{behind}, at the maximum {current}")
        if load.storage_down:
            return Decision(current, seen, f"{behind}, but storage is down: holding")
        if since_change_s < policy.scale_up_cooldown_s:
            return Decision(current, seen, f"{behind}, cooling down after the last change")
        return Decision(grown_size(current, load, policy), changed, behind)
    quiet_for_s = now - history.last_busy_s
    if (quiet and current > policy.min_consumers
            and quiet_for_s >= policy.scale_down_delay_s
            and since_change_s >= policy.scale_down_delay_s):
        target = max(current - policy.max_step_down, policy.min_consumers)
        return Decision(target, changed, f"quiet for {quiet_for_s:.0f} s")
    return Decision(current, seen, "steady")


@dataclass
class RateMeter:
    """The pool's processing rate from its consumers' ``processed`` totals, over the last
    ``window_s``. Each consumer counts from its own start: one that joined since the last
    observation adds nothing yet, one that restarted (its total fell) adds nothing for that
    interval, one that left stops adding."""

    window_s: float
    _totals: dict[str, int] = field(default_factory=dict)
    #: (time, items processed since the meter started), oldest first.
    _samples: deque[tuple[float, int]] = field(default_factory=deque)

    def observe(self, now: float, totals: Mapping[str, int]) -> float | None:
        """Record the totals seen at ``now``; returns items per second over the window
        (None until two observations are apart in time)."""
        added = sum(max(total - self._totals[name], 0)
                    for name, total in totals.items() if name in self._totals)
        self._totals = dict(totals)
        counted = self._samples[-1][1] + added if self._samples else 0
        self._samples.append((now, counted))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()
        since, base = self._samples[0]
        if now <= since:
            return None
        return (counted - base) / (now - since)
