"""Grouping throughput on one core, on real SDK events: every grouping config, default first.

Hashes the captured Python and Node SDK events (after sentry-relay normalization, as the
consumers do), synthetic deeper variants of them (20 frames, as a typical web request) and a
message event made from the Python one (no exception: it groups by its parameterized
message), and prints events/s per core for each, under the default grouping config (v3: v2
plus Sentry's Java markers, message table and security strategies), v2 (v1 plus Sentry's
built-in rule bases) and v1 for comparison. No Ray, no servers.

    python bench/grouping.py [--seconds 2] [--configs v3,v2,v1]
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

from events.grouping import DEFAULT_GROUPING_CONFIG, GROUPING_CONFIGS, group_hashes_for_event


def corpus_dir() -> Path:
    override = os.environ.get("CRASHRAY_CORPUS_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sdk"


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


def events_per_second(event: dict[str, Any], configs: list[str], seconds: float
                      ) -> dict[str, float]:
    """events/s of each config, measured in alternating batches of 100 events for ``seconds``
    per config, so that a change in machine load hits every config alike."""
    elapsed = dict.fromkeys(configs, 0.0)
    counts = dict.fromkeys(configs, 0)
    while min(elapsed.values()) < seconds:
        for config in configs:
            start = time.perf_counter()
            for _ in range(100):
                group_hashes_for_event(event, config)
            elapsed[config] += time.perf_counter() - start
            counts[config] += 100
    return {config: counts[config] / elapsed[config] for config in configs}


def message_event(event: dict[str, Any]) -> dict[str, Any]:
    """The event without its exception, with a log message full of ids, addresses and dates."""
    message = {k: v for k, v in copy.deepcopy(event).items() if k not in ("exception", "threads")}
    message["logentry"] = {"formatted": (
        "Payment 81723 for order 3f2504e0-4f89-11d3-9a0c-0305e82c3301 declined by "
        "gateway-7.payments.example.com (10.1.2.3) at 2024-05-07T08:30:00Z after 1.5s, "
        "retry=true")}
    return message


def default_configs() -> list[str]:
    """The default config first, then the older versions, newest first, to compare."""
    return list(dict.fromkeys([DEFAULT_GROUPING_CONFIG, *reversed(GROUPING_CONFIGS)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="time per case and config (default 2)")
    parser.add_argument("--configs", default=",".join(default_configs()),
                        help="comma-separated grouping configs (default: all, the default first)")
    args = parser.parse_args()
    configs = [c for c in args.configs.split(",") if c]
    unknown = [c for c in configs if c not in GROUPING_CONFIGS]
    if unknown:
        parser.error(f"--configs: unknown grouping config {unknown[0]!r}; known: "
                     f"{', '.join(sorted(GROUPING_CONFIGS))}")
    cases: dict[str, dict[str, Any]] = {}
    for name in ("python-sdk-2.75.0-exception", "node-sdk-11.12.0-exception"):
        event = corpus_event(name)
        frames = sum(len(e["stacktrace"]["frames"]) for e in event["exception"]["values"])
        cases[f"{name} ({frames} frames)"] = event
        cases[f"{name} deepened to 20 frames"] = deepened(event, 20)
    cases["message event (from the Python capture)"] = message_event(
        corpus_event("python-sdk-2.75.0-exception"))
    results: dict[str, dict[str, int]] = {config: {} for config in configs}
    print(f"{'event':55} {'config':>6} {'events/s/core':>14} {'us/event':>9}")
    for label, event in cases.items():
        for config, rate in events_per_second(event, configs, args.seconds).items():
            results[config][label] = round(rate)
            print(f"{label:55} {config:>6} {rate:14,.0f} {1e6 / rate:9.0f}")
    for config in configs:
        print(json.dumps({"benchmark": "grouping", "config": config,
                          "default": config == DEFAULT_GROUPING_CONFIG,
                          "events_per_s": results[config]}))


if __name__ == "__main__":
    main()
