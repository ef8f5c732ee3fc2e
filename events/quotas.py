"""Quotas and rate limits: what an envelope costs and whether it may pass (spec §5).

Pure code: the rate-limiter actors (actors/rate_limit.py) hold the counters and call
``decide``; ingest replicas cache the limits they were told about (``LimitCache``) and format
them for SDKs (``format_rate_limits``).

Model (Relay's, spec §5.4). A ``Quota`` limits some data categories (none = all) of one scope —
``organization``, ``project`` or ``key`` — to ``limit`` per fixed window of ``window_s``
seconds. Windows are shifted by the organization id, as Relay does, so that the windows of
different organizations do not all roll over at once::

    shift   = organization_id % window_s
    slot    = (now - shift) // window_s
    expires = (slot + 1) * window_s + shift        retry_after = expires - now

A request is checked category by category: its quantity of a category must fit every quota
that applies (``counter + quantity <= limit``); only then are the counters of all of them
increased. A category that does not fit is refused whole (every item of it), with a
``RateLimit`` naming the category, scope, reason and the seconds until the window ends.
``limit=None`` counts without limiting, ``limit=0`` refuses without counting.

Spike protection is a per-project quota on events (``error``, ``default``, ``security``) per
hour whose limit follows the project's own volume: ``spike_limit`` of its accepted events in
the trailing ``SPIKE_BASELINE_HOURS`` hours.

Backlog caps are not counted in windows: an organization with ``BacklogCaps`` worth of items
or bytes waiting in the ingest queue is refused (``org_backlog_limit``) until the consumers
have worked them off, so that its flood never fills the queue for everyone.

    events.errors.BadRequest
    └── InvalidQuota        a quota definition that cannot be counted
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from events.errors import BadRequest

#: A counter's key: (counter name, window slot).
CounterKey = tuple[str, int]

#: Data categories (Relay's ``DataCategory`` names) Crashray counts.
CATEGORIES: Final = frozenset({
    "default", "error", "security", "transaction", "attachment", "attachment_item", "session",
    "user_report_v2", "feedback", "monitor", "profile", "replay", "span", "log_item",
    "log_byte"})
#: Categories an event item may turn out to be (Relay counts it as ``error`` at the door).
EVENT_CATEGORIES: Final = frozenset({"error", "default", "security"})
#: Categories measured in bytes; a counted quota must not mix them with counted ones.
BYTE_CATEGORIES: Final = frozenset({"attachment", "log_byte"})
SCOPES: Final = ("organization", "project", "key")
#: Seconds a ``limit=0`` quota without a window tells SDKs to wait (Relay: 60 s).
REJECT_ALL_SECS: Final = 60
SPIKE_BASELINE_HOURS: Final = 72
#: Leases (``Lease``): a replica may admit on its own at most this share of a quota's
#: limit, so that what leases hold back never exceeds 1 % of a limit per replica ...
LEASE_FRACTION: Final = 0.01
#: ... no lease smaller than this is worth granting (small limits are decided one by one,
#: exactly), none larger than this, and none for longer than ``LEASE_TTL_S``.
LEASE_MIN_UNITS: Final = 10
LEASE_MAX_UNITS: Final = 1000
LEASE_TTL_S: Final = 1.0
#: Internal queue item with counts of items ingest refused: a JSON list of ``{"key_id",
#: "hour", "category", "reason", "outcome", "quantity"}``. SDK items of this type are never
#: handed off (not in ingest's handed-off types).
OUTCOMES_ITEM_TYPE: Final = "outcomes"
SPIKE_WINDOW_S: Final = 3600


class InvalidQuota(BadRequest):
    """A quota that cannot be stored as given; the message names the field."""

    code = "invalid_quota"


def item_quantities(item_type: str, payload_bytes: int) -> tuple[tuple[str, int], ...]:
    """What one envelope item costs, per category (spec §5.3). Client reports are never
    limited and cost nothing; unknown items are not handed off and cost nothing."""
    if item_type == "event":
        return (("error", 1),)
    if item_type == "security":
        # A converted browser security report (events/security.py): Relay counts its
        # RawSecurity/Security items as ``security`` (relay-server envelope item.rs).
        return (("security", 1),)
    if item_type == "attachment":
        return (("attachment", max(payload_bytes, 1)), ("attachment_item", 1))
    single = {"transaction": "transaction", "session": "session", "sessions": "session",
              "user_report": "user_report_v2", "feedback": "feedback",
              "check_in": "monitor"}.get(item_type)
    return ((single, 1),) if single else ()


@dataclass(frozen=True)
class Quota:
    """One limit. ``id`` names its counter; ``scope_id`` None applies it to every
    organization/project/key of its organization separately."""

    id: str
    organization_id: int
    scope: str
    scope_id: int | None
    categories: frozenset[str]
    limit: int | None
    window_s: int
    reason_code: str = ""

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise InvalidQuota(f"quota {self.id!r}: scope {self.scope!r} is not one of"
                               f" {', '.join(SCOPES)}")
        unknown = sorted(self.categories - CATEGORIES)
        if unknown:
            raise InvalidQuota(f"quota {self.id!r}: unknown categories {', '.join(unknown)};"
                               f" known: {', '.join(sorted(CATEGORIES))}")
        if self.limit is not None and self.limit < 0:
            raise InvalidQuota(f"quota {self.id!r}: limit {self.limit} is negative; use 0 to"
                               " refuse everything or no limit to only count")
        if self.limit != 0 and self.window_s <= 0:
            raise InvalidQuota(f"quota {self.id!r}: window {self.window_s} s; a counted quota"
                               " needs a window of at least 1 s")
        if self.limit and self.categories & BYTE_CATEGORIES and \
                self.categories - BYTE_CATEGORIES:
            raise InvalidQuota(f"quota {self.id!r} mixes categories counted in bytes"
                               f" ({', '.join(sorted(self.categories & BYTE_CATEGORIES))})"
                               " with counted ones; make two quotas")

    def covers(self, category: str) -> bool:
        return not self.categories or category in self.categories

    def applies_to(self, usage: Usage) -> bool:
        if usage.organization_id != self.organization_id:
            return False
        if self.scope_id is None:
            return self.scope != "key" or usage.key_id is not None
        return self.scope_id == _subject(self.scope, usage)

    def counter(self, usage: Usage) -> str:
        """The counter this quota keeps for ``usage``'s organization/project/key."""
        subject = _subject(self.scope, usage)
        return f"{self.id}:{self.organization_id}:{self.scope}:{subject}"


def _subject(scope: str, usage: Usage) -> int | None:
    return {"organization": usage.organization_id, "project": usage.project_id,
            "key": usage.key_id}[scope]


@dataclass(frozen=True)
class Window:
    slot: int
    expires_at: float

    def retry_after_s(self, now: float) -> int:
        return max(math.ceil(self.expires_at - now), 1)


def window_at(organization_id: int, window_s: int, now: float) -> Window:
    """The fixed window of an organization's quota containing ``now`` (unix seconds)."""
    shift = organization_id % window_s
    slot = math.floor((now - shift) / window_s)
    return Window(slot, (slot + 1) * window_s + shift)


@dataclass(frozen=True)
class Usage:
    """What one request wants to send: quantities per category."""

    organization_id: int
    project_id: int
    key_id: int | None
    quantities: Mapping[str, int]


@dataclass(frozen=True)
class RateLimit:
    """A refusal, as SDKs are told of it: ``retry_after_s:categories:scope:reason``."""

    categories: frozenset[str]
    scope: str
    reason_code: str
    retry_after_s: int
    #: The organization/project/key id the scope refers to (not sent to SDKs).
    scope_id: int | None = None


@dataclass(frozen=True)
class Lease:
    """Units of one category a replica may admit for one sender (organization, project,
    key) on its own until ``expires_at``, already counted in ``counters``; what it does not
    use goes back (``LeaseBook.expired``)."""

    organization_id: int
    project_id: int
    key_id: int | None
    category: str
    units: int
    expires_at: float
    counters: tuple[CounterKey, ...]


@dataclass(frozen=True)
class Decision:
    accepted: frozenset[str]
    limits: tuple[RateLimit, ...] = ()
    leases: tuple[Lease, ...] = ()

    @property
    def refused(self) -> frozenset[str]:
        return frozenset(c for limit in self.limits for c in limit.categories)




@dataclass
class Verdicts:
    decisions: list[Decision] = field(default_factory=list)
    #: Counter increments to persist, with each counter's window end (unix seconds).
    increments: dict[CounterKey, int] = field(default_factory=dict)
    expires_at: dict[CounterKey, float] = field(default_factory=dict)
    #: Units newly held by leases, per counter.
    leased: dict[CounterKey, int] = field(default_factory=dict)


def decide(usages: Sequence[Usage], quotas_for: Callable[[Usage], Sequence[Quota]],
           counters: Mapping[CounterKey, int], now: float, *, leases: bool = False,
           leased: Mapping[CounterKey, int] | None = None) -> Verdicts:
    """Admit or refuse each usage, category by category, in order: later usages of the batch
    see the counts of the earlier ones. ``counters`` is not changed; the increments are
    returned for the caller to apply and persist. With ``leases``, an accepted category of
    a sender also gets a ``Lease`` where every quota on it has room to spare (one per sender
    and category in a batch); ``leased`` are the units leases already hold per counter, so
    that all leases on a quota together never hold more than ``LEASE_FRACTION`` of it."""
    verdicts = Verdicts()
    leased_senders: set[tuple[int, int, int | None, str]] = set()
    for usage in usages:
        quotas = [q for q in quotas_for(usage) if q.applies_to(usage)]
        accepted: set[str] = set()
        limits: list[RateLimit] = []
        granted: list[Lease] = []
        for category, quantity in sorted(usage.quantities.items()):
            refusal = _refusal(usage, category, quantity, quotas, counters, verdicts, now)
            if refusal is not None:
                limits.append(refusal)
                continue
            accepted.add(category)
            sender = (usage.organization_id, usage.project_id, usage.key_id, category)
            if leases and sender not in leased_senders and category not in BYTE_CATEGORIES:
                lease = _lease(usage, category, quotas, counters, verdicts, now, leased or {})
                if lease is not None:
                    leased_senders.add(sender)
                    granted.append(lease)
        verdicts.decisions.append(Decision(frozenset(accepted), tuple(limits),
                                           tuple(granted)))
    return verdicts


def _lease(usage: Usage, category: str, quotas: Sequence[Quota],
           counters: Mapping[CounterKey, int], verdicts: Verdicts, now: float,
           leased: Mapping[CounterKey, int]) -> Lease | None:
    """A lease of ``category`` for ``usage``'s sender, counted in every quota on it now;
    None when some quota has too little room (then every request is decided here)."""
    units, expires_at = LEASE_MAX_UNITS, now + LEASE_TTL_S
    keys: list[tuple[CounterKey, float]] = []
    for quota in (q for q in quotas if q.covers(category)):
        if quota.limit == 0:
            return None
        window = window_at(usage.organization_id, quota.window_s, now)
        key = (quota.counter(usage), window.slot)
        expires_at = min(expires_at, window.expires_at)
        if quota.limit is not None:
            used = counters.get(key, 0) + verdicts.increments.get(key, 0)
            held = leased.get(key, 0) + verdicts.leased.get(key, 0)
            units = min(units, int(quota.limit * LEASE_FRACTION) - held, quota.limit - used)
        keys.append((key, window.expires_at))
    if units < LEASE_MIN_UNITS:
        return None
    for key, window_end in keys:
        verdicts.increments[key] = verdicts.increments.get(key, 0) + units
        verdicts.expires_at[key] = window_end
        verdicts.leased[key] = verdicts.leased.get(key, 0) + units
    return Lease(usage.organization_id, usage.project_id, usage.key_id, category, units,
                 expires_at, tuple(k for k, _ in keys))


def _refusal(usage: Usage, category: str, quantity: int, quotas: Sequence[Quota],
             counters: Mapping[CounterKey, int], verdicts: Verdicts, now: float
             ) -> RateLimit | None:
    """The first quota ``quantity`` of ``category`` would exceed, else count it in all."""
    matching = [q for q in quotas if q.covers(category)]
    counted: list[tuple[CounterKey, float]] = []
    for quota in matching:
        subject = _subject(quota.scope, usage)
        if quota.limit == 0:
            return RateLimit(frozenset({category}), quota.scope, quota.reason_code,
                             REJECT_ALL_SECS if quota.window_s <= 0 else quota.window_s,
                             subject)
        window = window_at(usage.organization_id, quota.window_s, now)
        key = (quota.counter(usage), window.slot)
        used = counters.get(key, 0) + verdicts.increments.get(key, 0)
        if quota.limit is not None and used + quantity > quota.limit:
            return RateLimit(frozenset({category}), quota.scope, quota.reason_code,
                             window.retry_after_s(now), subject)
        counted.append((key, window.expires_at))
    for key, expires_at in counted:
        verdicts.increments[key] = verdicts.increments.get(key, 0) + quantity
        verdicts.expires_at[key] = expires_at
    return None


def merge_limits(limits: Iterable[RateLimit]) -> tuple[RateLimit, ...]:
    """One limit per (scope, scope id, reason, seconds), with their categories together.
    A category limited twice by the same scope and reason (a cached refusal and a fresh
    one, a second apart) keeps the longer wait only."""
    longest: dict[tuple[str, int | None, str, str], int] = {}
    for limit in limits:
        for category in limit.categories or {""}:
            key = (limit.scope, limit.scope_id, limit.reason_code, category)
            longest[key] = max(longest.get(key, 0), limit.retry_after_s)
    merged: dict[tuple[str, int | None, str, int], set[str]] = {}
    for (scope, scope_id, reason, category), secs in longest.items():
        cats = merged.setdefault((scope, scope_id, reason, secs), set())
        if category:
            cats.add(category)
    return tuple(RateLimit(frozenset(cats), scope, reason, secs, scope_id)
                 for (scope, scope_id, reason, secs), cats in sorted(
                     merged.items(), key=lambda kv: (-kv[0][3], kv[0][0], kv[0][2])))


def format_rate_limits(limits: Iterable[RateLimit]) -> str:
    """The ``X-Sentry-Rate-Limits`` header value (spec §5.1), longest limit first."""
    return ", ".join(
        f"{limit.retry_after_s}:{';'.join(sorted(limit.categories))}:{limit.scope}"
        + (f":{limit.reason_code}" if limit.reason_code else "")
        for limit in merge_limits(limits))


def retry_after_s(limits: Iterable[RateLimit]) -> int:
    """``Retry-After``: the longest of the limits."""
    return max((limit.retry_after_s for limit in limits), default=REJECT_ALL_SECS)


@dataclass(frozen=True)
class SpikeProtection:
    """A project's spike protection: at most ``max(floor_per_hour, multiplier * the hourly
    average of its accepted events over the trailing 72 hours)`` events an hour."""

    enabled: bool = True
    multiplier: float = 10.0
    floor_per_hour: int = 100_000


def spike_limit(hourly_accepted: Sequence[int], protection: SpikeProtection) -> int | None:
    """The project's events-per-hour limit now; ``hourly_accepted`` are its accepted events
    in each of the last ``SPIKE_BASELINE_HOURS`` complete hours (missing hours count as 0).
    None when spike protection is off."""
    if not protection.enabled:
        return None
    baseline = sum(hourly_accepted[-SPIKE_BASELINE_HOURS:]) / SPIKE_BASELINE_HOURS
    return max(protection.floor_per_hour, math.ceil(protection.multiplier * baseline))


def spike_quota(organization_id: int, project_id: int, limit: int | None) -> Quota:
    return Quota("spike", organization_id, "project", project_id, EVENT_CATEGORIES, limit,
                 SPIKE_WINDOW_S, "spike_protection")


def key_rate_limit_quota(organization_id: int, key_id: int, count: int, window_s: int
                         ) -> Quota:
    """The rate limit users set on a DSN key (Sentry: events per window, ``key_quota``)."""
    return Quota(f"key{key_id}", organization_id, "key", key_id, EVENT_CATEGORIES, count,
                 window_s, "key_quota")


#: Reason code of a refusal because the organization has too much waiting in the ingest
#: queue (its own backlog cap, ``org_backlog_limit``); a Crashray code, as Relay's internal
#: limits have theirs.
ORG_BACKLOG_REASON: Final = "org_backlog"
#: Seconds an organization over its backlog cap is told to wait. The caps are checked on
#: figures at most a second old, so a short wait is enough for SDKs to find out when the
#: backlog has drained; the refusal itself is cheap, so asking again often costs little.
ORG_BACKLOG_RETRY_AFTER_S: Final = 10


@dataclass(frozen=True)
class BacklogCaps:
    """The most one organization may have waiting in the ingest queue (accepted, not yet
    processed): items, and bytes of their payloads. 0 turns a cap off."""

    max_items: int
    max_bytes: int


def org_backlog_limit(usage: Usage, queued_items: int, queued_bytes: int,
                      caps: BacklogCaps) -> RateLimit | None:
    """The refusal of every category of ``usage`` while its organization has reached one of
    its backlog caps (``queued_*``: what it has in the queue now); None while it has room.

    One tenant's flood thus fills its own share of the queue and gets 429s, long before the
    queue as a whole is full and ingest refuses every tenant (503,
    ``CRASHRAY_MAX_QUEUED_ITEMS``). The caps are soft: what a request adds is not weighed,
    so an envelope larger than the bytes cap is still taken when the backlog is empty."""
    over = (0 < caps.max_items <= queued_items) or (0 < caps.max_bytes <= queued_bytes)
    if not over or not usage.quantities:
        return None
    return RateLimit(frozenset(usage.quantities), "organization", ORG_BACKLOG_REASON,
                     ORG_BACKLOG_RETRY_AFTER_S, usage.organization_id)


class LimitCache:
    """Limits an ingest replica was told about: a request they cover is refused without
    asking the rate limiter again (Relay caches rejections the same way). Sound for fixed
    windows, which only fill up until they end; an entry is kept at most ``max_age_s``, so
    that a quota removed or raised (or spike protection turned off) applies within that."""

    def __init__(self, max_age_s: float = 5.0) -> None:
        self.max_age_s = max_age_s
        #: (forget at, limit ends at, organization id, limit)
        self._limits: list[tuple[float, float, int, RateLimit]] = []

    def add(self, organization_id: int, limits: Iterable[RateLimit], now: float) -> None:
        self._limits.extend(
            (now + min(limit.retry_after_s, self.max_age_s), now + limit.retry_after_s,
             organization_id, limit) for limit in limits)

    def active(self, usage: Usage, now: float) -> list[RateLimit]:
        """The cached limits that refuse some category of ``usage``, with their time left."""
        self._limits = [entry for entry in self._limits if entry[0] > now]
        found: list[RateLimit] = []
        for _, until, organization_id, limit in self._limits:
            if organization_id != usage.organization_id or \
                    limit.scope_id != _subject(limit.scope, usage):
                continue
            categories = frozenset(c for c in usage.quantities if c in limit.categories
                                   or not limit.categories)
            if categories:
                found.append(RateLimit(categories, limit.scope, limit.reason_code,
                                       max(math.ceil(until - now), 1), limit.scope_id))
        return found


#: What a replica hands back of an ended lease, per counter: (organization id, counter,
#: unused units, the lease's units) — the unused go back to the counter, and the lease no
#: longer counts against what leases may hold.
Return = tuple[int, CounterKey, int, int]


@dataclass
class _Held:
    """A lease a replica holds, and the units of it still unused."""

    lease: Lease
    left: int


class LeaseBook:
    """A replica's leases: ``admit`` lets a request through on them without asking the
    rate limiter when every category it costs is covered; ``expired`` hands back what the
    ended (or replaced) leases did not use."""

    def __init__(self) -> None:
        self._held: dict[tuple[int, int, int | None, str], _Held] = {}
        self._returns: list[Return] = []

    def add(self, leases: Iterable[Lease]) -> None:
        for lease in leases:
            sender = (lease.organization_id, lease.project_id, lease.key_id, lease.category)
            old = self._held.get(sender)
            if old is not None:
                self._give_back(old)
            self._held[sender] = _Held(lease, lease.units)

    def admit(self, usage: Usage, now: float) -> bool:
        taken: list[tuple[_Held, int]] = []
        for category, quantity in usage.quantities.items():
            held = self._held.get((usage.organization_id, usage.project_id, usage.key_id,
                                   category))
            if held is None or held.lease.expires_at <= now or held.left < quantity:
                return False
            taken.append((held, quantity))
        for held, quantity in taken:
            held.left -= quantity
        return bool(taken)

    def expired(self, now: float) -> list[Return]:
        """Unused units of the leases that ended, and of those replaced since last asked."""
        for sender, held in list(self._held.items()):
            if held.lease.expires_at <= now:
                del self._held[sender]
                self._give_back(held)
        returns, self._returns = self._returns, []
        return returns

    def give_back_later(self, returns: Iterable[Return]) -> None:
        """Returns that could not be delivered: handed over again with the next ones."""
        self._returns.extend(returns)

    def _give_back(self, held: _Held) -> None:
        lease = held.lease
        self._returns.extend((lease.organization_id, key, max(held.left, 0), lease.units)
                             for key in lease.counters)
