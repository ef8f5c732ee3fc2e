"""ClickHouse: one client API (clickhouse-connect) for the embedded engine and servers.

``CRASHRAY_CLICKHOUSE_URL`` empty → chDB (``chdb:///data_dir/clickhouse``), the real
ClickHouse engine in-process. chDB allows one process per data path, so in embedded mode
exactly one actor (``actors/clickhouse.ClickHouseOwner``) holds this store and everything
else calls that actor through ``actors/clickhouse.RemoteStore``; with a server URL every
process opens its own ``ClickHouseStore``. Both implement ``EventStore``, the typed
interface every caller uses.

Reads never queue behind writes: with chDB each thread reads through a client of its own
(clients on one data path share the engine), so the owner actor runs reads on other
threads while a consumer's batch is being inserted; a server's HTTP client serves threads
concurrently anyway.

Counts stay exact under at-least-once delivery. Rows a consumer batch writes before its
PostgreSQL commit (``BATCH_TABLES``) identify themselves, so a re-delivered batch, in any
mix of items, collapses into the same rows (ReplacingMergeTree) and readers count distinct
ids. Summed tables (``COUNT_TABLES``: the hourly issue rollup, outcomes) cannot tell a
repeat from a new row, so they are written only from PostgreSQL's outbox after the commit
(storage/delivery.py), each shipment under a deduplication token (``insert_counts``).

Every read takes an organization id and the project id(s): there is no query without a
tenant scope. Searches arrive typed (events/search.py's ``EventFilters``) and are rendered
here by storage/search_sql.py with bound parameters; no SQL text comes in from callers
(``query_rows`` excepted: a raw read for tests and operators' checks).
"""

from __future__ import annotations

import datetime as dt
import re
import threading
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import clickhouse_connect
import pyarrow as pa

from cluster import metrics
from events.search import EventFilters
from events.stats import ERROR_CATEGORIES, MAX_STATS_ROWS, StatsQuery
from storage import regroup
from storage.errors import MigrationError
from storage.postgres import load_migrations
from storage.search_sql import event_where

#: ClickHouse's own log tables and how long to keep them: Sentry self-hosted's most
#: common disk complaint is these tables growing without bound.
SYSTEM_LOG_TTL_DAYS = 7
SYSTEM_LOG_TABLES = ("query_log", "query_thread_log", "part_log", "trace_log", "metric_log",
                     "asynchronous_metric_log", "text_log", "processors_profile_log",
                     "query_views_log", "session_log", "opentelemetry_span_log")


def clickhouse_dsn(url: str | None, data_dir: Path) -> str:
    """The clickhouse-connect DSN: the server URL, or chDB under ``data_dir``."""
    if url:
        return url
    return f"chdb://{(data_dir / 'clickhouse').resolve()}"


def _statements(sql: str) -> list[str]:
    without_comments = re.sub(r"--[^\n]*", "", sql)
    return [s.strip() for s in without_comments.split(";") if s.strip()]


@dataclass(frozen=True)
class EventSummary:
    event_id: str
    group_id: int
    timestamp: dt.datetime
    title: str
    message: str
    culprit: str
    platform: str
    level: str
    tags: list[tuple[str, str]]
    primary_hash: str


@dataclass(frozen=True)
class HashTotals:
    events: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    title: str
    culprit: str


@dataclass(frozen=True)
class MinuteCount:
    """Events received in one minute, and their distinct users: of a project
    (``group_id`` 0) or of one group id of it."""

    project_id: int
    group_id: int
    minute: dt.datetime
    events: int
    users: int


#: Distinct users as Sentry's ``sentry:user`` tag identifies them: by id, else e-mail, else
#: username, else IP address (events without any count no user).
DISTINCT_USERS: Final = (
    "uniqExactIf(multiIf(user_id != '', concat('id:', user_id), user_email != '',"
    " concat('email:', user_email), user_username != '',"
    " concat('username:', user_username), user_ip != '', concat('ip:', user_ip), ''),"
    " user_id != '' OR user_email != '' OR user_username != '' OR user_ip != '')")

#: An event search that filters nothing.
NO_FILTERS: Final = EventFilters()
#: The tables a consumer batch writes before its PostgreSQL commit, in the order they are
#: inserted. Their rows identify themselves (event id, queue item), so a re-delivered
#: batch collapses into the same rows (ReplacingMergeTree) and readers count distinct ids.
BATCH_TABLES: Final = ("events", "sessions_raw", "envelope_items")
#: The tables of summed counts, written only from PostgreSQL's outbox (``insert_counts``),
#: each insert under a deduplication token (migration 0003): a sum cannot tell a repeated
#: row from a new one, so a repeated insert must never reach it.
COUNT_TABLES: Final = ("issue_counts_hourly", "outcomes")
#: What ``stored_events`` returns per event: name → ClickHouse expression.
STORED_EVENT_COLUMNS: Final = {
    "event_id": "replaceAll(toString(event_id), '-', '')",
    "primary_hash": "toString(primary_hash)", "group_id": "group_id",
    "timestamp": "timestamp", "received": "received", "level": "level",
    "platform": "platform", "release": "release", "environment": "environment",
    "dist": "dist", "transaction": "transaction", "logger": "logger",
    "server_name": "server_name", "title": "title", "culprit": "culprit",
    "message": "message", "user_id": "user_id", "user_email": "user_email",
    "user_username": "user_username", "user_ip": "user_ip", "sdk_name": "sdk_name",
    "sdk_version": "sdk_version", "tags": "tags", "body": "body",
}
#: What ``events_to_reprocess`` returns per event: name → ClickHouse expression.
REPROCESS_COLUMNS: Final = {
    "event_id": "replaceAll(toString(event_id), '-', '')", "group_id": "group_id",
    "primary_hash": "toString(primary_hash)", "retention_days": "retention_days",
    "row_version": "row_version", "received": "received", "body": "body",
}
#: One outcome-stats row: interval start, the group's values, sum(quantity).
StatsRow = tuple[dt.datetime, tuple[str | int, ...], int]
TagFacet = tuple[str, int, int, list[tuple[str, int]]]


class EventStore(Protocol):
    """What Crashray asks of ClickHouse: ``ClickHouseStore`` answers it in this process,
    ``actors.clickhouse.RemoteStore`` through the embedded engine's owner actor."""

    def insert(self, table: str, data: pa.Table) -> int: ...

    def insert_batch(self, tables: Mapping[str, pa.Table]) -> int: ...

    def insert_counts(self, token: str, tables: Mapping[str, pa.Table]) -> int: ...

    def ping(self) -> bool: ...

    def list_events(self, organization_id: int, project_id: int, limit: int,
                    offset: int = 0, group_ids: Sequence[int] | None = None
                    ) -> list[EventSummary]: ...

    def event_body(self, organization_id: int, project_id: int, event_id: str
                   ) -> str | None: ...

    def user_counts(self, organization_id: int, project_id: int,
                    issue_of_hash: Mapping[str, int], since: dt.datetime | None = None
                    ) -> dict[int, int]: ...

    def event_counts(self, organization_id: int, project_id: int,
                     issue_of_hash: Mapping[str, int], since: dt.datetime
                     ) -> dict[int, int]: ...

    def hash_totals(self, organization_id: int, project_id: int, hashes: Sequence[str]
                    ) -> HashTotals | None: ...

    def matching_hashes(self, organization_id: int, project_ids: Sequence[int],
                        filters: EventFilters, since: dt.datetime, until: dt.datetime,
                        max_hashes: int) -> list[str]: ...

    def hourly_counts(self, organization_id: int, project_ids: Sequence[int],
                      group_ids: Sequence[int], since: dt.datetime
                      ) -> dict[int, dict[dt.datetime, int]]: ...

    def issue_events(self, organization_id: int, project_id: int, hashes: Sequence[str],
                     filters: EventFilters = NO_FILTERS, limit: int = 100,
                     offset: int = 0, oldest_first: bool = False) -> list[EventSummary]: ...

    def event_neighbours(self, organization_id: int, project_id: int, hashes: Sequence[str],
                         event_id: str, timestamp: dt.datetime
                         ) -> tuple[str | None, str | None]: ...

    def event_timestamp(self, organization_id: int, project_id: int, event_id: str
                        ) -> tuple[dt.datetime, str] | None: ...

    def tag_facets(self, organization_id: int, project_id: int, hashes: Sequence[str],
                   key: str | None, top: int, environments: Sequence[str] = ()
                   ) -> list[TagFacet]: ...

    def latest_event_id(self, organization_id: int, project_id: int, hashes: Sequence[str],
                        oldest: bool = False) -> str | None: ...

    def project_counts(self, organization_id: int, project_id: int, since: dt.datetime,
                       until: dt.datetime, bucket_s: int) -> dict[dt.datetime, int]: ...

    def outcome_stats(self, organization_id: int, project_ids: Sequence[int],
                      query: StatsQuery) -> list[StatsRow]: ...

    def minute_counts(self, organization_id: int, project_ids: Sequence[int],
                      since: dt.datetime, until: dt.datetime) -> list[MinuteCount]: ...

    def query_rows(self, sql: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]: ...

    def stored_event_hours(self, organization_id: int, project_id: int, since: dt.datetime,
                           until: dt.datetime, filters: EventFilters = NO_FILTERS
                           ) -> dict[dt.datetime, int]: ...

    def stored_events(self, organization_id: int, project_id: int, since: dt.datetime,
                      until: dt.datetime, filters: EventFilters = NO_FILTERS
                      ) -> list[dict[str, Any]]: ...

    def hash_event_totals(self, organization_id: int, project_id: int
                          ) -> dict[str, tuple[int, dt.datetime, dt.datetime]]: ...

    def rebuild_issue_counts(self, organization_id: int, project_id: int) -> int: ...

    def events_to_reprocess(self, organization_id: int, project_id: int,
                            since: dt.datetime, until: dt.datetime, release: str | None,
                            hashes: Sequence[str] | None) -> pa.Table: ...

    def replace_events(self, organization_id: int, project_id: int, rows: pa.Table,
                       version: int, event_ids: Sequence[str]) -> int: ...

    # The regroup-only path of ``crashray reprocess`` (storage/regroup.py).
    def regroup_slice_rows(self, s: regroup.RegroupSlice) -> regroup.SliceRows: ...

    def regroup_projection_groups(self, s: regroup.RegroupSlice, known: Collection[int] = ()
                                  ) -> tuple[list[regroup.ProjectionGroup], int]: ...

    def regroup_events_one_by_one(self, s: regroup.RegroupSlice, projections: Sequence[int]
                                  ) -> pa.Table: ...

    def regroup_move_events(self, s: regroup.RegroupSlice, moves: regroup.ProjectionMoves
                            ) -> int: ...

    def regroup_delete_replaced_of_job(self, organization_id: int, project_id: int,
                                       version: int) -> None: ...

    def regroup_drop_projections(self, s: regroup.RegroupSlice) -> None: ...

    def regroup_drop_leftover_projections(self, organization_id: int, project_id: int
                                          ) -> int: ...


class ClickHouseStore:
    """Schema, inserts and scoped reads over one clickhouse-connect client."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.is_embedded = dsn.startswith("chdb:")
        self._readers = threading.local()
        if self.is_embedded:
            self._client = clickhouse_connect.get_client(dsn=dsn)
        else:
            # No server session: the API runs queries from several threads at once, and one
            # session accepts one query at a time ("session is locked").
            self._client = clickhouse_connect.get_client(dsn=dsn, autogenerate_session_id=False)

    @property
    def _read(self) -> Any:
        """This thread's client for reads: with chDB a client per thread (they share the
        engine, and a read then never waits for an insert running on another thread), with
        a server the shared HTTP client."""
        if not self.is_embedded:
            return self._client
        client = getattr(self._readers, "client", None)
        if client is None:
            client = clickhouse_connect.get_client(dsn=self.dsn)
            self._readers.client = client
        return client

    # --- schema ---------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Apply pending migrations (``migrations/clickhouse``); returns versions applied."""
        self._client.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String,"
            " applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version")
        done = {int(r[0]) for r in self._client.query(
            "SELECT version FROM schema_migrations").result_rows}
        applied = []
        for migration in load_migrations("clickhouse"):
            if migration.version in done:
                continue
            try:
                for statement in _statements(migration.sql):
                    self._client.command(statement)
            except Exception as exc:  # clickhouse-connect raises several unrelated classes
                raise MigrationError(
                    f"ClickHouse migration {migration.version:04d}_{migration.name} failed: {exc}"
                ) from exc
            self._client.insert("schema_migrations", [[migration.version, migration.name]],
                                column_names=["version", "name"])
            applied.append(migration.version)
        if not self.is_embedded:
            self._limit_system_logs()
        return applied

    def apply_ttls(self, ttls: Mapping[str, str]) -> list[str]:
        """Each table's TTL from the settings, where it differs (storage/retention.py);
        returns the tables altered."""
        from storage.retention import apply_ttls

        return apply_ttls(self._client, ttls)

    def _limit_system_logs(self) -> None:
        existing = {r[0] for r in self._client.query(
            "SELECT name FROM system.tables WHERE database = 'system'").result_rows}
        for table in SYSTEM_LOG_TABLES:
            if table in existing:
                self._client.command(
                    f"ALTER TABLE system.{table} MODIFY TTL event_date + "
                    f"toIntervalDay({SYSTEM_LOG_TTL_DAYS})")

    # --- writes ---------------------------------------------------------------------
    def insert(self, table: str, data: pa.Table) -> int:
        """Rows into ``table``. Into a count table each insert gets a token of its own, so
        that ClickHouse, which deduplicates those tables, never drops a second insert of
        identical rows (a token-less insert is deduplicated by its data's hash)."""
        token = uuid.uuid4().hex if table in COUNT_TABLES else None
        return self._insert(table, data, token)

    def _insert(self, table: str, data: pa.Table, token: str | None) -> int:
        if data.num_rows:
            settings = {} if token is None else {"insert_deduplication_token": token}
            started = time.perf_counter()
            self._client.insert_arrow(table, data, settings=settings)
            metrics.record_clickhouse_insert(table, data.num_rows, data.nbytes,
                                             metrics.since(started))
        return int(data.num_rows)

    def insert_counts(self, token: str, tables: Mapping[str, pa.Table]) -> int:
        """Summed counts (``COUNT_TABLES``), each table's rows under ``token``: inserting
        the same token again is a no-op, whatever the rows (ClickHouse keeps the
        tokens of the last ``non_replicated_deduplication_window`` inserts). Rows of
        several partitions are split by ClickHouse into blocks numbered in partition
        order, the same for the same rows, so a repeated insert is dropped block by block."""
        unknown = set(tables) - set(COUNT_TABLES)
        if unknown:
            raise ValueError(f"insert_counts takes {', '.join(COUNT_TABLES)}; not {unknown}")
        return sum(self._insert(name, tables[name], f"{token}:{name}")
                   for name in COUNT_TABLES if name in tables)

    def count_loaded_events(self, organization_id: int, project_id: int) -> None:
        """Add a project's stored event rows to the hourly rollup, as the materialized view
        that fed it before migration 0003 did: for events inserted straight into
        ``events`` (bench/_bulk.py's loads, one row per event id), which no consumer
        counted. Never for events consumers stored: those are counted already."""
        self._client.command(
            "INSERT INTO issue_counts_hourly SELECT project_id, group_id,"
            " toStartOfHour(timestamp) AS hour, retention_days, count() FROM events"
            " WHERE organization_id = {org:UInt64} AND project_id = {project:UInt64}"
            " GROUP BY project_id, group_id, hour, retention_days",
            parameters={"org": organization_id, "project": project_id},
            settings={"insert_deduplication_token": uuid.uuid4().hex})

    def ping(self) -> bool:
        """Whether ClickHouse answers now (the consumers' test of an outage). Through this
        thread's reading client: with chDB the inserting client may be busy with a batch."""
        return bool(self._read.ping())

    def insert_batch(self, tables: Mapping[str, pa.Table]) -> int:
        """A consumer batch's rows, table by table in ``BATCH_TABLES`` order (one call, so
        the owner actor is asked once per batch); returns the rows inserted."""
        unknown = set(tables) - set(BATCH_TABLES)
        if unknown:
            raise ValueError(f"insert_batch takes {', '.join(BATCH_TABLES)}; not {unknown}")
        return sum(self.insert(name, tables[name]) for name in BATCH_TABLES if name in tables)

    # --- scoped reads ---------------------------------------------------------------
    def list_events(self, organization_id: int, project_id: int, limit: int,
                    offset: int = 0, group_ids: Sequence[int] | None = None) -> list[EventSummary]:
        """Newest events of one project (optionally of some issues), de-duplicated."""
        where = "organization_id = {org:UInt64} AND project_id = {project:UInt64}"
        params: dict[str, Any] = {"org": organization_id, "project": project_id,
                                  "limit": limit, "offset": offset}
        if group_ids is not None:
            where += " AND group_id IN {groups:Array(UInt64)}"
            params["groups"] = list(group_ids)
        rows = self._read.query(
            "SELECT toString(event_id), group_id, timestamp, title, message, culprit,"
            " toString(primary_hash) AS hash,"
            " platform, level, tags FROM events WHERE " + where +
            " ORDER BY timestamp DESC, event_id LIMIT 1 BY event_id"
            " LIMIT {limit:UInt32} OFFSET {offset:UInt32}", parameters=params).result_rows
        return [EventSummary(r[0].replace("-", ""), int(r[1]), as_utc(r[2]), r[3], r[4], r[5],
                             r[7], r[8], sorted(r[9].items()), r[6]) for r in rows]

    def event_body(self, organization_id: int, project_id: int, event_id: str) -> str | None:
        rows = self._read.query(
            "SELECT body FROM events WHERE organization_id = {org:UInt64} AND"
            " project_id = {project:UInt64} AND event_id = {id:UUID} LIMIT 1",
            parameters={"org": organization_id, "project": project_id, "id": event_id},
        ).result_rows
        return str(rows[0][0]) if rows else None

    def user_counts(self, organization_id: int, project_id: int,
                    issue_of_hash: Mapping[str, int], since: dt.datetime | None = None
                    ) -> dict[int, int]:
        """Distinct users per issue, identified as Sentry's ``sentry:user`` tag does: by id,
        else e-mail, else username, else IP address. ``since``: only events whose timestamp
        is at or after it."""
        return self._per_issue(
            "uniqExactIf(multiIf(user_id != '', concat('id:', user_id), user_email != '',"
            " concat('email:', user_email), user_username != '',"
            " concat('username:', user_username), user_ip != '', concat('ip:', user_ip), ''),"
            " user_id != '' OR user_email != '' OR user_username != '' OR user_ip != '')",
            organization_id, project_id, issue_of_hash, since or _EPOCH)

    def event_counts(self, organization_id: int, project_id: int,
                     issue_of_hash: Mapping[str, int], since: dt.datetime) -> dict[int, int]:
        """Distinct events per issue whose timestamp is at or after ``since`` (a re-delivered
        event counts once even before ClickHouse merges its duplicate rows)."""
        return self._per_issue("uniqExact(event_id)", organization_id, project_id,
                               issue_of_hash, since)

    def _per_issue(self, aggregate: str, organization_id: int, project_id: int,
                   issue_of_hash: Mapping[str, int], since: dt.datetime) -> dict[int, int]:
        """``aggregate`` (a fixed expression) over the events of each issue since ``since``.
        ``issue_of_hash`` maps the issues' grouping hashes to them: an event counts for the
        issue of its primary hash, so merges and unmerges need no rewrite of ClickHouse rows."""
        if not issue_of_hash:
            return {}
        hashes = list(issue_of_hash)
        rows = self._read.query(
            "SELECT transform(toString(primary_hash), {hashes:Array(String)},"
            f" {{issues:Array(UInt64)}}, toUInt64(0)) AS issue, {aggregate} FROM events"
            " WHERE organization_id = {org:UInt64} AND project_id = {project:UInt64}"
            " AND toString(primary_hash) IN {hashes:Array(String)}"
            " AND timestamp >= {since:DateTime64(6, 'UTC')} GROUP BY issue",
            parameters={"org": organization_id, "project": project_id, "hashes": hashes,
                        "issues": [issue_of_hash[h] for h in hashes],
                        "since": as_utc(since)}).result_rows
        return {int(r[0]): int(r[1]) for r in rows}

    def hash_totals(self, organization_id: int, project_id: int, hashes: Sequence[str]
                    ) -> HashTotals | None:
        """What an issue made of ``hashes`` holds: the events whose primary hash is one of
        them (None when there are none)."""
        rows = self._read.query(
            "SELECT uniqExact(event_id), min(timestamp), max(timestamp),"
            " argMax(title, timestamp), argMax(culprit, timestamp) FROM events"
            " WHERE organization_id = {org:UInt64} AND project_id = {project:UInt64}"
            " AND toString(primary_hash) IN {hashes:Array(String)}",
            parameters={"org": organization_id, "project": project_id,
                        "hashes": list(hashes)}).result_rows
        if not rows or int(rows[0][0]) == 0:
            return None
        r = rows[0]
        return HashTotals(int(r[0]), as_utc(r[1]), as_utc(r[2]), str(r[3]), str(r[4]))

    def query_rows(self, sql: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        """A raw read for tests and operators; callers must scope it themselves."""
        return [tuple(r) for r in self._read.query(sql, parameters=parameters).result_rows]

    def matching_hashes(self, organization_id: int, project_ids: Sequence[int],
                        filters: EventFilters, since: dt.datetime, until: dt.datetime,
                        max_hashes: int) -> list[str]:
        """Primary hashes of the events that match ``filters`` in [since, until), within
        the tenant scope; at most ``max_hashes``, most recent first."""
        conditions, parameters = event_where(filters)
        rows = self._read.query(
            "SELECT toString(primary_hash) AS h FROM events"
            " WHERE organization_id = {scope_org:UInt64}"
            " AND project_id IN {scope_projects:Array(UInt64)}"
            " AND timestamp >= {scope_since:DateTime64(6, 'UTC')}"
            " AND timestamp < {scope_until:DateTime64(6, 'UTC')}"
            f" AND ({conditions}) GROUP BY h ORDER BY max(timestamp) DESC"
            " LIMIT {scope_limit:UInt32}",
            parameters={**parameters, "scope_org": organization_id,
                        "scope_projects": list(project_ids), "scope_since": as_utc(since),
                        "scope_until": as_utc(until), "scope_limit": max_hashes}).result_rows
        return [str(r[0]) for r in rows]

    def hourly_counts(self, organization_id: int, project_ids: Sequence[int],
                      group_ids: Sequence[int], since: dt.datetime
                      ) -> dict[int, dict[dt.datetime, int]]:
        """Events per group id and hour since ``since``, from the hourly rollup (never a
        rescan of raw events); callers map group ids of merged issues to the survivor.
        The rollup is keyed by project (ids are unique across organizations); callers pass
        the organization's projects only, as storage.projects resolves them."""
        if not group_ids or not organization_id:
            return {}
        rows = self._read.query(
            "SELECT group_id, hour, sum(count) FROM issue_counts_hourly"
            " WHERE project_id IN {projects:Array(UInt64)} AND group_id IN"
            " {groups:Array(UInt64)} AND hour >= {since:DateTime('UTC')}"
            " GROUP BY group_id, hour",
            parameters={"projects": list(project_ids), "groups": list(group_ids),
                        "since": as_utc(since).replace(microsecond=0)}).result_rows
        counts: dict[int, dict[dt.datetime, int]] = {}
        for group_id, hour, count in rows:
            counts.setdefault(int(group_id), {})[as_utc(hour)] = int(count)
        return counts

    def issue_events(self, organization_id: int, project_id: int, hashes: Sequence[str],
                     filters: EventFilters = NO_FILTERS, limit: int = 100,
                     offset: int = 0, oldest_first: bool = False) -> list[EventSummary]:
        """Events of an issue (those whose primary hash is one of ``hashes``), newest first
        (or oldest), optionally narrowed by a search (events/search.py)."""
        if not hashes:
            return []
        order = "ASC" if oldest_first else "DESC"
        conditions, parameters = event_where(filters)
        rows = self._read.query(
            "SELECT toString(event_id), group_id, timestamp, title, message, culprit,"
            " toString(primary_hash), platform, level, tags FROM events"
            " WHERE organization_id = {scope_org:UInt64} AND project_id = {scope_project:UInt64}"
            " AND toString(primary_hash) IN {scope_hashes:Array(String)}"
            f" AND ({conditions}) ORDER BY timestamp {order}, event_id {order}"
            " LIMIT 1 BY event_id LIMIT {scope_limit:UInt32} OFFSET {scope_offset:UInt32}",
            parameters={**parameters, "scope_org": organization_id,
                        "scope_project": project_id, "scope_hashes": list(hashes),
                        "scope_limit": limit, "scope_offset": offset}).result_rows
        return [EventSummary(r[0].replace("-", ""), int(r[1]), as_utc(r[2]), r[3], r[4], r[5],
                             r[7], r[8], sorted(r[9].items()), r[6]) for r in rows]

    def event_neighbours(self, organization_id: int, project_id: int, hashes: Sequence[str],
                         event_id: str, timestamp: dt.datetime) -> tuple[str | None, str | None]:
        """The events of the same issue just before and just after one (by time, then id)."""
        found: list[str | None] = []
        for op, order in (("<", "DESC"), (">", "ASC")):
            rows = self._read.query(
                "SELECT toString(event_id) FROM events WHERE organization_id = {org:UInt64}"
                " AND project_id = {project:UInt64} AND toString(primary_hash) IN"
                " {hashes:Array(String)} AND event_id != {id:UUID} AND"
                f" (timestamp, toString(event_id)) {op}"
                " ({at:DateTime64(6, 'UTC')}, {id_text:String})"
                f" ORDER BY timestamp {order}, event_id {order} LIMIT 1",
                parameters={"org": organization_id, "project": project_id,
                            "hashes": list(hashes), "id": event_id, "at": as_utc(timestamp),
                            "id_text": str(uuid.UUID(event_id))}).result_rows
            found.append(rows[0][0].replace("-", "") if rows else None)
        return found[0], found[1]

    def event_timestamp(self, organization_id: int, project_id: int, event_id: str
                        ) -> tuple[dt.datetime, str] | None:
        """When an event happened and its primary hash."""
        rows = self._read.query(
            "SELECT timestamp, toString(primary_hash) FROM events WHERE"
            " organization_id = {org:UInt64} AND project_id = {project:UInt64} AND"
            " event_id = {id:UUID} LIMIT 1",
            parameters={"org": organization_id, "project": project_id, "id": event_id},
        ).result_rows
        return (as_utc(rows[0][0]), str(rows[0][1])) if rows else None

    def tag_facets(self, organization_id: int, project_id: int, hashes: Sequence[str],
                   key: str | None, top: int, environments: Sequence[str] = ()
                   ) -> list[TagFacet]:
        """Per tag key of an issue's events (their ``tags`` map; level, environment and
        release from the columns for events stored before those were also tags): (key,
        events with it, distinct values, the ``top`` values with their counts), or only
        ``key``'s when given; only the events of ``environments`` when given (Sentry's
        ``?environment=``). One scan: counted per (key, value), then ranked per key;
        distinct event ids, so rows a re-delivery duplicated count once. A key in the map
        is never counted again from its column, so no key appears twice."""
        if not hashes:
            return []
        rows = self._read.query(
            "SELECT k, sum(n) AS events, count() AS distinct_values,"
            " arraySlice(arrayReverseSort(x -> x.2, groupArray((v, n))), 1, {top:UInt16})"
            " FROM (SELECT kv.1 AS k, kv.2 AS v, uniqExact(event_id) AS n FROM events"
            " ARRAY JOIN arrayConcat(arrayZip(mapKeys(tags), mapValues(tags)),"
            " arrayFilter(c -> NOT mapContains(tags, c.1), [('level', level),"
            " ('environment', environment), ('release', release)])) AS kv"
            " WHERE organization_id = {org:UInt64} AND project_id = {project:UInt64}"
            " AND toString(primary_hash) IN {hashes:Array(String)}"
            " AND kv.2 != '' AND ({key:String} = '' OR kv.1 = {key:String})"
            " AND (empty({environments:Array(String)})"
            "      OR environment IN {environments:Array(String)})"
            " GROUP BY k, v) GROUP BY k ORDER BY events DESC, k",
            parameters={"org": organization_id, "project": project_id, "hashes": list(hashes),
                        "top": top, "key": key or "",
                        "environments": list(environments)}).result_rows
        return [(str(k), int(events), int(distinct),
                 sorted(((str(v), int(n)) for v, n in values), key=lambda p: (-p[1], p[0])))
                for k, events, distinct, values in rows]

    def latest_event_id(self, organization_id: int, project_id: int, hashes: Sequence[str],
                        oldest: bool = False) -> str | None:
        """The newest (or oldest) event of an issue, reading only ids and times."""
        if not hashes:
            return None
        order = "ASC" if oldest else "DESC"
        rows = self._read.query(
            "SELECT toString(event_id) FROM events WHERE organization_id = {org:UInt64}"
            " AND project_id = {project:UInt64} AND toString(primary_hash) IN"
            f" {{hashes:Array(String)}} ORDER BY timestamp {order}, event_id {order} LIMIT 1",
            parameters={"org": organization_id, "project": project_id,
                        "hashes": list(hashes)}).result_rows
        return rows[0][0].replace("-", "") if rows else None

    def project_counts(self, organization_id: int, project_id: int, since: dt.datetime,
                       until: dt.datetime, bucket_s: int) -> dict[dt.datetime, int]:
        """Stored events of a project per bucket (an hour or a day), from the hourly rollup
        (keyed by project, as ``hourly_counts``)."""
        if not organization_id:
            return {}
        rows = self._read.query(
            "SELECT toStartOfInterval(hour, toIntervalSecond({bucket:UInt32})) AS b, sum(count)"
            " FROM issue_counts_hourly WHERE project_id = {project:UInt64}"
            " AND hour >= {since:DateTime('UTC')} AND hour < {until:DateTime('UTC')}"
            " GROUP BY b",
            parameters={"project": project_id, "bucket": bucket_s,
                        "since": as_utc(since).replace(microsecond=0),
                        "until": as_utc(until).replace(microsecond=0)}).result_rows
        return {as_utc(r[0]): int(r[1]) for r in rows}

    def minute_counts(self, organization_id: int, project_ids: Sequence[int],
                      since: dt.datetime, until: dt.datetime) -> list[MinuteCount]:
        """Events (distinct ids) and distinct users per minute received in [since, until),
        per project (group id 0) and per group id, of the organization's ``project_ids``:
        the series anomaly detectors watch (actors/detectors.py). Minutes without events
        have no row."""
        if not project_ids or not organization_id:
            return []
        rows = self._read.query(
            "SELECT project_id, if(grouping(group_id) = 0, group_id, toUInt64(0)) AS g,"
            f" toStartOfMinute(received) AS minute, uniqExact(event_id), {DISTINCT_USERS}"
            " FROM events WHERE organization_id = {org:UInt64}"
            " AND project_id IN {projects:Array(UInt64)}"
            " AND received >= {since:DateTime64(6, 'UTC')}"
            " AND received < {until:DateTime64(6, 'UTC')}"
            " GROUP BY GROUPING SETS ((project_id, minute), (project_id, group_id, minute))",
            parameters={"org": organization_id, "projects": list(project_ids),
                        "since": as_utc(since), "until": as_utc(until)}).result_rows
        return [MinuteCount(int(r[0]), int(r[1]), as_utc(r[2]), int(r[3]), int(r[4]))
                for r in rows]

    # --- bulk reads and repairs (pipelines/) -----------------------------------------
    def stored_event_hours(self, organization_id: int, project_id: int, since: dt.datetime,
                           until: dt.datetime, filters: EventFilters = NO_FILTERS
                           ) -> dict[dt.datetime, int]:
        """Distinct stored events of a project per hour of their timestamp, in [since,
        until), matching ``filters`` (a search query's event part) when given: what bulk
        jobs cut their time slices from (never the rollup, which a job may be repairing)."""
        where, params = event_where(filters)
        rows = self._read.query(
            "SELECT toStartOfHour(timestamp) AS h, uniqExact(event_id) FROM events"
            " WHERE organization_id = {org:UInt64} AND project_id = {project:UInt64}"
            " AND timestamp >= {since:DateTime64(6, 'UTC')}"
            " AND timestamp < {until:DateTime64(6, 'UTC')} AND (" + where + ")"
            " GROUP BY h ORDER BY h",
            parameters={**params, "org": organization_id, "project": project_id,
                        "since": as_utc(since), "until": as_utc(until)}).result_rows
        return {as_utc(r[0]): int(r[1]) for r in rows}

    def stored_events(self, organization_id: int, project_id: int, since: dt.datetime,
                      until: dt.datetime, filters: EventFilters = NO_FILTERS
                      ) -> list[dict[str, Any]]:
        """A project's stored events with timestamps in [since, until) matching
        ``filters`` when given, each once (copies of a re-delivered event collapse), oldest
        first, as ``STORED_EVENT_COLUMNS``."""
        where, params = event_where(filters)
        result = self._read.query(
            "SELECT " + ", ".join(STORED_EVENT_COLUMNS.values()) + " FROM events"
            " WHERE organization_id = {org:UInt64} AND project_id = {project:UInt64}"
            " AND timestamp >= {since:DateTime64(6, 'UTC')}"
            " AND timestamp < {until:DateTime64(6, 'UTC')} AND (" + where + ")"
            " ORDER BY timestamp, event_id LIMIT 1 BY event_id",
            parameters={**params, "org": organization_id, "project": project_id,
                        "since": as_utc(since), "until": as_utc(until)})
        names = list(STORED_EVENT_COLUMNS)
        return [dict(zip(names, row, strict=True)) for row in result.result_rows]

    def hash_event_totals(self, organization_id: int, project_id: int
                          ) -> dict[str, tuple[int, dt.datetime, dt.datetime]]:
        """Per primary hash of a project: its distinct stored events, the first and the
        last of their timestamps."""
        rows = self._read.query(
            "SELECT toString(primary_hash), uniqExact(event_id), min(timestamp),"
            " max(timestamp) FROM events WHERE organization_id = {org:UInt64}"
            " AND project_id = {project:UInt64} GROUP BY primary_hash",
            parameters={"org": organization_id, "project": project_id}).result_rows
        return {str(r[0]): (int(r[1]), as_utc(r[2]), as_utc(r[3])) for r in rows}

    def rebuild_issue_counts(self, organization_id: int, project_id: int) -> int:
        """Replace a project's hourly issue rollup by the counts of its stored events (each
        event once, under the issue id it was stored with, as consumers count it); returns
        the events counted. The rollup is keyed by project (ids are unique across
        organizations); the recount reads the organization's events only. The old rows are
        deleted first, synchronously (``mutations_sync``), then the recount is inserted
        under a token of its own: a repeated rebuild gives the same rows."""
        self._client.command(
            "ALTER TABLE issue_counts_hourly DELETE WHERE project_id = {project:UInt64}",
            parameters={"project": project_id}, settings={"mutations_sync": 2})
        scope = {"org": organization_id, "project": project_id}
        self._client.command(
            "INSERT INTO issue_counts_hourly SELECT project_id, group_id,"
            " toStartOfHour(timestamp) AS hour, retention_days, uniqExact(event_id)"
            " FROM events WHERE organization_id = {org:UInt64} AND project_id ="
            " {project:UInt64} GROUP BY project_id, group_id, hour, retention_days",
            parameters=scope, settings={"insert_deduplication_token": uuid.uuid4().hex})
        rows = self._read.query(
            "SELECT sum(count) FROM issue_counts_hourly WHERE project_id = {project:UInt64}",
            parameters=scope).result_rows
        return int(rows[0][0]) if rows else 0

    def events_to_reprocess(self, organization_id: int, project_id: int,
                            since: dt.datetime, until: dt.datetime, release: str | None,
                            hashes: Sequence[str] | None) -> pa.Table:
        """What ``crashray reprocess`` reads of a slice: the events of the project with a
        timestamp in [since, until), ordered by event id, each by its newest row first
        (highest ``row_version``: a replacement a reprocess job wrote wins over the row it
        replaces) and, if it has more, the next newest (what an interrupted job replaced),
        as ``REPROCESS_COLUMNS``; only of ``release`` and of the primary ``hashes`` when
        given (None: any)."""
        where = ["organization_id = {org:UInt64}", "project_id = {project:UInt64}",
                 "timestamp >= {since:DateTime64(6, 'UTC')}",
                 "timestamp < {until:DateTime64(6, 'UTC')}"]
        params: dict[str, Any] = {"org": organization_id, "project": project_id,
                                  "since": as_utc(since), "until": as_utc(until)}
        if release is not None:
            where.append("release = {release:String}")
            params["release"] = release
        if hashes is not None:
            where.append("toString(primary_hash) IN {hashes:Array(String)}")
            params["hashes"] = list(hashes)
        return self._read.query_arrow(
            "SELECT " + ", ".join(f"{expr} AS {name}" for name, expr
                                  in REPROCESS_COLUMNS.items()) + " FROM events WHERE "
            + " AND ".join(where) + " ORDER BY event_id, row_version DESC"
            " LIMIT 2 BY event_id", parameters=params, use_strings=True)

    def replace_events(self, organization_id: int, project_id: int, rows: pa.Table,
                       version: int, event_ids: Sequence[str]) -> int:
        """Replace stored events by ``rows`` (``events_table``'s shape), written with
        ``row_version`` = ``version``: the rows are inserted first, then every row of a
        lower version of ``event_ids`` (the events of ``rows`` and any the same job wrote
        before an interruption) is deleted. Between the two statements an event has two
        rows (readers count distinct event ids, and a moved event shows in both issues for
        that moment); stopped there, nothing is lost, and the job's re-run deletes the old
        rows. Returns the rows inserted."""
        if rows.num_rows:
            versioned = rows.append_column(
                "row_version", pa.array([version] * rows.num_rows, pa.uint32()))
            self._client.insert_arrow("events", versioned)
        if event_ids:
            self._client.command(
                "DELETE FROM events WHERE organization_id = {org:UInt64}"
                " AND project_id = {project:UInt64} AND event_id IN {ids:Array(UUID)}"
                " AND row_version < {version:UInt32}",
                parameters={"org": organization_id, "project": project_id,
                            "ids": [str(uuid.UUID(e)) for e in event_ids],
                            "version": version})
        return int(rows.num_rows)

    # --- the regroup-only path of ``crashray reprocess`` (storage/regroup.py) ----------
    def regroup_slice_rows(self, s: regroup.RegroupSlice) -> regroup.SliceRows:
        return regroup.slice_rows(self._read, s)

    def regroup_projection_groups(self, s: regroup.RegroupSlice, known: Collection[int] = ()
                                  ) -> tuple[list[regroup.ProjectionGroup], int]:
        return regroup.projection_groups(self._read, s, known)

    def regroup_events_one_by_one(self, s: regroup.RegroupSlice, projections: Sequence[int]
                                  ) -> pa.Table:
        return regroup.events_one_by_one(self._read, s, projections)

    # A job's writes run for seconds: through this thread's own client, so that in the
    # owner actor they take a reading thread, never one the consumers' inserts need.
    def regroup_move_events(self, s: regroup.RegroupSlice, moves: regroup.ProjectionMoves
                            ) -> int:
        return regroup.move_events(self._read, s, moves)

    def regroup_delete_replaced_of_job(self, organization_id: int, project_id: int,
                                       version: int) -> None:
        regroup.delete_replaced_of_job(self._read, organization_id, project_id, version)

    def regroup_drop_projections(self, s: regroup.RegroupSlice) -> None:
        regroup.drop_projections(self._read, s)

    def regroup_drop_leftover_projections(self, organization_id: int, project_id: int
                                          ) -> int:
        return regroup.drop_leftover_projections(self._read, organization_id, project_id)

    def close(self) -> None:
        self._client.close()

    def outcome_stats(self, organization_id: int, project_ids: Sequence[int],
                      query: StatsQuery) -> list[StatsRow]:
        """Sentry's organization stats over outcomes (``events.stats.StatsQuery``): one row
        (interval start, values of ``query.group_by`` in order, sum(quantity)) per group and
        non-empty interval. Only rows of ``organization_id`` and of ``project_ids`` (the
        projects the caller may see) count, whatever projects the query names."""
        if not project_ids:
            return []
        # default and security are reported as error, summed (Sentry's CategoryDimension).
        group_columns = {
            "outcome": "toString(outcome)", "reason": "toString(reason)",
            "category": "if(category IN {errors:Array(String)}, 'error', toString(category))",
            "project": "project_id", "key_id": "key_id"}
        where = ["organization_id = {org:UInt64}", "project_id IN {projects:Array(UInt64)}",
                 "hour >= {start:DateTime('UTC')}", "hour < {end:DateTime('UTC')}"]
        params: dict[str, Any] = {
            "org": organization_id, "projects": list(project_ids), "start": query.start,
            "end": query.end, "interval": query.interval_s, "errors": list(ERROR_CATEGORIES),
            "limit": MAX_STATS_ROWS + 1}
        filters: list[tuple[str, str, Sequence[str | int]]] = [
            ("project_id", "UInt64", query.project_ids), ("key_id", "UInt64", query.key_ids),
            ("outcome", "String", query.outcomes), ("category", "String", query.categories),
            ("reason", "String", query.reasons)]
        for column, ch_type, values in filters:
            if values:
                where.append(f"{column} IN {{only_{column}:Array({ch_type})}}")
                params[f"only_{column}"] = list(values)
        keys = [f"{group_columns[name]} AS by_{n}" for n, name in enumerate(query.group_by)]
        rows = self._read.query(
            "SELECT toDateTime(intDiv(toUInt32(hour), {interval:UInt32}) * {interval:UInt32},"
            " 'UTC') AS bucket, " + "".join(f"{k}, " for k in keys) + "sum(quantity)"
            " FROM outcomes WHERE " + " AND ".join(where) + " GROUP BY bucket"
            + "".join(f", by_{n}" for n in range(len(keys))) + " LIMIT {limit:UInt32}",
            parameters=params).result_rows
        return [(as_utc(r[0]), tuple(r[1:-1]), int(r[-1])) for r in rows]


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """A time read from ClickHouse as an aware UTC datetime (it may come back naive)."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
