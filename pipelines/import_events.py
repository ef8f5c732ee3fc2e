"""``crashray import``: events from files (pipelines/import_sources.py) into one project,
by a Ray Data job on the running instance's Ray cluster.

    driver: sources → ``SourceDescriptor``s → ``ray.data.from_items``
    → ``map_batches(ReadAndProcess)``: read each descriptor's events and process them as a
      consumer does (events/process.py: normalize, scrub and group with the project's
      settings, symbolicate as the consumers do), Arrow batches out
    → ``write_datasink(ImportDatasink)``: in batches of ``CRASHRAY_IMPORT_BATCH_EVENTS``,
      store them with the consumers' own code (actors/store_events.py): issues, counting
      in PostgreSQL, ClickHouse rows, hourly counts through the outbox.

What differs from live ingest, and why:

* No quotas, spike protection or backlog caps: they protect the instance from clients'
  bursts, and an import is an operator's deliberate act that runs at the pace its
  ``CRASHRAY_PIPELINE_CONCURRENCY`` allows.
* Outcomes: every stored event counts as ``accepted`` with reason ``import`` (category
  ``error``/``default`` as a live event's), in the hour it was originally received. Sentry's
  stats readers group by reason as a free string (``stats_v2`` ``groupBy=reason``), and an
  accepted outcome is accepted whatever its reason, so project stats show the history
  where it happened, and a user can still tell imported volume apart. Events skipped as
  stored before and unreadable events count no outcome (a re-run must add nothing); the
  summary reports them.
* No alert rules and no issue lifecycle: imported history happened before; it must not
  notify anyone nor reopen an issue someone resolved meanwhile.
* Timestamps stay the original ones: an event is received at its envelope's ``sent_at``,
  its JSON's ``received``, its file's modification time or Bugsink's receipt time, and
  Relay's window for past timestamps (30 days) is widened (``IMPORT_MAX_SECS_IN_PAST``);
  its future window is not: an event stamped more than a minute after it was received
  (say, later than its envelope's ``sent_at``) gets the received time, as ingest gives it.
  Events older than the project's retention (``CRASHRAY_RETENTION_DAYS``) are counted but
  their rows expire at ClickHouse's next TTL merge, as live ones do.

Resumable: an event id already counted for the project (``processed_events``) is skipped,
so a re-run, or a run after an interrupted one, adds only the missing events; the rows of a
batch interrupted between its ClickHouse insert and its commit are inserted again and
collapse with the first copies (ReplacingMergeTree; readers count distinct ids). Event ids
are remembered ``CRASHRAY_DEDUP_WINDOW_S`` (a day by default): re-run an import within it.

One datasink for all tables, also with a ClickHouse server (``CRASHRAY_CLICKHOUSE_URL``):
Ray's ``write_clickhouse`` writes whatever reaches it in tasks of its own, but which events
may be inserted is decided in the PostgreSQL transaction that counts them
(``record_events``), and their rows must be in ClickHouse before that transaction commits
(the consumers' order); a second sink would either insert duplicates of events stored
before or insert rows whose counts never commit.

Tenant scope: the organization and project are resolved by slug in PostgreSQL by the
command; every row and count is written with both ids, nothing else is read or written.
"""

from __future__ import annotations

import copyreg
import datetime as dt
import logging
import pickle
import sys
import threading
import time
import types
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import ray
from ray.data import Datasink

from events.gcpause import collector_paused
from events.grouping_memo import DEFAULT_MEMO_ENTRIES
from events.process import EventProcessor, InvalidEvent, ItemContext, ProcessedEvent
from events.rows import Outcome
from pipelines import blocks_of
from pipelines.import_sources import RawEvent, SourceDescriptor, read_source

#: Relay's past-timestamp window for imported history: about a century, so an event keeps
#: its timestamp however old (events/process.py ItemContext.max_secs_in_past).
IMPORT_MAX_SECS_IN_PAST: Final = 100 * 365 * 86_400
#: The outcome reason of an imported event (see the module docstring).
IMPORT_REASON: Final = "import"

def _mapping_proxy(items: dict[Any, Any]) -> types.MappingProxyType[Any, Any]:
    return types.MappingProxyType(items)


def _pickle_mapping_proxy(m: types.MappingProxyType[Any, Any]) -> tuple[Any, ...]:
    return (_mapping_proxy, (dict(m),))


# Processed events (grouping results, issue metadata) hold read-only mappings; they cross
# from the processing actors to the write tasks pickled in an Arrow column.
copyreg.pickle(types.MappingProxyType, _pickle_mapping_proxy)

#: What the processing stage hands the datasink, one row per event read: its pickled
#: ``ProcessedEvent``, or the reason it cannot be imported, or ``stored_before``.
RAW_SCHEMA: Final = pa.schema([
    ("origin", pa.string()), ("event_id", pa.string()), ("processed", pa.binary()),
    ("error", pa.string()), ("stored_before", pa.bool_()),
])


@dataclass(frozen=True)
class ImportJob:
    """Where one import writes and how it processes (picklable: sent to the tasks)."""

    postgres_url: str
    clickhouse_dsn: str
    organization_id: int
    project_id: int
    retention_days: int
    #: How long a batch's outbox row stays the job's before the consumers' sweep ships it.
    lease_s: float
    grouping_cache_hashes: int
    #: The consumers' symbolication (actors/symbolicate.SymbolicationConfig) or None.
    symbolication: Any = None
    #: Grouping results each processing actor keeps (``CRASHRAY_GROUPING_MEMO_ENTRIES``).
    grouping_memo_entries: int = DEFAULT_MEMO_ENTRIES


@dataclass(frozen=True)
class ImportLimits:
    concurrency: int
    task_cpus: float
    batch_events: int


@dataclass
class Tally:
    """What a part of the job did (summed by ``ImportProgress``)."""

    imported: int = 0
    skipped: int = 0
    discarded: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    #: The first detail seen for each invalid reason.
    examples: dict[str, str] = field(default_factory=dict)
    issues: set[int] = field(default_factory=set)
    #: Task seconds spent per stage: ``read`` (files, decompression, envelope parsing),
    #: ``process`` (normalize, scrub, symbolicate, group), ``store`` (PostgreSQL, ClickHouse).
    stage_s: dict[str, float] = field(default_factory=dict)
    #: Events grouped, and events whose grouping the processing actors' memo already held
    #: (events/grouping_memo.py).
    grouped: int = 0
    grouping_remembered: int = 0

    def add(self, other: Tally) -> None:
        self.grouped += other.grouped
        self.grouping_remembered += other.grouping_remembered
        for stage, seconds in other.stage_s.items():
            self.stage_s[stage] = self.stage_s.get(stage, 0.0) + seconds
        self.imported += other.imported
        self.skipped += other.skipped
        self.discarded += other.discarded
        self.invalid.update(other.invalid)
        for reason, example in other.examples.items():
            self.examples.setdefault(reason, example)
        self.issues |= other.issues

    @property
    def handled(self) -> int:
        return self.imported + self.skipped + self.discarded + sum(self.invalid.values())

    def note_invalid(self, error: str) -> None:
        reason = error.split(":", 1)[0]
        self.invalid[reason] += 1
        self.examples.setdefault(reason, error)


# --- processing --------------------------------------------------------------------------------
class ReadAndProcess:
    """A Ray Data actor: descriptors in, processed events out (pickled ``ProcessedEvent``s
    in a binary column, or the reason an event cannot be imported)."""

    def __init__(self, job: ImportJob, progress: Any) -> None:
        from actors.store_events import load_project_settings
        from actors.symbolicate import LocalSymbolication
        from storage.postgres import connect

        self.job = job
        self.progress = progress
        self.processor = EventProcessor(
            None if job.symbolication is None else LocalSymbolication(job.symbolication),
            job.grouping_memo_entries)
        # Kept for the job: each batch asks which of its event ids are stored already.
        self.conn = connect(job.postgres_url)
        load_project_settings(self.conn, self.processor, [job.project_id])
        #: The memo's (hits, misses) when the last batch was reported.
        self.memo_seen = (0, 0)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows: list[dict[str, Any]] = []
        started = time.perf_counter()
        raws = [raw for d in batch.to_pylist()
                for raw in read_source(SourceDescriptor(d["path"], d["kind"], d["start"],
                                                        d["end"], None, d["first_line"]))]
        read_s = time.perf_counter() - started
        stored = self.stored_before(raws)
        for raw in raws:
            if raw.error is not None:
                rows.append({"origin": raw.origin, "error": raw.error})
                continue
            if raw.event_id in stored:
                rows.append({"origin": raw.origin, "event_id": raw.event_id,
                             "stored_before": True})
                continue
            rows.append(self.process(raw.origin, raw.payload, raw.received, raw.event_id))
        memo = self.processor.grouping_memo(self.job.project_id)
        timing = Tally(stage_s={"read": read_s, "process":
                                       time.perf_counter() - started - read_s},
                       grouped=memo.misses - self.memo_seen[1],
                       grouping_remembered=memo.hits - self.memo_seen[0])
        self.memo_seen = (memo.hits, memo.misses)
        self.progress.add.remote(timing)  # not waited for: the driver reads it at the end
        return pa.Table.from_pylist(rows, schema=RAW_SCHEMA)

    def stored_before(self, raws: Sequence[RawEvent]) -> set[str]:
        """The event ids of ``raws`` the project has stored: a re-run or a resumed import
        skips them before the costly processing (the datasink checks again, and
        ``record_events`` is the last word)."""
        from storage import delivery

        project = self.job.project_id
        return {event_id for _, event_id in delivery.stored_event_ids(
            self.conn, [(project, r.event_id) for r in raws if r.event_id is not None])}

    def process(self, origin: str, payload: bytes, received: dt.datetime,
                event_id: str | None) -> dict[str, Any]:
        try:
            p = self.processor.process(payload, import_context(self.job, received, event_id))
        except InvalidEvent as exc:
            return {"origin": origin, "error": f"{exc.reason}: {origin}: {exc}"}
        return {"origin": origin, "event_id": p.event_id,
                "processed": pickle.dumps(p.for_storage())}


def import_context(job: ImportJob, received: dt.datetime, event_id: str | None
                   ) -> ItemContext:
    """An imported event's context: received at its original time, no key, no address
    (``{{auto}}`` addresses are removed), no ``sent_at`` (the original clock is kept)."""
    return ItemContext(project_id=job.project_id, key_id=None, received_at=received,
                       envelope_event_id=event_id, organization_id=job.organization_id,
                       max_secs_in_past=IMPORT_MAX_SECS_IN_PAST)


# --- storing -------------------------------------------------------------------------------------
def store_batch(conn: Any, storage: Any, resolver: Any, job: ImportJob,
                events: Sequence[ProcessedEvent]) -> Tally:
    """Store one batch of processed events into the job's project: skip the ids stored
    before (and repeats within the batch), resolve issues, count, insert and queue the
    counts in one transaction, then ship the counts. Raises on failure (the job stops;
    a re-run resumes)."""
    from actors.store_events import resolve_issues
    from storage import delivery

    tally = Tally()
    stored_before = delivery.stored_event_ids(
        conn, [(job.project_id, p.event_id) for p in events])
    firsts: dict[str, ProcessedEvent] = {}
    for p in events:
        if p.event_id in firsts or (job.project_id, p.event_id) in stored_before:
            tally.skipped += 1
        else:
            firsts[p.event_id] = p
    resolved = resolve_issues(resolver, [(job.organization_id, job.project_id, p)
                                         for p in firsts.values()])
    with conn.transaction():
        batch = storage.store_events(conn, resolved, lifecycle=False)
        outcomes = [imported_outcome(job, e.processed) for e in resolved
                    if e.issue_id is not None and e.key in batch.new]
        counts = storage.queue_counts(conn, batch.rows, outcomes)
    if counts is not None:
        storage.ship(conn, [counts])
    tally.imported = len(batch.new)
    tally.discarded = sum(1 for e in resolved if e.issue_id is None)
    tally.skipped += len(resolved) - tally.imported - tally.discarded
    tally.issues = set(batch.new_by_issue)
    return tally


def imported_outcome(job: ImportJob, p: ProcessedEvent) -> Outcome:
    category = "error" if p.event.get("type") == "error" else "default"
    return Outcome(job.organization_id, job.project_id, 0, p.received, "accepted",
                   IMPORT_REASON, category)


@ray.remote(num_cpus=0)
class ImportProgress:
    """The job's running totals, which the write tasks report to and the driver reads."""

    def __init__(self) -> None:
        self.tally = Tally()

    def add(self, tally: Tally) -> None:
        self.tally.add(tally)

    def get(self) -> Tally:
        return self.tally


class ImportDatasink(Datasink[None]):
    """Stores processed events with the consumers' code (actors/store_events.py) in
    batches of ``batch_events``; raises when a batch cannot be stored."""

    def __init__(self, job: ImportJob, batch_events: int, progress: Any) -> None:
        self.job = job
        self.batch_events = batch_events
        self.progress = progress

    @property
    def min_rows_per_write(self) -> int:
        return self.batch_events

    def write(self, blocks: Iterable[pa.Table], ctx: Any) -> None:
        from actors.clickhouse import clickhouse_store
        from actors.grouping import IssueResolver
        from actors.store_events import EventStorage
        from storage.postgres import connect

        with connect(self.job.postgres_url) as conn:
            storage = EventStorage(clickhouse_store(self.job.clickhouse_dsn),
                                   self.job.retention_days, self.job.lease_s)
            resolver = IssueResolver(conn, self.job.grouping_cache_hashes)
            pending: list[ProcessedEvent] = []
            for block in blocks:
                # One block's events at a time (events/gcpause.py): decoding them with the
                # collector running costs several times the decoding itself.
                with collector_paused():
                    read_tally = Tally()
                    for row in block.to_pylist():
                        if row["error"] is not None:
                            read_tally.note_invalid(row["error"])
                        elif row["stored_before"]:
                            read_tally.skipped += 1
                        else:
                            pending.append(pickle.loads(row["processed"]))
                    ray.get(self.progress.add.remote(read_tally))
                    while len(pending) >= self.batch_events:
                        self._store(conn, storage, resolver, pending[:self.batch_events])
                        pending = pending[self.batch_events:]
            if pending:
                with collector_paused():
                    self._store(conn, storage, resolver, pending)

    def _store(self, conn: Any, storage: Any, resolver: Any,
               events: Sequence[ProcessedEvent]) -> None:
        started = time.perf_counter()
        tally = store_batch(conn, storage, resolver, self.job, events)
        tally.stage_s["store"] = time.perf_counter() - started
        ray.get(self.progress.add.remote(tally))


# --- the driver ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImportResult:
    tally: Tally
    took_s: float


def run_import(job: ImportJob, limits: ImportLimits, descriptors: Sequence[SourceDescriptor],
               report: Callable[[Tally, int | None, float], None] | None = None,
               report_every_s: float = 1.0) -> ImportResult:
    """Run the job on the connected Ray cluster; ``report(tally, total, elapsed_s)`` is
    called about every ``report_every_s`` while it runs (``total``: the events the
    sources hold, None when a source does not say)."""
    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    started = time.monotonic()
    progress = ImportProgress.remote()  # type: ignore[attr-defined]
    if descriptors:
        dataset = _dataset(job, limits, descriptors, progress)
        done = threading.Event()
        failure: list[BaseException] = []

        def write() -> None:
            try:
                dataset.write_datasink(ImportDatasink(job, limits.batch_events, progress),
                                       concurrency=limits.concurrency,
                                       ray_remote_args={"num_cpus": limits.task_cpus})
            except BaseException as exc:  # re-raised below, on the driver's thread
                failure.append(exc)
            finally:
                done.set()

        total = _total(descriptors)
        writer = threading.Thread(target=write, name="import-write", daemon=True)
        writer.start()
        while not done.wait(report_every_s):
            if report is not None:
                report(ray.get(progress.get.remote()), total, time.monotonic() - started)
        if failure:
            raise failure[0]
    tally: Tally = ray.get(progress.get.remote())
    ray.kill(progress)
    return ImportResult(tally, time.monotonic() - started)


def _dataset(job: ImportJob, limits: ImportLimits, descriptors: Sequence[SourceDescriptor],
             progress: Any) -> Any:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the command prints its own progress line
    # The processing actors and the write tasks each take ``task_cpus``: the job holds at
    # most twice ``concurrency * task_cpus`` CPUs of the cluster.
    context.execution_options.resource_limits = ray.data.ExecutionResources(
        cpu=2 * limits.concurrency * limits.task_cpus)
    items = [{"path": d.path, "kind": d.kind, "start": d.start, "end": d.end,
              "first_line": d.first_line} for d in descriptors]
    per_descriptor = max(1, (_total(descriptors) or len(descriptors)) // len(descriptors))
    per_batch = max(1, limits.batch_events // per_descriptor)
    # Typed Any: Ray's stubs do not name callable classes among map_batches' functions.
    udf: Any = ReadAndProcess
    # A block per batch of descriptors: one range of JSON lines, or that many files.
    return blocks_of(items, per_batch).map_batches(
        udf, fn_constructor_kwargs={"job": job, "progress": progress}, batch_format="pyarrow",
        batch_size=per_batch, concurrency=limits.concurrency, num_cpus=limits.task_cpus)


def _total(descriptors: Sequence[SourceDescriptor]) -> int | None:
    counts = [d.events for d in descriptors]
    return None if any(c is None for c in counts) else sum(c or 0 for c in counts)


def progress_line(tally: Tally, total: int | None, elapsed_s: float) -> str:
    """``12,345 / 20,000 events (1,234/s), ETA 6 s``, as the command rewrites it."""
    done = tally.handled
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    line = f"{done:,}" + ("" if total is None else f" / {total:,}") + \
        f" events ({rate:,.0f}/s)"
    if total is not None and rate > 0:
        line += f", ETA {max(total - done, 0) / rate:,.0f} s"
    return line


def print_progress(tally: Tally, total: int | None, elapsed_s: float) -> None:
    sys.stderr.write("\r" + progress_line(tally, total, elapsed_s) + "\033[K")
    sys.stderr.flush()


def summary_line(result: ImportResult) -> str:
    """The command's final line: imported, skipped, invalid (with reasons), rate."""
    t = result.tally
    line = (f"imported {t.imported} events into {len(t.issues)} issues, skipped"
            f" {t.skipped} already stored, invalid {sum(t.invalid.values())}")
    if t.invalid:
        line += " (" + ", ".join(f"{reason}: {n}" for reason, n in t.invalid.most_common()) + ")"
    if t.discarded:
        line += f", discarded {t.discarded} (their issues were deleted)"
    return line + f"; {t.handled / max(result.took_s, 1e-9):.0f} events/s"


def stage_line(tally: Tally) -> str:
    """``task time per stage: read 3% (…), process 71% (…), store 26% (…); grouped 400,
    alike to one grouped before 19,600`` (groupings: two an event during a grouping
    version's transition)."""
    total = sum(tally.stage_s.values()) or 1.0
    return "task time per stage: " + ", ".join(
        f"{stage} {tally.stage_s.get(stage, 0.0) / total:.0%}"
        f" ({tally.stage_s.get(stage, 0.0):.1f} s)"
        for stage in ("read", "process", "store")) + \
        f"; grouped {tally.grouped:,}, alike to one grouped before {tally.grouping_remembered:,}"


def invalid_examples(result: ImportResult) -> list[str]:
    return [result.tally.examples[r] for r, _ in result.tally.invalid.most_common()]


def as_paths(texts: Sequence[str]) -> list[Path]:
    return [Path(t).expanduser().resolve() for t in texts]
