"""``crashray import``'s Bugsink source: the events of a Bugsink database, read directly
from its SQLite file (issue 14), without Django and without a running Bugsink.

What is read, and why (Bugsink 2.6.2, migrations up to ``events.0030``; the facts come
from its ``events/models.py``, ``projects/models.py`` and ``ingest/views.py``):

* ``events_event``, one row per digested event. ``data`` (TEXT) is ``json.dumps`` of the
  event JSON the SDK sent, as Bugsink's digest parsed it (``ingest/tasks.py``; source maps
  are applied when an event is shown, not stored). Two kinds are Bugsink's own making: a
  minidump's event has the stack Bugsink extracted merged in, and a CSP report is stored
  as an event Bugsink built from it. ``event_id`` (``char(32)``, hex, Django's
  UUIDField on SQLite) is the envelope header's id, which Bugsink keeps over the body's
  (``Event.from_ingested``: "the envelope's event_id ... takes precedence"); the payload
  this module yields carries it (see ``payload_with_event_id``). ``ingested_at`` is when
  Bugsink's ingest view received the event, ``digested_at`` when its digest task stored it
  (non-decreasing: digestion is serialized), ``project_id`` references ``projects_project``.
  Datetimes are UTC (``USE_TZ = True``) as Django writes them on SQLite:
  ``YYYY-MM-DD HH:MM:SS[.ffffff]`` without an offset.
* ``events_event.storage_backend`` (migration ``events.0019``): NULL (the default
  configuration: ``BUGSINK["EVENT_STORAGES"]`` empty) means the body is inline in
  ``data``. A name means the body is a file ``<basepath>/<events_event.id as a dashed
  UUID>.json`` (``.json.gz`` / ``.json.br`` when compressed) of that configured
  ``events.storage.FileEventStorage``, and ``data`` is ``""``. Such a database needs
  ``event_storage_dir`` (the storage's ``basepath``, ``FILE_EVENT_STORAGE_PATH`` in
  Bugsink's Docker image); without it reading is refused before anything is yielded.
* ``projects_project`` (``id``, ``name``, ``is_deleted``): a project with ``is_deleted``
  set is being deleted by a Bugsink background task; Bugsink shows it nowhere and drops
  events still arriving for it, so its events are not read either.

Events come in Bugsink's digest order (``ORDER BY digested_at, digest_order``, served by
its index ``events_even_digeste_bf21dd_idx``), streamed: one row in memory at a time.

The file is opened read-only (``file:...?mode=ro``); a running Bugsink may keep writing
(SQLite's WAL lets a reader see one consistent snapshot per query).

Errors, all ``BugsinkSourceError`` (``BadRequest``: the CLI exits 2, the user can fix it):
no such file, not a SQLite file, not a Bugsink database (the missing table or column is
named), bodies in an event storage that was not given, an unknown or deleted project.
A row that cannot be read (a body that is not a JSON object, an id or time that does not
parse, a storage file that is missing) does not stop the import: it is skipped, logged
(the first ``LOGGED_SKIPS`` of them, then a summary) and counted in
``BugsinkEvents.skipped``, with the first reasons in ``BugsinkEvents.skip_reasons``.
"""

from __future__ import annotations

import datetime as dt
import gzip
import logging
import sqlite3
import uuid
import zlib
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, Final

import orjson

from events.errors import BadRequest

log = logging.getLogger(__name__)

#: What every SQLite 3 database file starts with (https://www.sqlite.org/fileformat.html
#: section 1.3.1); checked first so a wrong file is named as such, not as a SQL error.
SQLITE_HEADER: Final = b"SQLite format 3\x00"

#: The columns this module reads, per table; any of them missing means the file is not a
#: Bugsink database (or one older than Bugsink 1.0, whose squashed migration
#: ``events.0004`` already has them all).
REQUIRED_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "events_event": ("id", "event_id", "project_id", "data", "ingested_at", "digested_at",
                     "digest_order"),
    "projects_project": ("id", "name"),
}

#: File name suffixes of ``events.storage.FileEventStorage`` (no compression, gzip,
#: brotli), in the order they are tried.
STORAGE_SUFFIXES: Final = (".json", ".json.gz", ".json.br")

#: Skipped rows logged one by one; after that only the count grows (a damaged database
#: could otherwise log a line per event).
LOGGED_SKIPS: Final = 20

#: Rows fetched from SQLite per round trip: big enough to stream, small enough that a
#: batch of 1 MiB bodies (Bugsink's MAX_EVENT_SIZE) stays small.
FETCH_ROWS: Final = 64


class BugsinkSourceError(BadRequest):
    """The Bugsink database cannot be read as asked (see the module docstring)."""

    code = "invalid_bugsink_database"


def bugsink_projects(path: Path) -> list[tuple[int, str]]:
    """The projects of the Bugsink database at ``path`` as ``(id, name)``, by id; projects
    being deleted are left out. The ids are what ``read_bugsink(project=...)`` takes."""
    connection = _open(Path(path))
    try:
        _check_schema(Path(path), connection)
        return _live_projects(connection)
    finally:
        connection.close()


def read_bugsink(path: Path, *, project: int | None = None,
                 event_storage_dir: Path | None = None) -> BugsinkEvents:
    """Every event stored in the Bugsink database at ``path`` (of ``project`` only, when
    given) as ``(payload, received)``: the Sentry event JSON as Bugsink stores it and when
    Bugsink received it (UTC). The file is opened and checked now, so a wrong file fails
    before the first event; the events are read as the result is iterated.

    ``event_storage_dir``: the ``basepath`` of Bugsink's file event storage, needed only
    when Bugsink was configured to keep event bodies outside the database."""
    return BugsinkEvents(Path(path), project=project, event_storage_dir=event_storage_dir)


class BugsinkEvents(Iterator[tuple[bytes, dt.datetime]]):
    """The events of one Bugsink database, read once, in digest order. After (or during)
    iteration ``yielded`` and ``skipped`` count the rows read and the rows that could not
    be (``skip_reasons`` holds the first ``LOGGED_SKIPS`` reasons)."""

    def __init__(self, path: Path, *, project: int | None = None,
                 event_storage_dir: Path | None = None) -> None:
        self.path = path
        self.project = project
        self.event_storage_dir = event_storage_dir
        self.yielded = 0
        self.skipped = 0
        self.skip_reasons: list[str] = []
        self._connection = _open(path)
        try:
            self._projects = self._checked_projects()
            self._check_event_storage()
        except BaseException:
            self._connection.close()
            raise
        self._rows = self._read_rows()

    def __iter__(self) -> BugsinkEvents:
        return self

    def __next__(self) -> tuple[bytes, dt.datetime]:
        return next(self._rows)

    def close(self) -> None:
        """Close the database now (iteration closes it when it ends)."""
        self._rows.close()
        self._connection.close()

    def _checked_projects(self) -> set[int]:
        """The project ids whose events are read; refuses an unknown or deleted project."""
        columns = _check_schema(self.path, self._connection)
        live = {project_id for project_id, _ in _live_projects(self._connection)}
        if self.project is None:
            return live
        if self.project in live:
            return {self.project}
        deleted = "is_deleted" in columns["projects_project"] and self._connection.execute(
            "SELECT 1 FROM projects_project WHERE id = ?", (self.project,)).fetchone()
        state = "is being deleted in Bugsink" if deleted else "does not exist"
        raise BugsinkSourceError(
            f"{self.path}: Bugsink project {self.project} {state}; its projects are"
            f" {_describe_projects(_live_projects(self._connection))}")

    def _check_event_storage(self) -> None:
        """Refuse a database whose bodies live in a file event storage that was not given
        (before anything is yielded, so an import does not stop half-way)."""
        columns = _table_columns(self._connection, "events_event")
        if "storage_backend" not in columns:
            return  # Bugsink before events.0019: every body is inline
        if self.event_storage_dir is not None:
            if not self.event_storage_dir.is_dir():
                raise BugsinkSourceError(
                    f"event storage directory {self.event_storage_dir}: not a directory;"
                    " give the basepath of Bugsink's FileEventStorage")
            return
        names = [str(row[0], "utf-8", "replace") for row in self._connection.execute(
            "SELECT DISTINCT storage_backend FROM events_event"
            " WHERE storage_backend IS NOT NULL")]
        if names:
            raise BugsinkSourceError(
                f"{self.path}: event bodies are stored outside the database, in Bugsink's"
                f" event storage {', '.join(repr(n) for n in names)} (its setting"
                ' BUGSINK["EVENT_STORAGES"], FILE_EVENT_STORAGE_PATH in its Docker image);'
                " give that storage's directory (its OPTIONS basepath) as the event"
                " storage directory")

    def _read_rows(self) -> Generator[tuple[bytes, dt.datetime], None, None]:
        has_backend = "storage_backend" in _table_columns(self._connection, "events_event")
        backend = "storage_backend" if has_backend else "NULL"
        where, params = ("", ()) if self.project is None else (
            "WHERE project_id = ?", (self.project,))
        cursor = self._connection.execute(
            f"SELECT id, event_id, project_id, data, ingested_at, {backend}"
            f" FROM events_event {where} ORDER BY digested_at, digest_order", params)
        try:
            while rows := cursor.fetchmany(FETCH_ROWS):
                for row in rows:
                    if row[2] not in self._projects:
                        continue  # a project being deleted (module docstring)
                    event = self._event(row)
                    if event is not None:
                        self.yielded += 1
                        yield event
        finally:
            self._connection.close()
            if self.skipped:
                log.warning("%s: skipped %d unreadable Bugsink event rows of %d",
                            self.path, self.skipped, self.skipped + self.yielded)

    def _event(self, row: tuple[Any, ...]) -> tuple[bytes, dt.datetime] | None:
        """One row as ``(payload, received)``, or None (counted) if it cannot be read."""
        row_id = _text(row[0])
        try:
            body = self._body(row_id, row[3], row[5])
            payload = payload_with_event_id(body, _hex_uuid(row[1], "event_id"))
            received = parse_bugsink_datetime(_text(row[4]))
        except UnreadableRow as error:
            self._skip(f"events_event row {row_id}: {error}")
            return None
        return payload, received

    def _body(self, row_id: str, data: bytes | None, backend: bytes | None) -> bytes:
        if backend is None:
            if not data:
                raise UnreadableRow("data is empty and storage_backend is NULL")
            return data
        if self.event_storage_dir is None:  # moved to a storage since the check (a live Bugsink)
            raise UnreadableRow(f"body is in event storage {_text(backend)!r}, not given")
        return read_storage_file(self.event_storage_dir, _hex_uuid(row_id, "id"))

    def _skip(self, reason: str) -> None:
        self.skipped += 1
        if self.skipped <= LOGGED_SKIPS:
            self.skip_reasons.append(reason)
            log.warning("%s: skipped %s", self.path, reason)


class UnreadableRow(Exception):
    """One events_event row that cannot be read; it is skipped and counted, never raised
    out of this module."""


def payload_with_event_id(body: bytes, event_id: str) -> bytes:
    """``body`` (Bugsink's ``data``) as it is when its ``event_id`` is ``event_id`` (the
    id Bugsink shows, from the envelope header), else re-serialized with it: an SDK that
    put another id, or none, in the body would otherwise get a new id on import and a
    second import would not recognize it."""
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise UnreadableRow(f"data is not JSON ({error})") from None
    if not isinstance(event, dict):
        raise UnreadableRow(f"data is JSON {type(event).__name__}, not an object")
    if _same_uuid(event.get("event_id"), event_id):
        return body
    event["event_id"] = event_id
    return bytes(orjson.dumps(event))


def read_storage_file(directory: Path, event_uuid: str) -> bytes:
    """The body FileEventStorage wrote for the event whose ``events_event.id`` is
    ``event_uuid``: ``<directory>/<dashed uuid><suffix>`` (events/storage.py)."""
    stem = str(uuid.UUID(event_uuid))
    for suffix in STORAGE_SUFFIXES:
        file = directory / (stem + suffix)
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as error:
            raise UnreadableRow(f"event storage file {file}: {error.strerror}") from None
        return _decompressed(file, raw)
    raise UnreadableRow(f"no event storage file {stem}.json[.gz|.br] in {directory}")


def _decompressed(file: Path, raw: bytes) -> bytes:
    if file.name.endswith(".gz"):
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError
            raise UnreadableRow(f"event storage file {file}: not gzip ({error})") from None
    if file.name.endswith(".br"):
        import brotli  # only a storage configured with compression_algorithm "br" needs it

        try:
            return bytes(brotli.decompress(raw))
        except brotli.error as error:
            raise UnreadableRow(f"event storage file {file}: not brotli ({error})") from None
    return raw


def parse_bugsink_datetime(text: str) -> dt.datetime:
    """A datetime as Django stores it in SQLite (UTC, no offset) as an aware UTC datetime;
    an offset, should one be there, is honoured."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UnreadableRow(f"ingested_at {text!r} is not a date and time") from None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _open(path: Path) -> sqlite3.Connection:
    """``path`` opened read-only, after checking that it is an SQLite file at all."""
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        raise BugsinkSourceError(f"{path}: no such file; give the path of Bugsink's SQLite"
                                 " database (its DATABASE_PATH, db.sqlite3 by default)") from None
    except IsADirectoryError:
        raise BugsinkSourceError(f"{path}: is a directory; give the database file in it"
                                 " (Bugsink's DATABASE_PATH, db.sqlite3 by default)") from None
    except OSError as error:
        raise BugsinkSourceError(f"{path}: cannot be read ({error.strerror})") from None
    if header != SQLITE_HEADER:
        raise BugsinkSourceError(
            f"{path}: not an SQLite database (it does not start with {SQLITE_HEADER!r});"
            " give Bugsink's SQLite file (a Bugsink on MySQL or PostgreSQL cannot be read"
            " this way)")
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    # bytes, so a row with invalid UTF-8 is skipped by this module instead of failing the
    # whole fetch inside sqlite3 ("Could not decode to UTF-8 column").
    connection.text_factory = bytes
    return connection


def _check_schema(path: Path, connection: sqlite3.Connection) -> dict[str, set[str]]:
    """The columns of the tables read, or an error naming what is missing."""
    try:
        tables = {_text(row[0]) for row in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as error:
        raise BugsinkSourceError(f"{path}: cannot be read as an SQLite database ({error})") from None
    found: dict[str, set[str]] = {}
    for table, required in REQUIRED_COLUMNS.items():
        if table not in tables:
            raise BugsinkSourceError(
                f"{path}: not a Bugsink database: it has no table {table} (expected"
                f" {' and '.join(REQUIRED_COLUMNS)}; it has {len(tables)} tables"
                f"{': ' + ', '.join(sorted(tables)[:10]) if tables else ''})")
        found[table] = _table_columns(connection, table)
        missing = [column for column in required if column not in found[table]]
        if missing:
            raise BugsinkSourceError(
                f"{path}: not a Bugsink database this import knows: table {table} has no"
                f" column {', '.join(missing)} (written for Bugsink 1.x-2.6)")
    return found


def _table_columns(connection: sqlite3.Connection, table: str) -> set[str]:
    return {_text(row[1]) for row in connection.execute(f"PRAGMA table_info({table})")}


def _live_projects(connection: sqlite3.Connection) -> list[tuple[int, str]]:
    deleted = _table_columns(connection, "projects_project") & {"is_deleted"}
    where = "WHERE NOT is_deleted" if deleted else ""
    return [(int(row[0]), _text(row[1])) for row in connection.execute(
        f"SELECT id, name FROM projects_project {where} ORDER BY id")]


def _describe_projects(projects: list[tuple[int, str]]) -> str:
    if not projects:
        return "none"
    return ", ".join(f"{project_id} ({name})" for project_id, name in projects)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _hex_uuid(value: object, column: str) -> str:
    """A UUID column (Django stores ``char(32)`` hex on SQLite) as 32 lowercase hex."""
    try:
        return uuid.UUID(_text(value)).hex
    except ValueError:
        raise UnreadableRow(f"{column} {_text(value)!r} is not a UUID") from None


def _same_uuid(value: object, event_id: str) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return uuid.UUID(value).hex == event_id
    except ValueError:
        return False
