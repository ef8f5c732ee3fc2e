"""``crashray reprocess``: a project's stored events symbolicated and grouped again with its
current source maps, rules and grouping config, their rows replaced, and events moved
between issues (Sentry's "reprocessing": what makes "I uploaded the source maps after the
errors came in" and "I added a fingerprint rule" apply to the events already stored).

The job, like ``crashray export`` (pipelines/export.py), runs on the instance's Ray
cluster: the driver cuts the project's events into slices of whole hours (at most
``CRASHRAY_REPROCESS_SLICE_EVENTS`` events each) and records them in a PostgreSQL job row
(storage/reprocess.py); ``map_batches`` runs ``reprocess_slice`` on at most
``CRASHRAY_PIPELINE_CONCURRENCY`` tasks of ``CRASHRAY_PIPELINE_TASK_CPUS`` CPUs. A task
reads a slice's events through the ClickHouse store, takes each stored body back to what
the consumer had before symbolicating it (``raw_event``: the minified frames a
symbolicated stack trace kept as ``raw_stacktrace``, without the symbolication errors),
symbolicates and groups it as the consumer does (``regroup_event``; no normalization or
scrubbing again: the body is Relay's output already), finds the issues through the
consumers' ``IssueResolver`` (new hashes create issues there), and replaces the rows of the
events that changed (``EventStore.replace_events``: insert with ``row_version`` = job id,
then delete the older rows). The driver records each finished slice in the job row.

Most events only regroup, and their bodies need not leave ClickHouse (``run_slice``,
storage/regroup.py): a slice is de-duplicated there by a hash of each event's grouping
projection, one event per distinct projection is reprocessed as above, and ClickHouse
moves the events whose issue or hash changed (``INSERT … SELECT``, then ``DELETE``),
joining a table of the slice's own that the first statement filled with each event's
projection hash, so each body is parsed once (the table is dropped with the slice, and
what interrupted slices left when the job finishes). The projections whose body would
change, and slices with copies of an event, go one by one. A row written since ClickHouse
migration 0007 is not parsed at all: it carries the hash of its projection
(events/projection.py). A task's process keeps each projection's decision (its new issue
and hash, or "one by one") for the job's later slices (``JobCaches``): an issue's events
spread over many hours are reprocessed once, and their bodies are not read again.
Tasks (and the command) run at ``CRASHRAY_PIPELINE_NICE``, their ClickHouse statements on
``CRASHRAY_PIPELINE_CLICKHOUSE_THREADS`` threads (a ClickHouse server runs them at that
nice value too; the embedded chDB does not), and a task pauses after each slice while live
events wait for the consumers, in the PostgreSQL queue or the Kafka consumer group's lag
(``yield_to_live``, ``live_events_wait``, ``CRASHRAY_PIPELINE_YIELD_MAX``), so
live ingest comes first. The moved events' older rows are deleted once a run's slices are
done (until then such an event is listed under both issues).

When every slice is done, in one PostgreSQL transaction (``finish``): an issue left
without events whose events all went to one issue is merged into it (its hashes follow,
its links redirect); one whose events went to several is resolved with a count of 0
(Sentry deletes it; resolving keeps its history, and its hashes stay its own). Every issue
that gained or lost events gets an activity entry (``reprocess``; ``merge`` on a merge
target). Then ``pipelines.rollups.rebuild`` recounts the project's issue counters and
hourly rollup from the stored events, so counts are exact.

While a job runs, issues show their counts as before it (issues it created show 0):
counts are exact once it finishes. Interruptible and resumable: the job row lists the
finished slices; re-running the
command with the same options continues with the others. A slice interrupted halfway is
read again: its events whose newest row carries the job's version are done (not
processed again, their older rows deleted once more), nothing is duplicated.

Tenant scope: the project is resolved within its organization; every ClickHouse read and
delete names both, and every PostgreSQL statement (storage/) too.

    events.errors.Conflict
    ├── storage.reprocess.ReprocessConflict   another unfinished job with other options
    └── SliceChanged                          ClickHouse moved other events than grouped
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Final

import orjson
import pyarrow as pa

from actors.store_events import issue_candidate
from events.errors import Conflict
from events.grouping import GROUPING_CONFIGS, GroupingResult, group_hashes_for_event
from events.grouping.fingerprint_rules import RuleSyntaxError
from events.grouping.rules import GroupingRules, grouping_rules_from_text
from events.grouping_memo import (
    GroupingMemo,
    referenced_tags,
    rule_texts,
    rules_read_release,
)
from events.issue_meta import issue_metadata_for_event
from events.process import (
    ProcessedEvent,
    ProjectGrouping,
    Symbolicator,
    event_summary,
    grouping_input,
)
from events.projection import (
    DERIVED_KEYS,
    GROUPING_CONTEXTS,
    GROUPING_KEYS,
    was_symbolicated,
)
from events.rows import EventRow, events_table
from events.symbolicate import SYMBOLICATION_ERRORS
from events.tags import event_tags
from pipelines import blocks_of
from pipelines.export import ALL_TIME, plan_slices
from storage import issues as issue_store
from storage.projects import ProjectGroupingSettings
from storage.regroup import (
    ProjectionGroup,
    ProjectionMoves,
    RegroupProjection,
    RegroupSlice,
)

log = logging.getLogger("crashray.reprocess")

# --- pure parts ---------------------------------------------------------------------------
def raw_event(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The stored (normalized, scrubbed) event as the consumer had it before symbolicating
    it: each stack trace that symbolication changed back to its ``raw_stacktrace`` (the
    minified frames), symbolication's ``errors`` removed, the processing summary removed.
    ``stored`` is not changed."""
    event = {k: v for k, v in stored.items() if k not in DERIVED_KEYS}
    for key in ("exception", "threads"):
        section = event.get(key)
        if not isinstance(section, dict) or not isinstance(section.get("values"), list):
            continue
        event[key] = {**section, "values": [_raw_container(v) for v in section["values"]]}
    errors = event.get("errors")
    if isinstance(errors, list):
        kept = [e for e in errors
                if not (isinstance(e, dict) and e.get("type") in SYMBOLICATION_ERRORS)]
        if kept:
            event["errors"] = kept
        else:
            del event["errors"]
    return event


def _raw_container(value: object) -> object:
    if not isinstance(value, dict) or not isinstance(value.get("raw_stacktrace"), dict):
        return value
    restored = {k: v for k, v in value.items() if k != "raw_stacktrace"}
    restored["stacktrace"] = value["raw_stacktrace"]
    return restored


def regroup_event(event: dict[str, Any], project_id: int, organization_id: int,
                  grouping: ProjectGrouping, symbolicator: Symbolicator | None,
                  received: dt.datetime, now: dt.datetime, memo: GroupingMemo | None = None,
                  tags_current: bool = False) -> ProcessedEvent:
    """``events.process.EventProcessor.process`` from its symbolication step on, for an
    event that was normalized and scrubbed when it was received (``raw_event``): the same
    steps in the same order, so a reprocessed event is what ingest would store today.
    ``tags_current``: the event's tags are the ones derived from it as it is now (it was
    stored so and ``raw_event`` changed no stack trace of it)."""
    raw = event
    if symbolicator is not None:
        event = symbolicator(event, project_id, organization_id)
    # The stored body holds the derived tags, not only the client's: the frozen versions
    # that group untagged events (v1, v2) see those too. They are derived again only from
    # an event that symbolication (then or now) changed: else they are what ingest stored.
    untagged = event
    tagged = event if event is raw and tags_current else {**event, "tags": event_tags(event)}
    group = memo.group if memo is not None else _group
    result = group(grouping_input(grouping.config, untagged, tagged), grouping.config,
                   grouping.rules)
    secondary_config = grouping.secondary_at(now)
    secondary = None if secondary_config is None else group(
        grouping_input(secondary_config, untagged, tagged), secondary_config, grouping.rules)
    issue = issue_metadata_for_event(tagged)
    if result.title:
        issue = replace(issue, title=result.title)
    return ProcessedEvent(
        event_id=str(tagged["event_id"]), event={**tagged, **event_summary(issue)},
        grouping=result, issue=issue, timestamp=_from_unix(tagged.get("timestamp"), received),
        received=received, secondary_grouping=secondary)


def _group(event: Mapping[str, Any], config: str, rules: GroupingRules | None
           ) -> GroupingResult:
    return group_hashes_for_event(event, config, rules=rules)


def _from_unix(value: object, default: dt.datetime) -> dt.datetime:
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(float(value), tz=dt.UTC)
    return default


@dataclass(frozen=True)
class EmptiedIssue:
    """What becomes of an issue that the job left without events."""

    issue_id: int
    #: The one issue all its moved events went to (merge into it), else None (resolve).
    merge_into: int | None
    moved_to: Mapping[int, int]


def emptied_issues(moves: Mapping[int, Mapping[int, int]], with_events: set[int],
                   live_of: Mapping[int, int]) -> list[EmptiedIssue]:
    """The issues events moved out of that hold no event now (``with_events``: the issues
    that do), each with where its events went (``live_of``: merges followed). An issue
    whose events all went to one other issue is merged into it."""
    emptied = []
    for old in sorted(moves):
        if old in with_events or live_of.get(old, old) != old:
            continue  # still has events, or merged (or deleted) meanwhile
        moved_to: dict[int, int] = {}
        for new, n in moves[old].items():
            target = live_of.get(new, new)
            moved_to[target] = moved_to.get(target, 0) + n
        moved_to.pop(old, None)
        targets = list(moved_to)
        emptied.append(EmptiedIssue(old, targets[0] if len(targets) == 1 else None, moved_to))
    return emptied


def moves_into(moves: Mapping[int, Mapping[int, int]]) -> dict[int, dict[int, int]]:
    """new issue → old issue → events: ``moves`` seen from the receiving side."""
    into: dict[int, dict[int, int]] = {}
    for old, to in moves.items():
        for new, n in to.items():
            into.setdefault(new, {})[old] = into.get(new, {}).get(old, 0) + n
    return into


# --- one slice (a Ray Data task) ------------------------------------------------------------
@dataclass(frozen=True)
class ReprocessJobSpec:
    """What every task of one job needs (pickled into each task)."""

    job_id: int
    clickhouse_dsn: str
    postgres_url: str
    organization_id: int
    project_id: int
    grouping: ProjectGrouping
    release: str | None
    #: Only events with these primary hashes (``--issue``); None: all.
    hashes: tuple[str, ...] | None
    #: None: no symbolication (no artifact store configured).
    symbolication: Any | None
    max_cached_hashes: int = 100_000
    #: Group the events symbolication leaves alone in ClickHouse, once per distinct
    #: projection (``run_slice``); False: every event one by one (the reference path).
    regroup_in_clickhouse: bool = True
    #: ClickHouse threads per statement of the ClickHouse path, and the nice value of the
    #: job's tasks and of those threads (``CRASHRAY_PIPELINE_CLICKHOUSE_THREADS``,
    #: ``CRASHRAY_PIPELINE_NICE``).
    clickhouse_threads: int = 1
    nice: int = 0
    #: A task pauses after a slice while live events wait, at most this many times the
    #: slice's duration (``CRASHRAY_PIPELINE_YIELD_MAX``; ``yield_to_live``).
    yield_max: float = 0.0
    #: The Kafka hand-off (storage.kafka.KafkaSettings) when the instance uses it: live
    #: events then wait in the consumer group's lag, not in the PostgreSQL queue.
    kafka: Any | None = None

    @property
    def grouping_tags(self) -> frozenset[str] | None:
        """The tag keys the project's rules read (``referenced_tags``; None: all)."""
        return referenced_tags(*rule_texts(self.grouping.rules))

    @property
    def grouping_reads_release(self) -> bool:
        """Whether the project's rules may read an event's release (a ``release:``
        matcher; ``rules_read_release``): else events of one issue in several releases
        are grouped once in ClickHouse, not once per release."""
        return rules_read_release(*rule_texts(self.grouping.rules))


@dataclass
class SliceOutcome:
    """What one slice did (the driver adds it to the job row)."""

    index: int
    events_read: int = 0
    events_changed: int = 0
    events_moved: int = 0
    #: Events whose new hashes are tombstoned (a deleted issue's): kept as they were.
    events_kept: int = 0
    moves: dict[int, dict[int, int]] = field(default_factory=dict)
    #: Events grouped in ClickHouse (once per distinct projection), not one by one.
    events_in_clickhouse: int = 0
    #: Seconds the task spent per stage (``STAGES``).
    stage_s: dict[str, float] = field(default_factory=dict)


#: The stages of a slice, as the command reports their shares: reading from ClickHouse,
#: symbolicating and grouping, finding the issues in PostgreSQL, replacing the rows.
STAGES: Final = ("read", "regroup", "issues", "write", "paused")
#: Grouping results a task keeps for its job (events/grouping_memo.py): one per distinct
#: grouping input among the events the job reprocesses one by one.
REPROCESS_MEMO_ENTRIES: Final = 50_000
#: Seconds a task waits for the brokers when it measures the consumer group's lag.
KAFKA_MEASURE_TIMEOUT_S: Final = 2.0


@dataclass(frozen=True)
class _Regrouped:
    event_id: str
    old_issue: int
    old_hash: str
    retention_days: int
    processed: ProcessedEvent
    changed_body: bool


SLICE_RESULT_SCHEMA: Final = pa.schema([
    ("index", pa.int64()), ("events_read", pa.int64()), ("events_changed", pa.int64()),
    ("events_moved", pa.int64()), ("events_kept", pa.int64()), ("moves", pa.string()),
    *((f"{stage}_s", pa.float64()) for stage in STAGES)])


def reprocess_slice(batch: pa.Table, *, spec: ReprocessJobSpec) -> pa.Table:
    """One Ray Data task: reprocess the slices in ``batch`` (index, start_us, end_us)."""
    import psycopg

    from actors.clickhouse import clickhouse_store
    from actors.grouping import IssueResolver

    lower_priority(spec.nice)
    store = clickhouse_store(spec.clickhouse_dsn)
    symbolicator = _symbolicator(spec.symbolication)
    outcomes = []
    with psycopg.connect(spec.postgres_url, autocommit=True) as conn, \
            live_events_wait(conn, spec.kafka) as live_wait:
        resolver = IssueResolver(conn, spec.max_cached_hashes)
        for index, start, end in zip(batch.column("index").to_pylist(),
                                     batch.column("start_us").to_pylist(),
                                     batch.column("end_us").to_pylist(), strict=True):
            began = time.perf_counter()
            outcome = run_slice(spec, index, _at(start), _at(end), store,
                                resolver.issue_ids_for, symbolicator)
            outcome.stage_s["paused"] = yield_to_live(
                live_wait, spec.yield_max * (time.perf_counter() - began))
            outcomes.append(outcome)
    return pa.Table.from_pylist([
        {"index": o.index, "events_read": o.events_read, "events_changed": o.events_changed,
         "events_moved": o.events_moved, "events_kept": o.events_kept,
         "moves": orjson.dumps({str(k): {str(n): c for n, c in v.items()}
                                for k, v in o.moves.items()}).decode(),
         **{f"{stage}_s": o.stage_s.get(stage, 0.0) for stage in STAGES}}
        for o in outcomes], schema=SLICE_RESULT_SCHEMA)


def yield_to_live(live_events_wait: Callable[[], bool], most_s: float,
                  step_s: float = 0.25, sleep: Callable[[float], None] = time.sleep
                  ) -> float:
    """Pause while ``live_events_wait()``, for at most ``most_s`` seconds; returns the
    seconds paused. A job's ClickHouse statements run at the live services' priority in
    the embedded engine, so between slices is where it gives the cores back."""
    paused = 0.0
    while paused < most_s and live_events_wait():
        step = min(step_s, most_s - paused)
        sleep(step)
        paused += step
    return paused


@contextmanager
def live_events_wait(conn: Any, kafka: Any | None) -> Iterator[Callable[[], bool]]:
    """Whether live events wait for the consumers, measured as the pool autoscaler
    measures the hand-off (``storage.handoff.ConsumerBacklog``: the PostgreSQL queue, or
    with Kafka the consumer group's lag)."""
    from confluent_kafka import KafkaException

    from storage.handoff import ConsumerBacklog

    meter = ConsumerBacklog(kafka, lambda: conn)

    def waiting() -> bool:
        try:
            return meter.measure(1, KAFKA_MEASURE_TIMEOUT_S).waiting_items > 0
        except KafkaException as exc:
            # Only the pause depends on it: a job whose brokers do not answer goes on
            # (the consumers cannot read them either), logged.
            log.warning("reprocess: the consumer group's lag is unknown (%s); not pausing",
                        exc)
            return False

    try:
        yield waiting
    finally:
        meter.close()


def lower_priority(nice: int) -> None:
    """Raise this process's nice value to ``nice`` (a job's task: the job's worker
    processes are its own, and end with it). Never lowers it."""
    if nice > 0:
        current = os.nice(0)
        if current < nice:
            os.nice(nice - current)


def _symbolicator(config: Any | None) -> Symbolicator | None:
    if config is None:
        return None
    from actors.symbolicate import LocalSymbolication

    return LocalSymbolication(config)


IssueLookup = Callable[[Sequence[issue_store.IssueCandidate]], list[int | None]]


def run_slice(spec: ReprocessJobSpec, index: int, since: dt.datetime, until: dt.datetime,
              store: Any, issue_ids_for: IssueLookup, symbolicator: Symbolicator | None
              ) -> SliceOutcome:
    """Reprocess the events of [since, until) and replace the rows of those that changed.

    A slice whose events have one row each (no copy a re-delivery or an interrupted run
    left) is grouped in ClickHouse (``_run_grouped``): the events symbolication leaves
    alone are read as one event per distinct projection, and moved by ClickHouse; the
    others, and the projections whose stored body would change, one by one. Any other
    slice is reprocessed event by event (``_run_one_by_one``)."""
    clock = time.perf_counter()
    outcome = SliceOutcome(index)
    where = regroup_slice(spec, since, until, symbolicator)
    if where is not None:
        rows = store.regroup_slice_rows(where)
        if not rows.rows:
            return outcome
        if rows.one_row_per_event:
            return _run_grouped(spec, where, store, issue_ids_for, symbolicator, outcome,
                                clock)
    table = store.events_to_reprocess(spec.organization_id, spec.project_id, since, until,
                                      spec.release, spec.hashes)
    if table.num_rows:
        clock = _lap(outcome, "read", clock)
        _run_one_by_one(spec, table, store, issue_ids_for, symbolicator, outcome, clock)
    return outcome


#: Texts of a stored body that say symbolication changed or commented on it
#: (``was_symbolicated``): such an event's projection holds what symbolication reads.
SYMBOLICATED_MARKERS: Final = ('"raw_stacktrace"',
                               *(f'"{t}"' for t in sorted(SYMBOLICATION_ERRORS)))


def regroup_slice(spec: ReprocessJobSpec, since: dt.datetime, until: dt.datetime,
                  symbolicator: Symbolicator | None) -> RegroupSlice | None:
    """The slice as the ClickHouse path reads it; None when the job groups every event one
    by one (asked so, or a symbolicator that does not say which platforms it takes)."""
    platforms = getattr(symbolicator, "platforms", None) if symbolicator is not None else ()
    if not spec.regroup_in_clickhouse or platforms is None:
        return None
    keys = (*GROUPING_KEYS, *(k for k in DERIVED_KEYS if k not in GROUPING_KEYS))
    tags = spec.grouping_tags
    if not spec.grouping_reads_release:
        keys = tuple(k for k in keys if k != "release")
    return RegroupSlice(
        spec.organization_id, spec.project_id, since, until, spec.release, spec.hashes,
        spec.job_id, RegroupProjection(
            keys, GROUPING_CONTEXTS, None if tags is None else tuple(sorted(tags)),
            tuple(sorted(platforms)), SYMBOLICATED_MARKERS),
        spec.clickhouse_threads, spec.nice)


def _run_grouped(spec: ReprocessJobSpec, where: RegroupSlice, store: Any,
                 issue_ids_for: IssueLookup, symbolicator: Symbolicator | None,
                 outcome: SliceOutcome, clock: float) -> SliceOutcome:
    """The slice grouped in ClickHouse; its table of projection hashes dropped after,
    whatever happened (an interrupted slice's is dropped when the job finishes)."""
    try:
        return _group_and_move(spec, where, store, issue_ids_for, symbolicator, outcome,
                               clock)
    finally:
        store.regroup_drop_projections(where)


@dataclass(frozen=True)
class ProjectionDecision:
    """What reprocessing one event of a projection decided for all its events: the issue
    to find for them (None: their body would change, so they go one by one) and their new
    primary hash."""

    candidate: issue_store.IssueCandidate | None
    primary_hash: str


class JobCaches:
    """What a worker process keeps of one job across the slices it runs (the job's rules,
    grouping config and settings are fixed for it): the grouping memo and the decision of
    each projection already reprocessed (at most ``max_decisions``, oldest dropped), so an
    issue's events spread over many slices are reprocessed once, not once a slice."""

    def __init__(self, key: tuple[Any, ...], spec: ReprocessJobSpec,
                 max_decisions: int = 50_000) -> None:
        self.key = key
        self.memo = GroupingMemo.for_rules(spec.grouping.rules, REPROCESS_MEMO_ENTRIES)
        self.max_decisions = max_decisions
        self._decisions: OrderedDict[int, ProjectionDecision] = OrderedDict()

    def decisions(self) -> dict[int, ProjectionDecision]:
        """The decisions now (a copy: what a slice asks ClickHouse not to send bodies for
        stays here while the slice runs)."""
        return dict(self._decisions)

    def remember(self, projection: int, decision: ProjectionDecision) -> None:
        self._decisions[projection] = decision
        if len(self._decisions) > self.max_decisions:
            self._decisions.popitem(last=False)


_JOB_CACHES: list[JobCaches] = []


def job_caches(spec: ReprocessJobSpec) -> JobCaches:
    """This process's caches of ``spec``'s job (a job id is unique within its database and
    project); another job's are dropped."""
    key = (spec.postgres_url, spec.organization_id, spec.project_id, spec.job_id)
    if not _JOB_CACHES or _JOB_CACHES[0].key != key:
        _JOB_CACHES[:] = [JobCaches(key, spec)]
    return _JOB_CACHES[0]


def _decide(spec: ReprocessJobSpec, g: ProjectionGroup, symbolicator: Symbolicator | None,
            now: dt.datetime, memo: GroupingMemo) -> ProjectionDecision:
    stored = _body(g.body)
    processed = regroup_event(raw_event(stored), spec.project_id, spec.organization_id,
                              spec.grouping, symbolicator, g.received, now, memo,
                              tags_current=not was_symbolicated(stored))
    # The body stays as stored (only the issue and hash may change), else one by one.
    candidate = (issue_candidate(spec.project_id, processed) if processed.event == stored
                 else None)
    return ProjectionDecision(candidate, processed.grouping.primary_hash)


def _group_and_move(spec: ReprocessJobSpec, where: RegroupSlice, store: Any,
                    issue_ids_for: IssueLookup, symbolicator: Symbolicator | None,
                    outcome: SliceOutcome, clock: float) -> SliceOutcome:
    caches = job_caches(spec)
    known = caches.decisions()
    groups, not_eligible = store.regroup_projection_groups(where, list(known))
    clock = _lap(outcome, "read", clock)
    now = dt.datetime.now(dt.UTC)
    regrouped: dict[int, ProjectionDecision] = {}
    for g in groups:
        if g.projection in regrouped:
            continue
        decision = known.get(g.projection)
        if decision is None:
            decision = _decide(spec, g, symbolicator, now, caches.memo)
            caches.remember(g.projection, decision)
        regrouped[g.projection] = decision
    clock = _lap(outcome, "regroup", clock)
    kept_here = [p for p, d in regrouped.items() if d.candidate is not None]
    found = issue_ids_for([d.candidate for d in regrouped.values()
                           if d.candidate is not None])
    issue_of = dict(zip(kept_here, found, strict=True))
    clock = _lap(outcome, "issues", clock)
    one_by_one = [p for p, d in regrouped.items() if d.candidate is None]
    if not_eligible or one_by_one:
        table = store.regroup_events_one_by_one(where, one_by_one)
        clock = _lap(outcome, "read", clock)
        clock = _run_one_by_one(spec, table, store, issue_ids_for, symbolicator, outcome,
                                clock)
    to_move = _count_grouped(groups, regrouped, issue_of, outcome)
    # Only projections with an event to move or rehash: nothing changed, nothing written.
    moving = sorted({g.projection for g in groups if g.projection in to_move})
    if moving:
        # Their older rows stay until the run's slices are done (``run_reprocess``).
        written = store.regroup_move_events(where, ProjectionMoves(
            moving, [int(issue_of[p] or 0) for p in moving],
            [regrouped[p].primary_hash for p in moving]))
        expected = sum(to_move.values())
        if written != expected:
            raise SliceChanged(
                f"reprocess job {spec.job_id}, slice from {where.since.isoformat()}: ClickHouse"
                f" moved {written} events where {expected} were to move (the slice's events"
                " changed while it ran, or a statement was retried); run the command again:"
                " the slice is then reprocessed event by event")
    _lap(outcome, "write", clock)
    return outcome


class SliceChanged(Conflict):
    """A slice grouped in ClickHouse moved other events than it grouped."""

    code = "reprocess_slice_changed"


def _count_grouped(groups: Sequence[ProjectionGroup],
                   regrouped: Mapping[int, ProjectionDecision],
                   issue_of: Mapping[int, int | None], outcome: SliceOutcome
                   ) -> dict[int, int]:
    """Add the events grouped in ClickHouse to ``outcome``; returns projection → events
    to move or rehash (what ``regroup_move_events`` must write)."""
    to_move: dict[int, int] = {}
    for g in groups:
        new = regrouped[g.projection]
        if new.candidate is None:
            continue
        outcome.events_read += g.events
        outcome.events_in_clickhouse += g.events
        issue_id = issue_of[g.projection]
        if issue_id is None:
            outcome.events_kept += g.events
            continue
        moved = issue_id != g.group_id
        if moved or new.primary_hash != g.primary_hash:
            outcome.events_changed += g.events
            to_move[g.projection] = to_move.get(g.projection, 0) + g.events
        if moved:
            outcome.events_moved += g.events
            to = outcome.moves.setdefault(g.group_id, {})
            to[issue_id] = to.get(issue_id, 0) + g.events
    return to_move


def _run_one_by_one(spec: ReprocessJobSpec, table: pa.Table, store: Any,
                    issue_ids_for: IssueLookup, symbolicator: Symbolicator | None,
                    outcome: SliceOutcome, clock: float) -> float:
    """Reprocess the events of ``table`` (``events_to_reprocess``) one by one and replace
    the rows of those that changed; adds to ``outcome``."""
    if not table.num_rows:
        return clock
    done_ids, todo, moves = _regroup_all(spec, table, symbolicator)
    outcome.events_read += len(done_ids) + len(todo)
    done_moved = sum(n for to in moves.values() for n in to.values())
    outcome.events_moved += done_moved
    outcome.events_changed += done_moved
    for old, to in moves.items():
        into = outcome.moves.setdefault(old, {})
        for new, n in to.items():
            into[new] = into.get(new, 0) + n
    clock = _lap(outcome, "regroup", clock)
    issue_ids = issue_ids_for([issue_candidate(spec.project_id, r.processed) for r in todo])
    clock = _lap(outcome, "issues", clock)
    rows = []
    for r, issue_id in zip(todo, issue_ids, strict=True):
        if issue_id is None:
            outcome.events_kept += 1  # its new hash is a deleted issue's: left as it was
            continue
        moved = issue_id != r.old_issue
        if not (moved or r.changed_body or r.processed.grouping.primary_hash != r.old_hash):
            continue
        outcome.events_changed += 1
        if moved:
            outcome.events_moved += 1
            to = outcome.moves.setdefault(r.old_issue, {})
            to[issue_id] = to.get(issue_id, 0) + 1
        rows.append(EventRow(spec.organization_id, spec.project_id, issue_id,
                             r.retention_days, r.processed))
    store.replace_events(spec.organization_id, spec.project_id, events_table(rows),
                         spec.job_id, [r.processed.event_id for r in rows] + done_ids)
    return _lap(outcome, "write", clock)


def _lap(outcome: SliceOutcome, stage: str, since: float) -> float:
    now = time.perf_counter()
    outcome.stage_s[stage] = outcome.stage_s.get(stage, 0.0) + now - since
    return now


def _regroup_all(spec: ReprocessJobSpec, table: pa.Table, symbolicator: Symbolicator | None
                 ) -> tuple[list[str], list[_Regrouped], dict[int, dict[int, int]]]:
    """The slice's events the job already replaced (their ids), the others regrouped, and
    the moves of the replaced ones (old issue → new issue → events; from their older row,
    which an interrupted run left). ``table``: newest row first per event, then maybe the
    next newest (``events_to_reprocess``)."""
    now = dt.datetime.now(dt.UTC)
    memo = job_caches(spec).memo
    done: list[str] = []
    todo: list[_Regrouped] = []
    moves: dict[int, dict[int, int]] = {}
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    ids, versions, groups = columns["event_id"], columns["row_version"], columns["group_id"]
    for i, event_id in enumerate(ids):
        if i and ids[i - 1] == event_id:  # an older row of the event before
            if versions[i - 1] == spec.job_id and groups[i] != groups[i - 1]:
                to = moves.setdefault(int(groups[i]), {})
                to[int(groups[i - 1])] = to.get(int(groups[i - 1]), 0) + 1
            continue
        if versions[i] == spec.job_id:
            done.append(event_id)
            continue
        stored = _body(columns["body"][i])
        received = _utc(columns["received"][i])
        processed = regroup_event(raw_event(stored), spec.project_id, spec.organization_id,
                                  spec.grouping, symbolicator, received, now, memo,
                                  tags_current=not was_symbolicated(stored))
        todo.append(_Regrouped(event_id, int(groups[i]), str(columns["primary_hash"][i]),
                               int(columns["retention_days"][i]), processed,
                               processed.event != stored))
    return done, todo, moves


def _body(text: str) -> dict[str, Any]:
    event = orjson.loads(text) if text else {}
    return event if isinstance(event, dict) else {}


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _at(micros: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=micros)


def _micros(when: dt.datetime) -> int:
    return (when - _EPOCH) // dt.timedelta(microseconds=1)


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# --- the driver ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ReprocessOptions:
    """What the user asked (a resumed job must be asked the same)."""

    release: str | None = None
    since: dt.datetime | None = None
    issue_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"release": self.release, "issue": self.issue_id,
                "since": None if self.since is None else self.since.isoformat()}


@dataclass(frozen=True)
class ReprocessLimits:
    concurrency: int
    task_cpus: float
    slice_events: int
    #: Stop after this many slices (the job stays unfinished; a re-run continues).
    max_slices: int | None = None
    #: The nice value of the job's tasks and of its ClickHouse statements' threads
    #: (``CRASHRAY_PIPELINE_NICE``): live ingest comes first on shared cores.
    nice: int = 0
    #: Threads one ClickHouse statement of the job uses
    #: (``CRASHRAY_PIPELINE_CLICKHOUSE_THREADS``).
    clickhouse_threads: int = 1
    #: False: every event regrouped one by one (the reference the ClickHouse path is
    #: tested against).
    regroup_in_clickhouse: bool = True
    #: ``CRASHRAY_PIPELINE_YIELD_MAX`` (``ReprocessJobSpec.yield_max``).
    yield_max: float = 0.0


@dataclass(frozen=True)
class ReprocessResult:
    job_id: int
    resumed: bool
    finished: bool
    slices_done: int
    slices_total: int
    events_read: int
    events_changed: int
    events_moved: int
    issues_created: list[int]
    issues_merged: list[int]
    issues_emptied: list[int]
    #: Events read by this run (a resumed job's earlier runs read the rest).
    events_this_run: int
    took_s: float
    #: Seconds per stage: the tasks' (summed over tasks, ``STAGES``) and the driver's
    #: closing ``finish`` (issues, activity, counts rebuilt).
    stage_s: Mapping[str, float] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events_this_run / max(self.took_s, 1e-9)


@dataclass(frozen=True)
class ReprocessContext:
    """Where the job runs: the databases and the project (scope resolved by the caller)."""

    postgres_url: str
    clickhouse_dsn: str
    organization_id: int
    project_id: int
    symbolication: Any | None
    max_cached_hashes: int = 100_000
    #: The instance's Kafka hand-off (``KafkaSettings``), None: the PostgreSQL queue.
    kafka: Any | None = None


def run_reprocess(ctx: ReprocessContext, options: ReprocessOptions, limits: ReprocessLimits
                  ) -> ReprocessResult:
    """Start (or resume) the project's reprocess job, run its remaining slices on the
    connected Ray cluster, and finish it when none is left."""
    import psycopg

    from actors.clickhouse import clickhouse_store
    from storage.reprocess import start_or_resume_job
    from storage.scope import ProjectScope

    started = time.monotonic()
    # The driver too (Ray Data's executor loop, the closing counts): the command's process
    # ends with the job, and live ingest comes first on shared cores.
    lower_priority(limits.nice)
    project = ProjectScope(ctx.organization_id, ctx.project_id)
    store = clickhouse_store(ctx.clickhouse_dsn)
    with psycopg.connect(ctx.postgres_url) as conn:
        since = options.since or ALL_TIME[0]
        hours = store.stored_event_hours(ctx.organization_id, ctx.project_id, since,
                                         ALL_TIME[1])
        planned = [(_micros(s.start), _micros(s.end)) for s in
                   plan_slices(hours, limits.slice_events, since, ALL_TIME[1])]
        with conn.transaction():
            job, resumed = start_or_resume_job(conn, project, options.as_json(), planned)
        spec = replace(_spec(conn, ctx, project, job.id, options),
                       regroup_in_clickhouse=limits.regroup_in_clickhouse,
                       clickhouse_threads=limits.clickhouse_threads, nice=limits.nice,
                       yield_max=limits.yield_max, kafka=ctx.kafka)
    remaining = [i for i in range(len(job.slices)) if i not in job.finished_slices]
    if limits.max_slices is not None:
        remaining = remaining[:limits.max_slices]
    stage_s: dict[str, float] = {}
    try:
        _run_slices(ctx, project, job.id, spec, [(i, *job.slices[i]) for i in remaining],
                    limits, stage_s)
    finally:
        # The older rows of the events the job's slices moved in ClickHouse: the slices
        # leave them (one DELETE for the run, not one per slice over the same large
        # parts). A run killed outright leaves them to the next run, which deletes them
        # here even when no slice is left (before ``finish`` counts the events).
        deleting = time.monotonic()
        store.regroup_delete_replaced_of_job(project.organization_id, project.id, job.id)
        stage_s["write"] = stage_s.get("write", 0.0) + time.monotonic() - deleting
    finishing = time.monotonic()
    result = _conclude(ctx, project, job.id, resumed, 0.0, store, job.events_read)
    stage_s["finish"] = time.monotonic() - finishing
    return replace(result, took_s=time.monotonic() - started, stage_s=stage_s)


class GroupingSettingsInvalid(Conflict):
    """The project's stored grouping settings cannot be applied."""

    code = "grouping_settings_invalid"


def project_grouping(g: ProjectGroupingSettings) -> ProjectGrouping:
    """The project's grouping as a consumer loads it (actors/consumer.py
    ``_project_grouping``), except that rules or a config that do not parse stop the job
    (a consumer skips them, logged, rather than stop the project's events; a reprocess
    with them would regroup every event wrongly)."""
    try:
        rules = grouping_rules_from_text(g.fingerprinting_rules, g.grouping_enhancements)
    except RuleSyntaxError as exc:
        raise GroupingSettingsInvalid(
            f"project {g.project_id}: its grouping rules do not parse ({exc}); fix them in"
            " the project's settings, then reprocess") from exc
    if g.config not in GROUPING_CONFIGS:
        raise GroupingSettingsInvalid(
            f"project {g.project_id}: unknown grouping config {g.config!r}; known:"
            f" {', '.join(sorted(GROUPING_CONFIGS))}")
    secondary = g.secondary_config if g.secondary_config in GROUPING_CONFIGS else None
    return ProjectGrouping(g.config, rules, secondary, g.secondary_expiry)


def _spec(conn: Any, ctx: ReprocessContext, project: Any, job_id: int,
          options: ReprocessOptions) -> ReprocessJobSpec:
    from storage.projects import grouping_settings

    settings = grouping_settings(conn, [ctx.project_id])[ctx.project_id]
    hashes = None
    if options.issue_id is not None:
        from storage.issues import issue_hashes

        hashes = tuple(h for h, _ in issue_hashes(conn, project, options.issue_id))
    return ReprocessJobSpec(job_id, ctx.clickhouse_dsn, ctx.postgres_url, ctx.organization_id,
                            ctx.project_id, project_grouping(settings), options.release,
                            hashes, ctx.symbolication, ctx.max_cached_hashes)


def _run_slices(ctx: ReprocessContext, project: Any, job_id: int, spec: ReprocessJobSpec,
                slices: Sequence[tuple[int, int, int]], limits: ReprocessLimits,
                stage_s: dict[str, float]) -> None:
    """Run ``slices`` as a Ray Data job, recording each in the job row as it finishes;
    adds the tasks' seconds per stage to ``stage_s``."""
    import psycopg
    import ray.data

    from storage.reprocess import record_slice

    if not slices:
        return
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    context = ray.data.DataContext.get_current()
    context.execution_options.resource_limits = ray.data.ExecutionResources(
        cpu=limits.concurrency * limits.task_cpus)
    items = [{"index": i, "start_us": s, "end_us": e} for i, s, e in slices]
    task: Any = reprocess_slice  # Ray's stubs do not name pyarrow batch functions
    dataset = blocks_of(items).map_batches(
        task, fn_kwargs={"spec": spec}, batch_size=1, batch_format="pyarrow",
        concurrency=limits.concurrency, num_cpus=limits.task_cpus)
    with psycopg.connect(ctx.postgres_url) as conn:
        for done, seconds in _finished_slices(dataset):
            with conn.transaction():
                record_slice(conn, project, job_id, done)
            for stage, s in seconds.items():
                stage_s[stage] = stage_s.get(stage, 0.0) + s


def _finished_slices(dataset: Any) -> Iterator[tuple[Any, dict[str, float]]]:
    from storage.reprocess import SliceDone

    for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in batch.to_pylist():
            moves = {int(k): {int(n): int(c) for n, c in v.items()}
                     for k, v in orjson.loads(row["moves"]).items()}
            yield SliceDone(int(row["index"]), int(row["events_read"]),
                            int(row["events_changed"]), int(row["events_moved"]), moves), {
                stage: float(row[f"{stage}_s"]) for stage in STAGES}


def _conclude(ctx: ReprocessContext, project: Any, job_id: int, resumed: bool,
              took_s: float, store: Any, read_before: int) -> ReprocessResult:
    """Finish the job if every slice is done (issues, activity, counts), and say so."""
    import psycopg

    from storage.reprocess import ReprocessConflict, running_job

    with psycopg.connect(ctx.postgres_url) as conn:
        with conn.transaction():
            job = running_job(conn, project)
        if job is None or job.id != job_id:
            raise ReprocessConflict(
                f"reprocess job {job_id} is no longer the project's running job (abandoned"
                " by another `crashray reprocess --abandon`?); its finished slices stay"
                " replaced: run the command again to reprocess with a new job")
        finished = len(job.finished_slices) == len(job.slices)
        created: list[int] = []
        merged: list[int] = []
        emptied: list[int] = []
        if finished:
            with conn.transaction():
                created, merged, emptied = finish(conn, store, project, job)
            # What interrupted slices left in ClickHouse (storage/regroup.py), once the job
            # is finished for good: no slice of the project runs now.
            store.regroup_drop_leftover_projections(project.organization_id, project.id)
    return ReprocessResult(job.id, resumed, finished, len(job.finished_slices),
                           len(job.slices), job.events_read, job.events_changed,
                           job.events_moved, created, merged, emptied,
                           job.events_read - read_before, took_s)


def finish(conn: Any, store: Any, project: Any, job: Any
           ) -> tuple[list[int], list[int], list[int]]:
    """Issues emptied, merged and created by the job, activity entries, exact counts (call
    inside a transaction); returns (created, merged, emptied) issue ids."""
    from pipelines.rollups import rebuild
    from storage import reprocess as jobs
    from storage.rollups import hash_issues

    moves: Mapping[int, Mapping[int, int]] = job.moves
    involved = set(moves) | {n for to in moves.values() for n in to}
    live_of = jobs.live_issue_of(conn, project, sorted(involved))
    issue_of_hash = hash_issues(conn, project)
    with_events = {live_of.get(i, i) for i in (issue_of_hash.get(h) for h in
                   store.hash_event_totals(project.organization_id, project.id))
                   if i is not None}
    emptied = emptied_issues(moves, with_events, live_of)
    emptied_ids = {e.issue_id for e in emptied}
    for e in emptied:
        if e.merge_into is not None:
            jobs.merge_emptied_issue(conn, project, e.issue_id, e.merge_into,
                                     sum(e.moved_to.values()))
        else:
            jobs.resolve_emptied_issue(conn, project, e.issue_id, e.moved_to)
    for old, to in moves.items():
        if old not in emptied_ids and live_of.get(old, old) == old:
            jobs.note_events_moved_out(conn, project, old, to)
    created = []
    for new, moved_from in sorted(moves_into(moves).items()):
        is_new = new > job.max_issue_id
        created += [new] if is_new else []
        jobs.note_events_moved_in(conn, project, new, moved_from, is_new)
    rebuild(conn, store, project)
    merged = sorted(e.issue_id for e in emptied if e.merge_into is not None)
    jobs.finish_job(conn, project, job.id, {
        "created": created, "merged": merged, "emptied": sorted(emptied_ids - set(merged))})
    return created, merged, sorted(emptied_ids - set(merged))
