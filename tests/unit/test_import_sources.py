"""What ``crashray import`` reads from files (pipelines/import_sources.py), and the lines it
prints (pipelines/import_events.py): no Ray, no databases."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import sqlite3
import tarfile
from collections import Counter
from contextlib import closing
from pathlib import Path

import orjson
import pytest

from events.errors import BadRequest
from pipelines.import_events import ImportResult, Tally, progress_line, summary_line
from pipelines.import_sources import (
    JSON_LINES,
    SQLITE_MAGIC,
    ImportSourceError,
    RawEvent,
    list_sources,
    read_source,
    stable_event_id,
)

EVENT_ID = "b5441b7223244f8fa1eed55372c53c5f"


def envelope(event_id: str, sent_at: str | None = "2026-01-02T03:04:05Z") -> bytes:
    payload = orjson.dumps({"message": "hello", "timestamp": 1767322000})
    headers = {"event_id": event_id, **({"sent_at": sent_at} if sent_at else {})}
    return b"\n".join([orjson.dumps(headers), orjson.dumps({"type": "session"}), b"{}",
                       orjson.dumps({"type": "event", "length": len(payload)}), payload])


def read_all(paths: list[Path], lines: int = 1000) -> list[RawEvent]:
    return [e for d in list_sources(paths, lines) for e in read_source(d)]


def test_envelope_files_plain_and_gzip_give_their_event_received_at_sent_at(
        tmp_path: Path) -> None:
    (tmp_path / "a.envelope").write_bytes(envelope(EVENT_ID))
    (tmp_path / "b.envelope.gz").write_bytes(gzip.compress(envelope("0" * 32)))
    events = read_all([tmp_path])
    assert [e.event_id for e in events] == [EVENT_ID, "0" * 32]
    assert all(e.error is None for e in events)
    assert events[0].received == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert orjson.loads(events[0].payload)["message"] == "hello"


def test_envelope_without_sent_at_is_received_at_the_file_time(tmp_path: Path) -> None:
    path = tmp_path / "x.envelope"
    path.write_bytes(envelope(EVENT_ID, sent_at=None))
    os.utime(path, (1_700_000_000, 1_700_000_000))
    [event] = read_all([path])
    assert event.received == dt.datetime.fromtimestamp(1_700_000_000, dt.UTC)


def test_tarball_members_are_read_and_a_broken_envelope_is_reported_not_fatal(
        tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.envelope").write_bytes(envelope(EVENT_ID))
    (folder / "bad.envelope").write_bytes(b"not an envelope")
    tarball = tmp_path / "all.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(folder, arcname="in")
    events = read_all([tarball])
    assert sorted(str(e.error).split(":")[0] for e in events) == ["None", "invalid_envelope"]
    assert [e.event_id for e in events if e.error is None] == [EVENT_ID]


def test_json_lines_are_cut_into_ranges_that_read_every_line_once(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [orjson.dumps({"event_id": f"{n:032x}", "received": 1_700_000_000 + n})
             for n in range(10)]
    path.write_bytes(b"\n".join(lines[:5]) + b"\n\n" + b"\n".join(lines[5:]) + b"\n[1]\n")
    descriptors = list_sources([path], 3)
    assert [d.kind for d in descriptors] == [JSON_LINES] * 4
    assert sum(d.events or 0 for d in descriptors) == 11
    events = [e for d in descriptors for e in read_source(d)]
    assert [e.event_id for e in events if e.error is None] == [f"{n:032x}" for n in range(10)]
    assert events[3].received == dt.datetime.fromtimestamp(1_700_000_003, dt.UTC)
    [bad] = [e for e in events if e.error]
    assert str(bad.error).startswith(f"invalid_json: {path}:12:")


def test_an_event_without_id_gets_the_same_id_on_every_run(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_bytes(b'{"message": "no id"}')
    first, second = read_all([path]), read_all([path])
    assert first[0].event_id == second[0].event_id == stable_event_id(b'{"message": "no id"}')


def test_a_sqlite_file_that_is_not_a_bugsink_database_is_refused_before_the_job(
        tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        db.commit()
    assert path.read_bytes().startswith(SQLITE_MAGIC)
    with pytest.raises(BadRequest, match=r"not a Bugsink database"):
        list_sources([path], 10)


def test_a_missing_path_is_refused_with_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(ImportSourceError, match="no such file or folder"):
        list_sources([tmp_path / "nope"], 10)


def test_the_summary_names_imported_skipped_invalid_reasons_and_rate() -> None:
    tally = Tally(imported=90, skipped=5, invalid=Counter({"invalid_json": 3,
                                                          "invalid_envelope": 2}),
                  issues={1, 2, 3})
    assert summary_line(ImportResult(tally, 2.0)) == (
        "imported 90 events into 3 issues, skipped 5 already stored, invalid 5"
        " (invalid_json: 3, invalid_envelope: 2); 50 events/s")
    assert progress_line(tally, 200, 2.0) == "100 / 200 events (50/s), ETA 2 s"


def test_an_envelope_without_header_id_keeps_its_events_own_id_and_two_events_are_refused(
        tmp_path: Path) -> None:
    payloads = [orjson.dumps({"event_id": f"{n:032x}", "message": "m"}) for n in (1, 2)]
    items = [[orjson.dumps({"type": "event", "length": len(p)}), p] for p in payloads]
    (tmp_path / "one.envelope").write_bytes(b"\n".join([b"{}", *items[0]]))
    (tmp_path / "two.envelope").write_bytes(b"\n".join([b"{}", *items[0], *items[1]]))
    one, two = read_all([tmp_path])
    assert (one.event_id, one.error) == (f"{1:032x}", None)
    # Relay accepts one event item per envelope; ingest refuses the same envelope.
    assert str(two.error).startswith("invalid_envelope:")
