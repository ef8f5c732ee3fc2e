"""The consumer pool's size decision (events/pool_scaling.py): cases a user would recognise
from the queue's lag, and properties over any policy, load and history."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.pool_scaling import (
    Decision,
    History,
    InvalidPoolPolicy,
    PoolLoad,
    PoolPolicy,
    RateMeter,
    decide,
    is_quiet,
    start_history,
)

POLICY = PoolPolicy(min_consumers=1, max_consumers=4, scale_up_age_s=10.0, quiet_age_s=2.0,
                    min_backlog_items=500, scale_up_cooldown_s=15.0, scale_down_delay_s=60.0,
                    max_step_up=2, max_step_down=1)
#: A pool whose last change and last busy moment are long past (t = 1000).
SETTLED = History(last_change_s=0.0, last_busy_s=0.0)
NOW = 1000.0

CASES = [
    # name, current, load, history, policy, target
    ("a pool below its minimum is refilled at once, cool-down or not",
     0, PoolLoad(0, 0.0), History(NOW, NOW), POLICY, 1),
    ("a pool above its maximum is cut at once",
     6, PoolLoad(0, 0.0), History(NOW, NOW), POLICY, 4),
    ("an old backlog grows the pool by one while the rate is unknown",
     2, PoolLoad(5_000, 30.0), SETTLED, POLICY, 3),
    ("a measured rate sizes the step (5,000 items at 100/s per consumer need 5), capped",
     1, PoolLoad(5_000, 30.0, processed_per_s=100.0), SETTLED, POLICY, 3),
    ("the step never passes the maximum",
     3, PoolLoad(100_000, 30.0, processed_per_s=300.0), SETTLED, POLICY, 4),
    ("a young backlog that takes too long to drain grows the pool",
     2, PoolLoad(5_000, 1.0, processed_per_s=200.0), SETTLED, POLICY, 4),
    ("a young backlog the pool drains in time leaves it alone",
     2, PoolLoad(5_000, 1.0, processed_per_s=2_000.0), SETTLED, POLICY, 2),
    ("a single old item (a replayed dead letter) is taken by the next claim: no growth",
     2, PoolLoad(1, 3_600.0, processed_per_s=0.0), SETTLED, POLICY, 2),
    ("an empty pool grows for any waiting item old enough",
     0, PoolLoad(1, 11.0), SETTLED, replace(POLICY, min_consumers=0), 1),
    ("an empty pool waits until its item is old enough",
     0, PoolLoad(1, 5.0), SETTLED, replace(POLICY, min_consumers=0), 0),
    ("no growth while storage is down: consumers back off, more would drain nothing",
     2, PoolLoad(5_000, 30.0, storage_down=True), SETTLED, POLICY, 2),
    ("no growth within the scale-up cool-down",
     2, PoolLoad(5_000, 30.0), History(NOW - 10.0, NOW), POLICY, 2),
    ("no growth past the maximum",
     4, PoolLoad(50_000, 300.0), SETTLED, POLICY, 4),
    ("quiet for the scale-down delay: one consumer fewer",
     3, PoolLoad(10, 0.5), History(NOW - 60.0, NOW - 60.0), POLICY, 2),
    ("an empty queue is quiet",
     3, PoolLoad(0, 0.0), SETTLED, POLICY, 2),
    ("quiet, but busy 30 s ago: stays",
     3, PoolLoad(0, 0.0), History(0.0, NOW - 30.0), POLICY, 3),
    ("quiet for long, but changed 30 s ago: stays",
     3, PoolLoad(0, 0.0), History(NOW - 30.0, 0.0), POLICY, 3),
    ("between the quiet age and the scale-up age: neither grows nor shrinks",
     3, PoolLoad(600, 5.0), SETTLED, POLICY, 3),
    ("a quiet pool at its minimum stays",
     1, PoolLoad(0, 0.0), SETTLED, POLICY, 1),
]


@pytest.mark.parametrize(("current", "load", "history", "policy", "target"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_pool_size_decisions(current: int, load: PoolLoad, history: History,
                             policy: PoolPolicy, target: int) -> None:
    assert decide(current, load, NOW, history, policy).target == target


def test_the_reason_names_the_measure_that_decided() -> None:
    grew = decide(2, PoolLoad(5_000, 42.0), NOW, SETTLED, POLICY)
    assert grew.reason == "oldest item waited 42 s > 10 s"
    held = decide(2, PoolLoad(5_000, 42.0, storage_down=True), NOW, SETTLED, POLICY)
    assert "storage is down" in held.reason


def test_a_busy_observation_restarts_the_quiet_period() -> None:
    after_busy = decide(3, PoolLoad(600, 5.0), NOW, SETTLED, POLICY).history
    assert after_busy == History(last_change_s=0.0, last_busy_s=NOW)
    # A minute later, quiet again: the delay counts from the busy moment, not from before.
    quiet_again = decide(3, PoolLoad(0, 0.0), NOW + 59.0, after_busy, POLICY)
    assert quiet_again.target == 3
    assert decide(3, PoolLoad(0, 0.0), NOW + 60.0, quiet_again.history, POLICY).target == 2


@pytest.mark.parametrize(("fields", "named"), [
    ({"min_consumers": 3, "max_consumers": 2}, "max_consumers is 2"),
    ({"min_consumers": -1}, "min_consumers is -1"),
    ({"quiet_age_s": 20.0}, "quiet_age_s is 20.0"),
    ({"max_step_up": 0}, "steps are 0 up"),
])
def test_a_policy_that_cannot_work_is_refused_naming_the_field(
        fields: dict[str, float], named: str) -> None:
    with pytest.raises(InvalidPoolPolicy, match=named):
        replace(POLICY, **fields)


# --- properties ------------------------------------------------------------------------


@st.composite
def policies(draw: st.DrawFn) -> PoolPolicy:
    low = draw(st.integers(0, 5))
    up_age = draw(st.floats(0.5, 600.0))
    return PoolPolicy(
        min_consumers=low, max_consumers=draw(st.integers(max(low, 1), low + 8)),
        scale_up_age_s=up_age, quiet_age_s=draw(st.floats(0.0, up_age)),
        min_backlog_items=draw(st.integers(0, 2_000)),
        scale_up_cooldown_s=draw(st.floats(0.0, 300.0)),
        scale_down_delay_s=draw(st.floats(0.0, 600.0)),
        max_step_up=draw(st.integers(1, 4)), max_step_down=draw(st.integers(1, 3)))


loads = st.builds(
    PoolLoad, waiting_items=st.integers(0, 10**6), oldest_age_s=st.floats(0.0, 10_000.0),
    processed_per_s=st.none() | st.floats(0.0, 10**5), storage_down=st.booleans())


@st.composite
def situations(draw: st.DrawFn) -> tuple[int, PoolLoad, float, History, PoolPolicy]:
    now = draw(st.floats(0.0, 10**6))
    history = History(last_change_s=draw(st.floats(0.0, now)),
                      last_busy_s=draw(st.floats(0.0, now)))
    return draw(st.integers(0, 15)), draw(loads), now, history, draw(policies())


Situation = tuple[int, PoolLoad, float, History, PoolPolicy]


def decided(s: Situation) -> Decision:
    current, load, now, history, policy = s
    return decide(current, load, now, history, policy)


@given(situations())
def test_the_target_is_always_within_the_bounds(s: Situation) -> None:
    policy = s[4]
    assert policy.min_consumers <= decided(s).target <= policy.max_consumers


@given(situations())
def test_a_pool_within_bounds_never_changes_inside_its_cool_downs(s: Situation) -> None:
    current, _, now, history, policy = s
    if not policy.min_consumers <= current <= policy.max_consumers:
        return
    target = decided(s).target
    if now - history.last_change_s < policy.scale_up_cooldown_s:
        assert target <= current
    if now - history.last_change_s < policy.scale_down_delay_s:
        assert target >= current


@given(situations())
def test_a_pool_within_bounds_moves_by_its_steps_at_most(s: Situation) -> None:
    current, _, _, _, policy = s
    if policy.min_consumers <= current <= policy.max_consumers:
        assert (current - policy.max_step_down <= decided(s).target
                <= current + policy.max_step_up)


@given(situations())
def test_the_pool_grows_when_items_wait_longer_than_the_threshold(s: Situation) -> None:
    current, load, now, history, policy = s
    if (policy.min_consumers <= current < policy.max_consumers
            and load.waiting_items >= max(policy.min_backlog_items, 1)
            and load.oldest_age_s > policy.scale_up_age_s and not load.storage_down
            and now - history.last_change_s >= policy.scale_up_cooldown_s):
        assert decided(s).target > current


@given(situations())
def test_the_pool_shrinks_only_when_quiet_long_enough(s: Situation) -> None:
    current, load, now, history, policy = s
    if current <= policy.max_consumers and decided(s).target < current:
        assert is_quiet(load, policy)
        assert now - history.last_busy_s >= policy.scale_down_delay_s


@given(situations())
def test_the_history_records_changes_and_busy_moments(s: Situation) -> None:
    current, load, now, history, policy = s
    d = decided(s)
    assert d.history.last_change_s == (now if d.target != current else history.last_change_s)
    assert d.history.last_busy_s == (history.last_busy_s if is_quiet(load, policy) else now)


@settings(max_examples=200)
@given(policies(), st.lists(st.tuples(st.floats(0.1, 120.0), loads), max_size=60))
def test_over_a_run_every_shrink_follows_a_full_quiet_delay(
        policy: PoolPolicy, ticks: list[tuple[float, PoolLoad]]) -> None:
    """Fed its own history tick after tick, as the autoscaler does: each shrink comes at
    least ``scale_down_delay_s`` after the last busy observation and the last change."""
    now, size = 0.0, policy.min_consumers
    history = start_history(now)
    last_busy = last_change = now
    for elapsed, load in ticks:
        now += elapsed
        d = decide(size, load, now, history, policy)
        if d.target < size:
            assert now - last_busy >= policy.scale_down_delay_s
            assert now - last_change >= policy.scale_down_delay_s
        if not is_quiet(load, policy):
            last_busy = now
        if d.target != size:
            last_change = now
        size, history = d.target, d.history
        assert policy.min_consumers <= size <= policy.max_consumers


# --- the pool's rate ------------------------------------------------------------------


def test_the_rate_is_items_per_second_over_the_window() -> None:
    meter = RateMeter(window_s=10.0)
    assert meter.observe(0.0, {"c-0": 100, "c-1": 50}) is None
    assert meter.observe(2.0, {"c-0": 300, "c-1": 250}) == 200.0
    assert meter.observe(4.0, {"c-0": 300, "c-1": 250}) == 100.0
    # Past the window, the first two seconds no longer count.
    assert meter.observe(12.0, {"c-0": 300, "c-1": 250}) == pytest.approx(0.0)


def test_joined_restarted_and_retired_consumers_add_only_what_they_did() -> None:
    meter = RateMeter(window_s=60.0)
    meter.observe(0.0, {"c-0": 1_000, "c-1": 1_000})
    # c-2 joined with a total of its own, c-1 restarted (its total fell), c-0 did 100.
    assert meter.observe(1.0, {"c-0": 1_100, "c-1": 5, "c-2": 400}) == 100.0
    # c-2 then did 50 and c-0 left: only c-2's 50 and c-1's 15 are new.
    assert meter.observe(2.0, {"c-1": 20, "c-2": 450}) == (100 + 15 + 50) / 2
