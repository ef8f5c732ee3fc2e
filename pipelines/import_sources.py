"""What ``crashray import`` reads: the sources given on its command line, as event payloads
with the time they were received. Pure code (files only; no Ray, no databases).

Sources, told apart by their first bytes and then their names:

* a folder: every file under it (recursively, in name order), each read as below;
* a tarball (``.tar``, ``.tar.gz``, ``.tgz``): every regular file in it, read as below;
* a Sentry envelope file (any other name; gzip-compressed too): its ``event`` items,
  received at the envelope's ``sent_at`` header, else at the file's modification time;
* Sentry event JSON: one event per ``.json`` file, or one per line in ``.jsonl`` /
  ``.ndjson`` files (gzip-compressed too, ``.json.gz`` …), received at the event's own
  ``received`` field when it has one, else at the file's modification time;
* a Bugsink SQLite database (first bytes ``SQLite format 3\\0``): its events, received when
  Bugsink received them (``storage.bugsink.read_bugsink``).

The driver lists sources into ``SourceDescriptor``\\s (``list_sources``; a large JSON lines
file is cut into line ranges so that several tasks read it), and the tasks turn each into
``RawEvent``\\s (``read_source``). An unreadable file or line becomes a ``RawEvent`` with an
``error`` (reason code and detail), reported in the summary, never a crash of the job.

An event without an id anywhere (no envelope header, no ``event_id`` field) gets one
derived from its bytes (``stable_event_id``), so that a re-run finds it already stored.

    events.errors.BadRequest
    └── ImportSourceError      a path on the command line that cannot be imported
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from events.envelope import EnvelopeLimits, normalize_event_id, normalize_sent_at, parse_envelope
from events.errors import BadRequest, PayloadTooLarge
from storage.bugsink import read_bugsink

SQLITE_MAGIC: Final = b"SQLite format 3\x00"
GZIP_MAGIC: Final = b"\x1f\x8b"
JSON_LINES_SUFFIXES: Final = (".jsonl", ".ndjson")
TAR_SUFFIXES: Final = (".tar", ".tar.gz", ".tgz")
#: Envelope items imported: the error events (other items, sessions, attachments,
#: transactions, describe no stored event; they are counted as ``not_an_event``).
EVENT_ITEM_TYPES: Final = frozenset({"event"})
#: An envelope file of a live SDK holds one event; the limits are Relay's, with room for
#: envelopes a client batched by hand.
IMPORT_ENVELOPE_LIMITS: Final = EnvelopeLimits(max_items=100_000)

#: Kinds of descriptors.
ENVELOPE, EVENT_JSON, JSON_LINES, TARBALL, BUGSINK = (
    "envelope", "json", "jsonl", "tar", "bugsink")


class ImportSourceError(BadRequest):
    """A path on the command line that cannot be imported (missing, unreadable)."""

    code = "import_source"


@dataclass(frozen=True)
class SourceDescriptor:
    """One unit of reading for a task: a file (or bytes ``start``…``end`` of a JSON lines
    file; ``end`` -1: to its end), and how many events it holds when known (for the ETA)."""

    path: str
    kind: str
    start: int = 0
    end: int = -1
    events: int | None = None
    #: The file's line number of the line at ``start`` (origins name lines of the file).
    first_line: int = 1


@dataclass(frozen=True)
class RawEvent:
    """An event payload as read, or why it could not be read (``error``: a reason code
    and detail, e.g. ``invalid_envelope: …``)."""

    origin: str
    payload: bytes
    received: dt.datetime
    event_id: str | None = None
    error: str | None = None


# --- listing (the driver) ---------------------------------------------------------------------
def list_sources(paths: list[Path], lines_per_descriptor: int) -> list[SourceDescriptor]:
    """The descriptors of ``paths`` (files, folders, tarballs, databases)."""
    descriptors: list[SourceDescriptor] = []
    for path in paths:
        if not path.exists():
            raise ImportSourceError(f"{path}: no such file or folder; give envelope files,"
                                    " event JSON, tarballs, folders or a Bugsink database")
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            descriptors += _describe(file, lines_per_descriptor)
    return descriptors


def _describe(file: Path, lines_per_descriptor: int) -> list[SourceDescriptor]:
    try:
        with file.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise ImportSourceError(f"{file}: cannot be read ({exc})") from exc
    name = file.name.lower()
    if head == SQLITE_MAGIC:
        # Opened and checked now (the reader refuses a file that is not a Bugsink
        # database, naming what is missing), so a wrong file fails before the job starts.
        read_bugsink(file).close()
        return [SourceDescriptor(str(file), BUGSINK)]
    if name.endswith(TAR_SUFFIXES):
        return [SourceDescriptor(str(file), TARBALL, events=_tar_members(file))]
    plain = name.removesuffix(".gz")
    if plain.endswith(JSON_LINES_SUFFIXES):
        if head.startswith(GZIP_MAGIC):  # cannot seek into it: one task reads it all
            return [SourceDescriptor(str(file), JSON_LINES, events=None)]
        return _line_ranges(file, lines_per_descriptor)
    if plain.endswith(".json"):
        return [SourceDescriptor(str(file), EVENT_JSON, events=1)]
    return [SourceDescriptor(str(file), ENVELOPE, events=1)]


def _tar_members(file: Path) -> int | None:
    try:
        with tarfile.open(file) as tar:
            return sum(1 for m in tar if m.isfile())
    except (OSError, tarfile.TarError):
        return None  # reported when a task reads it


def _line_ranges(file: Path, lines_per_descriptor: int) -> list[SourceDescriptor]:
    """Byte ranges of at most ``lines_per_descriptor`` lines each."""
    ranges: list[SourceDescriptor] = []
    start = offset = lines = 0
    first_line = line_number = 1
    with file.open("rb") as f:
        for line in f:
            offset += len(line)
            line_number += 1
            lines += line.strip() != b""
            if lines == lines_per_descriptor:
                ranges.append(SourceDescriptor(str(file), JSON_LINES, start, offset, lines,
                                               first_line))
                start, lines, first_line = offset, 0, line_number
    if lines or not ranges:
        ranges.append(SourceDescriptor(str(file), JSON_LINES, start, offset, lines, first_line))
    return ranges


# --- reading (the tasks) ----------------------------------------------------------------------
def read_source(d: SourceDescriptor) -> Iterator[RawEvent]:
    """The events of one descriptor."""
    path = Path(d.path)
    try:
        mtime = _mtime(path.stat().st_mtime)
        if d.kind == BUGSINK:
            yield from _read_bugsink(path)
        elif d.kind == TARBALL:
            yield from _read_tar(path)
        elif d.kind == JSON_LINES:
            yield from _read_lines(d, mtime)
        else:
            yield from read_file_bytes(d.path, path.read_bytes(), mtime)
    except (OSError, tarfile.TarError, EOFError, gzip.BadGzipFile) as exc:
        yield _failed(d.path, "unreadable_file", f"{type(exc).__name__}: {exc}")


def read_file_bytes(origin: str, data: bytes, mtime: dt.datetime) -> Iterator[RawEvent]:
    """The events of one file's bytes (a folder's file or a tarball's member)."""
    if data.startswith(GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            yield _failed(origin, "unreadable_file", f"not valid gzip ({exc})")
            return
    plain = origin.lower().removesuffix(".gz")
    if data.startswith(SQLITE_MAGIC):
        yield _failed(origin, "unsupported_source",
                      "a SQLite database inside a folder's tarball: import it on its own")
    elif plain.endswith(JSON_LINES_SUFFIXES):
        for n, line in enumerate(data.splitlines(), 1):
            if line.strip():
                yield json_event(f"{origin}:{n}", line, mtime)
    elif plain.endswith(".json"):
        yield json_event(origin, data, mtime)
    else:
        yield from envelope_events(origin, data, mtime)


def envelope_events(origin: str, data: bytes, mtime: dt.datetime) -> Iterator[RawEvent]:
    """The ``event`` items of an envelope, received at its ``sent_at`` (else ``mtime``)."""
    try:
        envelope = parse_envelope(data, IMPORT_ENVELOPE_LIMITS)
        header_id = envelope.event_id
    except (BadRequest, PayloadTooLarge) as exc:
        # As ingest refuses it (a malformed envelope; one over Relay's limits, such as two
        # event items in one envelope): reported, the other files go on.
        yield _failed(origin, "invalid_envelope", str(exc))
        return
    sent_at = normalize_sent_at(envelope.headers.get("sent_at"))
    received = dt.datetime.fromisoformat(sent_at) if sent_at else mtime
    events = [i for i in envelope.items if i.type in EVENT_ITEM_TYPES]
    if not events:
        yield _failed(origin, "not_an_event", "the envelope holds no event item (item types:"
                      f" {', '.join(sorted({i.type for i in envelope.items})) or 'none'})")
    for n, item in enumerate(events):
        # The header's id belongs to the envelope's (first) event and wins over the
        # payload's (spec §2.2); another event keeps its own id.
        event_id = (header_id if n == 0 else None) or _payload_event_id(item.payload)
        yield RawEvent(origin, item.payload, received,
                       event_id or stable_event_id(item.payload))


def _payload_event_id(payload: bytes) -> str | None:
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None  # refused when the event is processed: reported there
    return _event_id_of(event) if isinstance(event, dict) else None


def json_event(origin: str, payload: bytes, mtime: dt.datetime) -> RawEvent:
    """One event JSON object; received at its ``received`` field, else ``mtime``."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return _failed(origin, "invalid_json", f"not JSON: {exc}")
    if not isinstance(event, dict):
        return _failed(origin, "invalid_json", f"a JSON {type(event).__name__}, not an"
                       " event object")
    return RawEvent(origin, payload, _received_of(event) or mtime,
                    _event_id_of(event) or stable_event_id(payload))


def stable_event_id(payload: bytes) -> str:
    """An event id for an event that has none, the same on every run (its bytes' hash)."""
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def _event_id_of(event: dict[str, Any]) -> str | None:
    try:
        return normalize_event_id(event.get("event_id"))
    except BadRequest:
        return None  # Relay refuses it when the event is processed: reported there


def _received_of(event: dict[str, Any]) -> dt.datetime | None:
    value = event.get("received")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _mtime(float(value))
    text = normalize_sent_at(value)
    return dt.datetime.fromisoformat(text) if text else None


def _read_tar(path: Path) -> Iterator[RawEvent]:
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            f = tar.extractfile(member)
            if f is None:
                continue
            yield from read_file_bytes(f"{path}:{member.name}", f.read(),
                                       _mtime(float(member.mtime)))


def _read_lines(d: SourceDescriptor, mtime: dt.datetime) -> Iterator[RawEvent]:
    with open(d.path, "rb") as raw:
        head = raw.read(2)
        raw.seek(0)
        if head == GZIP_MAGIC:
            f: io.BufferedIOBase | gzip.GzipFile = gzip.GzipFile(fileobj=raw)
            data = f.read()
        else:
            raw.seek(d.start)
            data = raw.read() if d.end < 0 else raw.read(d.end - d.start)
    for n, line in enumerate(data.splitlines(), d.first_line):
        if line.strip():
            yield json_event(f"{d.path}:{n}", line, mtime)


def _read_bugsink(path: Path) -> Iterator[RawEvent]:
    for n, (payload, received) in enumerate(read_bugsink(path), 1):
        origin = f"{path}#{n}"
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            yield _failed(origin, "invalid_json", f"not JSON: {exc}")
            continue
        event_id = _event_id_of(event) if isinstance(event, dict) else None
        yield RawEvent(origin, payload, received, event_id or stable_event_id(payload))


def _failed(origin: str, reason: str, detail: str) -> RawEvent:
    return RawEvent(origin, b"", _EPOCH, None, f"{reason}: {origin}: {detail}")


def _mtime(epoch_s: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC)


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

