"""The built-in detectors on synthetic traffic with an injected clock (events/anomaly.py)."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.anomaly import (
    Anomaly,
    Detector,
    EscalatingDetector,
    SeasonalDetector,
    Series,
    escalating_forecast,
)

ORG, PROJECT, ISSUE = 3, 7, 11
#: A Monday, midnight UTC.
T0 = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
Rate = Callable[[dt.datetime], float]


def seasonal_rate(at: dt.datetime, base: float = 20.0) -> float:
    """Events per minute: a daily cycle between 0.5x and 1.5x ``base``."""
    hour = at.hour + at.minute / 60
    return base * (1 + 0.5 * math.sin(2 * math.pi * hour / 24))


def poisson(rng: random.Random, mean: float) -> int:
    if mean > 50:  # normal approximation, as exact sampling is slow for large means
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    threshold, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def project_minute(at: dt.datetime, count: int) -> Series:
    return Series("project", ORG, PROJECT, None, (at,), (count,), (min(count, 5),))


def issue_minute(at: dt.datetime, count: int, until_escalating: bool = True) -> Series:
    return Series("issue", ORG, PROJECT, ISSUE, (at,), (count,), (min(count, 5),),
                  until_escalating)


def run(detector: Detector, start: dt.datetime, minutes: int, rate: Rate,
        rng: random.Random, make: Callable[[dt.datetime, int], Series] = project_minute
        ) -> list[tuple[dt.datetime, Anomaly]]:
    """Feed ``minutes`` minutes of Poisson traffic one minute at a time, the clock at the
    end of each minute; the anomalies with the time they were reported."""
    found: list[tuple[dt.datetime, Anomaly]] = []
    for i in range(minutes):
        at = start + i * MINUTE
        now = at + MINUTE
        found += [(now, a) for a in detector.observe([make(at, poisson(rng, rate(at)))], now)]
    return found


@pytest.fixture(scope="module")
def trained() -> bytes:
    """A seasonal detector after four days of noisy seasonal traffic (checkpointed, so
    each test starts from the same learnt state)."""
    detector = SeasonalDetector()
    assert run(detector, T0, 4 * 24 * 60, seasonal_rate, random.Random(1)) == []
    return detector.checkpoint()


def restored(state: bytes) -> SeasonalDetector:
    detector = SeasonalDetector()
    detector.restore(state)
    return detector


def test_a_day_of_steady_noisy_seasonal_traffic_gives_no_anomaly(trained: bytes) -> None:
    detector = restored(trained)
    day_five = T0 + dt.timedelta(days=4)
    assert run(detector, day_five, 24 * 60, seasonal_rate, random.Random(2)) == []


def test_a_step_spike_is_flagged_within_two_minutes(trained: bytes) -> None:
    detector = restored(trained)
    day_five = T0 + dt.timedelta(days=4)
    step = day_five + dt.timedelta(hours=9, minutes=17)
    assert run(detector, day_five, 9 * 60 + 17, seasonal_rate, random.Random(3)) == []
    found = run(detector, step, 10, lambda at: 4 * seasonal_rate(at), random.Random(4))
    assert found, "a 4x step was not flagged"
    reported_at, anomaly = found[0]
    assert reported_at - step <= dt.timedelta(minutes=2)
    assert (anomaly.scope, anomaly.project_id, anomaly.direction, anomaly.kind) == (
        "project", PROJECT, "up", "spike")
    assert anomaly.start == step and anomaly.evidence["observed"] > anomaly.evidence["limit"]
    assert "Spike" in anomaly.explanation
    # The same episode keeps its start while it lasts.
    assert {a.start for _, a in found} == {step}


def test_a_drop_to_zero_is_flagged(trained: bytes) -> None:
    detector = restored(trained)
    day_five = T0 + dt.timedelta(days=4)
    stop = day_five + dt.timedelta(hours=14)
    assert run(detector, day_five, 14 * 60, seasonal_rate, random.Random(5)) == []
    found = run(detector, stop, 30, lambda _at: 0.0, random.Random(6))
    assert found, "an app that stopped reporting was not flagged"
    reported_at, anomaly = found[0]
    assert reported_at - stop <= dt.timedelta(minutes=detector.drop_window_minutes)
    assert (anomaly.direction, anomaly.kind, anomaly.evidence["observed"]) == ("down", "drop", 0)


def test_nothing_is_flagged_before_there_is_history() -> None:
    detector = SeasonalDetector()
    found = run(detector, T0, 2 * 24 * 60, lambda at: 0.0 if at.hour == 5 else 30.0,
                random.Random(7))
    assert found == []


def test_a_restarted_detector_without_its_minutes_does_not_call_it_a_drop(trained: bytes
                                                                           ) -> None:
    """Minutes a detector was not fed are unknown, not empty."""
    detector = restored(trained)
    later = T0 + dt.timedelta(days=4, hours=3)
    assert detector.observe([], later) == []
    found = run(detector, later, 3, seasonal_rate, random.Random(8))
    assert [a for _, a in found if a.direction == "down"] == []


def test_checkpoint_and_restore_continue_without_relearning(trained: bytes) -> None:
    """A detector restored from a checkpoint flags the spike a fresh one cannot see yet."""
    step = T0 + dt.timedelta(days=4, hours=2)
    fresh = SeasonalDetector()
    assert run(fresh, step, 5, lambda at: 4 * seasonal_rate(at), random.Random(9)) == []
    again = restored(restored(trained).checkpoint())
    assert run(again, step, 5, lambda at: 4 * seasonal_rate(at), random.Random(9))


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts=st.lists(st.integers(0, 500), min_size=1, max_size=200),
       cut=st.integers(0, 200))
def test_checkpoint_anywhere_gives_the_same_answers_as_running_on(counts: Sequence[int],
                                                                  cut: int) -> None:
    start = T0 + dt.timedelta(hours=1)
    running = EscalatingDetector(min_history_hours=1)
    restarted: EscalatingDetector | None = None
    for i, count in enumerate(counts):
        at = start + i * dt.timedelta(minutes=7)
        if i == cut:
            restarted = EscalatingDetector(min_history_hours=1)
            restarted.restore(running.checkpoint())
        batch = [issue_minute(at, count)]
        answer = running.observe(batch, at + MINUTE)
        if restarted is not None:
            assert restarted.observe(batch, at + MINUTE) == answer


# --- escalating ----------------------------------------------------------------------------
def test_the_forecast_is_the_larger_of_spike_and_bursty_weighted_by_weekday() -> None:
    steady = [10] * 168
    weekdays = [h // 24 for h in range(168)]
    forecast = escalating_forecast(steady, weekdays, today=0)
    # No variation: spike = mean, bursty = max x 5.
    assert forecast.spike == 10 and forecast.bursty == 50 and forecast.limit == 50
    busy_mondays = [40 if d == 0 else 10 for d in weekdays]
    monday = escalating_forecast(busy_mondays, weekdays, today=0)
    tuesday = escalating_forecast(busy_mondays, weekdays, today=1)
    assert monday.limit > tuesday.limit
    assert monday.limit == max(monday.spike, monday.bursty) * monday.day_weight
    assert escalating_forecast([], [], today=0).limit == 10


def test_an_ignored_issue_escalates_over_its_forecast_and_not_below_it() -> None:
    detector = EscalatingDetector()
    rng = random.Random(10)
    week = 7 * 24 * 60
    quiet = run(detector, T0, week, lambda _at: 0.2, rng, issue_minute)
    assert quiet == []
    busier = run(detector, T0 + week * MINUTE, 60, lambda _at: 0.4, rng, issue_minute)
    assert busier == [], "twice the usual volume is within the forecast"
    burst_start = T0 + (week + 60) * MINUTE
    found = run(detector, burst_start, 60, lambda _at: 10.0, rng, issue_minute)
    assert found
    _, anomaly = found[0]
    assert (anomaly.scope, anomaly.issue_id, anomaly.kind) == ("issue", ISSUE, "escalating")
    assert anomaly.evidence["events_last_hour"] > anomaly.evidence["limit"]


def test_issues_not_ignored_until_escalating_are_not_flagged() -> None:
    detector = EscalatingDetector(min_history_hours=1)
    found = run(detector, T0, 180, lambda at: 0.0 if at < T0 + dt.timedelta(hours=2) else 50.0,
                random.Random(11), lambda at, c: issue_minute(at, c, until_escalating=False))
    assert found == []


def test_series_refuse_inconsistent_shapes() -> None:
    with pytest.raises(ValueError, match="scope"):
        Series("team", ORG, PROJECT, None, (), (), ())
    with pytest.raises(ValueError, match="issue_id"):
        Series("issue", ORG, PROJECT, None, (), (), ())
    with pytest.raises(ValueError, match="one entry per minute"):
        Series("project", ORG, PROJECT, None, (T0,), (), ())
