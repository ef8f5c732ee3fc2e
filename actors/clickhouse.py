"""The one way to reach ClickHouse from Ray code: ``clickhouse_store(dsn)`` gives an
``EventStore`` (storage/clickhouse.py's typed interface).

Embedded (chDB): exactly one process may open the data path, so a single named actor,
``ClickHouseOwner``, holds the ``ClickHouseStore`` and every other process reaches it
through ``RemoteStore``, which implements ``EventStore`` method by method. The owner is a
threaded actor: reads run on ``OWNER_READ_CONCURRENCY`` threads, each with a chDB client
of its own, and inserts on ``OWNER_WRITE_CONCURRENCY`` threads of their own, so an API read
never queues behind a consumer's insert, and a slow search never delays storage.
Server mode: each process opens its own HTTP client (``ClickHouseStore``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

import pyarrow as pa
import ray

from actors.placement import LOCAL, Placement
from actors.shared_process import Part, find, hosted_here
from cluster import metrics
from events.search import EventFilters
from events.stats import StatsQuery
from storage import regroup
from storage.clickhouse import (
    NO_FILTERS,
    ClickHouseStore,
    EventStore,
    EventSummary,
    HashTotals,
    MinuteCount,
    StatsRow,
    TagFacet,
)

OWNER_ACTOR_NAME: Final = "crashray-clickhouse"
NAMESPACE: Final = "crashray"
#: Reads the owner runs at once (the API's, the consumers' counts), each on a thread with
#: a reading client of its own. Measured under bench/ingest.py: 16 threads cost ~60 MiB
#: more PSS than 4 for the same throughput.
OWNER_READ_CONCURRENCY: Final = 4
#: Inserts the owner runs at once, on threads of their own (one per consumer by default):
#: however slow one tenant's searches are, they never hold the threads inserts need.
OWNER_WRITE_CONCURRENCY: Final = 2
_WRITES: Final = "writes"
#: Seconds ``RemoteStore.ping`` waits for the owner: an owner that Ray is restarting (or
#: that hangs) is an outage to the consumers, which then keep their items and back off.
OWNER_PING_TIMEOUT_S: Final = 5.0


#: The owner's methods that run on the inserts' threads (``_WRITES``).
WRITE_METHODS: Final = ("insert", "insert_batch", "insert_counts", "rebuild_issue_counts",
                        "replace_events", "ping")


class ClickHouseOwnerService(ClickHouseStore):
    """Holds the embedded ClickHouse engine (migrated when built). An actor of its own
    (``ClickHouseOwner``, on a cluster) or a part of the shared process on one node
    (``owner_part``), where its reads and its inserts keep threads of their own."""

    def __init__(self, dsn: str) -> None:
        metrics.record_actor_start("clickhouse_owner")
        super().__init__(dsn)
        self.migrate()

    def ready(self) -> bool:
        return True


def owner_part(dsn: str) -> Part:
    """The owner as a part of the shared process (actors/shared_process.py): its reads on
    ``OWNER_READ_CONCURRENCY`` threads and its ``WRITE_METHODS`` on
    ``OWNER_WRITE_CONCURRENCY`` threads, each group of its own as in the actor, and its calls
    retried across a restart as the actor's."""
    return Part(OWNER_ACTOR_NAME, ClickHouseOwnerService, (dsn,), max_task_retries=-1,
                threads=OWNER_READ_CONCURRENCY,
                method_groups={m: (f"{OWNER_ACTOR_NAME}-{_WRITES}", OWNER_WRITE_CONCURRENCY)
                               for m in WRITE_METHODS})


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1,
            max_concurrency=OWNER_READ_CONCURRENCY,
            concurrency_groups={_WRITES: OWNER_WRITE_CONCURRENCY})  # type: ignore[call-overload]
class ClickHouseOwner(ClickHouseOwnerService):
    """The owner as an actor of its own; its methods are ``ClickHouseStore``'s, the
    inserts in a concurrency group of their own."""

    @ray.method(concurrency_group=_WRITES)  # type: ignore[misc]
    def insert(self, table: str, data: pa.Table) -> int:  # type: ignore[override]
        return super().insert(table, data)

    @ray.method(concurrency_group=_WRITES)  # type: ignore[misc]
    def insert_batch(self, tables: Mapping[str, pa.Table]) -> int:  # type: ignore[override]
        return super().insert_batch(tables)

    @ray.method(concurrency_group=_WRITES)  # type: ignore[misc]
    def insert_counts(self, token: str,  # type: ignore[override]
                      tables: Mapping[str, pa.Table]) -> int:
        return super().insert_counts(token, tables)

    @ray.method(concurrency_group=_WRITES)  # type: ignore[misc]
    def rebuild_issue_counts(self, organization_id: int,  # type: ignore[override]
                             project_id: int) -> int:
        return super().rebuild_issue_counts(organization_id, project_id)

    @ray.method(concurrency_group=_WRITES)  # type: ignore[misc]
    def replace_events(self, organization_id: int,  # type: ignore[override]
                       project_id: int, rows: pa.Table, version: int,
                       event_ids: Sequence[str]) -> int:
        return super().replace_events(organization_id, project_id, rows, version, event_ids)

    @ray.method(concurrency_group=_WRITES)  # type: ignore[misc]
    def ping(self) -> bool:  # type: ignore[override]
        """On the inserts' threads: what a consumer asks is whether it can store, and slow
        searches holding every reading thread must not look like an outage."""
        return super().ping()


class RemoteStore:
    """``EventStore`` answered by the owner actor (one actor call per method call)."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner
        self.is_embedded = True

    def insert(self, table: str, data: pa.Table) -> int:
        return int(ray.get(self._owner.insert.remote(table, data)))

    def insert_batch(self, tables: Mapping[str, pa.Table]) -> int:
        return int(ray.get(self._owner.insert_batch.remote(dict(tables))))

    def insert_counts(self, token: str, tables: Mapping[str, pa.Table]) -> int:
        return int(ray.get(self._owner.insert_counts.remote(token, dict(tables))))

    def ping(self) -> bool:
        """Whether the owner answers and its engine does, within ``OWNER_PING_TIMEOUT_S``."""
        try:
            return bool(ray.get(self._owner.ping.remote(), timeout=OWNER_PING_TIMEOUT_S))
        except ray.exceptions.RayError:  # dead, restarting or timed out: not reachable now
            return False

    def list_events(self, organization_id: int, project_id: int, limit: int,
                    offset: int = 0, group_ids: Sequence[int] | None = None
                    ) -> list[EventSummary]:
        found: list[EventSummary] = ray.get(self._owner.list_events.remote(
            organization_id, project_id, limit, offset, group_ids))
        return found

    def event_body(self, organization_id: int, project_id: int, event_id: str
                   ) -> str | None:
        body: str | None = ray.get(self._owner.event_body.remote(
            organization_id, project_id, event_id))
        return body

    def user_counts(self, organization_id: int, project_id: int,
                    issue_of_hash: Mapping[str, int], since: dt.datetime | None = None
                    ) -> dict[int, int]:
        counts: dict[int, int] = ray.get(self._owner.user_counts.remote(
            organization_id, project_id, dict(issue_of_hash), since))
        return counts

    def event_counts(self, organization_id: int, project_id: int,
                     issue_of_hash: Mapping[str, int], since: dt.datetime
                     ) -> dict[int, int]:
        counts: dict[int, int] = ray.get(self._owner.event_counts.remote(
            organization_id, project_id, dict(issue_of_hash), since))
        return counts

    def hash_totals(self, organization_id: int, project_id: int, hashes: Sequence[str]
                    ) -> HashTotals | None:
        totals: HashTotals | None = ray.get(self._owner.hash_totals.remote(
            organization_id, project_id, list(hashes)))
        return totals

    def matching_hashes(self, organization_id: int, project_ids: Sequence[int],
                        filters: EventFilters, since: dt.datetime, until: dt.datetime,
                        max_hashes: int) -> list[str]:
        hashes: list[str] = ray.get(self._owner.matching_hashes.remote(
            organization_id, list(project_ids), filters, since, until, max_hashes))
        return hashes

    def hourly_counts(self, organization_id: int, project_ids: Sequence[int],
                      group_ids: Sequence[int], since: dt.datetime
                      ) -> dict[int, dict[dt.datetime, int]]:
        counts: dict[int, dict[dt.datetime, int]] = ray.get(self._owner.hourly_counts.remote(
            organization_id, list(project_ids), list(group_ids), since))
        return counts

    def issue_events(self, organization_id: int, project_id: int, hashes: Sequence[str],
                     filters: EventFilters = NO_FILTERS, limit: int = 100,
                     offset: int = 0, oldest_first: bool = False) -> list[EventSummary]:
        events: list[EventSummary] = ray.get(self._owner.issue_events.remote(
            organization_id, project_id, list(hashes), filters, limit, offset, oldest_first))
        return events

    def event_neighbours(self, organization_id: int, project_id: int, hashes: Sequence[str],
                         event_id: str, timestamp: dt.datetime
                         ) -> tuple[str | None, str | None]:
        found: tuple[str | None, str | None] = ray.get(self._owner.event_neighbours.remote(
            organization_id, project_id, list(hashes), event_id, timestamp))
        return found

    def event_timestamp(self, organization_id: int, project_id: int, event_id: str
                        ) -> tuple[dt.datetime, str] | None:
        found: tuple[dt.datetime, str] | None = ray.get(self._owner.event_timestamp.remote(
            organization_id, project_id, event_id))
        return found

    def tag_facets(self, organization_id: int, project_id: int, hashes: Sequence[str],
                   key: str | None, top: int, environments: Sequence[str] = ()
                   ) -> list[TagFacet]:
        facets: list[TagFacet] = ray.get(self._owner.tag_facets.remote(
            organization_id, project_id, list(hashes), key, top, list(environments)))
        return facets

    def latest_event_id(self, organization_id: int, project_id: int, hashes: Sequence[str],
                        oldest: bool = False) -> str | None:
        found: str | None = ray.get(self._owner.latest_event_id.remote(
            organization_id, project_id, list(hashes), oldest))
        return found

    def project_counts(self, organization_id: int, project_id: int, since: dt.datetime,
                       until: dt.datetime, bucket_s: int) -> dict[dt.datetime, int]:
        counts: dict[dt.datetime, int] = ray.get(self._owner.project_counts.remote(
            organization_id, project_id, since, until, bucket_s))
        return counts

    def outcome_stats(self, organization_id: int, project_ids: Sequence[int],
                      query: StatsQuery) -> list[StatsRow]:
        rows: list[StatsRow] = ray.get(self._owner.outcome_stats.remote(
            organization_id, list(project_ids), query))
        return rows

    def minute_counts(self, organization_id: int, project_ids: Sequence[int],
                      since: dt.datetime, until: dt.datetime) -> list[MinuteCount]:
        counts: list[MinuteCount] = ray.get(self._owner.minute_counts.remote(
            organization_id, list(project_ids), since, until))
        return counts

    def query_rows(self, sql: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = ray.get(self._owner.query_rows.remote(sql, parameters))
        return rows

    def stored_event_hours(self, organization_id: int, project_id: int, since: dt.datetime,
                           until: dt.datetime, filters: EventFilters = NO_FILTERS
                           ) -> dict[dt.datetime, int]:
        hours: dict[dt.datetime, int] = ray.get(self._owner.stored_event_hours.remote(
            organization_id, project_id, since, until, filters))
        return hours

    def stored_events(self, organization_id: int, project_id: int, since: dt.datetime,
                      until: dt.datetime, filters: EventFilters = NO_FILTERS
                      ) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = ray.get(self._owner.stored_events.remote(
            organization_id, project_id, since, until, filters))
        return events

    def hash_event_totals(self, organization_id: int, project_id: int
                          ) -> dict[str, tuple[int, dt.datetime, dt.datetime]]:
        totals: dict[str, tuple[int, dt.datetime, dt.datetime]] = ray.get(
            self._owner.hash_event_totals.remote(organization_id, project_id))
        return totals

    def rebuild_issue_counts(self, organization_id: int, project_id: int) -> int:
        return int(ray.get(self._owner.rebuild_issue_counts.remote(organization_id,
                                                                   project_id)))


    def events_to_reprocess(self, organization_id: int, project_id: int,
                            since: dt.datetime, until: dt.datetime, release: str | None,
                            hashes: Sequence[str] | None) -> pa.Table:
        table: pa.Table = ray.get(self._owner.events_to_reprocess.remote(
            organization_id, project_id, since, until, release,
            None if hashes is None else list(hashes)))
        return table

    def replace_events(self, organization_id: int, project_id: int, rows: pa.Table,
                       version: int, event_ids: Sequence[str]) -> int:
        return int(ray.get(self._owner.replace_events.remote(
            organization_id, project_id, rows, version, list(event_ids))))

    # The regroup-only path of ``crashray reprocess`` (storage/regroup.py).
    def regroup_slice_rows(self, s: regroup.RegroupSlice) -> regroup.SliceRows:
        rows: regroup.SliceRows = ray.get(self._owner.regroup_slice_rows.remote(s))
        return rows

    def regroup_projection_groups(self, s: regroup.RegroupSlice, known: Collection[int] = ()
                                  ) -> tuple[list[regroup.ProjectionGroup], int]:
        groups: tuple[list[regroup.ProjectionGroup], int] = ray.get(
            self._owner.regroup_projection_groups.remote(s, list(known)))
        return groups

    def regroup_events_one_by_one(self, s: regroup.RegroupSlice, projections: Sequence[int]
                                  ) -> pa.Table:
        table: pa.Table = ray.get(self._owner.regroup_events_one_by_one.remote(
            s, list(projections)))
        return table

    def regroup_move_events(self, s: regroup.RegroupSlice, moves: regroup.ProjectionMoves
                            ) -> int:
        return int(ray.get(self._owner.regroup_move_events.remote(s, moves)))

    def regroup_delete_replaced_of_job(self, organization_id: int, project_id: int,
                                       version: int) -> None:
        ray.get(self._owner.regroup_delete_replaced_of_job.remote(organization_id, project_id,
                                                                  version))


    def regroup_drop_projections(self, s: regroup.RegroupSlice) -> None:
        ray.get(self._owner.regroup_drop_projections.remote(s))

    def regroup_drop_leftover_projections(self, organization_id: int, project_id: int
                                          ) -> int:
        return int(ray.get(self._owner.regroup_drop_leftover_projections.remote(
            organization_id, project_id)))


def start_owner(dsn: str, placement: Placement = LOCAL) -> Any:
    """Create (or find) the owner actor for an embedded ``dsn`` and wait until migrated;
    it is a home actor: the chDB files are on one node's disk."""
    owner = ClickHouseOwner.options(  # type: ignore[attr-defined]
        get_if_exists=True, **placement.home(OWNER_ACTOR_NAME)).remote(dsn)
    ray.get(owner.ready.remote())
    return owner


def clickhouse_store(dsn: str) -> EventStore:
    """A store for this process: local for a server, the owner actor for chDB."""
    if dsn.startswith("chdb:"):
        here: EventStore | None = hosted_here(OWNER_ACTOR_NAME)
        if here is not None:  # this is the shared process that holds the engine
            return here
        return RemoteStore(find(OWNER_ACTOR_NAME))
    return ClickHouseStore(dsn)
