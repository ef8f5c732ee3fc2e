"""Autoscaling under a load ramp up and down (issue 11): the consumer pool's size and the
ingest replicas over time, as a PNG plot and a CSV.

Usage (from the repository root, under the heavy-test lock; needs matplotlib, the
``bench`` extra)::

    python bench/ramp.py [--phases 50:20,200:20,400:30,700:30,300:20,50:30,0:40]
                         [--out bench/ramp]

A real two-node cluster on this machine (``tests/cluster_support.py``: ``ray start --head``
and ``ray start --address``, 1 CPU each), Crashray deployed with ``crashray deploy`` and
autoscaling settings that react within seconds (the defaults wait minutes before scaling
down, which a short bench cannot show): consumers 1 to 4, ingest replicas 1 to 3. The load is
open loop, Python-SDK exception envelopes, at each phase's rate (envelopes/s) for its
seconds. A sampler connected to the cluster records every second: the pool size, the items
waiting and the oldest one's age (the autoscaler actor's measurement), and the ingest
replicas running (``serve.status()``). Printed: a table per phase, and where the PNG and
CSV went.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from _load import DEFAULT_MAX_EVENTS, LoadPlan, load_template, run_load, target_from_dsn  # noqa: E402

from tests.cluster_support import LocalCluster, crashray, deploy, local_cluster  # noqa: E402

DEFAULT_PHASES = "50:20,200:20,400:30,700:30,300:20,50:30,0:40"
#: Scaling that reacts within seconds, so a few minutes of ramp show both directions.
SETTINGS = {
    "CRASHRAY_CONSUMERS_MIN": "1", "CRASHRAY_CONSUMERS_MAX": "4",
    "CRASHRAY_CONSUMER_SCALE_UP_AGE_S": "2", "CRASHRAY_CONSUMER_SCALE_UP_COOLDOWN_S": "5",
    "CRASHRAY_CONSUMER_SCALE_DOWN_DELAY_S": "15", "CRASHRAY_CONSUMER_SCALE_INTERVAL_S": "1",
    "CRASHRAY_INGEST_MIN_REPLICAS": "1", "CRASHRAY_INGEST_MAX_REPLICAS": "3",
    "CRASHRAY_INGEST_TARGET_ONGOING_REQUESTS": "4",
    "CRASHRAY_SERVE_UPSCALE_DELAY_S": "3", "CRASHRAY_SERVE_DOWNSCALE_DELAY_S": "15",
    "CRASHRAY_MAX_REPLICAS_PER_NODE": "2", "CRASHRAY_MIN_FREE_DISK_BYTES": "0",
}
#: Runs inside the cluster's Python, printing one JSON sample a second until stdin closes.
SAMPLER = """
import json, sys, threading, time, ray
from ray import serve
ray.init(address=sys.argv[1], namespace="crashray", log_to_driver=False)
scaler = ray.get_actor("crashray-pool-autoscaler", namespace="crashray")
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
while not done.is_set():
    sample = {"t": time.time()}
    try:
        stats = ray.get(scaler.stats.remote(), timeout=5)
        load = stats.get("load") or {}
        sample.update(pool=stats.get("size"), waiting=load.get("waiting_items"),
                      oldest_s=load.get("oldest_age_s"))
    except Exception as exc:
        sample["error"] = repr(exc)
    try:
        app = serve.status().applications["ingest"]
        sample["ingest_replicas"] = sum(d.replica_states.get("RUNNING", 0)
                                        for d in app.deployments.values())
    except Exception as exc:
        sample["error"] = repr(exc)
    print(json.dumps(sample), flush=True)
    done.wait(1.0)
"""


@dataclass
class Sampler:
    cluster: LocalCluster
    samples: list[dict[str, Any]] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SAMPLER, self.cluster.address], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=self.cluster.env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("{"):
                self.samples.append(json.loads(line))

    def stop(self) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)


@dataclass(frozen=True)
class PhaseResult:
    rate: float
    seconds: float
    started: float
    sent: int
    accepted: int


def parse_phases(text: str) -> list[tuple[float, float]]:
    phases = []
    for part in text.split(","):
        rate, seconds = part.split(":")
        phases.append((float(rate), float(seconds)))
    return phases


def run_phase(cluster: LocalCluster, rate: float, seconds: float) -> PhaseResult:
    started = time.time()
    if rate <= 0:
        time.sleep(seconds)
        return PhaseResult(rate, seconds, started, 0, 0)
    plan = LoadPlan(rate_per_s=rate, concurrency=64, duration_s=seconds,
                    max_events=DEFAULT_MAX_EVENTS, issues=1000, connections=64, sample_size=0,
                    drain_timeout_s=0)
    result = asyncio.run(run_load(target_from_dsn("crashray", cluster.dsn), plan,
                                  load_template(), lambda _record: None))
    return PhaseResult(rate, seconds, started, len(result.records), len(result.accepted))


def plot(samples: list[dict[str, Any]], phases: list[PhaseResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = phases[0].started
    ts = [s["t"] - t0 for s in samples]
    fig, (load_ax, queue_ax, scale_ax) = plt.subplots(3, 1, sharex=True, figsize=(10, 8))
    steps_t = [p.started - t0 for p in phases] + [phases[-1].started - t0 + phases[-1].seconds]
    load_ax.step(steps_t, [p.rate for p in phases] + [phases[-1].rate], where="post",
                 label="offered envelopes/s")
    load_ax.step(steps_t, [p.accepted / p.seconds for p in phases]
                 + [phases[-1].accepted / phases[-1].seconds], where="post",
                 label="accepted/s (phase mean)", linestyle="--")
    load_ax.set_ylabel("events/s")
    load_ax.legend(loc="upper right")
    queue_ax.plot(ts, [s.get("waiting") or 0 for s in samples], label="items waiting")
    queue_ax.set_ylabel("items waiting")
    age_ax = queue_ax.twinx()
    age_ax.plot(ts, [s.get("oldest_s") or 0 for s in samples], color="tab:red",
                label="oldest item age, s")
    age_ax.set_ylabel("oldest age, s")
    queue_ax.legend(loc="upper left")
    age_ax.legend(loc="upper right")
    scale_ax.step(ts, [s.get("pool") or 0 for s in samples], where="post",
                  label="consumers (pool size)")
    scale_ax.step(ts, [s.get("ingest_replicas") or 0 for s in samples], where="post",
                  label="ingest replicas running")
    scale_ax.set_ylabel("count")
    scale_ax.set_xlabel("seconds since the ramp started")
    scale_ax.legend(loc="upper right")
    fig.suptitle("Crashray on 2 Ray nodes (1 CPU each): autoscaling under a load ramp")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", default=DEFAULT_PHASES,
                        help="rate:seconds,... (envelopes/s, open loop; 0 = idle)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "ramp"),
                        help="path prefix of the .png and .csv written")
    args = parser.parse_args(argv)
    phases = parse_phases(args.phases)
    with local_cluster(nodes=2, cpus_per_node=1, settings=SETTINGS) as cluster:
        deploy(cluster)
        sampler = Sampler(cluster)
        sampler.start()
        time.sleep(5)
        results = [run_phase(cluster, rate, seconds) for rate, seconds in phases]
        sampler.stop()
        status = crashray(cluster, "status", check=False)
    samples = [s for s in sampler.samples if s["t"] >= results[0].started]
    out = Path(args.out)
    with out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seconds", "pool", "waiting", "oldest_s", "ingest_replicas"])
        for s in samples:
            writer.writerow([round(s["t"] - results[0].started, 1), s.get("pool"),
                             s.get("waiting"), s.get("oldest_s"), s.get("ingest_replicas")])
    plot(samples, results, out.with_suffix(".png"))
    print("| phase | offered/s | seconds | sent | accepted | max consumers | max ingest"
          " replicas | max waiting |")
    print("|---|---|---|---|---|---|---|---|")
    for i, p in enumerate(results):
        inside = [s for s in samples if p.started <= s["t"] < p.started + p.seconds]
        most = {k: max((s.get(k) or 0 for s in inside), default=0)
                for k in ("pool", "ingest_replicas", "waiting")}
        print(f"| {i + 1} | {p.rate:g} | {p.seconds:g} | {p.sent} | {p.accepted} |"
              f" {most['pool']} | {most['ingest_replicas']} | {most['waiting']} |")
    errors = [s["error"] for s in samples if "error" in s]
    print(f"{len(samples)} samples ({len(errors)} with errors); plot {out.with_suffix('.png')},"
          f" data {out.with_suffix('.csv')}")
    print(status.stdout or status.stderr[-2000:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
