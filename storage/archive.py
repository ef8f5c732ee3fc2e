"""The raw archive (``CRASHRAY_ARCHIVE_DIR``, off by default): every envelope item ingest
accepted, as it was queued, in zstd-compressed Parquet files per hour, so that
``crashray import --archive DIR`` can replay exactly what was received.

Layout: ``DIR/hour=2026-12-04T13/<replica>-<sequence>.parquet`` (Hive-style partitions by
the hour the items were received, UTC; readers such as polars and DuckDB take the
directory as one dataset). A file is written whole under a temporary name and renamed, so
a reader never sees half of one. Each ingest replica writes its own files: nothing is
shared between processes.

What it keeps (``ARCHIVE_SCHEMA``): the item's organization, project and DSN key ids, its
type, event id, the time ingest received it, its payload (the item as queued: an event's
JSON after the envelope headers were applied, a session, an attachment, …) and what ingest
knew about its envelope (``meta``: client address, ``sent_at``, SDK, user agent) as JSON.

What it promises: items reach the archive after the queue accepted them, from a buffer
written every ``CRASHRAY_ARCHIVE_FLUSH_S`` seconds or ``CRASHRAY_ARCHIVE_FLUSH_ITEMS``
items. It is a record for replay, not the hand-off: a replica that dies loses the items of
its unwritten buffer from the archive (never from the queue), and a disk that refuses a
file is logged and the buffer kept for the next try, up to ``CRASHRAY_ARCHIVE_MAX_BUFFER``
items, past which the oldest are dropped from the archive and counted (``dropped``).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from events.errors import BadRequest
from storage.queue import QueuedItem

log = logging.getLogger("crashray.archive")

ARCHIVE_SCHEMA: Final = pa.schema([
    ("organization_id", pa.int64()), ("project_id", pa.int64()), ("key_id", pa.int64()),
    ("item_type", pa.string()), ("event_id", pa.string()),
    ("received_at", pa.timestamp("us", tz="UTC")), ("payload", pa.binary()),
    ("meta", pa.string()),
])
HOUR_FORMAT: Final = "%Y-%m-%dT%H"


class ArchiveUnreadable(BadRequest):
    """The archive directory given to a reader is missing or holds no archive."""

    code = "archive_unreadable"


@dataclass(frozen=True)
class ArchiveSettings:
    directory: Path
    flush_s: float
    flush_items: int
    max_buffer: int


class EnvelopeArchive:
    """One ingest replica's writer: ``add`` buffers (cheap, any thread), ``flush_if_due``
    and ``flush`` write (call them off the event loop)."""

    def __init__(self, settings: ArchiveSettings) -> None:
        self.settings = settings
        self._buffer: list[QueuedItem] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._name = uuid.uuid4().hex[:12]
        self._sequence = 0
        self._flushed_at = dt.datetime.now(dt.UTC)
        self.written = 0
        self.dropped = 0

    def add(self, items: Sequence[QueuedItem]) -> None:
        with self._lock:
            self._buffer.extend(items)
            over = len(self._buffer) - self.settings.max_buffer
            if over > 0:  # the disk has refused files for a while: keep the newest
                del self._buffer[:over]
                self.dropped += over
                log.error("archive buffer full: %d items dropped from the archive (they"
                          " are queued and processed as usual)", over)

    def flush_if_due(self, now: dt.datetime | None = None) -> int:
        now = now or dt.datetime.now(dt.UTC)
        with self._lock:
            pending = len(self._buffer)
        due = pending >= self.settings.flush_items or (
            pending and (now - self._flushed_at).total_seconds() >= self.settings.flush_s)
        return self.flush(now) if due else 0

    def flush(self, now: dt.datetime | None = None) -> int:
        """Write the buffer, one file per hour it covers; returns the items written. On a
        write error the items go back to the buffer and the error is logged."""
        with self._write_lock:
            with self._lock:
                items, self._buffer = self._buffer, []
            self._flushed_at = now or dt.datetime.now(dt.UTC)
            if not items:
                return 0
            by_hour: dict[str, list[QueuedItem]] = {}
            for item in items:
                by_hour.setdefault(_hour(item.received_at), []).append(item)
            written = 0
            for hour, group in sorted(by_hour.items()):
                try:
                    self._write(hour, group)
                    written += len(group)
                except OSError:
                    log.exception("could not write %d items to the archive %s; kept for the"
                                  " next try", len(group), self.settings.directory)
                    self.add(group)
            self.written += written
            return written

    def _write(self, hour: str, items: Sequence[QueuedItem]) -> None:
        folder = self.settings.directory / f"hour={hour}"
        folder.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        final = folder / f"{self._name}-{self._sequence:08d}.parquet"
        partial = folder / f".{final.name}.partial"
        pq.write_table(archive_table(items), partial, compression="zstd")
        os.replace(partial, final)


def archive_table(items: Sequence[QueuedItem]) -> pa.Table:
    return pa.Table.from_pydict({
        "organization_id": [i.organization_id for i in items],
        "project_id": [i.project_id for i in items],
        "key_id": [i.key_id for i in items],
        "item_type": [i.item_type for i in items],
        "event_id": [i.event_id for i in items],
        "received_at": [_utc(i.received_at) for i in items],
        "payload": [bytes(i.payload) for i in items],
        "meta": [orjson.dumps(i.meta, default=str).decode() for i in items],
    }, schema=ARCHIVE_SCHEMA)


def archive_files(directory: Path) -> list[Path]:
    """The archive's complete files, oldest hour first."""
    if not directory.is_dir():
        raise ArchiveUnreadable(f"archive {directory}: not a directory; give the directory"
                                " CRASHRAY_ARCHIVE_DIR names")
    files = sorted(p for p in directory.glob("hour=*/*.parquet") if not p.name.startswith("."))
    if not files:
        raise ArchiveUnreadable(f"archive {directory}: no archive files (hour=…/*.parquet)"
                                " in it; is CRASHRAY_ARCHIVE_DIR set on the instance?")
    return files


def read_archive(path: Path, project_id: int | None = None) -> Iterator[QueuedItem]:
    """The archived items of one file (or of every file of an archive directory), of
    ``project_id`` only when given, in the order they were written."""
    for file in archive_files(path) if path.is_dir() else [path]:
        table = pq.read_table(file, schema=ARCHIVE_SCHEMA)
        for row in table.to_pylist():
            if project_id is not None and row["project_id"] != project_id:
                continue
            yield QueuedItem(
                project_id=row["project_id"], organization_id=row["organization_id"],
                key_id=row["key_id"], item_type=row["item_type"], event_id=row["event_id"],
                received_at=row["received_at"], payload=row["payload"],
                meta=orjson.loads(row["meta"]) if row["meta"] else {})


def _hour(when: dt.datetime) -> str:
    return _utc(when).strftime(HOUR_FORMAT)


def _utc(when: dt.datetime) -> dt.datetime:
    return when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)
