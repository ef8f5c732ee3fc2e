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

Most rows need no parse at all: a row written since ClickHouse migration 0007 carries
``grouping_projection``, the hash of its projection without the tags, release and dist
(events/projection.py), and its projection hash is computed from that, the tags the rules
read (from the ``tags`` map column) and, when the job's rules read the release or its
symbolicator handles the row's platform, the ``release`` and ``dist`` columns
(``ROW_PROJECTION_SQL``; a finer split than the parsed projection, never a coarser one).
Older rows, and the few events the columns do not describe (``grouping_projection`` 0),
have their bodies parsed as below.

The bodies are parsed once per slice: ``projection_groups`` writes each event's projection
hash (and whether it is eligible, its issue and hash) into a table of the slice's own
(``projection_table``: named for the organization, project, job and slice start) and groups
that; ``events_one_by_one`` and ``move_events`` join it by event id instead of computing
the hash again (that second parse of every body was ~40 % of a job that moves every
event). The table is a MergeTree, so it outlives a restart of the engine between the
statements; ``drop_projections`` drops it when the slice is done, and
``drop_leftover_projections`` drops what an interrupted slice left (a resumed slice with
copies of an event goes one by one and never reads it) when the job finishes. A re-run of a
slice that had not moved anything yet builds its table again.

The functions take a clickhouse-connect client; storage/clickhouse.py's ``ClickHouseStore``
calls them (in embedded mode inside the owner actor). Tenant scope: every statement names
the organization and the project, the statements on a slice's table too (its rows carry
both, and its name holds them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
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
#: After every stored event (within ``DateTime64(6)``'s range, which ends in 2299).
_LAST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)


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
#: The projection's hash from the row's columns, for a row with a ``grouping_projection``
#: (events/projection.py: the hash of the projection without tags, release and dist):
#: that, the tags the rules read (from the ``tags`` map), and the release and dist when
#: the job's rules read the release or its symbolicator handles the event's platform.
_COLUMNS_PROJECTION_SQL = (
    "cityHash64(grouping_projection, arrayFilter(kv -> {p_all_tags:UInt8}"
    " OR arrayExists(prefix -> startsWith(kv.1, prefix), {p_tags:Array(String)}),"
    " arrayZip(mapKeys(tags), mapValues(tags))),"
    " if({p_release:UInt8} OR platform IN {p_platforms:Array(String)},"
    " [toString(release), toString(dist)], []))")
#: The projection's hash of a row: from its columns when it has a ``grouping_projection``,
#: else parsed from its body (``if`` evaluates the branch a row takes only).
ROW_PROJECTION_SQL = ("if(grouping_projection != 0, " + _COLUMNS_PROJECTION_SQL + ", "
                      + PROJECTION_SQL + ")")
#: Whether an event is grouped in ClickHouse (see the module's docstring): not an event
#: with an empty ``errors`` list, which reprocessing drops (a row with a
#: ``grouping_projection`` has none).
ELIGIBLE_SQL = "(grouping_projection != 0 OR " + _top("'errors'") + " != '[]')"


def _projection_params(p: RegroupProjection) -> dict[str, Any]:
    return {"p_keys": list(p.keys), "p_contexts": list(p.contexts),
            "p_all_tags": int(p.tag_prefixes is None), "p_tags": list(p.tag_prefixes or ()),
            "p_platforms": list(p.symbolicated_platforms),
            "p_release": int("release" in p.keys),
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


#: Tables of a slice's projection hashes start so; then ``{org}_{project}_{job}_{since}``.
PROJECTION_TABLE_PREFIX = "regroup_projections_"


def projection_table(s: RegroupSlice) -> str:
    """The name of the table of the slice's projection hashes: one per organization,
    project, job and slice (slices of a job do not overlap in time), so concurrent tasks
    and tenants never share one."""
    since = str(_micros(s.since)).replace("-", "m")
    return (f"{PROJECTION_TABLE_PREFIX}{int(s.organization_id)}_{int(s.project_id)}"
            f"_{int(s.version)}_{since}")


#: The slice's table read back: its tenant's rows only.
_TABLE_SCOPE = "organization_id = {org:UInt64} AND project_id = {project:UInt64}"


def projection_groups(client: Any, s: RegroupSlice, known: Collection[int] = ()
                      ) -> tuple[list[ProjectionGroup], int]:
    """The slice's eligible events by projection, issue and primary hash (one event of
    each with its body, but for the projections in ``known``, which the caller regrouped
    already: their body is ""), and how many events are not eligible. For a slice of one
    row per event (``slice_rows``). Fills the slice's ``projection_table`` (made again if
    an interrupted run left one), which the other statements of the slice join."""
    where, params = _where(s)
    table = projection_table(s)
    settings = _settings(s)
    client.command(f"DROP TABLE IF EXISTS {table}", settings=settings)
    client.command(
        f"CREATE TABLE {table} (organization_id UInt64, project_id UInt64, event_id UUID,"
        " projection_hash UInt64, eligible UInt8, group_id UInt64, primary_hash String)"
        " ENGINE = MergeTree ORDER BY event_id", settings=settings)
    client.command(
        f"INSERT INTO {table} SELECT organization_id, project_id, event_id, "
        + ROW_PROJECTION_SQL + ", " + ELIGIBLE_SQL + ", group_id, toString(primary_hash)"
        " FROM events WHERE " + where,
        parameters={**params, **_projection_params(s.projection)}, settings=settings)
    rows = client.query(
        "SELECT projection_hash, eligible, group_id, primary_hash, count(),"
        f" toString(any(event_id)) FROM {table} WHERE {_TABLE_SCOPE}"
        " GROUP BY projection_hash, eligible, group_id, primary_hash",
        parameters=params, settings=settings).result_rows
    known = frozenset(known)
    bodies = _bodies(client, s, [str(r[5]) for r in rows if r[1] and int(r[0]) not in known])
    groups = [ProjectionGroup(int(r[0]), int(r[2]), str(r[3]), int(r[4]),
                              *bodies.get(str(r[5]), ("", _EPOCH)))
              for r in rows if r[1]]
    return groups, sum(int(r[4]) for r in rows if not r[1])


def _bodies(client: Any, s: RegroupSlice, event_ids: Sequence[str]
            ) -> dict[str, tuple[str, dt.datetime]]:
    """Event id → (stored body, received time) of ``event_ids`` among the slice's events:
    the body column read again (decompressed, not parsed) for one event a group."""
    if not event_ids:
        return {}
    where, params = _where(s)
    rows = client.query(
        "SELECT toString(event_id), body, received FROM events WHERE " + where
        + " AND event_id IN {ids:Array(UUID)}", parameters={**params, "ids": list(event_ids)},
        settings=_settings(s)).result_rows
    return {str(r[0]): (str(r[1]), _utc(r[2])) for r in rows}


def events_one_by_one(client: Any, s: RegroupSlice, projections: Sequence[int]) -> pa.Table:
    """What ``ClickHouseStore.events_to_reprocess`` returns, for the slice's events that
    are not eligible or have one of ``projections`` (one row per event, as
    ``projection_groups`` requires, which filled the slice's table these are read by)."""
    from storage.clickhouse import REPROCESS_COLUMNS

    where, params = _where(s)
    return client.query_arrow(
        "SELECT " + ", ".join(f"{expr} AS {name}" for name, expr in REPROCESS_COLUMNS.items())
        + " FROM events WHERE " + where + " AND event_id IN (SELECT event_id FROM "
        + projection_table(s) + " WHERE " + _TABLE_SCOPE + " AND (NOT eligible OR projection_hash"
        " IN {only:Array(UInt64)})) ORDER BY event_id, row_version DESC LIMIT 2 BY event_id",
        parameters={**params, "only": list(projections)}, use_strings=True,
        settings=_settings(s))


#: A projection's new issue and hash (parameters: ``ps`` → ``gs``, ``hs``).
_NEW_GROUP = "transform(projection_hash, {ps:Array(UInt64)}, {gs:Array(UInt64)}, toUInt64(0))"
_NEW_HASH = "transform(projection_hash, {ps:Array(UInt64)}, {hs:Array(String)}, '')"


def move_events(client: Any, s: RegroupSlice, moves: ProjectionMoves) -> int:
    """Write every eligible event of the slice whose projection is in ``moves`` and whose
    issue or primary hash differs from its projection's again, with those and
    ``row_version`` = the job's (the body and every other column as stored); returns the
    rows written. Their older rows stay until ``delete_replaced_of_job`` (once a run's
    slices are done). The events and their projections are the slice's table's
    (``projection_groups``), joined by event id: the bodies are not parsed again. An event
    that has a row of the job's version already is not written again (a statement retried
    after the owner restarted). A re-run of a slice that wrote rows (``slice_rows``: not
    one row per event) reprocesses it one by one, which deletes the older rows."""
    where, params = _where(s)
    written_where, _ = _where(replace(s, release=None, hashes=None))
    params = {**params, "version": s.version, "ps": list(moves.projections),
              "gs": list(moves.group_ids), "hs": list(moves.primary_hashes)}
    before = _rows_of_version(client, s, params)
    if moves.projections:
        moving = (f"SELECT event_id, {_NEW_GROUP} AS new_group_id, {_NEW_HASH} AS new_hash"
                  f" FROM {projection_table(s)} WHERE {_TABLE_SCOPE} AND eligible"
                  " AND projection_hash IN {ps:Array(UInt64)}"
                  f" AND ({_NEW_GROUP} != group_id OR {_NEW_HASH} != primary_hash)")
        client.command(
            "INSERT INTO events SELECT e.* REPLACE (m.new_group_id AS group_id,"
            " toFixedString(m.new_hash, 32) AS primary_hash,"
            " toUInt32({version:UInt32}) AS row_version)"
            " FROM (SELECT * FROM events WHERE " + where
            + f" AND event_id IN (SELECT event_id FROM ({moving}))"
            " AND event_id NOT IN (SELECT event_id FROM events WHERE " + written_where
            + " AND row_version = {version:UInt32})) AS e"
            f" INNER JOIN ({moving}) AS m ON e.event_id = m.event_id",
            parameters=params, settings=_settings(s))
    return _rows_of_version(client, s, params) - before


def drop_projections(client: Any, s: RegroupSlice) -> None:
    """Drop the slice's table of projection hashes (done with the slice)."""
    client.command(f"DROP TABLE IF EXISTS {projection_table(s)}", settings=_settings(s))


def drop_leftover_projections(client: Any, organization_id: int, project_id: int) -> int:
    """Drop the tables of projection hashes that slices of the project's jobs left
    (interrupted, or abandoned with their job); returns how many. Call when no job of the
    project runs (a project has one running job at a time: when it finishes)."""
    prefix = f"{PROJECTION_TABLE_PREFIX}{int(organization_id)}_{int(project_id)}_"
    names = [str(r[0]) for r in client.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase()"
        " AND startsWith(name, {prefix:String})", parameters={"prefix": prefix}).result_rows]
    for name in names:
        client.command(f"DROP TABLE IF EXISTS {name}")
    return len(names)


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


def delete_replaced_of_job(client: Any, organization_id: int, project_id: int,
                           version: int) -> None:
    """``delete_replaced`` over all of a project's time: the older rows of every event
    its job ``version`` wrote (slices move without deleting; a run deletes once, when its
    slices are done)."""
    s = RegroupSlice(organization_id, project_id, _EPOCH, _LAST, None, None, version,
                     RegroupProjection((), (), (), (), ()))
    _, params = _where(s)
    # Nothing of the job's version (a job that changed nothing): no mutation to run.
    if _rows_of_version(client, s, {**params, "version": version}):
        delete_replaced(client, s)


def _rows_of_version(client: Any, s: RegroupSlice, params: dict[str, Any]) -> int:
    """Rows of the job's version in the slice's time range (the slice's filters of
    release and hashes left out: a moved event's new hash is another)."""
    written, _ = _where(replace(s, release=None, hashes=None))
    rows = client.query("SELECT count() FROM events WHERE " + written
                        + " AND row_version = {version:UInt32}", parameters=params,
                        settings=_settings(s)).result_rows
    return int(rows[0][0])
