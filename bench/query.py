"""Query benchmark: the issue stream, issue page and event page over a million events.

Loads N events in M issues of one project (``crashray/default``; default 1,000,000 and
5,000, plus ``--noise-share`` of that in each of two more projects, one of another
organization) into a fresh data dir by the bulk path of bench/_bulk.py (straight into the
embedded PostgreSQL and chDB, in a child process, before Crashray starts; the pipeline
would take an hour), starts ``crashray up`` on it, checks that the API lists every issue
with the loaded counts, then times, one request at a time after ``--warmup`` requests:

  stream_default   GET /api/0/projects/crashray/default/issues/?query=&statsPeriod=24h
                   (last seen first, each issue with its 24 h hourly stats and user count)
  stream_search    the same with query=browser:Chrome* "timeout" (a tag and free text)
  issue_page       GET /api/0/issues/{id}/ then GET /api/0/issues/{id}/tags/ (summed)
  event_page       GET /api/0/issues/{id}/events/latest/

The issue and event pages cycle through the issues on the first page of the stream (what a
user clicks); ``*_largest`` repeat them, fewer times, on the issue with the most events.
p99 is nearest-rank: with 50 requests it is the slowest one.

Then, unless --no-breakdown, Crashray is stopped and the same API code
(``serve_apps/api``: its access chain and views) runs in this process against the same databases, with every
ClickHouse call and PostgreSQL statement timed, to show where a request's time goes; what
the HTTP figure adds to it is Serve, HAProxy, HTTP and the Ray calls to the ClickHouse owner.

Printed: the load (time, rows/s), the instance's memory (PSS, RSS; chDB owner apart), a
table of latencies against the targets, the breakdown, the command line and one JSON line.

  python bench/query.py                                  # 1,000,000 events, 5,000 issues
  python bench/query.py --events 100000 --issues 1000    # a quicker run
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from _load import free_port
from _measure import memory_of, percentile, process_table
from ingest import (
    CrashrayInstance,
    _kill_leftovers,
    crashray_pids,
    start_crashray,
    stop_crashray,
)

ORG, PROJECT = "crashray", "default"
SEARCH_QUERY = 'browser:Chrome* "timeout"'
#: Issue stream targets of issue 5 on this 2-core machine, embedded ClickHouse.
STREAM_TARGET_P50_MS = 100.0
STREAM_TARGET_P99_MS = 300.0
#: Where bench/_bulk.py leaves its summary, inside the data dir (Crashray ignores it).
SUMMARY_FILE = "query-bench-summary.json"
#: One API request may scan every event of the project; generous for a 2-core machine.
REQUEST_TIMEOUT_S = 300.0
VERIFY_PAGE_SIZE = 100


# --- HTTP ------------------------------------------------------------------------------------


class ApiClient:
    """One keep-alive HTTP/1.1 connection to the API, a request at a time."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}"}
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)

    def get(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        try:
            self.conn.request("GET", path, headers=self.headers)
            response = self.conn.getresponse()
            # Header names lowered: Starlette sends them in lower case, Sentry capitalized.
            return response.status, response.read(), {k.lower(): v for k, v
                                                       in response.getheaders()}
        except (http.client.HTTPException, OSError):
            self.conn.close()  # a fresh connection for the next request
            raise

    def get_json(self, path: str) -> Any:
        status, body, _ = self.get(path)
        if status != 200:
            raise SystemExit(f"GET {path} answered {status}: {body[:300]!r}")
        return json.loads(body)

    def close(self) -> None:
        self.conn.close()


def stream_path(query: str, extra: str = "") -> str:
    return (f"/api/0/projects/{ORG}/{PROJECT}/issues/?query={quote(query)}"
            f"&statsPeriod=24h{extra}")


# --- load ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    summary: dict[str, Any]
    wall_s: float  # the child process, start to exit (imports and Relay included)


def bulk_load(data_dir: Path, args: argparse.Namespace) -> Loaded:
    """Run bench/_bulk.py in a child process: chDB allows one process per data path, and
    its exit is the surest way to have it closed before ``crashray up`` opens it."""
    summary_path = data_dir / SUMMARY_FILE
    command = [sys.executable, str(Path(__file__).with_name("_bulk.py")),
               "--data-dir", str(data_dir), "--events", str(args.events),
               "--issues", str(args.issues), "--noise-share", str(args.noise_share),
               "--batch-rows", str(args.batch_rows), "--seed", str(args.seed),
               "--summary", str(summary_path)]
    if args.no_optimize:
        command.append("--no-optimize")
    print(f"bulk load: {shlex.join(command)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    summary = json.loads(summary_path.read_text())
    summary["wall_s"] = round(time.perf_counter() - started, 2)
    summary_path.write_text(json.dumps(summary))  # for a later --reuse
    return Loaded(summary, summary["wall_s"])


# --- verification ------------------------------------------------------------------------------


@dataclass
class Verification:
    issues_listed: int = 0
    issues_expected: int = 0
    mismatches: list[str] = field(default_factory=list)
    pages: int = 0
    seconds: float = 0.0
    hidden_other_org: bool = False

    @property
    def ok(self) -> bool:
        return not self.mismatches and self.issues_listed == self.issues_expected \
            and self.hidden_other_org


def _check_issue(issue: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    found = []
    issue_id = issue["id"]
    if int(issue["count"]) != expected["times_seen"]:
        found.append(f"issue {issue_id}: count {issue['count']}, loaded"
                     f" {expected['times_seen']}")
    if issue["userCount"] != expected["users"]:
        found.append(f"issue {issue_id}: userCount {issue['userCount']}, loaded"
                     f" {expected['users']}")
    for key, loaded in (("firstSeen", expected["first_us"]), ("lastSeen", expected["last_us"])):
        seen_us = round(dt.datetime.fromisoformat(issue[key].replace("Z", "+00:00"))
                        .timestamp() * 1_000_000)
        if abs(seen_us - loaded) > 1:
            found.append(f"issue {issue_id}: {key} {issue[key]}, loaded {loaded} µs")
    hourly = expected["hourly"]
    wrong = [(h, n, hourly.get(str(h), 0)) for h, n in issue["stats"]["24h"]
             if n != hourly.get(str(h), 0)]
    if wrong:
        found.append(f"issue {issue_id}: 24h stats differ at (hour, API, loaded) {wrong[:3]}")
    return found


def verify(client: ApiClient, summary: dict[str, Any]) -> Verification:
    """Every issue of the main project, page by page (all periods and statuses), against
    what was loaded: ids, counts, user counts, first/last seen and the 24 h stats; and the
    other organization's project must answer 404 to this organization's token."""
    started = time.perf_counter()
    expected = summary["main"]["issues"]
    result = Verification(issues_expected=len(expected))
    seen: set[str] = set()
    offset = 0
    while True:
        path = (f"/api/0/projects/{ORG}/{PROJECT}/issues/?query=&limit={VERIFY_PAGE_SIZE}"
                f"&cursor=0:{offset}:0")
        status, body, headers = client.get(path)
        if status != 200:
            raise SystemExit(f"GET {path} answered {status}: {body[:300]!r}")
        page = json.loads(body)
        result.pages += 1
        for issue in page:
            seen.add(issue["id"])
            if issue["id"] not in expected:
                result.mismatches.append(f"issue {issue['id']} listed but not loaded here")
                continue
            result.mismatches.extend(_check_issue(issue, expected[issue["id"]]))
        offset += VERIFY_PAGE_SIZE
        if 'rel="next"; results="true"' not in headers.get("link", ""):
            break
    result.issues_listed = len(seen)
    missing = set(expected) - seen
    if missing:
        result.mismatches.append(f"{len(missing)} loaded issues not listed, e.g."
                                 f" {sorted(missing, key=int)[:5]}")
    other = next(p for p in summary["projects"] if p["org"] != ORG)
    status, _, _ = client.get(f"/api/0/projects/{other['org']}/{other['project']}/issues/")
    result.hidden_other_org = status == 404
    result.seconds = time.perf_counter() - started
    return result


# --- timing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    label: str
    #: The requests of iteration n (timed together, one after the other).
    paths: Callable[[int], list[str]]
    requests: int
    target_p50_ms: float | None = None
    target_p99_ms: float | None = None


@dataclass
class Timing:
    scenario: Scenario
    samples_ms: list[float] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)

    def figure(self, pct: float) -> float | None:
        value = percentile(self.samples_ms, pct)
        return None if value is None else round(value, 1)

    @property
    def mean_ms(self) -> float | None:
        return round(sum(self.samples_ms) / len(self.samples_ms), 1) if self.samples_ms \
            else None

    @property
    def met(self) -> str:
        s = self.scenario
        if s.target_p50_ms is None or s.target_p99_ms is None:
            return ""
        p50, p99 = self.figure(50), self.figure(99)
        if p50 is None or p99 is None:
            return "no"
        return "yes" if p50 <= s.target_p50_ms and p99 <= s.target_p99_ms else "no"

    def as_json(self) -> dict[str, Any]:
        return {"requests": len(self.samples_ms), "p50_ms": self.figure(50),
                "p99_ms": self.figure(99), "mean_ms": self.mean_ms,
                "min_ms": round(min(self.samples_ms), 1) if self.samples_ms else None,
                "max_ms": round(max(self.samples_ms), 1) if self.samples_ms else None,
                "errors": self.errors, "target_p50_ms": self.scenario.target_p50_ms,
                "target_p99_ms": self.scenario.target_p99_ms, "met": self.met or None}


def run_scenario(client: ApiClient, scenario: Scenario, warmup: int) -> Timing:
    timing = Timing(scenario)
    for n in range(warmup + scenario.requests):
        started = time.perf_counter()
        ok = True
        for path in scenario.paths(n):
            status, _, _ = client.get(path)
            if status != 200:
                timing.errors[status] = timing.errors.get(status, 0) + 1
                ok = False
        elapsed_ms = (time.perf_counter() - started) * 1000
        if n >= warmup and ok:
            timing.samples_ms.append(elapsed_ms)
    print(f"  {scenario.name}: p50 {timing.figure(50)} ms, p99 {timing.figure(99)} ms",
          file=sys.stderr, flush=True)
    return timing


def scenarios(issue_ids: Sequence[int], largest: int, requests: int) -> list[Scenario]:
    def cycle(make: Callable[[int], list[str]]) -> Callable[[int], list[str]]:
        return lambda n: make(issue_ids[n % len(issue_ids)])

    def issue_page(i: int) -> list[str]:
        return [f"/api/0/issues/{i}/", f"/api/0/issues/{i}/tags/"]

    def event_page(i: int) -> list[str]:
        return [f"/api/0/issues/{i}/events/latest/"]

    fewer = max(5, requests // 5)
    return [
        Scenario("stream_default", "issue stream, default (24h)",
                 lambda n: [stream_path("")], requests, STREAM_TARGET_P50_MS,
                 STREAM_TARGET_P99_MS),
        Scenario("stream_search", f"issue stream, {SEARCH_QUERY}",
                 lambda n: [stream_path(SEARCH_QUERY)], requests, STREAM_TARGET_P50_MS,
                 STREAM_TARGET_P99_MS),
        Scenario("issue_page", "issue page (detail + tags)", cycle(issue_page), requests),
        Scenario("event_page", "event page (latest event)", cycle(event_page), requests),
        Scenario("issue_page_largest", "issue page, largest issue",
                 lambda n: issue_page(largest), fewer),
        Scenario("event_page_largest", "event page, largest issue",
                 lambda n: event_page(largest), fewer),
    ]


# --- memory ------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass  # exited between listing and reading
    return 0


def memory_figures(instance: CrashrayInstance) -> dict[str, float | int]:
    """PSS and RSS (MiB) of the instance's processes, and of the chDB owner's process alone.
    RSS counts shared pages once per process, so its sum overstates; PSS does not."""
    pids = crashray_pids(instance)
    table = process_table()
    # On one node the owner is a part of the shared process (actors/shared_process.py).
    owner = [p for p in pids if p in table and ("ClickHouseOwner" in table[p].cmdline
                                                or "SharedProcess" in table[p].cmdline)]
    mib = 1024.0
    return {"pss_mib": round(memory_of(pids).pss_kib / mib, 1),
            "rss_sum_mib": round(sum(rss_kib(p) for p in pids) / mib, 1),
            "processes": len(pids),
            "chdb_owner_pss_mib": round(memory_of(set(owner)).pss_kib / mib, 1),
            "chdb_owner_rss_mib": round(sum(rss_kib(p) for p in owner) / mib, 1)}


# --- breakdown (in process, after Crashray stopped) -------------------------------------------


class _Clock:
    """Time spent per label during one request, and how many calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextlib.contextmanager
    def measure(self, label: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started
            self.calls[label] = self.calls.get(label, 0) + 1

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


class _TimedStore:
    """A ClickHouseStore whose public methods are timed; its client's queries are counted."""

    def __init__(self, store: Any, clock: _Clock) -> None:
        self._store, self._clock = store, clock
        client = store._read  # this thread's reading client (the benchmark runs in one)
        query = client.query

        def counted(*args: Any, **kwargs: Any) -> Any:
            clock.calls["clickhouse queries"] = clock.calls.get("clickhouse queries", 0) + 1
            return query(*args, **kwargs)

        client.query = counted

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            with self._clock.measure(f"ch {name}"):
                return method(*args, **kwargs)
        return timed


class _TimedConnection:
    def __init__(self, conn: Any, clock: _Clock) -> None:
        self._conn, self._clock = conn, clock

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        with self._clock.measure("pg statements"):
            return self._conn.execute(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class _TimedPool:
    def __init__(self, pool: Any, clock: _Clock) -> None:
        self._pool, self._clock = pool, clock

    @contextlib.contextmanager
    def connection(self) -> Iterator[_TimedConnection]:
        with self._pool.connection() as conn:
            yield _TimedConnection(conn, self._clock)

    def close(self) -> None:
        self._pool.close()


def _in_process_calls(svc: Any, token: str, issue_ids: Sequence[int], largest: int
                      ) -> dict[str, Callable[[int], object]]:
    """What each route of serve_apps/api/ calls (its access chain, then its view), without
    Serve and HTTP."""
    from serve_apps.api import deps, events, issues
    from serve_apps.api.issue_views import issue_detail, issue_stream

    creds = deps.Credentials(f"Bearer {token}", None, None, "GET")

    def stream(query: str) -> Callable[[int], object]:
        def call(n: int) -> object:
            who = deps.caller(creds, svc)
            scope = deps.project_access("event:read")(ORG, PROJECT, who, svc)
            return issue_stream(svc, scope.project.organization_id, [scope.project],
                                [("query", query), ("statsPeriod", "24h")],
                                f"http://127.0.0.1/api/0/projects/{ORG}/{PROJECT}/issues/")
        return call

    def issue_page(pick: Callable[[int], int]) -> Callable[[int], object]:
        def call(n: int) -> object:
            issue_id = pick(n)
            scope = deps.issue_access("event:read")(issue_id, deps.caller(creds, svc), svc)
            detail = issue_detail(svc, scope.project, scope.issue)
            tags_scope = deps.issue_access("event:read")(issue_id, deps.caller(creds, svc), svc)
            return detail, issues.issue_tags(tags_scope, svc)
        return call

    def event_page(pick: Callable[[int], int]) -> Callable[[int], object]:
        def call(n: int) -> object:
            issue_id = pick(n)
            scope = deps.issue_access("event:read")(issue_id, deps.caller(creds, svc), svc)
            return events.issue_event("latest", scope, svc)
        return call

    def cycled(n: int) -> int:
        return issue_ids[n % len(issue_ids)]

    return {"stream_default": stream(""), "stream_search": stream(SEARCH_QUERY),
            "issue_page": issue_page(cycled), "event_page": event_page(cycled),
            "issue_page_largest": issue_page(lambda n: largest),
            "event_page_largest": event_page(lambda n: largest)}


def _summarize_breakdown(totals_ms: list[float], parts: list[dict[str, float]],
                         calls: list[dict[str, int]]) -> dict[str, Any]:
    labels = sorted({k for p in parts for k in p})
    mean_parts = {k: round(sum(p.get(k, 0.0) for p in parts) * 1000 / len(parts), 1)
                  for k in labels}
    accounted = sum(mean_parts.values())
    mean_total = sum(totals_ms) / len(totals_ms)
    return {"p50_ms": round(percentile(totals_ms, 50) or 0.0, 1),
            "mean_ms": round(mean_total, 1),
            "mean_parts_ms": dict(sorted(mean_parts.items(), key=lambda kv: -kv[1])),
            "other_python_ms": round(mean_total - accounted, 1),
            "calls_per_request": {k: round(sum(c.get(k, 0) for c in calls) / len(calls), 1)
                                  for k in sorted({k for c in calls for k in c})}}


def breakdown(data_dir: Path, token: str, issue_ids: Sequence[int], largest: int,
              requests: int, warmup: int) -> dict[str, dict[str, Any]]:
    """The API's code in this process on the stopped instance's databases, timed by part."""
    from psycopg_pool import ConnectionPool

    from cluster.embedded_postgres import EmbeddedPostgres
    from serve_apps.api.config import ApiConfig
    from serve_apps.api.deps import Services
    from storage.clickhouse import ClickHouseStore, clickhouse_dsn

    server = EmbeddedPostgres(data_dir)
    url = server.start()
    dsn = clickhouse_dsn(None, data_dir)
    store = ClickHouseStore(dsn)
    clock = _Clock()
    pool = ConnectionPool(url, min_size=1, max_size=4, open=True)
    try:
        # The API's replica reaches chDB through the owner actor (Ray); this store holds it.
        config = ApiConfig(postgres_url=url, clickhouse_dsn=dsn, base_url="http://127.0.0.1",
                           max_page_size=100)
        svc = Services(config, _TimedPool(pool, clock), _TimedStore(store, clock))  # type: ignore[arg-type]
        results = {}
        for name, call in _in_process_calls(svc, token, issue_ids, largest).items():
            count = requests if not name.endswith("_largest") else max(5, requests // 5)
            totals, parts, calls = [], [], []
            for n in range(warmup + count):
                clock.reset()
                started = time.perf_counter()
                call(n)
                elapsed = time.perf_counter() - started
                if n >= warmup:
                    totals.append(elapsed * 1000)
                    parts.append(dict(clock.seconds))
                    calls.append(dict(clock.calls))
            results[name] = _summarize_breakdown(totals, parts, calls)
            print(f"  {name}: in process p50 {results[name]['p50_ms']} ms",
                  file=sys.stderr, flush=True)
        return results
    finally:
        pool.close()
        store.close()
        server.stop()


# --- report ------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def latency_table(timings: Sequence[Timing]) -> str:
    rows = [("scenario", "requests", "p50 ms", "p99 ms", "mean ms", "target p50/p99", "met")]
    for t in timings:
        s = t.scenario
        target = "" if s.target_p50_ms is None else \
            f"≤ {s.target_p50_ms:g} / ≤ {s.target_p99_ms:g}"
        errors = f" ({sum(t.errors.values())} errors)" if t.errors else ""
        rows.append((s.label, f"{len(t.samples_ms)}{errors}", _fmt(t.figure(50)),
                     _fmt(t.figure(99)), _fmt(t.mean_ms), target, t.met))
    return _table(rows)


def breakdown_table(results: dict[str, dict[str, Any]], timings: dict[str, Timing]) -> str:
    rows = [("scenario", "HTTP p50", "in-process p50", "ClickHouse", "PostgreSQL",
             "rest (Python)", "CH queries", "PG statements")]
    for name, r in results.items():
        parts = r["mean_parts_ms"]
        ch = sum(v for k, v in parts.items() if k.startswith("ch "))
        top = max(((k, v) for k, v in parts.items() if k.startswith("ch ")),
                  key=lambda kv: kv[1], default=None)
        ch_text = f"{ch:,.1f}" + (f" ({top[0][3:]} {top[1]:,.1f})" if top else "")
        calls = r["calls_per_request"]
        http_p50 = timings[name].figure(50) if name in timings else None
        rows.append((name, _fmt(http_p50), _fmt(r["p50_ms"]), ch_text,
                     _fmt(parts.get("pg statements")), _fmt(r["other_python_ms"]),
                     str(calls.get("clickhouse queries", 0)),
                     str(calls.get("pg statements", 0))))
    return _table(rows) + ("\n(ms; ClickHouse, PostgreSQL and rest are means per request,"
                           " the largest ClickHouse call in brackets)")


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def load_lines(loaded: Loaded, start_s: float, check: Verification) -> list[str]:
    s, t = loaded.summary, loaded.summary["timings"]
    main = s["main"]
    rows = s["rows"]
    write_s = t["arrow_build_s"] + t["clickhouse_insert_s"]
    return [
        f"data: {main['events']:,} events in {len(main['issues']):,} issues of"
        f" {ORG}/{PROJECT} ({main['events_last_24h']:,} in the last 24 h,"
        f" {main['issues_seen_last_24h']:,} issues seen then; largest issue"
        f" {main['largest_issue_events']:,} events, median {main['median_issue_events']:g});"
        f" {rows - main['events']:,} noise events in"
        f" {', '.join(p['org'] + '/' + p['project'] for p in s['projects'][1:])}",
        f"bulk load: {rows:,} rows in {loaded.wall_s:.1f} s wall"
        f" ({rows / loaded.wall_s:,.0f} rows/s overall); events → ClickHouse"
        f" {write_s:.1f} s ({rows / write_s:,.0f} rows/s: Arrow build {t['arrow_build_s']:.1f} s,"
        f" chDB insert {t['clickhouse_insert_s']:.1f} s), OPTIMIZE FINAL"
        f" {t['optimize_s']:.1f} s, planning + one Relay-processed event per issue"
        f" {t['plan_s']:.1f} s, PostgreSQL {t['postgres_s']:.1f} s",
        f"crashray up on the loaded data dir: {start_s:.1f} s",
        f"API check: {check.issues_listed:,}/{check.issues_expected:,} issues listed in"
        f" {check.pages} pages ({check.seconds:.1f} s), {len(check.mismatches)} mismatches,"
        f" other organization hidden: {check.hidden_other_org}"
        + ("" if check.ok else " — FAILED: " + "; ".join(check.mismatches[:5])),
    ]


# --- main --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--events", type=int, default=1_000_000,
                      help="events of the main project (default 1,000,000)")
    data.add_argument("--issues", type=int, default=5_000,
                      help="issues of the main project (default 5,000)")
    data.add_argument("--noise-share", type=float, default=0.02,
                      help="events of each of the two noise projects, as a share of"
                           " --events (default 0.02)")
    data.add_argument("--seed", type=int, default=1)
    data.add_argument("--batch-rows", type=int, default=100_000,
                      help="rows per ClickHouse insert (default 100,000)")
    data.add_argument("--no-optimize", action="store_true",
                      help="leave ClickHouse's parts unmerged after the load")
    data.add_argument("--reuse", type=Path, metavar="DATA_DIR",
                      help="skip the load: a data dir kept by an earlier --keep-data run")
    data.add_argument("--keep-data", action="store_true",
                      help="keep the data dir (for --reuse)")
    timing = parser.add_argument_group("timing")
    timing.add_argument("--requests", type=int, default=50,
                        help="timed requests per scenario (default 50; a fifth of that on"
                             " the largest issue)")
    timing.add_argument("--warmup", type=int, default=5,
                        help="untimed requests first (default 5)")
    timing.add_argument("--no-breakdown", action="store_true",
                        help="skip the in-process breakdown after Crashray stops")
    timing.add_argument("--port", type=int, help="HTTP port (default: a free one)")
    return parser


@dataclass
class Run:
    loaded: Loaded
    start_s: float = 0.0
    check: Verification = field(default_factory=Verification)
    timings: list[Timing] = field(default_factory=list)
    memory_idle: dict[str, float | int] = field(default_factory=dict)
    memory_after: dict[str, float | int] = field(default_factory=dict)
    issue_ids: list[int] = field(default_factory=list)
    largest: int = 0
    search_hits: int = 0
    #: The machine's 1-minute load average before and after timing (other tests share it).
    load_average: tuple[float, float] = (0.0, 0.0)
    breakdown: dict[str, dict[str, Any]] = field(default_factory=dict)


def measure_instance(run: Run, instance: CrashrayInstance, args: argparse.Namespace) -> None:
    port = urlsplit(instance.dsn).port or 0
    client = ApiClient(port, run.loaded.summary["token"])
    try:
        print("checking the API against the loaded data ...", file=sys.stderr, flush=True)
        run.check = verify(client, run.loaded.summary)
        run.memory_idle = memory_figures(instance)
        run.issue_ids = [int(i["id"]) for i in client.get_json(stream_path(""))]
        run.search_hits = len(client.get_json(stream_path(SEARCH_QUERY, "&limit=100")))
        issues = run.loaded.summary["main"]["issues"]
        run.largest = int(max(issues, key=lambda i: issues[i]["times_seen"]))
        print("timing ...", file=sys.stderr, flush=True)
        before = os.getloadavg()[0]
        for scenario in scenarios(run.issue_ids, run.largest, args.requests):
            run.timings.append(run_scenario(client, scenario, args.warmup))
        run.load_average = (before, os.getloadavg()[0])
        run.memory_after = memory_figures(instance)
    finally:
        client.close()


def report(run: Run, argv: Sequence[str]) -> str:
    summary = run.loaded.summary
    timings = {t.scenario.name: t for t in run.timings}
    lines = [*load_lines(run.loaded, run.start_s, run.check), ""]
    for when, m in (("after the check", run.memory_idle), ("after timing", run.memory_after)):
        lines.append(f"memory {when}: PSS {m['pss_mib']:,} MiB ({m['processes']} processes),"
                     f" RSS summed {m['rss_sum_mib']:,} MiB; chDB owner PSS"
                     f" {m['chdb_owner_pss_mib']:,} / RSS {m['chdb_owner_rss_mib']:,} MiB")
    largest = summary["main"]["issues"][str(run.largest)]["times_seen"]
    lines += ["", f"stream search hits (first page of up to 100): {run.search_hits};"
              f" issue/event pages cycle through the {len(run.issue_ids)} issues of the"
              f" stream's first page; largest issue {run.largest} ({largest:,} events)",
              f"machine load average (1 min) before / after timing:"
              f" {run.load_average[0]:.2f} / {run.load_average[1]:.2f} on"
              f" {os.cpu_count()} cores", latency_table(run.timings)]
    if run.breakdown:
        lines += ["", "where the time goes (the same API code in this process, no HTTP/Serve/"
                  "Ray; chDB and PostgreSQL as the instance had them):",
                  breakdown_table(run.breakdown, timings)]
    lines += ["", f"command: {shlex.join(['python', 'bench/query.py', *argv])}"]
    lines.append(json.dumps({
        "benchmark": "query", "command": shlex.join(["python", "bench/query.py", *argv]),
        "events": summary["main"]["events"], "issues": len(summary["main"]["issues"]),
        "rows_loaded": summary["rows"], "load_wall_s": round(run.loaded.wall_s, 1),
        "load_rows_per_s": round(summary["rows"] / run.loaded.wall_s),
        "clickhouse_rows_per_s": round(summary["rows"] / (
            summary["timings"]["arrow_build_s"] + summary["timings"]["clickhouse_insert_s"])),
        "load": summary["timings"], "crashray_start_s": round(run.start_s, 1),
        "check_ok": run.check.ok, "check_mismatches": len(run.check.mismatches),
        "memory_idle": run.memory_idle, "memory_after": run.memory_after,
        "scenarios": {t.scenario.name: t.as_json() for t in run.timings},
        "largest_issue_events": largest, "load_average": run.load_average, "search_hits": run.search_hits,
        "breakdown": run.breakdown}))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    data_dir = args.reuse or Path(tempfile.mkdtemp(prefix="crb-q-"))
    instance: CrashrayInstance | None = None
    try:
        if args.reuse:
            summary = json.loads((data_dir / SUMMARY_FILE).read_text())
            loaded = Loaded(summary, summary["wall_s"])
        else:
            loaded = bulk_load(data_dir, args)
        run = Run(loaded)
        started = time.perf_counter()
        instance = start_crashray(data_dir, args.port or free_port())
        run.start_s = time.perf_counter() - started
        measure_instance(run, instance, args)
        stop_crashray(instance)
        _kill_leftovers(data_dir)
        instance = None
        if not args.no_breakdown:
            print("breakdown (in process) ...", file=sys.stderr, flush=True)
            run.breakdown = breakdown(data_dir, loaded.summary["token"], run.issue_ids,
                                      run.largest, args.requests, args.warmup)
        print(report(run, argv))
        return 0 if run.check.ok and not any(t.errors for t in run.timings) else 1
    finally:
        if instance is not None:
            stop_crashray(instance)
            _kill_leftovers(data_dir)
        if args.keep_data or args.reuse:
            print(f"data kept in {data_dir} (python bench/query.py --reuse {data_dir})",
                  file=sys.stderr)
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
            # start_crashray's log sits beside the data dir (bench/ingest.py).
            with contextlib.suppress(FileNotFoundError):
                (data_dir.parent / f"{data_dir.name}-crashray-up.log").unlink()


if __name__ == "__main__":
    sys.exit(main())
