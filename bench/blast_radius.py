"""Blast radius: what one tenant's hostile traffic costs another tenant (issue 10).

One `crashray up` on this machine (fresh data dir, free port). Organization B is the
instance's own ("crashray", its default project and DSN): closed-loop senders of the Python
SDK exception envelope (bench/_load.py), measured as bench/ingest.py measures, counting only
B's project: processed events/s = B's accepted events / time from B's first send until every
one of them is stored. Organization A ("hostile") is created by the script. Runs, one after
another on the same instance, each --seconds long, after a short warm-up of B (not
reported), the queue emptied between them (--runs picks and orders them; by default each
hostile run sits between two quiet runs):

  quiet     B alone
  poison    while A streams poison envelopes, open loop at --poison-rate, in turn:
              nul_item_header      a NUL (\\u0000) in an item header
              nul_sent_at          a NUL in the envelope header's sent_at
              big_int_item_header  an item-header integer above 64 bits
              malformed_json_item  an event item that is not JSON (the door does not parse
                                   event payloads; the consumer dead-letters it)
            The first three must be refused alone (400) and never fail B's requests that
            share their hand-off batch; on code without that guard they make the batch's
            COPY fail and every request in it, B's too, gets a 503.
  flood     while A floods open loop at --flood-rate through a key limited to 10 events
            an hour: nearly every answer is a 429 (rate limit, key_quota)
  backlog   while A floods at --flood-rate with --org-cap of its items already queued
            (held by a stalled consumer: claimed for an hour), the instance started with
            CRASHRAY_MAX_QUEUED_ITEMS_PER_ORG=--org-cap: every answer is a 429 (org_backlog)
  stalled   (a control, not run by default) A's backlog stalled as in "backlog", no flood:
            what the stalled rows alone cost B

Printed: B's reports side by side, A's answers per kind and status, the ratio of B's
processed events/s in each hostile run to the mean of the quiet runs just before and after
it (target ≥ 0.9), and one JSON line. The load generator shares the machine's cores with
the instance, so A's client costs are part of what B loses. About four minutes with the
defaults (start, warm-up, seven runs of 15 s, stop).

  python bench/blast_radius.py --concurrency 16 --seconds 15
  (From a worktree, run its code: ``PYTHONPATH=$PWD python bench/blast_radius.py …``.)
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import aiohttp
import orjson
import psycopg
from _load import (
    LoadPlan,
    Target,
    add_load_arguments,
    free_port,
    load_template,
    plan_from_args,
    sdk_headers,
    target_from_dsn,
)
from _measure import Report, format_table, measure, memory_of
from ingest import (
    CrashrayInstance,
    _kill_leftovers,
    crashray_pids,
    start_crashray,
    stop_crashray,
)
from ratelimit import _flood, _key_limit

T = TypeVar("T")

POISON_KINDS = ("nul_item_header", "nul_sent_at", "big_int_item_header",
                "malformed_json_item")
#: Seconds the rate limiters take to see a changed key limit (quota_settings_refresh_s: 5).
QUOTA_REFRESH_WAIT_S = 6.0
#: Seconds the ingest replicas take to see a backlog (they check once a second).
BACKLOG_CHECK_WAIT_S = 2.5
#: Longest wait for the queue to empty between runs.
SETTLE_TIMEOUT_S = 60.0


class ProjectEvents:
    """One project's stored events as PostgreSQL sees them (``_measure.StoredEvents``)."""

    def __init__(self, url: str, project_id: int) -> None:
        self.conn = psycopg.connect(url, autocommit=True)
        self.project_id = project_id

    def count(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM processed_events WHERE project_id = %s",
                                (self.project_id,)).fetchone()
        return int(row[0]) if row else 0

    def stored_ids(self, event_ids: Sequence[str]) -> set[str]:
        rows = self.conn.execute("SELECT event_id FROM processed_events WHERE project_id = %s"
                                 " AND event_id = ANY(%s)",
                                 (self.project_id, list(event_ids))).fetchall()
        return {str(r[0]) for r in rows}

    def issue_count(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM issues WHERE project_id = %s",
                                (self.project_id,)).fetchone()
        return int(row[0]) if row else 0


@dataclass(frozen=True)
class Hostile:
    """Organization A: a project whose key streams poison or floods with a full backlog,
    and one whose key is limited to 10 events an hour."""

    org_id: int
    project_id: int
    poison: Target
    limited: Target


def hostile_organization(instance: CrashrayInstance) -> Hostile:
    from events.grouping import DEFAULT_GROUPING_CONFIG
    from storage.bootstrap import ensure_project
    from storage.tenancy import create_organization

    with psycopg.connect(instance.pg_url) as conn:
        org_id = create_organization(conn, "hostile", "Hostile", None)
        project_id, poison_key = ensure_project(conn, org_id, "poison", DEFAULT_GROUPING_CONFIG)
        limited_id, limited_key = ensure_project(conn, org_id, "flood", DEFAULT_GROUPING_CONFIG)
        conn.commit()
    _key_limit(instance.pg_url, limited_key, 3600, 10)
    base = instance.dsn.split("@", 1)[1].rsplit("/", 1)[0]
    return Hostile(org_id, project_id,
                   target_from_dsn("poison", f"http://{poison_key}@{base}/{project_id}"),
                   target_from_dsn("flood", f"http://{limited_key}@{base}/{limited_id}"))


def poison_envelope(kind: str) -> bytes:
    """One poison envelope of ``kind`` (uncompressed), with a fresh event id."""
    event_id = uuid.uuid4().hex
    payload = orjson.dumps({"event_id": event_id, "message": f"poison {kind}",
                            "level": "error", "platform": "python"})
    headers: dict[str, object] = {"event_id": event_id,
                                  "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    item: dict[str, object] = {"type": "event", "content_type": "application/json"}
    if kind == "nul_item_header":
        item["filename"] = "poison\x00.json"
    elif kind == "nul_sent_at":
        headers["sent_at"] = "2026-12-03T10:00:00\x00Z"
    elif kind == "big_int_item_header":
        item["sample_rate"] = 2**70
    elif kind == "malformed_json_item":
        payload = b'{"message": "an event cut short'
    item["length"] = len(payload)
    # json, not orjson: it writes integers of any size, and NUL as \u0000.
    return b"\n".join([json.dumps(headers).encode(), json.dumps(item).encode(), payload]) + b"\n"


async def poison_stream(target: Target, rate_per_s: float, stop: asyncio.Event
                        ) -> dict[str, dict[int, int]]:
    """Open loop at ``rate_per_s`` until ``stop``, the kinds in turn; answers per kind."""
    statuses: dict[str, Counter[int]] = {kind: Counter() for kind in POISON_KINDS}

    async def one(session: aiohttp.ClientSession, kind: str) -> None:
        body = gzip.compress(poison_envelope(kind), compresslevel=1)
        try:
            async with session.post(target.envelope_url, data=body) as response:
                await response.read()
                statuses[kind][response.status] += 1
        except (aiohttp.ClientError, TimeoutError):
            statuses[kind][0] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64),
                                     headers=sdk_headers(target.public_key)) as session:
        start, sent, tasks = time.perf_counter(), 0, set()
        while not stop.is_set():
            delay = start + sent / rate_per_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(session, POISON_KINDS[sent % len(POISON_KINDS)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.gather(*tasks)
    return {kind: dict(counts) for kind, counts in statuses.items()}


def stall_backlog(pg_url: str, hostile: Hostile, items: int) -> None:
    """``items`` small events of A queued and claimed for an hour: a backlog at its cap
    that the consumers leave alone, so that A's flood stays refused for the whole run."""
    payload = orjson.dumps({"message": "stalled", "level": "error"})
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "INSERT INTO ingest_queue (project_id, organization_id, key_id, item_type,"
            " event_id, received_at, meta, payload, attempts, claimed_until)"
            " SELECT %s, %s, NULL, 'event', md5('stalled' || g), now(), '{}', %s, 1,"
            " now() + interval '1 hour' FROM generate_series(1, %s) g",
            (hostile.project_id, hostile.org_id, payload, items))
        conn.commit()
        # As autovacuum would within a minute: with the table's statistics from before
        # these rows, the consumers' claim walks all of them in id order on every claim
        # (~8 ms more per claim at 20,000), instead of using the claimable index.
        conn.execute("ANALYZE ingest_queue")
        conn.commit()


def settle(pg_url: str) -> None:
    """Wait until the consumers have worked off everything they may claim (what one run
    leaves, such as A's malformed items, must not be processed during the next)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    with psycopg.connect(pg_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM ingest_queue WHERE claimed_until IS NULL"
                               " OR claimed_until < now() + interval '5 minutes'").fetchone()
            if row is not None and row[0] == 0:
                return
            time.sleep(0.5)
    print(f"the queue did not empty within {SETTLE_TIMEOUT_S:.0f} s; going on",
          file=sys.stderr)


async def measure_b(instance: CrashrayInstance, name: str, plan: LoadPlan,
                    project_id: int) -> Report:
    report = await measure(target_from_dsn(name, instance.dsn), plan, load_template(),
                           lambda: ProjectEvents(instance.pg_url, project_id),
                           lambda: memory_of(crashray_pids(instance)))
    return replace(report, system=name)


async def alongside(instance: CrashrayInstance, name: str, plan: LoadPlan, project_id: int,
                    hostile: Callable[[asyncio.Event], Awaitable[T]]) -> tuple[Report, T]:
    """B's run while ``hostile(stop)`` runs, until B has sent its last."""
    stop = asyncio.Event()
    hostile_task = asyncio.ensure_future(hostile(stop))
    try:
        report = await measure_b(instance, name, plan, project_id)
    finally:
        stop.set()
    return report, await hostile_task


def drop_stalled_backlog(pg_url: str, hostile: Hostile) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("DELETE FROM ingest_queue WHERE organization_id = %s"
                     " AND claimed_until > now() + interval '5 minutes'", (hostile.org_id,))
        conn.commit()


RUN_KINDS = ("quiet", "poison", "flood", "backlog", "stalled")
#: Each hostile run between two quiet runs: this machine's speed drifts by 10-30 % within
#: minutes (other work on the same two cores), so a run is compared with its neighbours.
DEFAULT_RUNS = "quiet,poison,quiet,flood,quiet,backlog,quiet"


def neighbour_ratios(reports: Sequence[Report]) -> dict[str, tuple[float, float]]:
    """Each hostile run's processed events/s over the mean of the nearest quiet run before
    and after it: {name: (ratio, that baseline)}."""
    quiet = [i for i, r in enumerate(reports) if r.system.startswith("quiet")]
    ratios: dict[str, tuple[float, float]] = {}
    for i, report in enumerate(reports):
        if i in quiet:
            continue
        near = [max((q for q in quiet if q < i), default=None),
                min((q for q in quiet if q > i), default=None)]
        rates = [reports[q].processed_per_s or 0.0 for q in near if q is not None]
        baseline = sum(rates) / len(rates)
        ratios[report.system] = (round((report.processed_per_s or 0.0) / (baseline or 1.0), 3),
                                 round(baseline, 1))
    return ratios


def run_all(instance: CrashrayInstance, plan: LoadPlan, args: argparse.Namespace
            ) -> tuple[list[Report], dict[str, object]]:
    b_project = int(instance.dsn.rstrip("/").rsplit("/", 1)[1])
    hostile = hostile_organization(instance)
    time.sleep(QUOTA_REFRESH_WAIT_S)  # the key limit, and the new keys, are seen
    reports: list[Report] = []
    answers: dict[str, object] = {}

    async def one_run(kind: str, name: str) -> Report:
        if kind == "quiet":
            return await measure_b(instance, name, plan, b_project)
        if kind == "poison":
            report, answers[name] = await alongside(
                instance, name, plan, b_project,
                lambda stop: poison_stream(hostile.poison, args.poison_rate, stop))
            return report
        if kind == "flood":
            report, answers[name] = await alongside(
                instance, name, plan, b_project,
                lambda stop: _flood(hostile.limited, args.flood_rate, stop))
            return report
        await asyncio.to_thread(stall_backlog, instance.pg_url, hostile, args.org_cap)
        await asyncio.sleep(BACKLOG_CHECK_WAIT_S)
        try:
            if kind == "stalled":
                return await measure_b(instance, name, plan, b_project)
            report, answers[name] = await alongside(
                instance, name, plan, b_project,
                lambda stop: _flood(hostile.poison, args.flood_rate, stop))
        finally:
            await asyncio.to_thread(drop_stalled_backlog, instance.pg_url, hostile)
        return report

    async def runs() -> None:
        # Not reported: the first seconds of a fresh instance are slower (caches, first
        # ClickHouse parts), which would flatter every later run against the quiet one.
        await measure_b(instance, "warm-up", replace(plan, duration_s=args.warmup_seconds),
                        b_project)
        seen: Counter[str] = Counter()
        for kind in args.runs:
            await asyncio.to_thread(settle, instance.pg_url)
            seen[kind] += 1
            name = kind if seen[kind] == 1 else f"{kind}-{seen[kind]}"
            reports.append(await one_run(kind, name))

    asyncio.run(runs())
    return reports, answers


def run_list(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(RUN_KINDS))
    if unknown or "quiet" not in kinds:
        raise argparse.ArgumentTypeError(
            f"runs are {', '.join(RUN_KINDS)}, at least one quiet; not {', '.join(unknown)}")
    return kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser)
    parser.set_defaults(seconds=15.0)
    parser.add_argument("--poison-rate", type=float, default=100.0,
                        help="poison envelopes/s organization A sends (default 100)")
    parser.add_argument("--flood-rate", type=float, default=100.0,
                        help="envelopes/s organization A floods with (default 100, as"
                             " bench/ratelimit.py's recorded runs)")
    parser.add_argument("--runs", type=run_list, default=run_list(DEFAULT_RUNS),
                        help=f"the runs, in order (default {DEFAULT_RUNS}: each hostile run"
                             " between two quiet ones, its baseline)")
    parser.add_argument("--warmup-seconds", type=float, default=5.0,
                        help="B alone before the quiet run, not reported (default 5)")
    parser.add_argument("--org-cap", type=int, default=20_000,
                        help="CRASHRAY_MAX_QUEUED_ITEMS_PER_ORG of the instance, and A's"
                             " stalled backlog in the backlog run (default 20,000)")
    args = parser.parse_args(argv)
    plan = plan_from_args(args)
    data_dir = Path(tempfile.mkdtemp(prefix="crb-blast-"))
    instance = start_crashray(data_dir, free_port(),
                              {"CRASHRAY_MAX_QUEUED_ITEMS_PER_ORG": str(args.org_cap)})
    try:
        reports, answers = run_all(instance, plan, args)
    finally:
        stop_crashray(instance)
        _kill_leftovers(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
    print(format_table(reports))
    ratios = neighbour_ratios(reports)
    for run, counts in answers.items():
        print(f"organization A's answers, {run} run: {counts}")
    print("B's processed events/s: " + ", ".join(
        f"{r.system} {r.processed_per_s}" for r in reports))
    print("ratios to the quiet runs around each (target ≥ 0.9): " + ", ".join(
        f"{name}/quiet {ratio} (of {baseline})" for name, (ratio, baseline) in ratios.items()))
    print(json.dumps({"benchmark": "blast_radius",
                      "ratios": {name: ratio for name, (ratio, _) in ratios.items()},
                      "hostile_answers": answers,
                      "poison_rate": args.poison_rate, "flood_rate": args.flood_rate,
                      "org_cap": args.org_cap,
                      "reports": [json.loads(r.json_line()) for r in reports]}))
    return 0 if sum(r.losses for r in reports) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
