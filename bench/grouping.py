"""Grouping throughput on one core, on real SDK events: every grouping config, default first.

Hashes the captured Python and Node SDK events (after sentry-relay normalization, as the
consumers do), synthetic deeper variants of them (20 frames, as a typical web request) and a
message event made from the Python one (no exception: it groups by its parameterized
message), and prints events/s per core for each, under the default grouping config (v3: v2
plus Sentry's Java markers, message table and security strategies), v2 (v1 plus Sentry's
built-in rule bases) and v1 for comparison. No Ray, no servers.

Then hostile project rules (issue 10): the time one rule takes to match (or not) a long
value, best of 5 runs, for globs that backtrack catastrophically as regular expressions.

    python bench/grouping.py [--seconds 2] [--configs v3,v2,v1] [--only events|hostile-rules]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import sentry_relay

from events.grouping import DEFAULT_GROUPING_CONFIG, GROUPING_CONFIGS, group_hashes_for_event
from events.grouping.fingerprint_rules import parse_fingerprint_rules
from events.grouping.stacktrace_rules import parse_stacktrace_rules


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


TEN_KB = 10 * 1024


def hostile_rule_cases() -> list[tuple[str, str, dict[str, Any]]]:
    """(label, rule, event): rules whose globs backtrack as regexes, over long values; the
    last three are at the wildcard limit (16), in the general matcher's worst shapes found."""
    def message(text: str) -> dict[str, Any]:
        return {"platform": "python", "message": text}

    def frame(path: str) -> dict[str, Any]:
        return {"platform": "python", "exception": {"values": [{"type": "E", "stacktrace": {
            "frames": [{"abs_path": path, "function": "f", "in_app": True}]}}]}}

    return [
        ('message:"x*a*a*a*a*b", 200 chars', 'message:"x*a*a*a*a*b" -> slow',
         message("x" + "a" * 199)),
        ('message:"x*a*a*a*a*b", 10 KB', 'message:"x*a*a*a*a*b" -> slow',
         message("x" + "a" * (TEN_KB - 1))),
        ('message:"{*a,a}{*a,a}{*a,a}{*a,a}{*a,a}b", 10 KB',
         'message:"{*a,a}{*a,a}{*a,a}{*a,a}{*a,a}b" -> slow', message("a" * TEN_KB)),
        ('path:"**a*a*...*a*b" (16 wildcards), 10 KB of "a"',
         'path:"**' + "a*" * 15 + 'b" -app', frame("a" * TEN_KB)),
        ('path:"**a*a*...*a*b" (16 wildcards), 10 KB of "a/"',
         'path:"**' + "a*" * 15 + 'b" -app', frame("a/" * (TEN_KB // 2))),
    ]


def hostile_rule_ms(rule: str, event: dict[str, Any]) -> float:
    """Best of 5: matching one fingerprint rule, or applying one stack-trace rule."""
    work: Callable[[], object]
    if "->" in rule:
        work = partial(parse_fingerprint_rules(rule).match, event)
    else:
        work = partial(parse_stacktrace_rules(rule).apply, event)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def print_hostile_rules() -> None:
    print(f"\n{'hostile rule, value':60} {'ms':>9}")
    results: dict[str, float] = {}
    for label, rule, event in hostile_rule_cases():
        results[label] = round(hostile_rule_ms(rule, event), 3)
        print(f"{label:60} {results[label]:9.3f}")
    print(json.dumps({"benchmark": "grouping-hostile-rules", "ms": results}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="time per case and config (default 2)")
    parser.add_argument("--configs", default=",".join(default_configs()),
                        help="comma-separated grouping configs (default: all, the default first)")
    parser.add_argument("--only", choices=("events", "hostile-rules"),
                        help="run only the events/s table or only the hostile rules")
    args = parser.parse_args()
    if args.only != "hostile-rules":
        print_events_per_second(parser, args)
    if args.only != "events":
        print_hostile_rules()


def print_events_per_second(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
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
