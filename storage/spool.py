"""Ingest's answer within a bound while PostgreSQL hangs: a local spool behind the queue.

A PostgreSQL server that neither answers nor refuses (a frozen VM, a stalled disk) used to
hold every ingest request until it came back. ``BoundedQueue`` (the ``storage.handoff``
``Handoff`` over the PostgreSQL queue) waits for the queue's transaction at most
``CRASHRAY_HANDOFF_TIMEOUT_S``; past that it writes the batch to a spool file on the
node's disk (fsync'd, under ``<data_dir>/spool``) and only then answers 200. From then on,
until a drainer thread has moved every spooled batch into the queue, new batches go
straight to the spool, so they answer at once. The spool holds at most
``CRASHRAY_SPOOL_MAX_BYTES``; a batch that would not fit is refused with 503
(``Retry-After``), as when the queue refuses.

Stored exactly once. The transaction ingest stopped waiting for may still commit once the
server wakes, or never. It told its id (``txid_current()``) before sending any item
(``storage.queue.Attempt``); one that had not told it by then sends nothing (it rolls back).
The spool file keeps that id, and every drain transaction writes its own id into an
attempt file (fsync'd) before it sends anything. A spooled batch is then:

* dropped, when any of its transactions committed (``txid_status``);
* left for the next round, while one is still in progress (one that stays in progress
  longer than ``IN_PROGRESS_GRACE_S`` is ended with ``pg_terminate_backend``, so it
  aborts unless it had committed);
* appended to the queue again when all of them aborted (or never started), and the file
  removed only after that commit.

Items of a spooled batch the queue refuses for their data (``UnqueueableData``, which the
door check, events/storable.py, should have refused with a 400 already) are set aside under
``refused/`` (spool format, the reasons beside them), logged, and the batch's other items
appended; so is a batch file that cannot be read. Nothing is retried forever.

Files are removed before the attempt files naming them, so a crash between the two never
leaves a batch without the ids that say it was stored. An id PostgreSQL no longer knows
(``txid_status`` is NULL after wraparound, or raises for an id from its future) counts as
not committed: its batch is appended again, logged. A limit: ids are the server's own, so a
spool must be drained by the server it was spooled against. Failed over to a standby that
lacks the transaction, or restored from a backup, the new server may give the same id to a
transaction of its own, and a batch spooled meanwhile would count as stored when that one
commits. Drain the spool (it drains by itself once the server answers) before such a
switch.

The spool is per node: a replica's leftover files are drained by the next replica that
starts on the same data directory (one drainer at a time, under ``drain.lock``). Spool file
format, version 1: ``MAGIC``, a uint32 big-endian length and that many bytes of orjson
header ``{"xid": …, "pid": …}`` (nulls when no transaction had started), then for each item
a uint32 big-endian length and the item as ``storage.kafka.encode_item`` frames it.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import logging
import os
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from queue import SimpleQueue
from typing import Any

import orjson
import psycopg

from events.errors import Overloaded
from storage.kafka import decode_item, encode_item
from storage.queue import (
    Attempt,
    OrganizationBacklog,
    PostgresQueue,
    QueuedItem,
    UnqueueableData,
)

log = logging.getLogger("crashray.spool")

MAGIC = b"crashray-spool 1\n"
_LENGTH = struct.Struct(">I")
BATCH_SUFFIX = ".batch"
ATTEMPT_SUFFIX = ".attempt"
#: Where batches the queue refuses are set aside, whole (``Spool.set_aside``).
REFUSED_DIRECTORY = "refused"
#: Seconds a transaction that ingest gave up on may stay in progress before the drainer
#: ends it: a server that answers again finishes it within milliseconds.
IN_PROGRESS_GRACE_S = 30.0
#: Seconds a backlog question waits before the last answer is used instead: the figures
#: are a second old by design (serve_apps/ingest_request.py), and a request should not
#: spend its time limit on them.
ASK_WAIT_S = 0.25
#: Seconds after which a spool temporary file is a dead write's leftover.
STALE_TEMPORARY_S = 60.0


@dataclass(frozen=True)
class SpoolSettings:
    """``CRASHRAY_HANDOFF_TIMEOUT_S``, ``CRASHRAY_SPOOL_MAX_BYTES`` (cluster/settings.py)."""

    directory: Path
    timeout_s: float
    max_bytes: int
    #: Seconds between two looks at an empty spool (a drainer with files never waits).
    drain_interval_s: float = 0.5
    #: Spooled batches appended to the queue in one drain transaction.
    drain_batch_files: int = 64


class SpoolFull(Overloaded):
    """The queue does not answer and the spool is full: nothing was accepted."""

    code = "spool_full"


@dataclass(frozen=True)
class SpooledBatch:
    name: str
    #: (transaction id, server process id) of the transaction ingest gave up on, if any.
    ids: tuple[int, int] | None
    items: list[QueuedItem]


class Spool:
    """The spool directory: batch files, attempt files, and the drain lock. No PostgreSQL."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        for name in os.listdir(directory):
            # A write that died before its rename was never answered 200 (an older one:
            # a newer one may be another replica's, being written now).
            path = directory / name
            with suppress(FileNotFoundError):
                if name.startswith(".") and name.endswith(".tmp") and \
                        time.time() - path.stat().st_mtime > STALE_TEMPORARY_S:
                    path.unlink()

    def write(self, items: Sequence[QueuedItem], ids: tuple[int, int] | None) -> int:
        """Write a batch durably (file and directory fsync'd); its size in bytes."""
        data = _encode(items, ids)
        # Names sort in the order batches were spooled (the drainer keeps that order) and
        # carry the number of items, so the backlog is counted without reading the files.
        name = f"{time.time_ns():020d}-{len(items)}-{uuid.uuid4().hex}{BATCH_SUFFIX}"
        _write_durably(self.directory, name, data)
        return len(data)

    def batch_names(self) -> list[str]:
        return sorted(n for n in os.listdir(self.directory) if n.endswith(BATCH_SUFFIX))

    def bytes_and_items(self) -> tuple[int, int]:
        """What the spool holds: bytes on disk, and items (from the files' names)."""
        total_bytes = total_items = 0
        for name in self.batch_names():
            try:
                total_bytes += (self.directory / name).stat().st_size
            except FileNotFoundError:
                continue  # drained meanwhile
            total_items += int(name.split("-")[1])
        return total_bytes, total_items

    def read(self, name: str) -> SpooledBatch:
        data = (self.directory / name).read_bytes()
        frames = _frames(data, name)
        header = orjson.loads(next(frames))
        ids = None if header["xid"] is None else (int(header["xid"]), int(header["pid"]))
        return SpooledBatch(name, ids, [decode_item(frame) for frame in frames])

    def record_attempt(self, names: Sequence[str], xid: int, backend_pid: int) -> str:
        """Say durably that transaction ``xid`` appends these batches; the file's name."""
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}{ATTEMPT_SUFFIX}"
        _write_durably(self.directory, name, orjson.dumps({"xid": xid, "pid": backend_pid,
                                                           "batches": list(names)}))
        return name

    def attempts(self) -> dict[str, list[tuple[int, int]]]:
        """For each batch named by an attempt file, the (xid, pid) of those attempts."""
        found: dict[str, list[tuple[int, int]]] = {}
        for _, record in self._attempt_records():
            for batch in record["batches"]:
                found.setdefault(batch, []).append((int(record["xid"]), int(record["pid"])))
        return found

    def _attempt_records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Each attempt file's name and record, oldest first."""
        for name in sorted(os.listdir(self.directory)):
            if name.endswith(ATTEMPT_SUFFIX):
                yield name, orjson.loads((self.directory / name).read_bytes())

    def remove(self, names: Sequence[str]) -> None:
        """Remove batches, then every attempt file none of whose batches is left."""
        for name in names:
            (self.directory / name).unlink(missing_ok=True)
        _fsync_directory(self.directory)  # the batches are gone before their attempts
        left = set(self.batch_names())
        for name, record in self._attempt_records():
            if not left.intersection(record["batches"]):
                (self.directory / name).unlink(missing_ok=True)
        _fsync_directory(self.directory)

    def set_aside(self, name: str, reason: str) -> None:
        """Move a batch that cannot be read into ``refused/``, with the reason beside it."""
        refused = self._refused_directory()
        (refused / f"{name}.reason").write_text(reason + "\n")
        os.replace(self.directory / name, refused / name)
        _fsync_directory(refused)
        self.remove([])
        log.error("spooled batch %s set aside in %s: %s", name, refused, reason)

    def set_aside_items(self, name: str, refused_items: list[tuple[QueuedItem, str]]) -> None:
        """Keep the items of batch ``name`` the queue refuses under ``refused/`` (the same
        name: a drain that runs again writes the same file), durably, with the reasons."""
        refused = self._refused_directory()
        reasons = "".join(f"item {n}: {reason}\n" for n, (_, reason) in enumerate(refused_items))
        (refused / f"{name}.reason").write_text(reasons)
        _write_durably(refused, name, _encode([item for item, _ in refused_items], None))
        log.error("spooled batch %s: %d items the queue refuses set aside in %s: %s", name,
                  len(refused_items), refused, reasons.strip())

    def drop_attempts(self, xids: set[int]) -> None:
        """Remove the attempt files of these transactions."""
        if not xids:
            return
        for name, record in self._attempt_records():
            if record["xid"] in xids:
                (self.directory / name).unlink(missing_ok=True)
        _fsync_directory(self.directory)

    def _refused_directory(self) -> Path:
        refused = self.directory / REFUSED_DIRECTORY
        refused.mkdir(exist_ok=True)
        return refused

    @contextmanager
    def drain_lock(self) -> Iterator[bool]:
        """Whether this caller is the directory's one drainer (flock, not waiting)."""
        with open(self.directory / "drain.lock", "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)



def _write_durably(directory: Path, name: str, data: bytes) -> None:
    """``directory/name`` holds ``data`` whole, file and directory fsync'd (a temporary
    file renamed: readers never see part of it)."""
    temporary = directory / f".{name}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, directory / name)
    _fsync_directory(directory)


def _encode(items: Sequence[QueuedItem], ids: tuple[int, int] | None) -> bytes:
    header = orjson.dumps({"xid": ids[0] if ids else None, "pid": ids[1] if ids else None})
    parts = [MAGIC, _LENGTH.pack(len(header)), header]
    for item in items:
        value = encode_item(item)
        parts += [_LENGTH.pack(len(value)), value]
    return b"".join(parts)


def _frames(data: bytes, name: str) -> Iterator[bytes]:
    if not data.startswith(MAGIC):
        raise ValueError(f"spool file {name}: not a Crashray spool file (version 1)")
    offset = len(MAGIC)
    while offset < len(data):
        if offset + _LENGTH.size > len(data):
            raise ValueError(f"spool file {name}: {len(data) - offset} bytes at {offset},"
                             " shorter than a frame's length")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        if offset + length > len(data):
            raise ValueError(f"spool file {name}: a frame of {length} bytes at {offset}"
                             f" but only {len(data) - offset} follow")
        yield data[offset:offset + length]
        offset += length


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def batch_fate(statuses: Sequence[str | None]) -> str:
    """What to do with a spooled batch, given the ``txid_status`` of every transaction that
    may have appended it: 'stored' (one committed: drop the file), 'wait' (one is still in
    progress), or 'append' (none did: append it again)."""
    if "committed" in statuses:
        return "stored"
    if "in progress" in statuses:
        return "wait"
    return "append"


class Drainer:
    """Moves spooled batches into the queue, oldest first, one drain transaction for up to
    ``drain_batch_files`` of them. Not thread-safe: one thread drains. ``clock`` is
    injectable (the grace of transactions in progress)."""

    def __init__(self, spool: Spool, queue: PostgresQueue, batch_files: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._spool, self._queue, self._batch_files, self._clock = spool, queue, batch_files, clock
        self._in_progress_since: dict[int, float] = {}

    def drain_round(self) -> int:
        """One round; the batches it settled (stored before, or appended now). Raises what
        PostgreSQL raises: the files stay for the next round."""
        names = self._spool.batch_names()[:self._batch_files]
        if not names:
            return 0
        attempts = self._spool.attempts()
        batches = self._readable(names)
        names = [b.name for b in batches]
        ids = {name: ([b.ids] if b.ids else []) + attempts.get(name, [])
               for name, b in zip(names, batches, strict=True)}
        statuses = self._queue.transaction_statuses(
            sorted({xid for pairs in ids.values() for xid, _ in pairs}))
        fates = {name: batch_fate([statuses[xid] for xid, _ in ids[name]]) for name in names}
        # An aborted transaction stays aborted: its attempt files say nothing any more.
        self._spool.drop_attempts({xid for xid, status in statuses.items() if status == "aborted"})
        self._end_stale([pair for name in names if fates[name] == "wait" for pair in ids[name]
                         if statuses[pair[0]] == "in progress"])
        stored = [name for name in names if fates[name] == "stored"]
        if stored:
            self._spool.remove(stored)
        appended = [b for b in batches if fates[b.name] == "append"]
        if appended:
            self._append(appended, [ids[b.name] for b in appended])
        return len(stored) + len(appended)

    def _readable(self, names: list[str]) -> list[SpooledBatch]:
        """The batches of ``names`` that can be read; the others are set aside."""
        batches = []
        for name in names:
            try:
                batches.append(self._spool.read(name))
            except (ValueError, KeyError, TypeError) as exc:
                self._spool.set_aside(name, f"unreadable: {type(exc).__name__}: {exc}")
        return batches

    def _append(self, batches: list[SpooledBatch], ids: list[list[tuple[int, int]]]) -> None:
        for name, pairs in zip([b.name for b in batches], ids, strict=True):
            for xid, _ in pairs:
                log.warning("spooled batch %s: transaction %d did not commit; appending it",
                            name, xid)
        names = [b.name for b in batches]

        def recorded() -> Attempt:
            return Attempt(lambda xid, pid: self._spool.record_attempt(names, xid, pid))

        try:
            self._queue.enqueue([item for b in batches for item in b.items], recorded())
        except UnqueueableData:
            # The door check (events/storable.py) should have refused such data before it
            # was answered 200. Batch by batch, then item by item: what the queue refuses
            # is set aside (durably, before the commit), not retried forever, and the
            # other items of its batch (other requests', maybe) are appended.
            if len(batches) > 1:
                for batch, pairs in zip(batches, ids, strict=True):
                    self._append([batch], [pairs])
                return
            self._queue.enqueue_separately(
                batches[0].items, recorded(),
                lambda refused: self._spool.set_aside_items(names[0], refused))
        self._spool.remove(names)

    def _end_stale(self, pairs: list[tuple[int, int]]) -> None:
        now = self._clock()
        waiting = {xid for xid, _ in pairs}
        self._in_progress_since = {x: t for x, t in self._in_progress_since.items()
                                   if x in waiting}
        for xid, pid in pairs:
            since = self._in_progress_since.setdefault(xid, now)
            if now - since > IN_PROGRESS_GRACE_S and self._queue.end_transaction(xid, pid):
                log.warning("ended transaction %d (server process %d): in progress for %.0f s"
                            " after ingest gave up on it", xid, pid, now - since)


class Worker:
    """One daemon thread running the calls submitted to it in order. Not a
    ThreadPoolExecutor: Python joins those threads at exit, and one stuck in a server that
    hangs would hold the process."""

    def __init__(self, name: str) -> None:
        self._calls: SimpleQueue[tuple[concurrent.futures.Future[Any], Callable[..., Any],
                                       tuple[Any, ...]] | None] = SimpleQueue()
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, call: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._calls.put((future, call, args))
        return future

    def shutdown(self) -> None:
        """End the thread after the calls already submitted (not waiting for them)."""
        self._calls.put(None)

    def _run(self) -> None:
        while (submitted := self._calls.get()) is not None:
            future, call, args = submitted
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while it waited
            try:
                future.set_result(call(*args))
            except BaseException as exc:  # handed to whoever waits for the future
                future.set_exception(exc)


class BoundedQueue:
    """``storage.handoff.Handoff`` over the PostgreSQL queue that answers within
    ``settings.timeout_s``, spooling what the queue did not take in time (module docstring).
    Thread-safe as ``PostgresQueue`` is."""

    def __init__(self, url: str, settings: SpoolSettings) -> None:
        self.settings = settings
        self._url = url
        self._queue = PostgresQueue(url)
        self._spool = Spool(settings.directory)
        # One thread for the queue's transactions, one for the backlog questions: either
        # may be stuck in a hung server while callers go on without it.
        self._writer = Worker("handoff-write")
        self._asker = Worker("handoff-ask")
        self._asked: dict[str, concurrent.futures.Future[Any]] = {}
        self._answers: dict[str, Any] = {"backlog": 0, "per_organization": {}}
        self._lock = threading.Lock()
        self._spooled_bytes, self._spooled_items = self._spool.bytes_and_items()
        #: While set, batches go straight to the spool (the queue did not answer in time,
        #: or the spool is not empty yet).
        self._spooling = threading.Event()
        if self._spooled_items:
            self._spooling.set()
        self._stopped = threading.Event()
        self._drainer = threading.Thread(target=self._drain_loop, name="spool-drainer",
                                         daemon=True)
        self._drainer.start()

    @property
    def spooling(self) -> bool:
        """Whether batches go straight to the spool now."""
        return self._spooling.is_set()

    def enqueue(self, items: Sequence[QueuedItem]) -> None:
        if not items:
            return
        if self._spooling.is_set():
            self._spool_batch(items, None)
            return
        attempt = Attempt()
        future = self._writer.submit(self._queue.enqueue, items, attempt)
        try:
            future.result(timeout=self.settings.timeout_s)
            return
        except concurrent.futures.TimeoutError:
            pass
        future.cancel()
        ids = attempt.abandon()
        self._spooling.set()
        log.warning("the queue did not take %d items within %s s"
                    " (CRASHRAY_HANDOFF_TIMEOUT_S): spooling until it answers again",
                    len(items), self.settings.timeout_s)
        self._spool_batch(items, ids)

    def _spool_batch(self, items: Sequence[QueuedItem], ids: tuple[int, int] | None) -> None:
        with self._lock:
            if self._spooled_bytes >= self.settings.max_bytes:
                raise SpoolFull("the service cannot store events now", [
                    "PostgreSQL does not answer and the spool holds"
                    f" {self._spooled_bytes} bytes, its limit (CRASHRAY_SPOOL_MAX_BYTES"
                    f" {self.settings.max_bytes})"])
            written = self._spool.write(items, ids)
            self._spooled_bytes += written
            self._spooled_items += len(items)

    def backlog_upper_bound(self) -> int:
        return int(self._ask("backlog", self._queue.backlog_upper_bound)) + self._spooled_items

    def queued_per_organization(self) -> dict[int, OrganizationBacklog]:
        answer: dict[int, OrganizationBacklog] = self._ask(
            "per_organization", self._queue.queued_per_organization)
        return answer

    def _ask(self, key: str, question: Callable[[], Any]) -> Any:
        """The queue's answer within ``ASK_WAIT_S``; the last one while it does not
        answer (a question still waiting is not asked twice)."""
        future = self._asked.pop(key, None)
        if future is not None and future.done():
            if future.exception() is None:
                self._answers[key] = future.result()
            future = None
        if future is None:
            future = self._asker.submit(question)
            with suppress(concurrent.futures.TimeoutError):
                self._answers[key] = future.result(
                    timeout=min(self.settings.timeout_s, ASK_WAIT_S))
        if not future.done():
            self._asked[key] = future
        return self._answers[key]

    def close(self) -> None:
        """Stop draining (what is spooled stays for the next start) and close."""
        self._stopped.set()
        self._drainer.join(timeout=self.settings.timeout_s + 1.0)
        self._writer.shutdown()
        self._asker.shutdown()
        self._queue.close(wait_s=self.settings.timeout_s)

    def _drain_loop(self) -> None:
        queue = PostgresQueue(self._url)
        drainer = Drainer(self._spool, queue, self.settings.drain_batch_files)
        while not self._stopped.is_set():
            settled = 0
            try:
                with self._spool.drain_lock() as mine:
                    if mine:
                        settled = drainer.drain_round()
                if not self._stopped.is_set():
                    self._after_round(settled, queue)
            except (psycopg.Error, OSError):
                log.warning("the spool could not be drained yet", exc_info=True)
            except Exception:
                # Whatever else a round raises must not end the only thread that drains:
                # files it cannot read are set aside by the round itself; this logs the
                # rest, and the next round tries again.
                log.exception("a spool drain round failed")
            if not settled:
                self._stopped.wait(self.settings.drain_interval_s)
        queue.close()

    def _after_round(self, settled: int, queue: PostgresQueue) -> None:
        """Count what is left; close the breaker once the spool is empty and the last
        transaction ingest gave up on has ended; drop the drainer's connection then."""
        with self._lock:
            self._spooled_bytes, self._spooled_items = self._spool.bytes_and_items()
            empty = not self._spooled_items
        if empty and self._spooling.is_set() and not self._writer_busy():
            self._spooling.clear()
            log.warning("the spool is drained: batches go to the queue again")
        if empty and not settled:
            queue.close()

    def _writer_busy(self) -> bool:
        """Whether a transaction ingest gave up on still occupies the writer thread."""
        probe = self._writer.submit(lambda: None)
        try:
            probe.result(timeout=0.05)
            return False
        except concurrent.futures.TimeoutError:
            probe.cancel()
            return True
