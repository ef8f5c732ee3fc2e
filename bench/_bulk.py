"""Bulk loading for bench/query.py: millions of stored events without the ingest pipeline.

Fills the databases of a data dir whose Crashray is not running (the embedded PostgreSQL
under ``DATA_DIR/postgres`` and chDB under ``DATA_DIR/clickhouse``), so that a later
``crashray up --data-dir DATA_DIR`` finds a project with N events in M issues:

1. Every issue gets one real event: the Python or Node SDK corpus event with its own
   exception type, value, level and top in-app frame, normalized, scrubbed and grouped by
   ``events.process.EventProcessor`` as a consumer would. Its grouping hash, title, culprit
   and metadata become the issue's.
2. Events are planned with numpy: per-issue counts from a Zipf law (most issues see a few
   events, some very many), each issue active over its own window of the last 14 days
   (most events old, about a tenth in the last 24 h), users by id and e-mail (some
   anonymous), tags browser/os/url/server_name, environment and a release per day.
3. PostgreSQL: migrations and bootstrap as ``crashray up`` runs them, two more projects
   (one in the same organization, one in another) for noise, then the issues (their
   counters, first/last seen and releases computed from the planned events) and their
   ``group_hashes`` rows by COPY.
4. chDB: migrations, then the events as Arrow tables of ``batch_rows`` rows, built by
   taking the issue's row (events/rows.py ``events_table``) once per event and replacing
   the per-event columns; then each project's hourly rollup is counted from its rows
   (``ClickHouseStore.count_loaded_events``: consumers count what they store; a bulk load
   that bypasses them counts here).
   ``OPTIMIZE … FINAL`` leaves one part per partition, as background merges would.

Run as a script (bench/query.py runs it in a child process, so that chDB, which allows one
process per data path, is closed for certain before Crashray starts):

    python bench/_bulk.py --data-dir DIR --events 100000 --issues 1000 --summary out.json

The summary (JSON) holds the API token, the slugs, load timings, and per issue of the main
project what the API must answer: times_seen, distinct users, first/last seen and the
hourly counts of the last 48 hours.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

#: Events of the last this many seconds; a little under 14 days, so that every issue is
#: still within ``statsPeriod=14d`` minutes after the load.
WINDOW_S = 14 * 86_400 - 3_600
#: Zipf exponent of events per issue: 1.1 gives the largest of 5,000 issues ~15 % of the
#: events and the median issue a few dozen per million.
ZIPF_EXPONENT = 1.1
#: The busiest issues (this share of them) run for the last 7-14 days up to now.
LONG_RUNNING_SHARE = 0.05
#: Share of the other issues still happening now; the rest stopped at some point.
STILL_ACTIVE_SHARE = 0.3
#: Events without a user (Sentry counts them in no user count).
ANONYMOUS_SHARE = 0.15
RETENTION_DAYS = 90
US = 1_000_000
HOUR_US = 3_600 * US
#: Hours of per-issue hourly counts written to the summary (the API shows 24).
SUMMARY_HOURS = 48

CORPUS = {"python": "python-sdk-2.75.0-exception.envelope",
          "node": "node-sdk-11.12.0-exception.envelope"}

EXCEPTIONS = (  # (type, value template, weight); {n} is a number, {name} a word
    ("TimeoutError", "Read timeout on upstream {name}-{n}", 4),
    ("ConnectionError", "Connection timeout after {n}s to {name}", 3),
    ("ValueError", "invalid literal for int() with base 10: '{name}{n}'", 8),
    ("KeyError", "'{name}_{n}'", 8),
    ("TypeError", "'NoneType' object is not subscriptable ({name})", 8),
    ("AttributeError", "'NoneType' object has no attribute '{name}'", 8),
    ("ZeroDivisionError", "division by zero", 4),
    ("DatabaseError", "deadlock detected on relation {name}_{n}", 3),
    ("PermissionError", "user {n} may not access {name}", 3),
    ("RuntimeError", "{name} worker exited with code {n}", 3),
)
NODE_EXCEPTIONS = (
    ("TypeError", "Cannot read properties of undefined (reading '{name}')", 10),
    ("Error", "Request failed with status code {n}", 6),
    ("Error", "timeout of {n}ms exceeded", 4),
    ("RangeError", "Invalid array length {n}", 2),
    ("SyntaxError", "Unexpected token < in JSON at position {n}", 3),
)
VERBS = ("handle", "load", "save", "render", "parse", "sync", "fetch", "update", "create",
         "delete", "check", "compute", "send", "apply", "resolve", "build", "export",
         "import", "merge", "notify", "refresh", "validate", "schedule", "lookup", "charge")
NOUNS = ("order", "invoice", "user", "cart", "payment", "session", "report", "profile",
         "token", "account", "product", "shipment", "coupon", "review", "message", "upload",
         "webhook", "search", "feed", "price", "stock", "refund", "plan", "team", "event")
MODULES = ("billing.api", "shop.views", "accounts.service", "catalog.tasks", "search.index",
           "notify.worker", "auth.session", "reports.export")
LEVELS = (("error", 0.9), ("warning", 0.06), ("fatal", 0.04))
BROWSERS = (("Chrome 120.0", "Chrome", 0.34), ("Chrome 119.0", "Chrome", 0.18),
            ("Chrome 118.0", "Chrome", 0.08), ("Firefox 121.0", "Firefox", 0.08),
            ("Firefox 120.0", "Firefox", 0.04), ("Safari 17.1", "Safari", 0.1),
            ("Mobile Safari 17.1", "Mobile Safari", 0.1), ("Edge 120.0", "Edge", 0.08))
OSES = (("Windows 10", "Windows", 0.45), ("Mac OS X 14.1", "Mac OS X", 0.2),
        ("iOS 17.1", "iOS", 0.15), ("Android 14", "Android", 0.15),
        ("Ubuntu 22.04", "Ubuntu", 0.05))
URL_PATHS = ("/", "/login", "/checkout", "/cart", "/orders", "/orders/4821", "/search",
             "/settings", "/settings/billing", "/products", "/products/77", "/reports",
             "/team", "/invoices", "/invoices/2026-113", "/signup", "/help", "/api/graphql")
SERVERS = tuple(f"web-{n}" for n in range(1, 9))
ENVIRONMENTS = (("production", 0.85), ("staging", 0.15))


@dataclass(frozen=True)
class ProjectLoad:
    """One project to fill: ``events`` events in ``issues`` issues."""

    org_slug: str
    project_slug: str
    events: int
    issues: int
    seed: int


@dataclass(frozen=True)
class EventPlan:
    """Per event (sorted by issue): its issue's index and what varies between events."""

    issue: np.ndarray  # int64, index into the project's issues
    timestamp_us: np.ndarray  # int64, unix microseconds
    user: np.ndarray  # int64, -1: anonymous
    browser: np.ndarray
    os: np.ndarray
    url: np.ndarray
    server: np.ndarray
    environment: np.ndarray
    users_total: int

    def __len__(self) -> int:
        return len(self.issue)


@dataclass(frozen=True)
class IssueTotals:
    """What PostgreSQL's issue rows and the API say, computed from the plan."""

    times_seen: np.ndarray
    first_us: np.ndarray
    last_us: np.ndarray
    users: np.ndarray


def log(message: str) -> None:
    print(f"[bulk] {message}", file=sys.stderr, flush=True)


def _pick(rng: np.random.Generator, weights: Sequence[float], size: int) -> np.ndarray:
    p = np.asarray(weights, dtype=float)
    return rng.choice(len(p), size=size, p=p / p.sum())


# --- planning (pure numpy) -------------------------------------------------------------


def events_per_issue(n_events: int, n_issues: int, rng: np.random.Generator) -> np.ndarray:
    """At least one event each; the rest spread by a Zipf law over a random ranking."""
    if n_events < n_issues:
        raise SystemExit(f"--events {n_events} must be at least --issues {n_issues}"
                         " (every issue has an event)")
    weights = 1.0 / np.arange(1, n_issues + 1) ** ZIPF_EXPONENT
    counts = 1 + rng.multinomial(n_events - n_issues, weights / weights.sum())
    return counts.astype(np.int64)


def issue_windows(counts: np.ndarray, now_us: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) unix µs of each issue's activity: the busiest run from 7-14 days ago
    until now, a share of the others is still active, the rest stopped at some point."""
    n = len(counts)
    first_age = rng.uniform(0, WINDOW_S, n)
    last_age = rng.uniform(0, 1, n) * first_age
    long_running = counts >= np.quantile(counts, 1 - LONG_RUNNING_SHARE)
    first_age[long_running] = rng.uniform(WINDOW_S / 2, WINDOW_S, long_running.sum())
    active = long_running | (rng.uniform(0, 1, n) < STILL_ACTIVE_SHARE)
    last_age[active] = rng.uniform(0, 600, active.sum())
    last_age = np.minimum(last_age, first_age)
    return now_us - (first_age * US).astype(np.int64), now_us - (last_age * US).astype(np.int64)


def plan_events(n_events: int, n_issues: int, now_us: int, rng: np.random.Generator
                ) -> EventPlan:
    counts = events_per_issue(n_events, n_issues, rng)
    first, last = issue_windows(counts, now_us, rng)
    issue = np.repeat(np.arange(n_issues, dtype=np.int64), counts)
    span = (last - first)[issue]
    timestamp = first[issue] + (rng.uniform(0, 1, n_events) * span).astype(np.int64)
    # The first and last events of each issue sit on its window's ends.
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    timestamp[starts] = first
    timestamp[starts + counts - 1] = last
    users_total = max(100, n_events // 20)
    # A few users cause most events (u**2 skews towards low user numbers).
    user = (rng.uniform(0, 1, n_events) ** 2 * users_total).astype(np.int64)
    user[rng.uniform(0, 1, n_events) < ANONYMOUS_SHARE] = -1
    # Each issue leans towards a few URLs (its own offset plus a short geometric tail).
    url = (issue * 7 + rng.geometric(0.5, n_events) - 1) % len(URL_PATHS)
    return EventPlan(
        issue=issue, timestamp_us=timestamp, user=user,
        browser=_pick(rng, [b[2] for b in BROWSERS], n_events),
        os=_pick(rng, [o[2] for o in OSES], n_events), url=url,
        server=rng.integers(0, len(SERVERS), n_events),
        environment=_pick(rng, [e[1] for e in ENVIRONMENTS], n_events),
        users_total=users_total)


def issue_totals(plan: EventPlan, n_issues: int) -> IssueTotals:
    counts = np.bincount(plan.issue, minlength=n_issues)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    known = plan.user >= 0
    pairs = np.unique(plan.issue[known] * (plan.users_total + 1) + plan.user[known])
    users = np.bincount(pairs // (plan.users_total + 1), minlength=n_issues)
    return IssueTotals(counts, np.minimum.reduceat(plan.timestamp_us, starts),
                       np.maximum.reduceat(plan.timestamp_us, starts), users)


def hourly_counts(plan: EventPlan, now_us: int) -> dict[int, dict[int, int]]:
    """Events per issue index and unix hour, over the last ``SUMMARY_HOURS`` hours."""
    since = (now_us // HOUR_US - SUMMARY_HOURS) * HOUR_US
    recent = plan.timestamp_us >= since
    hours = plan.timestamp_us[recent] // HOUR_US
    issues = plan.issue[recent]
    keys, n = np.unique(issues * 1_000_000 + (hours - since // HOUR_US), return_counts=True)
    found: dict[int, dict[int, int]] = {}
    for key, count in zip(keys.tolist(), n.tolist(), strict=True):
        issue, hour = divmod(key, 1_000_000)
        found.setdefault(issue, {})[(since // HOUR_US + hour) * 3_600] = count
    return found


def release_of(timestamp_us: np.ndarray, now_us: int) -> np.ndarray:
    """One release a day: ``app@1.<days since the window began>.0`` (as numbers)."""
    return (timestamp_us - (now_us - WINDOW_S * US)) // (86_400 * US)


def release_name(day: int) -> str:
    return f"app@1.{day}.0"


# --- one real event per issue (sentry-relay) ---------------------------------------------


@dataclass(frozen=True)
class IssueShape:
    platform: str
    type: str
    value: str
    module: str
    function: str
    level: str


def issue_shapes(n_issues: int, rng: np.random.Generator) -> list[IssueShape]:
    """Distinct (module, function) per issue, so each groups apart; 70 % Python, 30 % Node."""
    combos = [(m, f"{v}_{n}") for m in MODULES for v in VERBS for n in NOUNS]
    order = rng.permutation(len(combos))
    shapes = []
    levels = _pick(rng, [w for _, w in LEVELS], n_issues)
    for i in range(n_issues):
        module, function = combos[order[i % len(combos)]]
        if i >= len(combos):
            function = f"{function}_{i // len(combos)}"
        platform = "python" if rng.uniform() < 0.7 else "node"
        table = EXCEPTIONS if platform == "python" else NODE_EXCEPTIONS
        kind = table[int(_pick(rng, [e[2] for e in table], 1)[0])]
        value = kind[1].format(n=int(rng.integers(1, 500)), name=NOUNS[i % len(NOUNS)])
        shapes.append(IssueShape(platform, kind[0], value, module, function,
                                 LEVELS[int(levels[i])][0]))
    return shapes


def corpus_dir() -> Path:
    from _load import corpus_dir as configured

    return configured()


def _event_for(template: dict[str, Any], shape: IssueShape, now: dt.datetime
               ) -> dict[str, Any]:
    event = orjson.loads(orjson.dumps(template))  # a deep copy
    event["timestamp"] = now.timestamp()
    event["level"] = shape.level
    value = event["exception"]["values"][-1]
    value["type"], value["value"] = shape.type, shape.value
    frame = value["stacktrace"]["frames"][-1]
    if shape.platform == "python":
        frame["module"], frame["function"] = shape.module, shape.function
        frame["filename"] = shape.module.replace(".", "/") + ".py"
        frame["abs_path"] = "/srv/app/" + frame["filename"]
    else:
        name = "".join(w.capitalize() if n else w for n, w in enumerate(shape.function.split("_")))
        frame["function"], frame["module"] = name, shape.module.replace(".", "/")
        frame["filename"] = f"/srv/app/{frame['module']}.js"
    return event


def processed_issue_events(shapes: Sequence[IssueShape], project_id: int,
                           now: dt.datetime) -> list[Any]:
    """Each issue's event through Relay normalization, default scrubbing and grouping."""
    from events.process import EventProcessor, ItemContext

    templates = {platform: orjson.loads((corpus_dir() / name).read_bytes().split(b"\n")[2])
                 for platform, name in CORPUS.items()}
    processor = EventProcessor()
    processor.set_scrubbing(project_id, {"scrubData": True, "scrubDefaults": True,
                                         "scrubIpAddresses": True, "sensitiveFields": [],
                                         "excludeFields": []})
    context = ItemContext(project_id, None, now)
    return [processor.process(orjson.dumps(_event_for(templates[s.platform], s, now)), context)
            for s in shapes]


def distinct_hashes(processed: Sequence[Any], project_id: int) -> list[str]:
    """Each issue's primary hash; a hash already taken (should grouping ever put two shapes
    together) is replaced by a synthetic one, so that every issue keeps its own events."""
    seen: set[str] = set()
    hashes = []
    for n, p in enumerate(processed):
        h = p.grouping.primary_hash
        if h in seen:
            h = hashlib.md5(f"crashray-bench:{project_id}:{n}".encode()).hexdigest()
        seen.add(h)
        hashes.append(h)
    return hashes


# --- PostgreSQL ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedProject:
    load: ProjectLoad
    organization_id: int
    project_id: int
    first_issue_id: int
    processed: list[Any]
    hashes: list[str]
    plan: EventPlan
    totals: IssueTotals

    def issue_id(self, index: int) -> int:
        return self.first_issue_id + index


def _utc(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(us))


def _issue_rows(p: LoadedProject, now_us: int) -> Iterator[tuple[Any, ...]]:
    t = p.totals
    first_days = release_of(t.first_us, now_us)
    last_days = release_of(t.last_us, now_us)
    for i, event in enumerate(p.processed):
        last_age_s = (now_us - int(t.last_us[i])) / US
        first_age_s = (now_us - int(t.first_us[i])) / US
        # Issues quiet for three days or more are mostly resolved, as a team would.
        status = "resolved" if last_age_s > 3 * 86_400 and i % 3 else "unresolved"
        substatus = None if status == "resolved" else (
            "new" if first_age_s < 3 * 86_400 else "ongoing")
        e = event.event
        yield (p.issue_id(i), p.project_id, event.issue.title, event.issue.culprit,
               event.issue.type, orjson.dumps(dict(event.issue.metadata)).decode(),
               str(e.get("level") or "error"), str(e.get("platform") or "other"), status,
               substatus, _utc(int(t.first_us[i])), _utc(int(t.last_us[i])),
               int(t.times_seen[i]), release_name(int(first_days[i])),
               release_name(int(last_days[i])))


def copy_issues(conn: Any, projects: Sequence[LoadedProject], now_us: int) -> None:
    """Issues and their hashes by COPY, then the statistics autovacuum would gather."""
    with conn.cursor() as cur:
        with cur.copy("COPY issues (id, project_id, title, culprit, type, metadata, level,"
                      " platform, status, substatus, first_seen, last_seen, times_seen,"
                      " first_release, last_release) FROM STDIN") as copy:
            for p in projects:
                for row in _issue_rows(p, now_us):
                    copy.write_row(row)
        with cur.copy("COPY group_hashes (project_id, hash, issue_id, grouping_config)"
                      " FROM STDIN") as copy:
            for p in projects:
                for i, h in enumerate(p.hashes):
                    copy.write_row((p.project_id, h, p.issue_id(i), "v2"))
        cur.execute("SELECT setval('issues_id_seq', (SELECT max(id) FROM issues))")
    conn.commit()
    conn.autocommit = True
    conn.execute("VACUUM ANALYZE issues")
    conn.execute("VACUUM ANALYZE group_hashes")
    conn.autocommit = False


def create_projects(conn: Any, loads: Sequence[ProjectLoad]) -> tuple[str, list[tuple[int, int]]]:
    """Bootstrap as ``crashray up`` does, then the projects of ``loads``: the admin API token
    and (organization id, project id) of each."""
    from storage.bootstrap import bootstrap, ensure_project

    boot = bootstrap(conn, grouping_config="v2")
    if boot.api_token is None:
        raise SystemExit("the data dir was bootstrapped before: load into a fresh one")
    ids = []
    for load in loads:
        row = conn.execute("SELECT id FROM organizations WHERE slug = %s",
                           (load.org_slug,)).fetchone()
        org_id = int(row[0]) if row else int(conn.execute(
            "INSERT INTO organizations (slug, name) VALUES (%s, %s) RETURNING id",
            (load.org_slug, load.org_slug.capitalize())).fetchone()[0])
        project_id, _ = ensure_project(conn, org_id, load.project_slug, "v2")
        ids.append((org_id, project_id))
    conn.commit()
    return boot.api_token, ids


# --- ClickHouse ----------------------------------------------------------------------------


#: Per-event keys of the stored body (written per event, so dropped from the issue's body).
PER_EVENT_KEYS = ("event_id", "timestamp", "received", "environment", "release", "user",
                  "tags")


def _issue_table(p: LoadedProject) -> tuple[pa.Table, pa.Array]:
    """One events row per issue (its real event, without a body) and the issue's body
    without the per-event keys, as ``",<rest of the object>"`` to follow those keys."""
    from events.rows import EventRow, events_table

    rows = [EventRow(p.organization_id, p.project_id, p.issue_id(i), RETENTION_DAYS, event)
            for i, event in enumerate(p.processed)]
    table = events_table(rows)
    # The stored hash is the issue's (distinct_hashes), whatever grouping said.
    for name, column in (("primary_hash", pa.array(p.hashes, pa.string())),
                         ("body", pa.array([""] * len(rows), pa.string()))):
        index = table.schema.get_field_index(name)
        table = table.set_column(index, table.schema.field(index), column)
    rests = []
    for event in p.processed:
        rest = orjson.dumps({k: v for k, v in event.event.items() if k not in PER_EVENT_KEYS})
        rests.append("," + rest.decode()[1:] if len(rest) > 2 else "}")
    return table, pa.array(rests, pa.string())


def _tag_pieces() -> tuple[list[str], list[str], list[str], list[str]]:
    def pair(k: str, v: str) -> str:
        return orjson.dumps([k, v]).decode()

    return ([pair("browser", b) + "," + pair("browser.name", n) for b, n, _ in BROWSERS],
            [pair("os", o) + "," + pair("os.name", n) for o, n, _ in OSES],
            [pair("url", "https://app.example.com" + u) for u in URL_PATHS],
            [pair("server_name", s) for s in SERVERS])


TAG_KEYS = ("browser", "browser.name", "os", "os.name", "url", "server_name")


def _tags_column(plan: EventPlan, lo: int, hi: int) -> pa.Array:
    """Map(String, String) of the six tags, built from flat key and value arrays."""
    n = hi - lo
    pools = [[b for b, _, _ in BROWSERS], [name for _, name, _ in BROWSERS],
             [o for o, _, _ in OSES], [name for _, name, _ in OSES],
             ["https://app.example.com" + u for u in URL_PATHS], list(SERVERS)]
    choices = [plan.browser, plan.browser, plan.os, plan.os, plan.url, plan.server]
    offsets = np.cumsum([0] + [len(p) for p in pools])[:-1]
    values = pa.array([v for pool in pools for v in pool], pa.string())
    index = np.stack([c[lo:hi] + off for c, off in zip(choices, offsets, strict=True)], axis=1)
    keys = pa.array(list(TAG_KEYS) * n, pa.string())
    items = values.take(pa.array(index.reshape(-1)))
    return pa.MapArray.from_arrays(pa.array(np.arange(0, 6 * n + 1, 6, dtype=np.int32)),
                                   keys, items)


def _event_ids(rng: np.random.Generator, n: int) -> tuple[list[str], list[str]]:
    """Random UUIDs as ClickHouse reads them (dashed) and as event bodies carry them."""
    raw = rng.bytes(16 * n).hex()
    plain = [raw[32 * i:32 * i + 32] for i in range(n)]
    dashed = [f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" for h in plain]
    return dashed, plain


def event_batches(p: LoadedProject, now_us: int, batch_rows: int, rng: np.random.Generator
                  ) -> Iterator[pa.Table]:
    from events.rows import EVENTS_SCHEMA

    issues, rests = _issue_table(p)
    browser_p, os_p, url_p, server_p = _tag_pieces()
    envs = [e for e, _ in ENVIRONMENTS]
    plan = p.plan
    for lo in range(0, len(plan), batch_rows):
        hi = min(lo + batch_rows, len(plan))
        sl = slice(lo, hi)
        issue_index = pa.array(plan.issue[sl])
        table = issues.take(issue_index)
        dashed, plain = _event_ids(rng, hi - lo)
        ts = plan.timestamp_us[sl]
        releases = [release_name(d) for d in release_of(ts, now_us).tolist()]
        environments = [envs[e] for e in plan.environment[sl].tolist()]
        users = plan.user[sl].tolist()
        # The per-event keys are formatted here, the issue's rest of the body joined on in
        # Arrow (a Python string of ~6 KB per event would cost more than everything else).
        heads = [
            f'{{"event_id":"{event_id}","timestamp":{t / US:.6f},"received":{t / US:.6f},'
            f'"environment":"{env}","release":"{release}"'
            + ("" if user < 0 else f',"user":{{"id":"u{user}","email":"user{user}@example.com"}}')
            + f',"tags":[{browser_p[b]},{os_p[o]},{url_p[u]},{server_p[srv]}]'
            for event_id, t, env, release, user, b, o, u, srv in zip(
                plain, ts.tolist(), environments, releases, users, plan.browser[sl].tolist(),
                plan.os[sl].tolist(), plan.url[sl].tolist(), plan.server[sl].tolist(),
                strict=True)]
        bodies = pc.binary_join_element_wise(pa.array(heads, pa.string()),
                                             rests.take(issue_index), "")
        timestamps = pa.array(ts, pa.timestamp("us", tz="UTC"))
        columns = {
            "event_id": pa.array(dashed, pa.string()), "timestamp": timestamps,
            "received": timestamps, "environment": pa.array(environments, pa.string()),
            "release": pa.array(releases, pa.string()),
            "server_name": pa.array(SERVERS, pa.string()).take(pa.array(plan.server[sl])),
            "user_id": pa.array(["" if u < 0 else f"u{u}" for u in users], pa.string()),
            "user_email": pa.array(["" if u < 0 else f"user{u}@example.com" for u in users],
                                   pa.string()),
            "tags": _tags_column(plan, lo, hi), "body": bodies,
        }
        for name, column in columns.items():
            table = table.set_column(table.schema.get_field_index(name),
                                     EVENTS_SCHEMA.field(name), column)
        yield table


@dataclass(frozen=True)
class ClickHouseTimings:
    rows: int
    build_s: float
    insert_s: float
    optimize_s: float


def load_clickhouse(data_dir: Path, projects: Sequence[LoadedProject], now_us: int,
                    batch_rows: int, optimize: bool, seed: int) -> ClickHouseTimings:
    from storage.clickhouse import ClickHouseStore, clickhouse_dsn

    store = ClickHouseStore(clickhouse_dsn(None, data_dir))
    rng = np.random.default_rng(seed)
    build_s = insert_s = optimize_s = 0.0
    rows = 0
    try:
        store.migrate()
        for p in projects:
            started = time.perf_counter()
            for table in event_batches(p, now_us, batch_rows, rng):
                built = time.perf_counter()
                rows += store.insert("events", table)
                done = time.perf_counter()
                build_s += built - started
                insert_s += done - built
                log(f"{p.load.project_slug}: {rows:,} rows stored"
                    f" (build {build_s:.1f} s, insert {insert_s:.1f} s)")
                started = time.perf_counter()
            store.count_loaded_events(p.organization_id, p.project_id)
        if optimize:
            started = time.perf_counter()
            for table_name in ("events", "issue_counts_hourly"):
                store.query_rows(f"OPTIMIZE TABLE {table_name} FINAL", {})
            optimize_s = time.perf_counter() - started
            log(f"OPTIMIZE … FINAL took {optimize_s:.1f} s")
    finally:
        store.close()
    return ClickHouseTimings(rows, build_s, insert_s, optimize_s)


# --- the whole load ------------------------------------------------------------------------


def plan_project(load: ProjectLoad, organization_id: int, project_id: int,
                 first_issue_id: int, now: dt.datetime) -> LoadedProject:
    rng = np.random.default_rng(load.seed)
    now_us = int(now.timestamp() * US)
    plan = plan_events(load.events, load.issues, now_us, rng)
    processed = processed_issue_events(issue_shapes(load.issues, rng), project_id, now)
    return LoadedProject(load, organization_id, project_id, first_issue_id, processed,
                         distinct_hashes(processed, project_id), plan,
                         issue_totals(plan, load.issues))


def summary_of(main: LoadedProject, now_us: int) -> dict[str, Any]:
    t = main.totals
    hourly = hourly_counts(main.plan, now_us)
    last_day = main.plan.timestamp_us >= now_us - 86_400 * US
    return {
        "organization": main.load.org_slug, "project": main.load.project_slug,
        "project_id": main.project_id, "events": len(main.plan),
        "events_last_24h": int(last_day.sum()),
        "issues_seen_last_24h": int((t.last_us >= now_us - 86_400 * US).sum()),
        "largest_issue_events": int(t.times_seen.max()),
        "median_issue_events": float(np.median(t.times_seen)),
        "issues": {str(main.issue_id(i)): {
            "times_seen": int(t.times_seen[i]), "users": int(t.users[i]),
            "first_us": int(t.first_us[i]), "last_us": int(t.last_us[i]),
            "hourly": {str(h): c for h, c in hourly.get(i, {}).items()}}
            for i in range(len(t.times_seen))},
    }


def bulk_load(data_dir: Path, loads: Sequence[ProjectLoad], now: dt.datetime,
              batch_rows: int, optimize: bool) -> dict[str, Any]:
    """Fill ``data_dir``; the first of ``loads`` is the main project (summarized)."""
    from cluster.embedded_postgres import EmbeddedPostgres
    from storage import postgres

    now_us = int(now.timestamp() * US)
    server = EmbeddedPostgres(data_dir)
    started = time.perf_counter()
    url = server.start()
    try:
        postgres.migrate(url)
        with postgres.connect(url) as conn:
            token, ids = create_projects(conn, loads)
            postgres_s = time.perf_counter() - started
            started = time.perf_counter()
            projects, next_id = [], 1
            for load, (org_id, project_id) in zip(loads, ids, strict=True):
                projects.append(plan_project(load, org_id, project_id, next_id, now))
                next_id += load.issues
            plan_s = time.perf_counter() - started
            log(f"planned {sum(len(p.plan) for p in projects):,} events of"
                f" {next_id - 1:,} issues in {plan_s:.1f} s")
            started = time.perf_counter()
            copy_issues(conn, projects, now_us)
            postgres_s += time.perf_counter() - started
    finally:
        server.stop()
    log(f"PostgreSQL: migrations, projects, issues and hashes in {postgres_s:.1f} s")
    clickhouse = load_clickhouse(data_dir, projects, now_us, batch_rows, optimize,
                                 seed=loads[0].seed + 1)
    return {"token": token, "now_us": now_us,
            "timings": {"plan_s": round(plan_s, 2), "postgres_s": round(postgres_s, 2),
                        "arrow_build_s": round(clickhouse.build_s, 2),
                        "clickhouse_insert_s": round(clickhouse.insert_s, 2),
                        "optimize_s": round(clickhouse.optimize_s, 2)},
            "rows": clickhouse.rows,
            "projects": [{"org": p.load.org_slug, "project": p.load.project_slug,
                          "project_id": p.project_id, "events": len(p.plan),
                          "issues": p.load.issues} for p in projects],
            "main": summary_of(projects[0], now_us)}


def project_loads(events: int, issues: int, noise_share: float, seed: int
                  ) -> list[ProjectLoad]:
    """The main project (crashray/default) and two noisy neighbours: one in the same
    organization, one in another, each with ``noise_share`` of the main project's events."""
    noise_events = max(1, round(events * noise_share))
    noise_issues = max(1, min(noise_events, issues // 10))
    return [ProjectLoad("crashray", "default", events, issues, seed),
            ProjectLoad("crashray", "noise", noise_events, noise_issues, seed + 10),
            ProjectLoad("other", "other-app", noise_events, noise_issues, seed + 20)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--issues", type=int, default=5_000)
    parser.add_argument("--noise-share", type=float, default=0.02,
                        help="events of each noise project, as a share of --events")
    parser.add_argument("--batch-rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--now", help="ISO 8601 time the events lead up to (default: now)")
    parser.add_argument("--no-optimize", action="store_true",
                        help="leave ClickHouse's parts unmerged after the load")
    parser.add_argument("--summary", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    now = (dt.datetime.fromisoformat(args.now) if args.now else dt.datetime.now(dt.UTC))
    summary = bulk_load(args.data_dir, project_loads(args.events, args.issues,
                                                     args.noise_share, args.seed),
                        now, args.batch_rows, not args.no_optimize)
    args.summary.write_bytes(orjson.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
