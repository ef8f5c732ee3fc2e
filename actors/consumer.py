"""Consumer actors: claim queued items, process them, store them, count them.

A pool of these drains the hand-off queue: the PostgreSQL queue here (``BatchConsumer``),
or with ``CRASHRAY_KAFKA_BOOTSTRAP`` the Kafka topics (actors/kafka_consumer.py's
``KafkaBatchConsumer``, which overrides only ``run_once`` and the three hand-off hooks
``_take``, ``_dead_letter`` and ``_give_back``). Each runs its loop in a thread started by its
constructor, so an actor that Ray restarts (``max_restarts``) resumes on its own. Every
batch follows an order that loses nothing and counts nothing twice:

  claim (lease) → process → drop event ids stored before → issues → one PostgreSQL
  transaction: delete the queue rows (those still there), count the new events into their
  issues, insert the rows into ClickHouse, reopen issues, queue the batch's summed counts
  (hourly issue counts, outcomes) in ``clickhouse_outbox`` → commit → ship the counts to
  ClickHouse under the outbox row's deduplication token → forget the outbox row.

The storing steps (issues, counting, ClickHouse rows, lifecycle, outbox, shipping) are
actors/store_events.py's, shared with ``crashray import``; this actor adds the queue, the
outcomes of every item and the alert rules.

A consumer killed before the commit leaves its rows leased; the lease runs out, another
consumer re-claims them (in whatever mix), and their ClickHouse rows, which identify
themselves (event id, queue id), collapse with the first copies (ReplacingMergeTree,
readers count distinct ids); the summed counts were never queued. Killed after the commit,
it leaves an outbox row that another consumer ships after the lease, under the same token,
which ClickHouse drops if the first shipment arrived (storage/delivery.py). A second event
with an id the project already stored is dropped (Sentry keeps the first), counted as an
``invalid``/``duplicate_item`` outcome.

Failures: a batch that fails while ClickHouse does not answer is released (its claim not
counted) and the consumer backs off until ClickHouse answers; a batch that fails while it
does is retried item by item, and an item that fails while others succeed is poison and
goes to ``ingest_dead_letters`` (``crashray dead-letters`` replays or drops them).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg
import ray

from actors.clickhouse import clickhouse_store
from actors.consumer_alerts import BatchEvent, RuleCache, apply_rules
from actors.grouping import IssueResolver, ShardedResolver
from actors.placement import LOCAL, Placement
from actors.shared_process import find
from actors.store_events import (
    EventStorage,
    EventToStore,
    load_project_settings,
    resolve_issues,
)
from actors.symbolicate import (
    LocalSymbolication,
    ShardedSymbolication,
    SymbolicationConfig,
    registry,
)
from cluster import metrics
from events.consume import (
    BatchPlan,
    WorkItem,
    event_outcome,
    first_of_each_event_id,
    plan_batch,
)
from events.grouping_memo import DEFAULT_MEMO_ENTRIES
from events.process import EventProcessor, Symbolicator
from events.rows import (
    EventRow,
    Outcome,
    RawItem,
    envelope_items_table,
    sessions_table,
)
from storage import delivery
from storage import issues as issue_store
from storage import queue as pg_queue
from storage.artifacts import ArtifactSweep, SweepResult, sweep_artifacts
from storage.clickhouse import EventStore
from storage.errors import StorageError
from storage.kafka import KafkaSettings
from storage.postgres import connect
from storage.scope import ProjectScope

log = logging.getLogger("crashray.consumer")

#: The window of ``processed_last_minute`` in a consumer's stats.
RATE_WINDOW_S = 60.0


#: How often a consumer forgets event ids older than ``dedup_window_s``, and how many rows
#: one pass deletes (several passes run when more are due).
PRUNE_INTERVAL_S = 60.0
PRUNE_BATCH_ROWS = 50_000
#: Outbox rows one sweep claims and ships (rows left by a consumer that died or could not
#: reach ClickHouse; one per batch, so a sweep of this many catches up quickly).
OUTBOX_SWEEP_ROWS = 100


@dataclass(frozen=True)
class ConsumerConfig:
    """The consumer's settings (see cluster/settings.py for units and reasons)."""

    postgres_url: str
    clickhouse_dsn: str
    batch_items: int
    lease_s: float
    max_attempts: int
    retention_days: int
    idle_poll_s: float
    batch_wait_s: float
    dedup_window_s: float
    project_settings_refresh_s: float = 10.0
    grouping_cache_hashes: int = 100_000
    grouping_memo_entries: int = DEFAULT_MEMO_ENTRIES
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 30.0
    outbox_sweep_s: float = 5.0
    #: Threads a batch's events are processed on (``CRASHRAY_CONSUMER_THREADS``).
    threads: int = 1
    #: Source maps (issue 12): None (no artifact store configured) leaves events as sent.
    symbolication: SymbolicationConfig | None = None
    #: The instance's address, for links in notifications.
    base_url: str = "http://127.0.0.1:9000"
    #: The retention sweep of uploaded files, run by one consumer at a time every
    #: ``interval_s``; None: none (no artifact store).
    artifact_sweep: ArtifactSweep | None = None
    #: The Kafka hand-off (``CRASHRAY_KAFKA_BOOTSTRAP``): when set, the consumers read the
    #: Kafka topics as one consumer group (actors/kafka_consumer.py), not the PostgreSQL
    #: queue.
    kafka: KafkaSettings | None = None


class StorageOutage(StorageError):
    """A batch failed while ClickHouse did not answer: its items were released unfinished
    (the claim not counted) for a later retry. The consumer backs off until it answers."""

    code = "storage_unavailable"


@dataclass(frozen=True)
class _Stored:
    """An event this transaction finishes, with its issue (None: discarded hash)."""

    item: WorkItem
    event: EventToStore


class BatchConsumer:
    """The consumer's work without Ray: claim one batch and see it through."""

    def __init__(self, config: ConsumerConfig, store: EventStore | None = None,
                 resolver: Any | None = None, symbolicator: Symbolicator | None = None
                 ) -> None:
        self.config = config
        self._conn = self._connect()
        # ``store``: tests pass a real store wrapped to fail on cue.
        self._store: EventStore = store if store is not None else clickhouse_store(
            config.clickhouse_dsn)
        # ``resolver``: hash → issue (``actors.grouping``): the grouping shards in a running
        # instance, else a resolver of its own on this consumer's connection.
        self._resolver = resolver if resolver is not None else IssueResolver(
            self._conn, config.grouping_cache_hashes)
        # ``symbolicator``: the symbolication actors in a running instance; else, with
        # ``config.symbolication``, symbolication in this process (its own map cache).
        if symbolicator is None and config.symbolication is not None:
            symbolicator = LocalSymbolication(config.symbolication)
        self._processor = EventProcessor(symbolicator, config.grouping_memo_entries)
        self._pool = ThreadPoolExecutor(config.threads, thread_name_prefix="process") \
            if config.threads > 1 else None
        self._storage = EventStorage(self._store, config.retention_days, config.lease_s)
        #: Seconds the last batch's storing took (its ``insert`` stage: the PostgreSQL
        #: counts and the ClickHouse rows, actors/store_events.py).
        self._insert_s = 0.0
        self._rules = RuleCache(config.project_settings_refresh_s)
        self._settings_loaded_at: dict[int, float] = {}
        self._pruned_at = -1e9
        self._artifacts_swept_at = time.monotonic()  # not at once: starts stay quick
        self._outbox_swept_at = -1e9
        #: Set when a batch failed while ClickHouse did not answer; cleared once it does.
        self.storage_down = False
        self.processed_total = 0

    def _connect(self) -> psycopg.Connection[Any]:
        # The consumer's commits need atomicity, not immediate durability: losing the last
        # ones in an OS crash only re-delivers items, and because the event counts and the
        # queue deletes commit together, a re-delivered event is still counted once. A
        # commit that queues counts for ClickHouse is the exception: it is made durable
        # (storage/delivery.add_to_outbox). The ingest hand-off keeps synchronous commits.
        return connect(self.config.postgres_url, durable_commits=False)

    def reconnect(self) -> None:
        """A fresh PostgreSQL connection (after a server restart or a network error)."""
        self._conn.close()
        self._conn = self._connect()
        if isinstance(self._resolver, IssueResolver):
            self._resolver = IssueResolver(self._conn, self.config.grouping_cache_hashes)

    def run_once(self) -> int:
        """Claim and finish one batch; returns the number of items claimed. Raises
        ``StorageOutage`` (nothing claimed, or the batch released) while ClickHouse does
        not answer."""
        self._check_storage_back()
        claimed = pg_queue.claim(self._conn, self.config.batch_items, self.config.lease_s)
        if not claimed:
            return 0
        metrics.record_consumer_items("claimed", [c.item.item_type for c in claimed])
        items = self._without_exhausted([_work_item(c) for c in claimed])
        self._load_project_settings({i.project_id for i in items})
        try:
            self._finish(items)
        except psycopg.OperationalError:
            raise  # the database is gone, not the batch: everything is retried
        except Exception as exc:  # the batch failed after planning: find the poison item
            self._conn.rollback()
            self._release_if_storage_down(items, exc)
            self._isolate_failures(items, exc)
        self.processed_total += len(claimed)
        return len(claimed)

    def _check_storage_back(self) -> None:
        """After an outage: raise ``StorageOutage`` until ClickHouse answers again."""
        if self.storage_down:
            if not self._store.ping():
                raise StorageOutage("ClickHouse still does not answer; nothing claimed")
            self.storage_down = False
            log.warning("ClickHouse answers again; consuming")

    # The hand-off's side of a batch: the PostgreSQL queue here, Kafka in
    # actors/kafka_consumer.py (which overrides these three).

    def _take(self, items: Sequence[WorkItem], finishing: Sequence[int]) -> set[int]:
        """Inside the batch's transaction: the ids of ``finishing`` this transaction
        finishes (the others were finished by another consumer: neither stored nor counted
        again). ``items``: every item of the batch being finished."""
        return pg_queue.delete(self._conn, finishing)

    def _dead_letter(self, item: WorkItem, error: str) -> bool:
        """Inside the batch's transaction: keep ``item`` as a dead letter; False when
        another consumer finished it first."""
        return pg_queue.dead_letter(self._conn, _claimed(item), error)

    def _give_back(self, items: Sequence[WorkItem]) -> int:
        """Give claimed items back unfinished, their claim not counted; returns how many."""
        return pg_queue.release(self._conn, [(i.queue_id, i.attempts) for i in items])

    def _release_if_storage_down(self, items: Sequence[WorkItem], error: Exception) -> None:
        """If ClickHouse does not answer, the failure is not the items': give them back
        without counting the claim and raise ``StorageOutage``; else return."""
        if self._store.ping():
            return
        released = self._give_back(items)
        metrics.record_consumer_items("released", [i.item_type for i in items])
        self.storage_down = True
        raise StorageOutage(
            f"ClickHouse does not answer ({type(error).__name__}: {error}); {released} claimed"
            " items given back unfinished, retried once it answers") from error

    def _without_exhausted(self, items: list[WorkItem]) -> list[WorkItem]:
        """Dead-letter items claimed more than ``max_attempts`` times (they keep failing,
        or keep killing the consumer that holds them); the rest go on. A claim given back
        during a storage outage is not counted."""
        exhausted = [i for i in items if i.attempts > self.config.max_attempts]
        if exhausted:
            with self._conn.transaction():
                for item in exhausted:
                    pg_queue.dead_letter(self._conn, _claimed(item),
                                         f"claimed {item.attempts} times without finishing")
            log.error("dead-lettered %d items claimed more than %d times", len(exhausted),
                      self.config.max_attempts)
            metrics.record_consumer_items("dead_lettered", [i.item_type for i in exhausted])
        return [i for i in items if i.attempts <= self.config.max_attempts]

    def _isolate_failures(self, items: list[WorkItem], batch_error: Exception) -> None:
        """Finish the items one by one. If some succeed, the ones that fail are poison and
        move to the dead letters at once (unless ClickHouse stopped answering meanwhile:
        then they are given back); if none succeeds the cause is not an item and the batch
        stays leased for a later retry."""
        failed: list[tuple[WorkItem, str]] = []
        for item in items:
            try:
                self._finish([item])
            except psycopg.OperationalError:
                raise
            except Exception as exc:  # recorded below: dead-lettered or retried
                self._conn.rollback()
                failed.append((item, f"{type(exc).__name__}: {exc}"))
        if len(failed) == len(items):
            raise batch_error
        if failed:
            self._release_if_storage_down([item for item, _ in failed], batch_error)
        with self._conn.transaction():
            for item, error in failed:
                log.error("queue item %s fails on its own, dead-lettered: %s",
                          item.queue_id, error)
                pg_queue.dead_letter(self._conn, _claimed(item), error)
        metrics.record_consumer_items("dead_lettered", [item.item_type for item, _ in failed])

    def _load_project_settings(self, project_ids: set[int]) -> None:
        now = time.monotonic()
        stale = [p for p in project_ids
                 if now - self._settings_loaded_at.get(p, -1e9)
                 > self.config.project_settings_refresh_s]
        if not stale:
            return
        load_project_settings(self._conn, self._processor, stale)
        for p in stale:
            self._settings_loaded_at[p] = now

    def _finish(self, items: Sequence[WorkItem]) -> None:
        """Process, store and count ``items``; ship the counts once committed."""
        plan = plan_batch(items, self._processor, self._pool)
        events, duplicates = first_of_each_event_id(plan.events, delivery.stored_event_ids(
            self._conn, [(item.project_id, p.event_id) for item, p in plan.events]))
        resolving = time.perf_counter()
        resolved = resolve_issues(self._resolver, [
            (item.organization_id, item.project_id, p) for item, p in events])
        stages = self._processor.take_stage_seconds()
        stages["group"] = stages.get("group", 0.0) + metrics.since(resolving)
        with self._conn.transaction():
            finished = self._take(items, [i.queue_id for i, _ in plan.events]
                                  + plan.done_ids)
            stored = [_Stored(item, r) for (item, _), r in zip(events, resolved, strict=True)
                      if item.queue_id in finished]
            rows, outcomes = self._store_events(plan, stored, finished)
            outcomes += [event_outcome(item, p, False, duplicate=True)
                         for item, p in duplicates if item.queue_id in finished]
            outcomes += self._settle_unfinished(plan)
            counts = self._storage.queue_counts(self._conn, rows, outcomes)
        metrics.record_stages({**stages, "insert": self._insert_s})
        if counts is not None:
            self._ship([counts])

    def _store_events(self, plan: BatchPlan, stored: Sequence[_Stored], finished: set[int]
                      ) -> tuple[list[EventRow], list[Outcome]]:
        """Count the new events into their issues, insert the batch's rows into ClickHouse
        and reopen issues (actors/store_events.py, inside the batch's transaction), then
        apply the alert rules; returns the events stored and the outcomes of the finished
        items."""
        inserting = time.perf_counter()
        batch = self._storage.store_events(self._conn, [s.event for s in stored], {
            "sessions_raw": sessions_table([r for r in plan.sessions
                                            if r["queue_id"] in finished]),
            "envelope_items": envelope_items_table(
                [_raw_item(i) for i in plan.raw_items if i.queue_id in finished],
                self.config.retention_days)})
        self._insert_s = metrics.since(inserting)
        apply_rules(self._conn, self._rules, [
            BatchEvent(ProjectScope(s.item.organization_id, s.item.project_id),
                       s.event.issue_id, s.event.processed.event_id, s.event.processed.event,
                       s.event.processed.timestamp, s.event.processed.issue.title,
                       s.event.processed.issue.culprit)
            for s in stored if s.event.issue_id is not None and s.event.key in batch.new],
            batch.transitions, self.config.base_url)
        return batch.rows, [o for q in sorted(finished) for o in plan.outcomes_of.get(q, ())] + [
            event_outcome(s.item, s.event.processed, s.event.issue_id is None,
                          duplicate=s.event.issue_id is not None and s.event.key not in batch.new)
            for s in stored]

    def _settle_unfinished(self, plan: BatchPlan) -> list[Outcome]:
        """Dead-letter the invalid items (their outcomes count when they moved) and the
        failed ones out of attempts; the other failed ones wait for a retry."""
        outcomes: list[Outcome] = []
        for item, error in plan.invalid:
            if self._dead_letter(item, error):
                outcomes += plan.outcomes_of.get(item.queue_id, ())
        for item, error in plan.failed:
            if item.attempts >= self.config.max_attempts:
                log.error("queue item %s failed %s times, dead-lettered: %s",
                          item.queue_id, item.attempts, error)
                self._dead_letter(item, error)
            else:
                log.warning("queue item %s failed (attempt %s), will retry: %s",
                            item.queue_id, item.attempts, error)
        last = self.config.max_attempts
        metrics.record_consumer_items("dead_lettered", [i.item_type for i, _ in plan.invalid] + [
            i.item_type for i, _ in plan.failed if i.attempts >= last])
        metrics.record_consumer_items("retried", [i.item_type for i, _ in plan.failed
                                                  if i.attempts < last])
        return outcomes

    def _ship(self, rows: Sequence[delivery.OutboxRow]) -> int:
        """Insert outbox rows into ClickHouse, each under its token, and forget those
        shipped; returns how many. A row that fails stays for a later sweep."""
        return self._storage.ship(self._conn, rows)

    @property
    def ship_failures(self) -> int:
        return self._storage.ship_failures

    def ship_outbox_if_due(self) -> int:
        """Every ``outbox_sweep_s``: ship outbox rows whose consumer died or failed to ship
        them (claimed once their lease ran out); returns how many were shipped."""
        now = time.monotonic()
        if self.storage_down or now - self._outbox_swept_at < self.config.outbox_sweep_s:
            return 0
        self._outbox_swept_at = now
        return self._ship(delivery.claim_outbox(self._conn, OUTBOX_SWEEP_ROWS,
                                                self.config.lease_s))

    def prune_if_due(self) -> int:
        """Forget counted event ids older than the de-duplication window, every
        ``PRUNE_INTERVAL_S``; returns how many were forgotten."""
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_INTERVAL_S:
            return 0
        self._pruned_at = now
        total = 0
        for _ in range(5):
            deleted = issue_store.prune_processed_events(
                self._conn, self.config.dedup_window_s, PRUNE_BATCH_ROWS)
            total += deleted
            if deleted < PRUNE_BATCH_ROWS:
                break
        return total

    def sweep_artifacts_if_due(self) -> SweepResult | None:
        """The uploaded files' retention sweep, every ``artifact_sweep.interval_s``."""
        sweep = self.config.artifact_sweep
        now = time.monotonic()
        if sweep is None or now - self._artifacts_swept_at < sweep.interval_s:
            return None
        self._artifacts_swept_at = now
        result = sweep_artifacts(self._conn, sweep, time.time())
        if result is not None and (result.bundles or result.chunks or result.blobs):
            log.info("artifact sweep: %d expired bundle(s), %d leftover chunk(s), %d unused"
                     " blob(s) (%d bytes) removed", result.bundles, result.chunks,
                     result.blobs, result.blob_bytes)
        return result

    def wait_for_items(self, timeout_s: float, listener: psycopg.Connection[Any] | None
                       ) -> None:
        if listener is None:
            return
        for _ in listener.notifies(timeout=timeout_s, stop_after=1):
            pass

    def source_stats(self) -> dict[str, Any]:
        """What the hand-off's side adds to ``Consumer.stats`` (nothing for PostgreSQL)."""
        return {}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self._conn.close()


def _raw_item(w: WorkItem) -> RawItem:
    headers = w.meta.get("item_headers")
    return RawItem(w.queue_id, w.organization_id, w.project_id, w.event_id or "", w.item_type,
                   w.received_at, headers if isinstance(headers, dict) else {}, w.payload)


def _work_item(c: pg_queue.ClaimedItem) -> WorkItem:
    q = c.item
    return WorkItem(c.id, c.attempts, q.organization_id, q.project_id, q.key_id, q.item_type,
                    q.event_id, q.received_at, q.payload, q.meta)


def _claimed(w: WorkItem) -> pg_queue.ClaimedItem:
    return pg_queue.ClaimedItem(w.queue_id, w.attempts, pg_queue.QueuedItem(
        w.project_id, w.organization_id, w.key_id, w.item_type, w.event_id, w.received_at,
        w.payload, dict(w.meta)))


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)  # type: ignore[call-overload]
class Consumer:
    """One member of the consumer pool; starts working as soon as it is constructed."""

    def __init__(self, config: ConsumerConfig, grouping_shard_names: Sequence[str] = (),
                 symbolicator_names: Sequence[str] = ()) -> None:
        # The shards are looked up by name, not passed as handles: Ray restarts an actor
        # whose constructor arguments hold actor handles only with an error logged
        # (core_worker.cc, ray-project/ray#53727), and a restarted consumer finds the
        # shards again by their names.
        metrics.record_actor_start("consumer")
        shards = [find(name) for name in grouping_shard_names]  # an actor, or a hosted part
        self._config = config
        resolver = ShardedResolver(shards) if shards else None
        symbolicator = _sharded_symbolication(config, symbolicator_names)
        self._consumer: BatchConsumer
        if config.kafka is not None:
            from actors.kafka_consumer import KafkaBatchConsumer

            # A member of the Kafka consumer group: the group shares the partitions out
            # among the pool's consumers.
            self._consumer = KafkaBatchConsumer(
                config, config.kafka, resolver=resolver, symbolicator=symbolicator,
                client_id=ray.get_runtime_context().get_actor_name() or "crashray-consumer")
        else:
            self._consumer = BatchConsumer(config, resolver=resolver, symbolicator=symbolicator)
        self._listener = self._listen()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._errors = 0
        #: (monotonic time, processed_total) about once a second over the last minute.
        self._samples: deque[tuple[float, int]] = deque()
        self._thread = threading.Thread(target=self._loop, name="consumer", daemon=True)
        self._thread.start()

    def _listen(self) -> psycopg.Connection[Any] | None:
        """Kafka consumers wait in their poll; only the PostgreSQL queue's need this."""
        if self._config.kafka is not None:
            return None
        return pg_queue.listen(self._config.postgres_url)

    def _reconnect(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self._listener = self._listen()
        self._consumer.reconnect()

    def _loop(self) -> None:
        backoff_s = 0.0
        while not self._stop.is_set():
            try:
                self._consumer.prune_if_due()
                self._consumer.sweep_artifacts_if_due()
                self._consumer.ship_outbox_if_due()
                claimed = self._consumer.run_once()
                self._sample()
                backoff_s = 0.0
                if claimed == 0:
                    self._idle.set()
                    self._consumer.wait_for_items(self._config.idle_poll_s, self._listener)
                else:
                    self._idle.clear()
                    if claimed < self._config.batch_items:
                        # A part-filled batch: let the next one fill up a little, so
                        # PostgreSQL and ClickHouse see fewer, larger writes.
                        self._stop.wait(self._config.batch_wait_s)
            except StorageOutage as exc:
                # Nothing is lost or dead-lettered: the items wait in the queue. Back off
                # (doubling, capped) and try ClickHouse again before claiming anything.
                self._errors += 1
                backoff_s = min(max(2 * backoff_s, self._config.retry_backoff_s),
                                self._config.retry_backoff_max_s)
                log.warning("%s; next try in %.1f s", exc, backoff_s)
                self._stop.wait(backoff_s)
            except psycopg.OperationalError:
                self._errors += 1
                log.exception("PostgreSQL connection lost; reconnecting")
                self._stop.wait(1.0)
                self._try_reconnect()
            except Exception:
                # A failing batch must not end the loop: it stays leased and is retried;
                # the error is logged and counted.
                self._errors += 1
                log.exception("consumer batch failed; retrying after a pause")
                self._stop.wait(1.0)

    def _try_reconnect(self) -> None:
        try:
            self._reconnect()
        except psycopg.OperationalError:
            log.warning("PostgreSQL still unreachable; will retry")

    def _sample(self) -> None:
        now = time.monotonic()
        if not self._samples or now - self._samples[-1][0] >= 1.0:
            self._samples.append((now, self._consumer.processed_total))
        while self._samples and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()

    def stats(self) -> dict[str, Any]:
        total = self._consumer.processed_total
        since = self._samples[0][1] if self._samples else total
        return {"processed": total, "errors": self._errors,
                "idle": self._idle.is_set(), "storage_down": self._consumer.storage_down,
                "ship_failures": self._consumer.ship_failures,
                "processed_last_minute": total - since,
                "node_id": ray.get_runtime_context().get_node_id(),
                **self._consumer.source_stats()}

    def stop(self) -> None:
        """Finish the batch in hand, then stop (used by a clean shutdown)."""
        self._stop.set()
        self._thread.join(timeout=60)
        self._consumer.close()
        if self._listener is not None:
            self._listener.close()


#: The name prefix of Crashray's consumer pool (a test may run a pool of its own).
CONSUMER_POOL = "crashray-consumer"


def consumer_name(index: int, pool: str = CONSUMER_POOL) -> str:
    return f"{pool}-{index}"


def _sharded_symbolication(config: ConsumerConfig, names: Sequence[str]
                           ) -> ShardedSymbolication | None:
    """The consumer's side of the symbolication actors, if they run (else None: the
    consumer symbolicates itself when ``config.symbolication`` is set)."""
    if not names or config.symbolication is None:
        return None
    shards = [ray.get_actor(name, namespace="crashray") for name in names]
    return ShardedSymbolication(shards, frozenset(registry(config.symbolication)[1]))


def start_consumers(count: int, config: ConsumerConfig,
                    grouping_shard_names: Sequence[str] = (),
                    placement: Placement = LOCAL, first: int = 0,
                    pool: str = CONSUMER_POOL, symbolicator_names: Sequence[str] = ()
                    ) -> Sequence[Any]:
    """Consumers ``first`` … ``first + count - 1`` (named by ``consumer_name``)."""
    return [Consumer.options(**placement.pool(consumer_name(i, pool)))  # type: ignore[attr-defined]
            .remote(config, list(grouping_shard_names), list(symbolicator_names))
            for i in range(first, first + count)]
