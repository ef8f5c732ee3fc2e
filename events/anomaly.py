"""Anomaly detection: the detector plugin interface and the two built-in detectors (pure).

A detector is fed, every minute, a batch of ``Series``: per project, and per issue, the
number of events and of distinct users in each minute of the last few minutes (the host,
actors/detectors.py, reads them from ClickHouse; windows overlap, so a minute seen again
replaces what was seen before: late events are counted). It answers the ``Anomaly`` list it
sees at ``now``: an anomaly is reported at every observation while it lasts, with the same
``start``; the host records it once and extends it, and closes it when it stops coming.

A detector keeps what it has learnt in memory and hands it over as bytes
(``checkpoint``); ``restore`` continues from them, so a restarted detector does not learn
from zero. Detectors are plain classes implementing ``Detector``; the host runs each as a
Ray actor sharded by project, with the resources the class declares (``num_cpus``,
``num_gpus``, ``memory`` class attributes). They are registered in the Python entry-point
group ``crashray.detectors`` or listed by import path in ``CRASHRAY_DETECTORS``.

Built-ins (conservative: they need history before they say anything):

* ``EscalatingDetector`` ("escalating"): for an issue ignored until it escalates, the
  forecast Sentry documents for archived issues: from the issue's hourly counts of the
  previous week, ``spike = mean + SPIKE_STDS·std``, ``bursty = max hour · m`` where ``m``
  falls from 5 to 2 as the week's coefficient of variation grows, the limit for an hour is
  ``max(spike, bursty)`` weighted by how busy the same day of the week was; the issue
  escalates when its last 60 minutes hold more events than the limit.
* ``SeasonalDetector`` ("seasonal"): a project's volume against its own past at the same
  hour of the day (of the week once it has weeks of history): median and MAD of those hours'
  counts. A spike: the last two minutes far above the baseline; a drop: the last
  ``drop_window_minutes`` (almost) empty where the baseline never was (an app that stopped
  reporting).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Protocol, runtime_checkable

SCOPES: Final = ("project", "issue")
DIRECTIONS: Final = ("up", "down")
MINUTE_S: Final = 60
HOUR_MINUTES: Final = 60
DAY_HOURS: Final = 24
WEEK_HOURS: Final = 7 * DAY_HOURS

#: How often ``CountMemory.forget`` sweeps (it walks every key).
FORGET_EVERY_MINUTES: Final = 10

#: A series' key: (scope, organization id, project id, issue id or 0).
SeriesKey = tuple[str, int, int, int]


@dataclass(frozen=True)
class Series:
    """Counts per minute of one project or one issue: ``minutes[i]`` (a minute's start,
    UTC) had ``events[i]`` events from ``users[i]`` distinct users. The host sends every
    minute of its window, zeros included, for projects; for issues, those with events."""

    scope: str
    organization_id: int
    project_id: int
    issue_id: int | None
    minutes: tuple[dt.datetime, ...]
    events: tuple[int, ...]
    users: tuple[int, ...]
    #: The issue is ignored until it escalates (what the escalating forecast watches).
    until_escalating: bool = False

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"Series.scope is {self.scope!r}; it must be one of {SCOPES}")
        if (self.scope == "issue") != (self.issue_id is not None):
            raise ValueError("Series.issue_id must be set exactly when scope is 'issue'")
        if not len(self.minutes) == len(self.events) == len(self.users):
            raise ValueError("Series.minutes, events and users must have one entry per minute")

    @property
    def key(self) -> SeriesKey:
        return (self.scope, self.organization_id, self.project_id, self.issue_id or 0)


@dataclass(frozen=True)
class Anomaly:
    scope: str
    organization_id: int
    project_id: int
    issue_id: int | None
    start: dt.datetime
    end: dt.datetime
    score: float
    direction: str
    #: One sentence a person reads on the issue or project page.
    explanation: str
    #: The numbers behind it (observed, expected, limit …).
    evidence: Mapping[str, float] = field(default_factory=dict)
    #: What kind of anomaly ("spike", "drop", "escalating", or a plugin's own word).
    kind: str = "anomaly"

    def __post_init__(self) -> None:
        if self.scope not in SCOPES:
            raise ValueError(f"Anomaly.scope is {self.scope!r}; it must be one of {SCOPES}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"Anomaly.direction is {self.direction!r}; it must be one of"
                             f" {DIRECTIONS}")


@runtime_checkable
class Detector(Protocol):
    """What a detector plugin implements. The class may declare ``num_cpus``, ``num_gpus``
    and ``memory`` (bytes) class attributes: the host passes them to Ray."""

    name: ClassVar[str]

    def observe(self, batch: Sequence[Series], now: dt.datetime) -> list[Anomaly]: ...

    def checkpoint(self) -> bytes: ...

    def restore(self, state: bytes) -> None: ...


# --- shared memory of counts ------------------------------------------------------------
def epoch_minute(at: dt.datetime) -> int:
    return int(at.timestamp()) // MINUTE_S


def minute_start(minute: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(minute * MINUTE_S, dt.UTC)


@dataclass
class CountMemory:
    """Per series key: recent minutes (``keep_minutes``) and hourly totals
    (``keep_hours``), plus the minutes and hours the detector was fed at all: an hour it was
    never fed is unknown, not zero (a detector that was down learns nothing from it)."""

    keep_minutes: int
    keep_hours: int
    minutes: dict[SeriesKey, dict[int, int]] = field(default_factory=dict)
    hours: dict[SeriesKey, dict[int, int]] = field(default_factory=dict)
    fed_minutes: set[int] = field(default_factory=set)
    fed_hours: set[int] = field(default_factory=set)
    forgot_at: int = -1

    def feed(self, batch: Iterable[Series], fed: Iterable[int]) -> None:
        for series in batch:
            recent = self.minutes.setdefault(series.key, {})
            touched: set[int] = set()
            for at, count in zip(series.minutes, series.events, strict=True):
                minute = epoch_minute(at)
                recent[minute] = int(count)
                touched.add(minute // HOUR_MINUTES)
            totals = self.hours.setdefault(series.key, {})
            for hour in touched:
                totals[hour] = sum(c for m, c in recent.items() if m // HOUR_MINUTES == hour)
        for minute in fed:
            self.fed_minutes.add(minute)
            self.fed_hours.add(minute // HOUR_MINUTES)

    def forget(self, now_minute: int) -> None:
        """Drop what is older than kept (at most every ``FORGET_EVERY_MINUTES``)."""
        if 0 <= now_minute - self.forgot_at < FORGET_EVERY_MINUTES:
            return
        self.forgot_at = now_minute
        oldest_minute = now_minute - self.keep_minutes
        oldest_hour = now_minute // HOUR_MINUTES - self.keep_hours
        self.fed_minutes = {m for m in self.fed_minutes if m >= oldest_minute}
        self.fed_hours = {h for h in self.fed_hours if h >= oldest_hour}
        for key in list(self.minutes):
            kept = {m: c for m, c in self.minutes[key].items() if m >= oldest_minute}
            hours = {h: c for h, c in self.hours.get(key, {}).items() if h >= oldest_hour}
            if any(hours.values()) or any(kept.values()):
                self.minutes[key], self.hours[key] = kept, hours
            else:
                del self.minutes[key]
                self.hours.pop(key, None)

    def minute_count(self, key: SeriesKey, minute: int) -> int:
        return self.minutes.get(key, {}).get(minute, 0)

    def hour_count(self, key: SeriesKey, hour: int) -> int:
        return self.hours.get(key, {}).get(hour, 0)

    def as_json(self) -> dict[str, Any]:
        return {"minutes": [[list(k), sorted(v.items())] for k, v in self.minutes.items()],
                "hours": [[list(k), sorted(v.items())] for k, v in self.hours.items()],
                "fed_minutes": sorted(self.fed_minutes), "fed_hours": sorted(self.fed_hours)}

    def load_json(self, data: Mapping[str, Any]) -> None:
        self.minutes = {_key(k): {int(m): int(c) for m, c in v} for k, v in data["minutes"]}
        self.hours = {_key(k): {int(h): int(c) for h, c in v} for k, v in data["hours"]}
        self.fed_minutes = set(map(int, data["fed_minutes"]))
        self.fed_hours = set(map(int, data["fed_hours"]))


def _key(raw: Sequence[Any]) -> SeriesKey:
    return (str(raw[0]), int(raw[1]), int(raw[2]), int(raw[3]))


def _pack(data: Mapping[str, Any]) -> bytes:
    return zlib.compress(json.dumps(data, separators=(",", ":")).encode())


def _unpack(state: bytes) -> dict[str, Any]:
    data = json.loads(zlib.decompress(state))
    if not isinstance(data, dict):
        raise ValueError("a detector checkpoint must hold a JSON object")
    return data


def fed_minutes_of(batch: Sequence[Series]) -> set[int]:
    return {epoch_minute(at) for s in batch for at in s.minutes}


def _issue_id(key: SeriesKey) -> int | None:
    return key[3] if key[0] == "issue" else None


# --- Sentry's escalating forecast --------------------------------------------------------
#: The spike limit: this many standard deviations above the previous week's hourly mean.
SPIKE_STDS: Final = 5.0
#: The bursty multiplier of the week's busiest hour: from 5 (steady issue) down to 2 (very
#: bursty one), falling with the coefficient of variation.
BURSTY_MAX_MULTIPLIER: Final = 5.0
BURSTY_MIN_MULTIPLIER: Final = 2.0
#: The lowest limit (events in an hour): Sentry uses 10 for an issue without a week of data.
ESCALATING_MIN_LIMIT: Final = 10
#: Hours of history the detector needs to have been fed before it forecasts at all.
ESCALATING_MIN_HISTORY_HOURS: Final = 24
#: The day-of-week weight is kept within these bounds.
DAY_WEIGHT_BOUNDS: Final = (0.5, 2.0)


@dataclass(frozen=True)
class Forecast:
    limit: float
    spike: float
    bursty: float
    day_weight: float
    mean: float
    std: float


def escalating_forecast(hourly: Sequence[int], weekdays: Sequence[int], today: int,
                        min_limit: float = ESCALATING_MIN_LIMIT) -> Forecast:
    """The limit of events in an hour on weekday ``today`` (0 = Monday), from the previous
    week's hourly counts ``hourly`` (``weekdays[i]``: the weekday of hour ``i``)."""
    if not hourly:
        return Forecast(float(min_limit), 0.0, 0.0, 1.0, 0.0, 0.0)
    mean = statistics.fmean(hourly)
    std = statistics.pstdev(hourly)
    spike = mean + SPIKE_STDS * std
    cv = std / mean if mean > 0 else 0.0
    multiplier = BURSTY_MIN_MULTIPLIER + (BURSTY_MAX_MULTIPLIER - BURSTY_MIN_MULTIPLIER
                                          ) * math.exp(-cv)
    bursty = max(hourly) * multiplier
    same_day = [c for c, d in zip(hourly, weekdays, strict=True) if d == today]
    weight = statistics.fmean(same_day) / mean if same_day and mean > 0 else 1.0
    weight = min(max(weight, DAY_WEIGHT_BOUNDS[0]), DAY_WEIGHT_BOUNDS[1])
    limit = max(max(spike, bursty) * weight, float(min_limit))
    return Forecast(limit, spike, bursty, weight, mean, std)


class EscalatingDetector:
    """Sentry's escalating forecast for issues ignored until they escalate."""

    name: ClassVar[str] = "escalating"

    def __init__(self, min_limit: float = ESCALATING_MIN_LIMIT,
                 min_history_hours: int = ESCALATING_MIN_HISTORY_HOURS) -> None:
        self.min_limit = min_limit
        self.min_history_hours = min_history_hours
        self.memory = CountMemory(keep_minutes=2 * HOUR_MINUTES, keep_hours=WEEK_HOURS + 1)
        self.open: dict[SeriesKey, int] = {}

    def observe(self, batch: Sequence[Series], now: dt.datetime) -> list[Anomaly]:
        now_minute = epoch_minute(now)
        issues = [s for s in batch if s.scope == "issue"]
        self.memory.feed(issues, fed_minutes_of(batch))
        self.memory.forget(now_minute)
        found = [a for s in issues if s.until_escalating
                 for a in self._check(s.key, now_minute)]
        still = {(a.organization_id, a.project_id, a.issue_id) for a in found}
        self.open = {k: v for k, v in self.open.items() if (k[1], k[2], k[3]) in still}
        return found

    def _check(self, key: SeriesKey, now_minute: int) -> list[Anomaly]:
        this_hour = now_minute // HOUR_MINUTES
        history = [h for h in range(this_hour - WEEK_HOURS, this_hour)
                   if h in self.memory.fed_hours]
        if len(history) < self.min_history_hours:
            return []
        hourly = [self.memory.hour_count(key, h) for h in history]
        weekdays = [minute_start(h * HOUR_MINUTES).weekday() for h in history]
        forecast = escalating_forecast(hourly, weekdays, minute_start(now_minute).weekday(),
                                       self.min_limit)
        last_hour = sum(self.memory.minute_count(key, m)
                        for m in range(now_minute - HOUR_MINUTES, now_minute))
        if last_hour <= forecast.limit:
            return []
        start = self.open.setdefault(key, now_minute - HOUR_MINUTES)
        return [Anomaly(
            "issue", key[1], key[2], key[3], minute_start(start), minute_start(now_minute),
            score=last_hour / forecast.limit, direction="up", kind="escalating",
            explanation=(f"Escalating: {last_hour} events in the last hour, over the forecast"
                         f" of {forecast.limit:.0f} from the previous week's volume."),
            evidence={"events_last_hour": float(last_hour), "limit": forecast.limit,
                      "spike_limit": forecast.spike, "bursty_limit": forecast.bursty,
                      "day_weight": forecast.day_weight, "hourly_mean": forecast.mean,
                      "hourly_std": forecast.std})]

    def checkpoint(self) -> bytes:
        return _pack({"memory": self.memory.as_json(),
                      "open": [[list(k), v] for k, v in self.open.items()]})

    def restore(self, state: bytes) -> None:
        data = _unpack(state)
        self.memory.load_json(data["memory"])
        self.open = {_key(k): int(v) for k, v in data["open"]}


# --- seasonal robust baseline of a project's volume ---------------------------------------
#: MAD → standard deviation of a normal distribution.
MAD_TO_SIGMA: Final = 1.4826
SEASONAL_MIN_DAYS: Final = 3
SEASONAL_WEEKLY_MIN_WEEKS: Final = 3
SEASONAL_KEEP_DAYS: Final = 35


@dataclass(frozen=True)
class Baseline:
    """Expected events per minute at a minute of the day: median and MAD (as a sigma) of
    the same hour's counts on earlier days (or weeks), and the lowest of them."""

    per_minute: float
    sigma_per_minute: float
    lowest_per_minute: float
    samples: int


def seasonal_baseline(same_hours: Sequence[int]) -> Baseline:
    median = statistics.median(same_hours)
    mad = statistics.median(abs(c - median) for c in same_hours)
    return Baseline(median / HOUR_MINUTES, MAD_TO_SIGMA * mad / HOUR_MINUTES,
                    min(same_hours) / HOUR_MINUTES, len(same_hours))


class SeasonalDetector:
    """Spikes and drops of a project's event volume against its seasonal baseline."""

    name: ClassVar[str] = "seasonal"

    def __init__(self, spike_window_minutes: int = 2, spike_sigmas: float = 6.0,
                 spike_min_ratio: float = 2.0, spike_min_excess: int = 20,
                 drop_window_minutes: int = 15, drop_max_ratio: float = 0.05,
                 drop_min_expected: int = 30, min_days: int = SEASONAL_MIN_DAYS) -> None:
        self.spike_window_minutes = spike_window_minutes
        self.spike_sigmas = spike_sigmas
        self.spike_min_ratio = spike_min_ratio
        self.spike_min_excess = spike_min_excess
        self.drop_window_minutes = drop_window_minutes
        self.drop_max_ratio = drop_max_ratio
        self.drop_min_expected = drop_min_expected
        self.min_days = min_days
        self.memory = CountMemory(keep_minutes=2 * HOUR_MINUTES,
                                  keep_hours=SEASONAL_KEEP_DAYS * DAY_HOURS)
        self.open: dict[tuple[SeriesKey, str], int] = {}
        self._baselines: dict[tuple[SeriesKey, int], Baseline | None] = {}

    def observe(self, batch: Sequence[Series], now: dt.datetime) -> list[Anomaly]:
        now_minute = epoch_minute(now)
        projects = [s for s in batch if s.scope == "project"]
        self.memory.feed(projects, fed_minutes_of(batch))
        self.memory.forget(now_minute)
        self._baselines = {}
        found: list[Anomaly] = []
        for series in projects:
            found += self._spike(series.key, now_minute) + self._drop(series.key, now_minute)
        still = {(a.project_id, a.direction) for a in found}
        self.open = {k: v for k, v in self.open.items() if (k[0][2], k[1]) in still}
        return found

    def baseline(self, key: SeriesKey, minute: int) -> Baseline | None:
        """The baseline of ``minute``'s hour: the same hour of the week when there are
        enough weeks, else of the day; None without ``min_days`` of history."""
        hour = minute // HOUR_MINUTES
        if (key, hour) not in self._baselines:
            self._baselines[key, hour] = self._hour_baseline(key, hour)
        return self._baselines[key, hour]

    def _hour_baseline(self, key: SeriesKey, hour: int) -> Baseline | None:
        for step, needed in ((WEEK_HOURS, SEASONAL_WEEKLY_MIN_WEEKS), (DAY_HOURS, self.min_days)):
            earlier = [hour - step * i for i in range(1, SEASONAL_KEEP_DAYS * DAY_HOURS // step)]
            fed = [h for h in earlier if h in self.memory.fed_hours]
            if len(fed) >= needed:
                return seasonal_baseline([self.memory.hour_count(key, h) for h in fed])
        return None

    def _window(self, key: SeriesKey, now_minute: int, width: int
                ) -> tuple[int, list[Baseline]] | None:
        """Events in the last ``width`` complete minutes and their baselines; None when a
        minute was not fed or has no baseline (nothing is judged on unknown minutes)."""
        minutes = range(now_minute - width, now_minute)
        if any(m not in self.memory.fed_minutes for m in minutes):
            return None
        baselines = [self.baseline(key, m) for m in minutes]
        if any(b is None for b in baselines):
            return None
        observed = sum(self.memory.minute_count(key, m) for m in minutes)
        return observed, [b for b in baselines if b is not None]

    def _spike(self, key: SeriesKey, now_minute: int) -> list[Anomaly]:
        window = self._window(key, now_minute, self.spike_window_minutes)
        if window is None:
            return []
        observed, baselines = window
        expected = sum(b.per_minute for b in baselines)
        level_sigma = sum(b.sigma_per_minute for b in baselines)
        sigma = math.sqrt(level_sigma ** 2 + max(expected, 1.0))  # day-to-day + Poisson
        limit = max(expected + self.spike_sigmas * sigma, expected * self.spike_min_ratio,
                    expected + self.spike_min_excess)
        if observed <= limit:
            return []
        width = self.spike_window_minutes
        # The episode starts at the window's first minute over its share of the limit.
        first = next((m for m, b in zip(range(now_minute - width, now_minute), baselines,
                                        strict=True)
                      if self.memory.minute_count(key, m) > b.per_minute * limit / expected),
                     now_minute - width) if expected > 0 else now_minute - width
        start = self.open.setdefault((key, "up"), first)
        return [self._anomaly(key, start, now_minute, (observed - expected) / sigma, "up",
                              "spike", f"Spike: {observed} events in the last {width} minutes,"
                              f" where {expected:.0f} are usual at this time.",
                              {"observed": observed, "expected": expected, "limit": limit,
                               "sigma": sigma, "window_minutes": width})]

    def _drop(self, key: SeriesKey, now_minute: int) -> list[Anomaly]:
        width = self.drop_window_minutes
        window = self._window(key, now_minute, width)
        if window is None:
            return []
        observed, baselines = window
        expected = sum(b.per_minute for b in baselines)
        lowest = sum(b.lowest_per_minute for b in baselines)
        # Only where even the quietest earlier day had traffic: an app that is regularly
        # silent at this hour is not "stopped".
        if (expected < self.drop_min_expected or lowest < self.drop_min_expected / 2
                or observed > expected * self.drop_max_ratio):
            return []
        start = self.open.setdefault((key, "down"), now_minute - width)
        return [self._anomaly(key, start, now_minute, expected / max(observed, 1), "down",
                              "drop", f"Drop: {observed} events in the last {width} minutes,"
                              f" where {expected:.0f} are usual at this time; the app may have"
                              " stopped reporting.",
                              {"observed": observed, "expected": expected,
                               "lowest_expected": lowest, "window_minutes": width})]

    @staticmethod
    def _anomaly(key: SeriesKey, start: int, now_minute: int, score: float, direction: str,
                 kind: str, explanation: str, evidence: Mapping[str, float]) -> Anomaly:
        return Anomaly(key[0], key[1], key[2], _issue_id(key), minute_start(start),
                       minute_start(now_minute), float(score), direction, explanation,
                       {k: float(v) for k, v in evidence.items()}, kind)

    def checkpoint(self) -> bytes:
        return _pack({"memory": self.memory.as_json(),
                      "open": [[list(k), d, v] for (k, d), v in self.open.items()]})

    def restore(self, state: bytes) -> None:
        data = _unpack(state)
        self.memory.load_json(data["memory"])
        self.open = {(_key(k), str(d)): int(v) for k, d, v in data["open"]}


#: The built-in detectors by import path (the default of ``CRASHRAY_DETECTORS``).
BUILTIN_DETECTORS: Final = ("events.anomaly:EscalatingDetector", "events.anomaly:SeasonalDetector")
