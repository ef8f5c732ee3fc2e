"""Grouping v1 throughput on one core, on real SDK events.

Hashes the captured Python and Node SDK events (after sentry-relay normalization, as the
consumers do) and synthetic deeper variants of them (20 frames, as a typical web request),
and prints events/s per core for each. No Ray, no servers.

    python bench/grouping.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path
from typing import Any

import sentry_relay

from events.grouping import group_hashes_for_event


def corpus_dir() -> Path:
    override = os.environ.get("CRASHRAY_CORPUS_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "corpus" / "sdk"


def corpus_event(name: str) -> dict[str, Any]:
    raw = (corpus_dir() / f"{name}.envelope").read_bytes().split(b"\n")[2]
    normalizer = sentry_relay.StoreNormalizer(project_id=1)  # type: ignore[attr-defined]
    event: dict[str, Any] = normalizer.normalize_event(raw_event=raw)
    return event


def deepened(event: dict[str, Any], frames: int) -> dict[str, Any]:
    """The event with its last exception's frames repeated (renamed) up to ``frames``."""
    deep = copy.deepcopy(event)
    stack = deep["exception"]["values"][-1]["stacktrace"]
    base = stack["frames"]
    stack["frames"] = [{**base[i % len(base)], "function": f"{base[i % len(base)].get('function')}_{i}"}
                       for i in range(frames)]
    return deep


def events_per_second(event: dict[str, Any], seconds: float) -> float:
    count, deadline = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < deadline:
        for _ in range(100):
            group_hashes_for_event(event)
        count += 100
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per case (default 2)")
    args = parser.parse_args()
    cases: dict[str, dict[str, Any]] = {}
    for name in ("python-sdk-2.75.0-exception", "node-sdk-11.12.0-exception"):
        event = corpus_event(name)
        frames = sum(len(e["stacktrace"]["frames"]) for e in event["exception"]["values"])
        cases[f"{name} ({frames} frames)"] = event
        cases[f"{name} deepened to 20 frames"] = deepened(event, 20)
    results = {}
    print(f"{'event':55} {'events/s/core':>14} {'us/event':>9}")
    for label, event in cases.items():
        rate = events_per_second(event, args.seconds)
        results[label] = round(rate)
        print(f"{label:55} {rate:14,.0f} {1e6 / rate:9.0f}")
    print(json.dumps({"benchmark": "grouping", "config": "v1", "events_per_s": results}))


if __name__ == "__main__":
    main()
