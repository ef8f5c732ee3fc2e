"""What recording ingest's metrics costs per answered request, in a Ray worker.

The end-to-end figure the issue asks for (ingest events/s with metrics on vs off) needs
the ingest instrumentation in ``serve_apps/ingest.py``, which is not merged yet; until it
is, this measures the cost of the one call ingest will make per answer
(``serve_apps.ingest_metrics.record_answer``: a request counter, an accept-latency
histogram and one item counter per data category, through ``ray.util.metrics``) in a
Ray worker of a private local Ray, against the same call with recording off (no Ray
metric objects: what ``cluster.metrics`` does in a process without Ray). The ratio it
implies for ingest is ``budget / (budget + cost)`` where ``budget`` is the CPU time one
accepted event costs today (``--cores`` / ``--events-per-s``, bench/RESULTS.md's
accepted events/s on this machine kind): a bound, since that budget also pays for
processing.

  python bench/metrics_overhead.py --calls 50000

(From a worktree, put it first: ``PYTHONPATH=$PWD python bench/metrics_overhead.py``.)
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from typing import Any

import ray


def _answers(calls: int, record: bool, runs: int) -> dict[str, float]:
    """Median µs per ``record_answer`` of three request shapes (one event; an event with
    an attachment; a rate-limited transaction), ``record`` False: recording off."""
    import datetime as dt

    from cluster import metrics
    from events.errors import RateLimited
    from events.quotas import RateLimit
    from serve_apps.ingest_metrics import record_answer
    from storage.queue import QueuedItem

    def item(item_type: str, size: int = 5500) -> QueuedItem:
        return QueuedItem(1, 1, 1, item_type, None, dt.datetime.now(dt.UTC), b"x" * size)

    limit = RateLimit(frozenset({"transaction"}), "project", "quota", 60)
    limited = RateLimited("rate limited", 60, "60:transaction:project")
    shapes: dict[str, tuple[list[QueuedItem], list[RateLimit], Any]] = {
        "event": ([item("event")], [], None),
        "event+attachment": ([item("event"), item("attachment", 20_000)], [], None),
        "rate_limited": ([item("transaction")], [limit], limited)}
    if not record:  # what a process without Ray does: every call finds no metric
        metrics._ray_connected = lambda: False  # type: ignore[assignment]
        metrics._created.clear()
    result: dict[str, float] = {}
    for name, (items, limits, error) in shapes.items():
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            for _ in range(calls):
                record_answer("envelope", time.perf_counter(), items, limits, error)
            samples.append((time.perf_counter() - started) / calls * 1e6)
        result[name] = statistics.median(samples)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cores", type=float, default=2.0)
    parser.add_argument("--events-per-s", type=float, default=655.1,
                        help="accepted events/s of the ingest bench on this machine kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crm-") as temp:
        ray.init(include_dashboard=False, _temp_dir=temp, log_to_driver=False,
                 _node_ip_address="127.0.0.1")
        try:
            # A fresh worker per measurement: "off" replaces the module's Ray check.
            measure = ray.remote(num_cpus=0, max_calls=1)(_answers)
            on = ray.get(measure.remote(args.calls, True, args.runs))
            off = ray.get(measure.remote(args.calls, False, args.runs))
        finally:
            ray.shutdown()
    budget_us = args.cores / args.events_per_s * 1e6
    print(f"{'request':<18} {'on µs':>8} {'off µs':>8} {'metrics µs':>10} {'ratio':>7}")
    ratios = {}
    for name in on:
        cost = on[name] - off[name]
        ratios[name] = budget_us / (budget_us + cost)
        print(f"{name:<18} {on[name]:8.2f} {off[name]:8.2f} {cost:10.2f} {ratios[name]:7.4f}")
    print(f"(budget: {budget_us:.0f} µs of CPU per accepted event = {args.cores:g} cores /"
          f" {args.events_per_s:g} events/s)")
    print(json.dumps({"on_us": on, "off_us": off, "budget_us": budget_us,
                      "implied_ratio": ratios}))


if __name__ == "__main__":
    main()
