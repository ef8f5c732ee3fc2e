"""Measuring one run: storage probes, drain and loss checks, memory, and the report.

A system under test is seen only through ``StoredEvents`` (how many events its database
holds and which of a set of ids): "processed" means committed where a reader finds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from _load import (
    EnvelopeTemplate,
    LoadPlan,
    LoadResult,
    SendRecord,
    Target,
    run_load,
    write_latency_log,
)

#: How often the traced sample and the drain are polled, seconds.
SAMPLE_POLL_S = 0.1
DRAIN_POLL_S = 0.25
MEMORY_POLL_S = 2.0
#: ids per ``= ANY(...)`` / ``IN (...)`` query.
ID_CHUNK = 5000


class StoredEvents(Protocol):
    def count(self) -> int: ...
    def stored_ids(self, event_ids: Sequence[str]) -> set[str]: ...
    def issue_count(self) -> int: ...


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def latency_by_second(path: str) -> str:
    """From a ``--latency-log`` file: per second of the run, the requests due in it and
    their accept latency p50 / p99 / max in ms, and the p99 without the first 2 s."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    by_second: dict[int, list[float]] = {}
    for row in rows:
        by_second.setdefault(int(row["due_s"]), []).append(row["latency_ms"])
    lines = ["second  requests  p50 ms  p99 ms  max ms"]
    for second, values in sorted(by_second.items()):
        lines.append(f"{second:>6}  {len(values):>8}  {percentile(values, 50) or 0:>6.0f}"
                     f"  {percentile(values, 99) or 0:>6.0f}  {max(values):>6.0f}")
    later = [row["latency_ms"] for row in rows if row["due_s"] >= 2.0]
    if later:
        lines.append(f"p99 from the third second on: {percentile(later, 99) or 0:.0f} ms"
                     f" over {len(later)} requests")
    return "\n".join(lines)


def missing_ids(store: StoredEvents, event_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(event_ids), ID_CHUNK):
        found |= store.stored_ids(event_ids[i:i + ID_CHUNK])
    return set(event_ids) - found


# --- memory ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    cmdline: str


def process_table() -> dict[int, ProcessInfo]:
    table: dict[int, ProcessInfo] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # exited while listed
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        table[int(entry.name)] = ProcessInfo(int(entry.name), ppid, cmdline.strip())
    return table


def with_descendants(roots: Iterable[int], table: dict[int, ProcessInfo]) -> set[int]:
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found, todo = set(), [r for r in roots if r in table]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def pss_kib(pid: int) -> int:
    """Proportional set size of ``pid`` (kernel ``smaps_rollup``), 0 once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass  # exited between listing and reading: it holds no memory any more
    return 0


@dataclass(frozen=True)
class MemorySample:
    pss_kib: int
    processes: int


def memory_of(pids: set[int]) -> MemorySample:
    return MemorySample(sum(pss_kib(pid) for pid in pids), len(pids))


class MemoryWatch:
    """The largest total PSS seen while the run goes on, sampled every ``MEMORY_POLL_S``."""

    def __init__(self, sample: Callable[[], MemorySample]) -> None:
        self.sample = sample
        self.peak = MemorySample(0, 0)
        self.last = MemorySample(0, 0)

    async def watch(self) -> None:
        while True:
            await self.take()
            await asyncio.sleep(MEMORY_POLL_S)

    async def take(self) -> None:
        self.last = await asyncio.to_thread(self.sample)
        if self.last.pss_kib > self.peak.pss_kib:
            self.peak = self.last


# --- accept-to-queryable sample ---------------------------------------------------------------

class QueryableSampler:
    """Traces about ``sample_size`` accepted events spread over the run: the time from the
    200 until the event id is found in the store."""

    def __init__(self, store: StoredEvents, plan: LoadPlan) -> None:
        self.store = store
        self.every_s = plan.duration_s / max(1, plan.sample_size)
        self.next_at = 0.0
        self.pending: dict[str, float] = {}
        self.latencies_s: list[float] = []
        self.offering = True

    def offer(self, record: SendRecord) -> None:
        if not self.next_at:
            self.next_at = record.answered_at_wall
        if record.answered_at_wall >= self.next_at:
            self.pending[record.event_id] = record.answered_at_wall
            self.next_at += self.every_s

    async def poll(self) -> None:
        while self.offering or self.pending:
            if self.pending:
                ids = list(self.pending)
                seen = await asyncio.to_thread(self.store.stored_ids, ids)
                now = time.time()
                for event_id in seen:
                    self.latencies_s.append(now - self.pending.pop(event_id))
            await asyncio.sleep(SAMPLE_POLL_S)


# --- drain -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Drain:
    drained_perf: float | None  # when every accepted event was stored; None: timed out
    missing: set[str]


async def wait_for_drain(store: StoredEvents, baseline: int, accepted_ids: list[str],
                         timeout_s: float) -> Drain:
    """Poll until every accepted id is stored (count first, then the exact ids)."""
    deadline = time.perf_counter() + timeout_s
    missing = set(accepted_ids)
    while True:
        stored = await asyncio.to_thread(store.count) - baseline
        if stored >= len(accepted_ids) or time.perf_counter() >= deadline:
            missing = await asyncio.to_thread(missing_ids, store, accepted_ids)
            if not missing:
                return Drain(time.perf_counter(), missing)
        if time.perf_counter() >= deadline:
            return Drain(None, missing)
        await asyncio.sleep(DRAIN_POLL_S)


# --- report ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Report:
    system: str
    mode: str
    offered: str
    sent: int
    accepted: int
    not_accepted: dict[str, int]
    accepted_per_s: float
    processed_per_s: float | None
    drain_s: float | None
    accept_p50_ms: float | None
    accept_p99_ms: float | None
    queryable_p50_ms: float | None
    queryable_p99_ms: float | None
    queryable_traced: int
    queryable_never_seen: int
    memory_peak_mib: float
    memory_end_mib: float
    memory_processes: int
    issues: int
    losses: int
    client_errors: dict[str, int] = field(default_factory=dict)

    def json_line(self) -> str:
        return json.dumps({"benchmark": "ingest", **asdict(self)}, sort_keys=False)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _offered(plan: LoadPlan) -> str:
    if plan.rate_per_s is None:
        return f"concurrency {plan.concurrency} for {plan.duration_s:g} s"
    return f"{plan.rate_per_s:g} ev/s for {plan.duration_s:g} s"


@dataclass(frozen=True)
class RunFacts:
    """What ``measure`` collected, before it becomes a ``Report``."""
    load: LoadResult
    drain: Drain
    sampler: QueryableSampler
    memory: MemoryWatch
    issues: int


def build_report(system: str, plan: LoadPlan, facts: RunFacts) -> Report:
    load, accepted = facts.load, facts.load.accepted
    send_s = max(1e-9, load.ended_perf - load.started_perf)
    drain_s = (None if facts.drain.drained_perf is None
               else facts.drain.drained_perf - load.started_perf)
    latencies = [r.latency_s for r in accepted]
    statuses = Counter(str(r.status) for r in load.records if r.status != 200)
    return Report(
        system=system, mode=plan.mode, offered=_offered(plan), sent=len(load.records),
        accepted=len(accepted), not_accepted=dict(statuses),
        accepted_per_s=round(len(accepted) / send_s, 1),
        processed_per_s=None if drain_s is None else round(len(accepted) / drain_s, 1),
        drain_s=None if drain_s is None else round(drain_s, 2),
        accept_p50_ms=_ms(percentile(latencies, 50)), accept_p99_ms=_ms(percentile(latencies, 99)),
        queryable_p50_ms=_ms(percentile(facts.sampler.latencies_s, 50)),
        queryable_p99_ms=_ms(percentile(facts.sampler.latencies_s, 99)),
        queryable_traced=len(facts.sampler.latencies_s) + len(facts.sampler.pending),
        queryable_never_seen=len(facts.sampler.pending),
        memory_peak_mib=round(facts.memory.peak.pss_kib / 1024, 1),
        memory_end_mib=round(facts.memory.last.pss_kib / 1024, 1),
        memory_processes=facts.memory.last.processes, issues=facts.issues,
        losses=len(facts.drain.missing), client_errors=dict(load.errors))


TABLE_ROWS: tuple[tuple[str, str], ...] = (
    ("mode", "mode"), ("offered load", "offered"), ("envelopes sent", "sent"),
    ("accepted (200)", "accepted"), ("not accepted, by status", "not_accepted"),
    ("accepted events/s", "accepted_per_s"), ("processed events/s", "processed_per_s"),
    ("first send → all stored, s", "drain_s"), ("accept latency p50, ms", "accept_p50_ms"),
    ("accept latency p99, ms", "accept_p99_ms"),
    ("accept → queryable p50, ms", "queryable_p50_ms"),
    ("accept → queryable p99, ms", "queryable_p99_ms"),
    ("  traced events / never seen", "queryable_traced"),
    ("memory PSS peak, MiB", "memory_peak_mib"), ("memory PSS at end, MiB", "memory_end_mib"),
    ("  processes counted", "memory_processes"), ("issues in store", "issues"),
    ("losses (200 but never stored)", "losses"), ("client errors", "client_errors"),
)


def _cell(report: Report, key: str) -> str:
    value = getattr(report, key)
    if key == "queryable_traced":
        return f"{value} / {report.queryable_never_seen}"
    if value is None:
        return "not reached"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
    return str(value)


def format_table(reports: Sequence[Report]) -> str:
    """One column per system, one row per figure."""
    rows = [("", *(r.system for r in reports))]
    rows += [(label, *(_cell(r, key) for r in reports)) for label, key in TABLE_ROWS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


# --- one run ---------------------------------------------------------------------------------

async def measure(target: Target, plan: LoadPlan, template: EnvelopeTemplate,
                  open_store: Callable[[], StoredEvents],
                  sample_memory: Callable[[], MemorySample],
                  latency_log: str | None = None) -> Report:
    """Send the load, wait until it is stored, check for losses; ``open_store`` is called
    once per concurrent reader (the drain and the traced sample). With ``latency_log``, one
    line per request is written there (``write_latency_log``)."""
    store, sample_store = open_store(), open_store()
    baseline = await asyncio.to_thread(store.count)
    sampler, memory = QueryableSampler(sample_store, plan), MemoryWatch(sample_memory)
    sample_task = asyncio.create_task(sampler.poll())
    memory_task = asyncio.create_task(memory.watch())
    try:
        load = await run_load(target, plan, template, sampler.offer)
        if latency_log:
            write_latency_log(latency_log, load)
        await memory.take()
        drain = await wait_for_drain(store, baseline, [r.event_id for r in load.accepted],
                                     plan.drain_timeout_s)
        sampler.offering = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(sample_task), timeout=5.0)
    finally:
        sample_task.cancel()
        memory_task.cancel()
    issues = await asyncio.to_thread(store.issue_count)
    return build_report(target.name, plan, RunFacts(load, drain, sampler, memory, issues))
