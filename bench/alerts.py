"""Alert rules' cost on the pipeline and their speed (issue 13).

One ``crashray up``. Two projects receive the same closed-loop load of Python-SDK exception
envelopes (1,000 issues): ``rules`` has 100 alert rules (50 frequency conditions over
1m/5m/15m/1h/1d windows that do not fire, so every event is counted into the windows and
every rule evaluated; 25 first-seen rules filtered to fatal events; 25 regression rules),
``none`` has none. Then the time from an event being accepted (HTTP 200) to its webhook
arriving at a local HTTP server, over ``--latency-events`` events of new issues sent
``--latency-interval`` apart to a project whose first-seen rule posts a webhook.

    flock /tmp/crashray-heavy.lock python bench/alerts.py --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from _load import (
    add_load_arguments,
    build_envelope,
    free_port,
    load_template,
    plan_from_args,
    sdk_headers,
    target_from_dsn,
)
from _measure import Report, format_table, measure, memory_of, percentile
from ingest import PostgresEvents, crashray_pids, start_crashray, stop_crashray

FREQUENCY = "sentry.rules.conditions.event_frequency.EventFrequencyCondition"
FIRST_SEEN = "sentry.rules.conditions.first_seen_event.FirstSeenEventCondition"
REGRESSION = "sentry.rules.conditions.regression_event.RegressionEventCondition"
LEVEL = "sentry.rules.filters.level.LevelFilter"


def hundred_rules(hook: str) -> list[dict[str, Any]]:
    action = [{"id": "crashray.actions.webhook", "url": hook}]
    rules = []
    for i in range(50):
        rules.append({"name": f"busy {i}", "actionMatch": "all", "frequency": 30,
                      "conditions": [{"id": FREQUENCY, "value": 1_000_000,
                                      "interval": ["1m", "5m", "15m", "1h", "1d"][i % 5]}],
                      "actions": action})
    for i in range(25):
        rules.append({"name": f"fatal new {i}", "actionMatch": "all", "filterMatch": "all",
                      "frequency": 30, "conditions": [{"id": FIRST_SEEN}],
                      "filters": [{"id": LEVEL, "match": "eq", "level": "50"}],
                      "actions": action})
    for i in range(25):
        rules.append({"name": f"regressed {i}", "actionMatch": "all", "frequency": 30,
                      "conditions": [{"id": REGRESSION}], "actions": action})
    return rules


class Hooks:
    """Webhook arrivals by event id (monotonic time)."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = server.server_address[1]
        self.server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                event = json.loads(body).get("event") or {}
                hooks.arrived.setdefault(str(event.get("event_id", "")).replace("-", ""),
                                         time.monotonic())
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass
        return Handler


def new_project(base: str, token: str, name: str) -> tuple[str, str]:
    auth = {"Authorization": f"Bearer {token}"}
    made = httpx.post(f"{base}/api/0/teams/crashray/crashray/projects/", headers=auth,
                      json={"name": name}, timeout=30)
    made.raise_for_status()
    slug = made.json()["slug"]
    keys = httpx.get(f"{base}/api/0/projects/crashray/{slug}/keys/", headers=auth, timeout=30)
    keys.raise_for_status()
    return slug, str(keys.json()[0]["dsn"]["public"])


def add_rules(base: str, token: str, slug: str, rules: list[dict[str, Any]]) -> None:
    for rule in rules:
        r = httpx.post(f"{base}/api/0/projects/crashray/{slug}/rules/", json=rule,
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
        r.raise_for_status()


def latency(dsn: str, hooks: Hooks, events: int, interval_s: float) -> list[float]:
    """Seconds from each event's 200 to its webhook."""
    target = target_from_dsn("latency", dsn)
    template = load_template()
    accepted: dict[str, float] = {}
    with httpx.Client(timeout=30) as client:
        for n in range(events):
            # A new issue each time: an exception type of its own.
            built = build_envelope(template, 10**6 + n, 10**9, target.public_key)
            r = client.post(target.envelope_url, content=built.body,
                            headers=sdk_headers(target.public_key))
            r.raise_for_status()
            accepted[built.event_id] = time.monotonic()
            time.sleep(interval_s)
    deadline = time.monotonic() + 60
    while len(set(accepted) & set(hooks.arrived)) < len(accepted) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [hooks.arrived[e] - t for e, t in accepted.items() if e in hooks.arrived]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser)
    parser.add_argument("--latency-events", type=int, default=50)
    parser.add_argument("--latency-interval", type=float, default=0.2)
    args = parser.parse_args(argv)
    plan = plan_from_args(args)
    hooks = Hooks()
    hook = f"http://127.0.0.1:{hooks.port}/hook"
    work = Path(tempfile.mkdtemp(prefix="crb-alerts-"))
    instance = start_crashray(work / "data", free_port(),
                              {"CRASHRAY_PROJECT_SETTINGS_REFRESH_S": "1"})
    try:
        base = "http://" + instance.dsn.split("@", 1)[1].rsplit("/", 1)[0]
        rules_slug, rules_dsn = new_project(base, instance.token, "rules")
        _, none_dsn = new_project(base, instance.token, "none")
        add_rules(base, instance.token, rules_slug, hundred_rules(hook))
        probe_slug, probe_dsn = new_project(base, instance.token, "probe")
        add_rules(base, instance.token, probe_slug, [{
            "name": "new issue", "actionMatch": "all", "frequency": 5,
            "conditions": [{"id": FIRST_SEEN}],
            "actions": [{"id": "crashray.actions.webhook", "url": hook}]}])
        time.sleep(2)
        template = load_template()
        reports: list[Report] = []
        print("--- warm-up (not measured)", file=sys.stderr, flush=True)
        for name, dsn in (("100 rules", rules_dsn), ("no rules", none_dsn)):
            asyncio.run(measure(target_from_dsn(name, dsn), replace(plan, duration_s=3.0),
                                template, lambda: PostgresEvents(instance.pg_url),
                                lambda: memory_of(crashray_pids(instance))))
        for name, dsn in (("100 rules", rules_dsn), ("no rules", none_dsn)):
            print(f"--- {name}", file=sys.stderr, flush=True)
            reports.append(asyncio.run(measure(
                target_from_dsn(name, dsn), plan, template,
                lambda: PostgresEvents(instance.pg_url),
                lambda: memory_of(crashray_pids(instance)))))
        print(format_table(reports))
        with_rules, without = reports[0].processed_per_s, reports[1].processed_per_s
        if with_rules and without:
            print(f"processed events/s, 100 rules / none: {with_rules / without:.2f}")
        seconds = latency(probe_dsn, hooks, args.latency_events, args.latency_interval)
        p50, p99 = percentile(seconds, 50), percentile(seconds, 99)
        print(f"event accepted → webhook received: {len(seconds)} of {args.latency_events}"
              f" arrived; p50 {p50 if p50 is None else round(p50 * 1000)} ms,"
              f" p99 {p99 if p99 is None else round(p99 * 1000)} ms")
        return 0 if all(r.losses == 0 for r in reports) else 1
    finally:
        stop_crashray(instance)
        hooks.server.shutdown()


if __name__ == "__main__":
    sys.exit(main())
