"""Crashray on one Ray node against two Ray nodes on the same machine (issue 11).

Usage (from the repository root, under the heavy-test lock)::

    python bench/scale.py [--seconds 30] [--concurrency 16] [--consumers 2]

For each layout a real cluster is started with ``ray start`` (``tests/cluster_support.py``:
one raylet with 2 CPUs, then a head and a second raylet with 1 CPU each: the same cores),
Crashray is deployed with ``crashray deploy`` (the consumers and ingest replicas spread over
the nodes), and a closed-loop load of Python-SDK exception envelopes (``bench/_load.py``)
runs for ``--seconds``. Printed per layout: accepted events/s, fully processed events/s
(accepted events over the time until the queue held none of them), accept p99, and where
the consumers and replicas ran; then the ratio two nodes / one node, which is the cost of
distribution (object transfers between raylets, spread actors) on one machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _load import (  # noqa: E402
    DEFAULT_MAX_EVENTS,
    LoadPlan,
    load_template,
    run_load,
    target_from_dsn,
)
from _measure import percentile  # noqa: E402

from tests.cluster_support import LocalCluster, crashray, deploy, local_cluster  # noqa: E402

#: Seconds to wait for the queue to drain after the load.
DRAIN_TIMEOUT_S = 300.0


@dataclass
class LayoutResult:
    nodes: int
    accepted: int
    sent: int
    accepted_per_s: float
    processed_per_s: float
    p99_ms: float | None
    placement: str


def queue_items(cluster: LocalCluster) -> int:
    out = crashray(cluster, "status").stdout
    line = next(x for x in out.splitlines() if x.startswith("Queue: "))
    return int(line.split()[1])


def placement(cluster: LocalCluster) -> str:
    out = crashray(cluster, "status").stdout
    section = out.split("Actors by node:\n", 1)[1].split("\nQueue:", 1)[0]
    parts = []
    for line in section.splitlines():
        node, names = line.strip().split(": ", 1)
        consumers = names.count("crashray-consumer")
        ingest = names.count("ingest#ingest")
        parts.append(f"{node[:6]}: {consumers} consumer(s), {ingest} ingest replica(s)")
    return "; ".join(parts)


def run_layout(nodes: int, args: argparse.Namespace) -> LayoutResult:
    settings = {"CRASHRAY_CONSUMERS": str(args.consumers),
                "CRASHRAY_INGEST_REPLICAS": str(nodes),
                "CRASHRAY_MAX_REPLICAS_PER_NODE": "1",
                "CRASHRAY_MIN_FREE_DISK_BYTES": "0"}
    with local_cluster(nodes=nodes, cpus_per_node=2 // nodes, settings=settings) as cluster:
        deploy(cluster)
        where = placement(cluster)
        plan = LoadPlan(rate_per_s=None, concurrency=args.concurrency,
                        duration_s=args.seconds, max_events=DEFAULT_MAX_EVENTS,
                        issues=1000, connections=args.concurrency, sample_size=0,
                        drain_timeout_s=DRAIN_TIMEOUT_S)
        started = time.monotonic()
        result = asyncio.run(run_load(target_from_dsn("crashray", cluster.dsn), plan,
                                      load_template(), lambda _record: None))
        sent_s = time.monotonic() - started
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while queue_items(cluster) > 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        drained_s = time.monotonic() - started
        accepted = result.accepted
        latencies = [r.latency_s * 1000 for r in accepted]
        return LayoutResult(nodes, len(accepted), len(result.records),
                            len(accepted) / sent_s, len(accepted) / drained_s,
                            percentile(latencies, 99), where)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--consumers", type=int, default=2)
    args = parser.parse_args(argv)
    results = [run_layout(nodes, args) for nodes in (1, 2)]
    print(f"{args.concurrency} closed-loop senders, {args.seconds:g} s,"
          f" {args.consumers} consumers, 2 cores in all")
    print("| nodes | sent | accepted | accepted/s | processed/s | accept p99 | placement |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        p99 = f"{r.p99_ms:.0f} ms" if r.p99_ms is not None else "-"
        print(f"| {r.nodes} | {r.sent} | {r.accepted} | {r.accepted_per_s:.0f} |"
              f" {r.processed_per_s:.0f} | {p99} | {r.placement} |")
    one, two = results
    ratio: Any = two.processed_per_s / one.processed_per_s if one.processed_per_s else None
    print(f"processed events/s, two nodes / one node: {ratio:.2f}" if ratio else "no ratio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
