"""The raw archive's files: what a replica writes is what a replay reads, one folder per
hour, never a half-written file, and a disk that refuses files costs the archive (not
processing) only past its buffer."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from storage.archive import (
    ArchiveSettings,
    ArchiveUnreadable,
    EnvelopeArchive,
    archive_files,
    read_archive,
)
from storage.queue import QueuedItem

T0 = dt.datetime(2026, 12, 4, 13, 59, 58, tzinfo=dt.UTC)


def item(n: int, project_id: int = 7, at: dt.datetime = T0) -> QueuedItem:
    return QueuedItem(project_id=project_id, organization_id=3, key_id=11, item_type="event",
                      event_id=f"{n:032x}", received_at=at,
                      payload=b'{"message": "boom %d"}' % n,
                      meta={"client_ip": "10.0.0.1", "sent_at": "2026-12-04T13:59:57Z"})


def settings(directory: Path, **changes: float) -> ArchiveSettings:
    values: dict[str, float] = {"flush_s": 10.0, "flush_items": 1000, "max_buffer": 100}
    values.update(changes)
    return ArchiveSettings(directory, values["flush_s"], int(values["flush_items"]),
                           int(values["max_buffer"]))


def test_items_written_across_an_hour_are_read_back_as_queued(tmp_path: Path) -> None:
    archive = EnvelopeArchive(settings(tmp_path))
    written = [item(1), item(2, at=T0 + dt.timedelta(seconds=3)), item(3, project_id=8)]
    archive.add(written)
    assert archive.flush() == 3
    assert sorted(p.parent.name for p in archive_files(tmp_path)) == [
        "hour=2026-12-04T13", "hour=2026-12-04T14"]
    assert sorted(read_archive(tmp_path), key=lambda i: i.event_id or "") == written
    assert [i.event_id for i in read_archive(tmp_path, project_id=8)] == [f"{3:032x}"]
    # Any Parquet reader takes the directory as one dataset, the hour as a column.
    frame = pl.read_parquet(tmp_path, hive_partitioning=True)
    assert frame.height == 3 and set(frame["hour"]) == {"2026-12-04T13", "2026-12-04T14"}


def test_the_buffer_is_written_when_full_or_old_enough(tmp_path: Path) -> None:
    archive = EnvelopeArchive(settings(tmp_path, flush_items=2, flush_s=10.0))
    archive.add([item(1)])
    now = dt.datetime.now(dt.UTC)
    assert archive.flush_if_due(now) == 0
    assert archive.flush_if_due(now + dt.timedelta(seconds=11)) == 1
    archive.add([item(2), item(3)])
    assert archive.flush_if_due(now + dt.timedelta(seconds=12)) == 2
    assert archive.written == 3


def test_a_refusing_disk_keeps_the_buffer_then_drops_the_oldest(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    archive = EnvelopeArchive(settings(blocked, max_buffer=3))
    archive.add([item(1), item(2)])
    assert archive.flush() == 0  # refused: kept
    archive.add([item(3), item(4)])
    assert archive.dropped == 1
    blocked.unlink()
    assert archive.flush() == 3
    assert sorted(i.event_id for i in read_archive(blocked)) == [
        f"{n:032x}" for n in (2, 3, 4)]


def test_no_partial_file_is_read_and_an_empty_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ArchiveUnreadable, match="no archive files"):
        archive_files(tmp_path)
    (tmp_path / "hour=2026-12-04T13").mkdir()
    (tmp_path / "hour=2026-12-04T13" / ".abc-00000001.parquet.partial").write_bytes(b"PAR")
    with pytest.raises(ArchiveUnreadable, match="no archive files"):
        archive_files(tmp_path)
    with pytest.raises(ArchiveUnreadable, match="not a directory"):
        archive_files(tmp_path / "missing")
