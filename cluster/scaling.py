"""From the scaling settings to what Serve and the consumer pool autoscaler take.

Serve scales the ingest and API replicas itself (``autoscaling_config``: requests in
flight per replica, ray/serve/config.py ``AutoscalingConfig``); the consumer pool is
scaled by the queue's lag (``actors/pool_autoscaler.py`` over
``events/pool_scaling.decide``). Equal bounds turn either off: a fixed number.

    events.errors.BadRequest
    └── InvalidScalingSettings   bounds that contradict each other, naming the settings
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from actors.placement import Placement
from cluster.settings import Settings
from events.errors import BadRequest
from events.pool_scaling import PoolPolicy

#: The pool is quiet (may shrink) while no item has waited longer than this share of
#: ``consumer_scale_up_age_s``: the band between them is the hysteresis.
QUIET_AGE_SHARE: Final = 0.25
#: Consumers retired at most in one step: one at a time, each finishing its batch.
SCALE_DOWN_STEP: Final = 1


class InvalidScalingSettings(BadRequest):
    code = "invalid_scaling_settings"


def _checked_bounds(low: int, high: int, low_name: str, high_name: str) -> tuple[int, int]:
    if high < low:
        raise InvalidScalingSettings(
            f"{high_name} is {high}, below {low_name} ({low}): set the maximum at least as"
            " high as the minimum (equal for a fixed number)")
    return low, high


def ingest_replica_bounds(s: Settings) -> tuple[int, int]:
    """(min, max) ingest replicas; the deprecated ``CRASHRAY_INGEST_REPLICAS`` is the
    minimum when ``CRASHRAY_INGEST_MIN_REPLICAS`` is not set, and raises the maximum."""
    if s.ingest_replicas is not None and "ingest_min_replicas" not in s.model_fields_set:
        return s.ingest_replicas, max(s.ingest_replicas, s.ingest_max_replicas)
    return _checked_bounds(s.ingest_min_replicas, s.ingest_max_replicas,
                           "CRASHRAY_INGEST_MIN_REPLICAS", "CRASHRAY_INGEST_MAX_REPLICAS")


def api_replica_bounds(s: Settings) -> tuple[int, int]:
    return _checked_bounds(s.api_min_replicas, s.api_max_replicas,
                           "CRASHRAY_API_MIN_REPLICAS", "CRASHRAY_API_MAX_REPLICAS")


def replica_options(bounds: tuple[int, int], target_ongoing_requests: float,
                    s: Settings) -> dict[str, Any]:
    """``.options(**…)`` of a Serve deployment with these bounds: a fixed ``num_replicas``
    when they are equal, else Serve's autoscaling starting at the minimum."""
    low, high = bounds
    if low == high:
        return {"num_replicas": low}
    return {"autoscaling_config": {
        "min_replicas": low, "initial_replicas": low, "max_replicas": high,
        "target_ongoing_requests": target_ongoing_requests,
        "upscale_delay_s": s.serve_upscale_delay_s,
        "downscale_delay_s": s.serve_downscale_delay_s}}


def ingest_options(s: Settings) -> dict[str, Any]:
    return replica_options(ingest_replica_bounds(s), s.ingest_target_ongoing_requests, s)


def api_options(s: Settings) -> dict[str, Any]:
    return replica_options(api_replica_bounds(s), s.api_target_ongoing_requests, s)


def consumer_bounds(s: Settings) -> tuple[int, int]:
    """(min, max) consumers; each unset bound is ``CRASHRAY_CONSUMERS``."""
    low = s.consumers if s.consumers_min is None else s.consumers_min
    high = max(low, s.consumers) if s.consumers_max is None else s.consumers_max
    return _checked_bounds(low, high, "CRASHRAY_CONSUMERS_MIN (default CRASHRAY_CONSUMERS)",
                           "CRASHRAY_CONSUMERS_MAX")


def pool_policy(s: Settings) -> PoolPolicy | None:
    """The autoscaler's policy, or None for a fixed pool (equal bounds)."""
    low, high = consumer_bounds(s)
    if low == high:
        return None
    return PoolPolicy(
        min_consumers=low, max_consumers=high, scale_up_age_s=s.consumer_scale_up_age_s,
        quiet_age_s=s.consumer_scale_up_age_s * QUIET_AGE_SHARE,
        # Fewer waiting items are taken whole by one consumer's next claim.
        min_backlog_items=s.consumer_batch_items,
        scale_up_cooldown_s=s.consumer_scale_up_cooldown_s,
        scale_down_delay_s=s.consumer_scale_down_delay_s,
        max_step_up=s.consumer_scale_up_step, max_step_down=SCALE_DOWN_STEP)


def check_scaling(s: Settings) -> None:
    """Refuse contradicting bounds before anything starts (raises InvalidScalingSettings)."""
    ingest_replica_bounds(s)
    api_replica_bounds(s)
    pool_policy(s)


def start_pool_autoscaler(s: Settings, consumer_config: Any, grouping_shard_names: Sequence[str],
                          placement: Placement, symbolicator_names: Sequence[str] = ()
                          ) -> Any | None:
    """The consumer pool's autoscaler (its minimum already started), or None for a fixed
    pool."""
    policy = pool_policy(s)
    if policy is None:
        return None
    from actors.pool_autoscaler import AutoscalerConfig
    from actors.pool_autoscaler import start_pool_autoscaler as start

    return start(AutoscalerConfig(policy, consumer_config, tuple(grouping_shard_names),
                                  s.consumer_scale_interval_s, placement,
                                  symbolicator_names=tuple(symbolicator_names)))
