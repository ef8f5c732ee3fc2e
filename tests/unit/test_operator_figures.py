"""The operator page's intake rates (cluster/cluster_state.py), without Ray: counters read
from Ray's Prometheus text, summed over Ray's labels, turned into rates over a window."""

from __future__ import annotations

from cluster.cluster_state import CounterReading, RateWindow, metrics_url, sum_counters

PAGE = """# HELP ray_crashray_ingest_requests_total Ingest requests answered.
# TYPE ray_crashray_ingest_requests_total counter
ray_crashray_ingest_requests_total{WorkerId="a",endpoint="envelope",outcome="accepted",reason=""} 10.0
ray_crashray_ingest_requests_total{WorkerId="b",endpoint="store",outcome="accepted",reason=""} 5.0
ray_crashray_ingest_requests_total{WorkerId="b",endpoint="store",outcome="refused",reason="rate_limited"} 2.0
# HELP ray_crashray_consumer_items_total Queue items consumers handled.
# TYPE ray_crashray_consumer_items_total counter
ray_crashray_consumer_items_total{WorkerId="c",item_type="event",outcome="claimed"} 7.0
# HELP ray_other_total Not ours.
# TYPE ray_other_total counter
ray_other_total{outcome="accepted"} 99.0
"""


def test_counters_are_summed_over_rays_labels_by_outcome() -> None:
    assert sum_counters(PAGE) == {
        "ray_crashray_ingest_requests_total:accepted": 15.0,
        "ray_crashray_ingest_requests_total:refused": 2.0,
        "ray_crashray_consumer_items_total:claimed": 7.0}


def test_rates_come_over_the_window_and_never_go_negative() -> None:
    window = RateWindow(60.0)
    key = "ray_crashray_ingest_requests_total:accepted"
    assert window.add(CounterReading(0.0, {key: 100.0})) is None  # one reading: no rate
    assert window.add(CounterReading(10.0, {key: 150.0})) == {key: 5.0}
    assert window.add(CounterReading(20.0, {key: 300.0})) == {key: 10.0}
    # Past the window the oldest reading is forgotten: the rate is over the last minute.
    assert window.add(CounterReading(70.0, {key: 400.0})) == {key: 250.0 / 60.0}
    # A replica restarted and its counter began again: 0, not a negative rate.
    assert window.add(CounterReading(80.0, {key: 5.0})) == {key: 0.0}


def test_metrics_urls_bracket_ipv6_hosts() -> None:
    assert metrics_url("10.0.0.5", 9091) == "http://10.0.0.5:9091/metrics"
    assert metrics_url("::1", 9091) == "http://[::1]:9091/metrics"
