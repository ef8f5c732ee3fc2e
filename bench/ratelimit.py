"""Rate-limiting benchmark: what quotas cost the tenants they do not limit.

Three measurements of the same closed- or open-loop load (the Python SDK corpus event, as
bench/ingest.py sends it) against fresh `crashray up` instances on this machine:

  off       rate limiting off (CRASHRAY_RATE_LIMIT_SHARDS=0): no actor is asked
  on        rate limiting on (one rate-limiter actor, spike protection, and a generous
            key rate limit on the measured key, so every batch is checked and counted)
  flooded   as "on", while another project of the same organization floods ingest
            (open loop, --flood-rate envelopes/s, one pre-built envelope sent again and
            again so the flood's client costs little) through a key limited to 10 events
            an hour, so nearly all of it is answered 429

Printed: the three reports side by side, then the ratios that the targets are about:
  on / off          throughput with rate limiting vs without (target ≥ 0.9)
  flooded / on      the others' throughput during a flood of 429s (target ≥ 0.8,
                    i.e. the flood costs them less than 20 %)
and one JSON line. The load generator shares the 2 cores, so the flood's own client
costs are part of what the others lose.

  python bench/ratelimit.py --concurrency 16 --seconds 15 --flood-rate 300
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import aiohttp
import psycopg
from _load import (
    LoadPlan,
    Target,
    add_load_arguments,
    build_envelope,
    free_port,
    load_template,
    plan_from_args,
    sdk_headers,
    target_from_dsn,
)
from _measure import Report, format_table, measure, memory_of
from ingest import (
    CrashrayInstance,
    PostgresEvents,
    _kill_leftovers,
    crashray_pids,
    start_crashray,
    stop_crashray,
)


def _key_limit(pg_url: str, public_key: str, window_s: int, count: int) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE project_keys SET rate_limit_window_s = %s, rate_limit_count = %s"
                     " WHERE public_key = %s", (window_s, count, public_key))


def _noisy_project(instance: CrashrayInstance) -> Target:
    """A second project of the organization, its key limited to 10 events an hour."""
    from storage.bootstrap import ensure_project

    with psycopg.connect(instance.pg_url) as conn:
        project_id, key = ensure_project(conn, 1, "noisy", "v2")
        conn.commit()
    _key_limit(instance.pg_url, key, 3600, 10)
    base = instance.dsn.split("@", 1)[1].rsplit("/", 1)[0]
    return target_from_dsn("noisy", f"http://{key}@{base}/{project_id}")


async def _measure(instance: CrashrayInstance, name: str, plan: LoadPlan) -> Report:
    report = await measure(target_from_dsn(name, instance.dsn), plan, load_template(),
                           partial(PostgresEvents, instance.pg_url),
                           lambda: memory_of(crashray_pids(instance)))
    return replace(report, system=name)


async def _flood(target: Target, rate_per_s: float, stop: asyncio.Event) -> dict[int, int]:
    """Open loop at ``rate_per_s`` until ``stop``: one envelope built once and sent again and
    again (refusal does not depend on the event), so the flood's client costs little CPU
    and what the others lose is the server's cost of refusing."""
    body = build_envelope(load_template(), 0, 1, target.public_key).body
    statuses: dict[int, int] = {}

    async def one(session: aiohttp.ClientSession) -> None:
        try:
            async with session.post(target.envelope_url, data=body) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
        except (aiohttp.ClientError, TimeoutError):
            statuses[0] = statuses.get(0, 0) + 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64),
                                     headers=sdk_headers(target.public_key)) as session:
        start, sent, tasks = time.perf_counter(), 0, set()
        while not stop.is_set():
            delay = start + sent / rate_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(session))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.gather(*tasks)
    return statuses


async def _flooded(instance: CrashrayInstance, plan: LoadPlan, flood: Target,
                   flood_rate: float) -> tuple[Report, dict[int, int]]:
    stop = asyncio.Event()
    flooding = asyncio.create_task(_flood(flood, flood_rate, stop))
    try:
        report = await _measure(instance, "flooded", plan)
    finally:
        stop.set()
    return report, await flooding


def _run(env: dict[str, str], body: object) -> object:
    data_dir = Path(tempfile.mkdtemp(prefix="crb-rl-"))
    instance = start_crashray(data_dir, free_port(), env)
    try:
        return asyncio.run(body(instance))  # type: ignore[operator]
    finally:
        stop_crashray(instance)
        _kill_leftovers(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser)
    parser.add_argument("--flood-rate", type=float, default=300.0,
                        help="envelopes/s the noisy project sends (default 300)")
    parser.add_argument("--skip-off", action="store_true",
                        help="skip the rate-limiting-off run (on and flooded only)")
    args = parser.parse_args(argv)
    plan = plan_from_args(args)

    async def off(instance: CrashrayInstance) -> Report:
        return await _measure(instance, "off", plan)

    async def on_then_flooded(instance: CrashrayInstance
                              ) -> tuple[Report, Report, dict[int, int]]:
        _key_limit(instance.pg_url, target_from_dsn("on", instance.dsn).public_key,
                   60, 10**9)
        flood = _noisy_project(instance)
        await asyncio.sleep(6)  # the rate limiter re-reads quotas every 5 s
        on = await _measure(instance, "on", plan)
        flooded, statuses = await _flooded(instance, plan, flood, args.flood_rate)
        return on, flooded, statuses

    report_off = None if args.skip_off else _run({"CRASHRAY_RATE_LIMIT_SHARDS": "0"}, off)
    report_on, report_flooded, flood_statuses = _run({}, on_then_flooded)  # type: ignore[misc]
    assert report_off is None or isinstance(report_off, Report)
    reports = [r for r in (report_off, report_on, report_flooded) if r is not None]
    print(format_table(reports))
    def ratio(a: Report, b: Report) -> float:
        return round((a.processed_per_s or 0.0) / (b.processed_per_s or 1.0), 3)

    figures = {"on_over_off_processed": None if report_off is None
               else ratio(report_on, report_off),
               "flooded_over_on_processed": ratio(report_flooded, report_on),
               "flood_statuses": flood_statuses}
    print(f"rate limiting on/off: {figures['on_over_off_processed']} (target ≥ 0.9);"
          f" others during a flood / without: {figures['flooded_over_on_processed']}"
          f" (target ≥ 0.8); flood answers: {flood_statuses}")
    print(json.dumps({"benchmark": "ratelimit", **figures,
                      "flood_rate": args.flood_rate,
                      "reports": [json.loads(r.json_line()) for r in reports]}))
    losses = sum(r.losses for r in reports)
    return 0 if losses == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
