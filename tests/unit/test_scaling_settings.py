"""The scaling settings as Serve and the consumer pool autoscaler receive them
(cluster/scaling.py): the embedded defaults stay cheap, equal bounds mean a fixed number,
the deprecated CRASHRAY_INGEST_REPLICAS still works, contradictions are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray.serve.config import AutoscalingConfig

from cluster.runtime import Runtime
from cluster.scaling import (
    InvalidScalingSettings,
    api_options,
    consumer_bounds,
    ingest_options,
    pool_policy,
)
from cluster.settings import Settings


@pytest.fixture(autouse=True)
def _no_scaling_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("INGEST_REPLICAS", "INGEST_MIN_REPLICAS", "INGEST_MAX_REPLICAS",
                 "CONSUMERS", "CONSUMERS_MIN", "CONSUMERS_MAX", "API_OWN_REPLICAS",
                 "RAY_ADDRESS"):
        monkeypatch.delenv(f"CRASHRAY_{name}", raising=False)


def test_embedded_defaults_start_one_replica_each_and_grow_to_two_through_serve() -> None:
    s = Settings()
    ingest = ingest_options(s)["autoscaling_config"]
    assert ingest == {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 2,
                      "target_ongoing_requests": 16.0, "upscale_delay_s": 30.0,
                      "downscale_delay_s": 300.0}
    assert api_options(s)["autoscaling_config"]["max_replicas"] == 2
    # Serve's own model takes them as they are (field names and constraints of Ray 2.60).
    for options in (ingest_options(s), api_options(s)):
        config = AutoscalingConfig(**options["autoscaling_config"])
        assert (config.min_replicas, config.max_replicas) == (1, 2)


def test_the_api_has_replicas_of_its_own_on_a_cluster_and_ingests_on_one_node(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = "10.0.0.5:6379"
    assert not Settings().api_has_own_replicas()
    assert Settings(ray_address=cluster).api_has_own_replicas()
    # An operator who wants the dashboard's API apart from SDK floods on one node, or
    # together on a cluster, says so.
    monkeypatch.setenv("CRASHRAY_API_OWN_REPLICAS", "true")
    assert Settings().api_has_own_replicas()
    monkeypatch.setenv("CRASHRAY_API_OWN_REPLICAS", "false")
    assert not Settings(ray_address=cluster).api_has_own_replicas()


def test_equal_bounds_are_a_fixed_number_of_replicas() -> None:
    s = Settings(ingest_min_replicas=3, ingest_max_replicas=3, api_min_replicas=1,
                 api_max_replicas=1)
    assert ingest_options(s) == {"num_replicas": 3}
    assert api_options(s) == {"num_replicas": 1}


def test_the_deprecated_ingest_replicas_is_the_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRASHRAY_INGEST_REPLICAS", "3")
    assert ingest_options(Settings()) == {"num_replicas": 3}  # the maximum raised to it
    monkeypatch.setenv("CRASHRAY_INGEST_MAX_REPLICAS", "5")
    assert ingest_options(Settings())["autoscaling_config"]["min_replicas"] == 3
    # The new setting wins when both are given.
    monkeypatch.setenv("CRASHRAY_INGEST_MIN_REPLICAS", "2")
    assert ingest_options(Settings())["autoscaling_config"]["min_replicas"] == 2


def test_a_maximum_below_the_minimum_is_refused_naming_both_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRASHRAY_INGEST_MIN_REPLICAS", "3")
    monkeypatch.setenv("CRASHRAY_INGEST_MAX_REPLICAS", "2")
    with pytest.raises(InvalidScalingSettings,
                       match="CRASHRAY_INGEST_MAX_REPLICAS is 2, below"
                             r" CRASHRAY_INGEST_MIN_REPLICAS \(3\)"):
        ingest_options(Settings())


def test_the_consumer_pool_stays_fixed_unless_its_bounds_differ(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert consumer_bounds(Settings()) == (2, 2)
    assert pool_policy(Settings()) is None  # a laptop runs no autoscaler
    monkeypatch.setenv("CRASHRAY_CONSUMERS", "0")
    assert pool_policy(Settings()) is None  # no consumers at all, as before
    monkeypatch.setenv("CRASHRAY_CONSUMERS", "2")
    monkeypatch.setenv("CRASHRAY_CONSUMERS_MAX", "6")
    policy = pool_policy(Settings(consumer_batch_items=300, consumer_scale_up_age_s=8.0))
    assert policy is not None
    assert (policy.min_consumers, policy.max_consumers) == (2, 6)
    assert policy.min_backlog_items == 300  # one consumer's claim
    assert policy.quiet_age_s == 2.0


def test_a_consumer_maximum_below_the_minimum_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRASHRAY_CONSUMERS_MAX", "1")
    with pytest.raises(InvalidScalingSettings, match="CRASHRAY_CONSUMERS_MAX is 1, below"
                                                     r" CRASHRAY_CONSUMERS_MIN \(default"):
        consumer_bounds(Settings())


def test_crashray_refuses_to_start_with_contradicting_bounds_before_starting_anything(
        tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", api_min_replicas=2, api_max_replicas=1)
    with pytest.raises(InvalidScalingSettings, match="CRASHRAY_API_MAX_REPLICAS is 1"):
        Runtime(settings).start()
    assert not (tmp_path / "data").exists()
