"""ClickHouse's side of the regroup-only path of ``crashray reprocess``
(pipelines/reprocess.py): a slice's stored events de-duplicated in ClickHouse by what
grouping reads of them (their *projection*), and the events whose issue or hash changed
moved inside ClickHouse (``INSERT … SELECT`` with the new issue and hash looked up by the
projection's hash, ``row_version`` = the job's id, then a lightweight ``DELETE`` of their
older rows), so their bodies never cross into Python.

The projection of an event is the raw JSON of the top-level keys grouping reads, of the
``contexts`` entries it reads, of the tags the project's rules can read (all tags when the
event's own fingerprint names one), and of the processing summary the event was stored
with (``title``, ``culprit``, ``location``, ``metadata``): events with one projection get
the same hashes, issue and summary. Its hash is ``cityHash64`` of those texts (one
collision in ~10^9 slices of 100,000 distinct projections).

For an event symbolication may read or has changed (its platform is one a symbolication
handler takes, or its body holds one of ``symbolicated_markers``: the ``raw_stacktrace`` a
symbolicated stack trace keeps, an ``errors`` type of symbolication's), the projection also
holds what symbolication reads and writes besides the stack traces (release, dist,
``debug_meta``, ``errors``): such events are symbolicated alike too. The pipeline then
keeps in ClickHouse only the projections whose one event comes out of reprocessing with
its stored body unchanged (its issue and hash may change); the others are read whole
(``events_one_by_one``) and reprocessed event by event, as are the events with an empty
``errors`` list (which reprocessing drops: not *eligible*).

The functions take a clickhouse-connect client; storage/clickhouse.py's ``ClickHouseStore``
calls them (in embedded mode inside the owner actor). Tenant scope: every statement names
the organization and the project.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class RegroupProjection:
    """What of an event is its projection, and which events are eligible."""

    #: Top-level keys (grouping's and the processing summary's).
    keys: tuple[str, ...]
    #: ``contexts`` entries grouping reads.
    contexts: tuple[str, ...]
    #: Prefixes of the tag keys the rules can read; None: every tag.
    tag_prefixes: tuple[str, ...] | None
    #: Platforms symbolication handles …
    symbolicated_platforms: tuple[str, ...]
    #: … and texts of a body symbolication changed (quoted JSON strings): the projection
    #: of such an event holds ``symbolication_keys`` too (what symbolication reads and
    #: writes besides the stack traces: release, dist, debug_meta, errors).
    symbolicated_markers: tuple[str, ...]
    symbolication_keys: tuple[str, ...] = ("release", "dist", "debug_meta", "errors")


@dataclass(frozen=True)
class RegroupSlice:
    """One slice of a reprocess job: the project's events in [since, until), of
    ``release`` and of the primary ``hashes`` when given."""

    organization_id: int
    project_id: int
    since: dt.datetime
    until: dt.datetime
    release: str | None
    hashes: tuple[str, ...] | None
    #: The job's id: the ``row_version`` of the rows it writes.
    version: int
    projection: RegroupProjection
    #: ClickHouse threads per statement, and their nice value
    #: (``CRASHRAY_PIPELINE_CLICKHOUSE_THREADS``, ``CRASHRAY_PIPELINE_NICE``).
    max_threads: int = 1
    nice: int = 0


@dataclass(frozen=True)
class SliceRows:
    """Rows and distinct events of a slice, and rows already of the job's version."""

    rows: int
    events: int
    of_version: int

    @property
    def one_row_per_event(self) -> bool:
        """No copy of an event (a re-delivery not yet merged, a row an interrupted job
        left) and nothing of this job: the slice can be grouped in ClickHouse."""
        return self.rows == self.events and self.of_version == 0


@dataclass(frozen=True)
class ProjectionGroup:
    """The eligible events of a slice with one projection, issue and primary hash."""

    projection: int
    group_id: int
    primary_hash: str
    events: int
    #: One of them (its stored body, received time), to be grouped in Python.
    body: str
    received: dt.datetime


@dataclass(frozen=True)
class ProjectionMoves:
    """Where the eligible events of each projection go: parallel lists."""

    projections: Sequence[int]
    group_ids: Sequence[int]
    primary_hashes: Sequence[str]


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _micros(when: dt.datetime) -> int:
    return (_utc(when) - _EPOCH) // dt.timedelta(microseconds=1)


def _where(s: RegroupSlice) -> tuple[str, dict[str, Any]]:
    where = ["organization_id = {org:UInt64}", "project_id = {project:UInt64}",
             # Microseconds: a DELETE's mutation would render DateTime64 parameters as
             # text it cannot parse back.
             "timestamp >= fromUnixTimestamp64Micro({since_us:Int64}, 'UTC')",
             "timestamp < fromUnixTimestamp64Micro({until_us:Int64}, 'UTC')"]
    params: dict[str, Any] = {"org": s.organization_id, "project": s.project_id,
                              "since_us": _micros(s.since), "until_us": _micros(s.until)}
    if s.release is not None:
        where.append("release = {release:String}")
        params["release"] = s.release
    if s.hashes is not None:
        where.append("toString(primary_hash) IN {hashes:Array(String)}")
        params["hashes"] = list(s.hashes)
    return " AND ".join(where), params


#: The body's top-level keys and their raw JSON, parsed once per event (each
#: ``JSONExtractRaw`` would parse the whole body again; ClickHouse computes this once).
_KV = "JSONExtractKeysAndValuesRaw(body)"


def _top(key: str) -> str:
    """The raw JSON of a top-level key ('' when absent); ``key`` is SQL."""
    return f"arrayFirst(kv -> kv.1 = {key}, {_KV}).2"


_TAGS = _top("'tags'")
#: Whether symbolication may read or have changed the event (a platform it handles, or a
#: body with one of the markers): then its projection holds what symbolication reads too.
_SYMBOLICATED = ("(JSONExtractString(" + _top("'platform'") + ") IN {p_platforms:Array(String)}"
                 " OR multiSearchAny(body, {p_markers:Array(String)}))")
#: The projection's hash of ``body`` (parameters: ``_projection_params``).
PROJECTION_SQL = (
    "cityHash64(arrayMap(k -> " + _top("k") + ", {p_keys:Array(String)}),"
    " arrayMap(k -> arrayFirst(kv -> kv.1 = k, JSONExtractKeysAndValuesRaw("
    + _top("'contexts'") + ")).2, {p_contexts:Array(String)}),"
    " if({p_all_tags:UInt8} OR NOT startsWith(" + _TAGS + ", '[')"
    " OR position(" + _top("'fingerprint'") + ", 'tags.') > 0, [" + _TAGS + "],"
    " arrayFilter(pair -> arrayExists(prefix -> startsWith(JSONExtractString(pair, 1), prefix),"
    " {p_tags:Array(String)}), JSONExtractArrayRaw(" + _TAGS + "))),"
    " if(" + _SYMBOLICATED + ", arrayMap(k -> " + _top("k")
    + ", {p_symbolication_keys:Array(String)}), []))")
#: Whether an event is grouped in ClickHouse (see the module's docstring): not an event
#: with an empty ``errors`` list, which reprocessing drops.
ELIGIBLE_SQL = "(" + _top("'errors'") + " != '[]')"


def _projection_params(p: RegroupProjection) -> dict[str, Any]:
    return {"p_keys": list(p.keys), "p_contexts": list(p.contexts),
            "p_all_tags": int(p.tag_prefixes is None), "p_tags": list(p.tag_prefixes or ()),
            "p_platforms": list(p.symbolicated_platforms),
            "p_symbolication_keys": list(p.symbolication_keys),
            # multiSearchAny needs at least one needle: an empty body never matches "".
            "p_markers": list(p.symbolicated_markers) or ["\0"]}


def _settings(s: RegroupSlice) -> dict[str, Any]:
    settings: dict[str, Any] = {"max_threads": s.max_threads}
    if s.nice > 0:
        settings["os_threads_nice_value_query"] = s.nice
    return settings


def slice_rows(client: Any, s: RegroupSlice) -> SliceRows:
    where, params = _where(s)
    rows = client.query(
        "SELECT count(), uniqExact(event_id), countIf(row_version = {version:UInt32})"
        " FROM events WHERE " + where, parameters={**params, "version": s.version},
        settings=_settings(s)).result_rows
    return SliceRows(int(rows[0][0]), int(rows[0][1]), int(rows[0][2]))


def projection_groups(client: Any, s: RegroupSlice) -> tuple[list[ProjectionGroup], int]:
    """The slice's eligible events by projection, issue and primary hash (one event of
    each with its body), and how many events are not eligible. For a slice of one row per
    event (``slice_rows``)."""
    where, params = _where(s)
    rows = client.query(
        "SELECT " + PROJECTION_SQL + " AS p, " + ELIGIBLE_SQL + " AS eligible, group_id,"
        " toString(primary_hash) AS hash, count(), any((body, received))"
        " FROM events WHERE " + where + " GROUP BY p, eligible, group_id, hash",
        parameters={**params, **_projection_params(s.projection)},
        settings=_settings(s)).result_rows
    groups = [ProjectionGroup(int(r[0]), int(r[2]), str(r[3]), int(r[4]), str(r[5][0]),
                              _utc(r[5][1])) for r in rows if r[1]]
    return groups, sum(int(r[4]) for r in rows if not r[1])


def events_one_by_one(client: Any, s: RegroupSlice, projections: Sequence[int]) -> pa.Table:
    """What ``ClickHouseStore.events_to_reprocess`` returns, for the slice's events that
    are not eligible or have one of ``projections`` (one row per event, as
    ``projection_groups`` requires)."""
    from storage.clickhouse import REPROCESS_COLUMNS

    where, params = _where(s)
    return client.query_arrow(
        "SELECT " + ", ".join(f"{expr} AS {name}" for name, expr in REPROCESS_COLUMNS.items())
        + " FROM events WHERE " + where + " AND (NOT " + ELIGIBLE_SQL + " OR "
        + PROJECTION_SQL + " IN {only:Array(UInt64)}) ORDER BY event_id, row_version DESC"
        " LIMIT 2 BY event_id",
        parameters={**params, **_projection_params(s.projection), "only": list(projections)},
        use_strings=True, settings=_settings(s))


def move_events(client: Any, s: RegroupSlice, moves: ProjectionMoves,
                delete_old: bool = True) -> int:
    """Write every eligible event of the slice whose projection is in ``moves`` and whose
    issue or primary hash differs from its projection's again, with those and
    ``row_version`` = the job's (the body and every other column as stored), then delete
    the slice's rows of a lower version of the events that have one of the job's
    (``delete_old``); returns the rows written. Stopped between the two, an event has two
    rows; a re-run of the slice (``slice_rows``: not one row per event) reprocesses it one
    by one, which deletes the older row."""
    where, params = _where(s)
    params = {**params, **_projection_params(s.projection), "version": s.version,
              "ps": list(moves.projections), "gs": list(moves.group_ids),
              "hs": list(moves.primary_hashes)}
    before = _rows_of_version(client, s, where, params)
    if moves.projections:
        client.command(
            # The old issue and hash under names of their own: the REPLACE aliases would
            # stand for the columns in the WHERE clause.
            "INSERT INTO events SELECT * EXCEPT (p, old_group, old_hash) REPLACE ("
            "transform(p, {ps:Array(UInt64)}, {gs:Array(UInt64)}, toUInt64(0)) AS group_id,"
            " toFixedString(transform(p, {ps:Array(UInt64)}, {hs:Array(String)}, ''), 32)"
            " AS primary_hash, toUInt32({version:UInt32}) AS row_version)"
            " FROM (SELECT *, " + PROJECTION_SQL + " AS p, group_id AS old_group,"
            " toString(primary_hash) AS old_hash FROM events WHERE " + where
            + " AND " + ELIGIBLE_SQL + ") WHERE p IN {ps:Array(UInt64)}"
            " AND (transform(p, {ps:Array(UInt64)}, {gs:Array(UInt64)}, toUInt64(0))"
            " != old_group OR transform(p, {ps:Array(UInt64)}, {hs:Array(String)}, '')"
            " != old_hash)", parameters=params, settings=_settings(s))
    written = _rows_of_version(client, s, where, params) - before
    if delete_old and written > 0:
        delete_replaced(client, s)
    return written


def delete_replaced(client: Any, s: RegroupSlice) -> None:
    """Delete the slice's rows of a lower version than the job's of the events that have a
    row of the job's version (in the slice's time range, whatever its hash)."""
    where, params = _where(s)
    # The new rows by the slice's scope and time alone: a moved event's new hash is not
    # among the ``--issue`` hashes its old row had.
    written, _ = _where(replace(s, release=None, hashes=None))
    client.command(
        "DELETE FROM events WHERE " + where + " AND row_version < {version:UInt32}"
        " AND event_id IN (SELECT event_id FROM events WHERE " + written
        + " AND row_version = {version:UInt32})",
        parameters={**params, "version": s.version}, settings=_settings(s))


def _rows_of_version(client: Any, s: RegroupSlice, where: str, params: dict[str, Any]
                     ) -> int:
    """Rows of the job's version in the slice's time range (``where``'s filters of
    release and hashes left out: a moved event's new hash is another)."""
    written, _ = _where(replace(s, release=None, hashes=None))
    rows = client.query("SELECT count() FROM events WHERE " + written
                        + " AND row_version = {version:UInt32}", parameters=params,
                        settings=_settings(s)).result_rows
    return int(rows[0][0])
