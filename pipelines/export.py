"""``crashray export``: a project's stored events as Parquet files, by a Ray Data job.

The job runs on the instance's own Ray cluster (the embedded ClickHouse engine answers
only through its owner actor there, actors/clickhouse.py). The driver cuts the time range
into slices of whole hours of at most ``CRASHRAY_EXPORT_SLICE_EVENTS`` events (counted in
ClickHouse, never in the rollup), a dataset of one block per slice (``pipelines.blocks_of``),
``map_batches`` reads each slice through the ClickHouse store and turns it into Arrow rows,
and ``write_parquet`` writes them; at most ``CRASHRAY_PIPELINE_CONCURRENCY`` tasks of
``CRASHRAY_PIPELINE_TASK_CPUS`` CPUs each run at once, so the live services keep theirs.

``--query`` takes the issue stream's search syntax (events/search.py): its event part
(tags, level, release, free text, …) becomes the ClickHouse reads' WHERE clause, its issue
part (``is:``, ``times_seen``, ``age``, ``lastSeen``, ``firstRelease``) the set of issues,
found in PostgreSQL before the job starts, whose events are written.

Tenant scope: the organization and project are resolved in PostgreSQL
(storage/scope.py) and every read names both; nothing of another project is read.

Schema (stable: columns are only ever added; ``EXPORT_SCHEMA`` is the reference)::

    event_id          string      32 lowercase hex digits, as the API shows it
    issue_id          int64       the issue the event belongs to now (its grouping hash's
                                  issue; merges move hashes); null if that issue is deleted
    project_id        int64
    primary_hash      string      the grouping hash the event was stored with
    timestamp         timestamp[us, UTC]   when the event happened (the SDK's)
    received          timestamp[us, UTC]   when Crashray received it
    level, platform, release, environment, dist, transaction, logger, server_name,
    title, culprit, message, sdk_name, sdk_version          string ("" when absent)
    user_id, user_email, user_username, user_ip_address     string ("" when absent)
    tags              list<struct<key: string, value: string>>   sorted by key
    contexts          string      the event's contexts as a JSON object ("{}" if none)
    exceptions        list<struct<                 innermost last, as the SDK sent them
                        type: string, value: string, module: string,
                        mechanism_type: string, handled: bool (null: not stated),
                        frames: list<struct<       oldest call first (Sentry's order)
                          filename: string, abs_path: string, function: string,
                          module: string, lineno: int64, colno: int64, in_app: bool,
                          context_line: string>>>>       (frame fields null when absent)

Polars reads it as is: ``pl.read_parquet(DIR)``; one row per frame (``frames.function``,
``frames.lineno``, …; ``module`` is a field of both exceptions and frames, hence the prefix)::

    df.explode("exceptions").unnest("exceptions").explode("frames").unnest(
        "frames", separator=".")
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson
import pyarrow as pa

from events.errors import BadRequest
from events.search import EventFilters
from pipelines import blocks_of
from storage.clickhouse import NO_FILTERS

TAG_TYPE: Final = pa.struct([("key", pa.string()), ("value", pa.string())])
FRAME_TYPE: Final = pa.struct([
    ("filename", pa.string()), ("abs_path", pa.string()), ("function", pa.string()),
    ("module", pa.string()), ("lineno", pa.int64()), ("colno", pa.int64()),
    ("in_app", pa.bool_()), ("context_line", pa.string()),
])
EXCEPTION_TYPE: Final = pa.struct([
    ("type", pa.string()), ("value", pa.string()), ("module", pa.string()),
    ("mechanism_type", pa.string()), ("handled", pa.bool_()),
    ("frames", pa.list_(FRAME_TYPE)),
])
#: The plain string columns, in the file's order, as ClickHouse's ``events`` names them
#: (``user_ip`` becomes ``user_ip_address``).
STRING_COLUMNS: Final = ("level", "platform", "release", "environment", "dist", "transaction",
                         "logger", "server_name", "title", "culprit", "message", "sdk_name",
                         "sdk_version", "user_id", "user_email", "user_username")
TIMESTAMP: Final = pa.timestamp("us", tz="UTC")
EXPORT_SCHEMA: Final = pa.schema([
    ("event_id", pa.string()), ("issue_id", pa.int64()), ("project_id", pa.int64()),
    ("primary_hash", pa.string()), ("timestamp", TIMESTAMP), ("received", TIMESTAMP),
    *((name, pa.string()) for name in STRING_COLUMNS),
    ("user_ip_address", pa.string()),
    ("tags", pa.list_(TAG_TYPE)), ("contexts", pa.string()),
    ("exceptions", pa.list_(EXCEPTION_TYPE)),
])
#: The earliest and latest timestamps an export without ``--since``/``--until`` covers.
ALL_TIME: Final = (dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
                   dt.datetime(9999, 1, 1, tzinfo=dt.UTC))
HOUR: Final = dt.timedelta(hours=1)


class ExportRefused(BadRequest):
    """The export cannot start as asked (a target that is not empty, an empty range)."""

    code = "export_refused"


@dataclass(frozen=True)
class TimeSlice:
    """Events with timestamps in [start, end), about ``events`` of them."""

    start: dt.datetime
    end: dt.datetime
    events: int


def plan_slices(events_per_hour: Mapping[dt.datetime, int], max_events: int,
                since: dt.datetime, until: dt.datetime) -> list[TimeSlice]:
    """Consecutive hours packed into slices of at most ``max_events`` events (an hour
    with more is a slice of its own), clipped to [since, until); hours without events
    make no slice."""
    slices: list[TimeSlice] = []
    start: dt.datetime | None = None
    end = since
    count = 0
    for hour in sorted(events_per_hour):
        n = events_per_hour[hour]
        if start is not None and count + n > max_events:
            slices.append(TimeSlice(start, end, count))
            start = None
        if start is None:
            start, count = max(hour, since), 0
        count += n
        end = min(hour + HOUR, until)
    if start is not None:
        slices.append(TimeSlice(start, end, count))
    return slices


def export_table(rows: Sequence[Mapping[str, Any]], project_id: int,
                 issue_of_hash: Mapping[str, int]) -> pa.Table:
    """Stored events (``storage.clickhouse.STORED_EVENT_COLUMNS``) as ``EXPORT_SCHEMA``."""
    return pa.Table.from_pylist([_export_row(r, project_id, issue_of_hash) for r in rows],
                                schema=EXPORT_SCHEMA)


def _export_row(r: Mapping[str, Any], project_id: int, issue_of_hash: Mapping[str, int]
                ) -> dict[str, Any]:
    event = _body(r["body"])
    contexts = event.get("contexts")
    row: dict[str, Any] = {
        "event_id": r["event_id"], "issue_id": issue_of_hash.get(r["primary_hash"]),
        "project_id": project_id, "primary_hash": r["primary_hash"],
        "timestamp": _utc(r["timestamp"]), "received": _utc(r["received"]),
        "user_ip_address": r["user_ip"],
        "tags": [{"key": k, "value": v} for k, v in sorted(dict(r["tags"]).items())],
        "contexts": orjson.dumps(contexts if isinstance(contexts, dict) else {},
                                 option=orjson.OPT_SORT_KEYS).decode(),
        "exceptions": [_exception(x) for x in _values(event.get("exception"))],
    }
    row.update({name: str(r[name]) for name in STRING_COLUMNS})
    return row


def _body(text: str) -> dict[str, Any]:
    """The stored (normalized) event; consumers store only JSON objects here."""
    event = orjson.loads(text) if text else {}
    return event if isinstance(event, dict) else {}


def _values(container: object) -> list[dict[str, Any]]:
    values = container.get("values") if isinstance(container, dict) else None
    return [v for v in values if isinstance(v, dict)] if isinstance(values, list) else []


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _exception(x: Mapping[str, Any]) -> dict[str, Any]:
    mechanism = _dict(x.get("mechanism"))
    frames = _dict(x.get("stacktrace")).get("frames")
    frames = frames if isinstance(frames, list) else []
    handled = mechanism.get("handled")
    return {"type": _text(x.get("type")), "value": _text(x.get("value")),
            "module": _text(x.get("module")), "mechanism_type": _text(mechanism.get("type")),
            "handled": handled if isinstance(handled, bool) else None,
            "frames": [_frame(f) for f in frames if isinstance(f, dict)]}


def _frame(f: Mapping[str, Any]) -> dict[str, Any]:
    in_app = f.get("in_app")
    return {"filename": _text(f.get("filename")), "abs_path": _text(f.get("abs_path")),
            "function": _text(f.get("function")), "module": _text(f.get("module")),
            "lineno": _int(f.get("lineno")), "colno": _int(f.get("colno")),
            "in_app": in_app if isinstance(in_app, bool) else None,
            "context_line": _text(f.get("context_line"))}


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# --- the Ray Data job ---------------------------------------------------------------------
@dataclass(frozen=True)
class ExportJob:
    """What one export reads and where it writes."""

    clickhouse_dsn: str
    organization_id: int
    project_id: int
    since: dt.datetime
    until: dt.datetime
    target: Path
    #: Grouping hash → issue id, of the project (PostgreSQL's ``group_hashes``).
    issue_of_hash: Mapping[str, int]
    #: ``--query``: its event part, answered by ClickHouse …
    filters: EventFilters = NO_FILTERS
    #: … and its issue part (``is:``, ``times_seen``, ``age``, …), answered by PostgreSQL
    #: as the issues it matches: only their events are written. None: no issue filter.
    issues: frozenset[int] | None = None


@dataclass(frozen=True)
class ExportLimits:
    concurrency: int
    task_cpus: float
    slice_events: int


@dataclass(frozen=True)
class ExportResult:
    events: int
    files: list[Path]


def check_target(target: Path) -> None:
    """The target must be a new or empty directory: the files of an earlier export in it
    would be read as part of this one."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ExportRefused(f"--to {target}: exists and is not an empty directory; give a"
                            " new directory (an export writes many files into it)")


def export_slice(batch: pa.Table, *, job: ExportJob) -> pa.Table:
    """One Ray Data task: the events of the slices in ``batch`` as ``EXPORT_SCHEMA``."""
    from actors.clickhouse import clickhouse_store

    store = clickhouse_store(job.clickhouse_dsn)
    tables = [export_table(_of_issues(store.stored_events(
        job.organization_id, job.project_id,
        _EPOCH + dt.timedelta(microseconds=start),
        _EPOCH + dt.timedelta(microseconds=end), job.filters), job),
        job.project_id, job.issue_of_hash)
        for start, end in zip(batch.column("start_us").to_pylist(),
                              batch.column("end_us").to_pylist(), strict=True)]
    return pa.concat_tables(tables) if tables else EXPORT_SCHEMA.empty_table()


def _of_issues(rows: list[dict[str, Any]], job: ExportJob) -> list[dict[str, Any]]:
    """The rows whose issue the query's issue part matched (all without one)."""
    if job.issues is None:
        return rows
    return [r for r in rows if job.issue_of_hash.get(r["primary_hash"]) in job.issues]


def run_export(job: ExportJob, limits: ExportLimits) -> ExportResult:
    """Plan the slices, run the job on the connected Ray cluster, count what it wrote."""
    import pyarrow.parquet as pq
    import ray.data

    # Ray Data logs each stage at INFO on the driver; the command prints its own summary.
    logging.getLogger("ray.data").setLevel(logging.WARNING)

    from actors.clickhouse import clickhouse_store

    check_target(job.target)
    hours = clickhouse_store(job.clickhouse_dsn).stored_event_hours(
        job.organization_id, job.project_id, job.since, job.until, job.filters)
    slices = plan_slices(hours, limits.slice_events, job.since, job.until)
    job.target.mkdir(parents=True, exist_ok=True)
    if not slices:
        return ExportResult(0, [])
    context = ray.data.DataContext.get_current()
    context.execution_options.resource_limits = ray.data.ExecutionResources(
        cpu=limits.concurrency * limits.task_cpus)
    items = [{"start_us": _micros(s.start), "end_us": _micros(s.end)} for s in slices]
    # Typed Any: Ray's stubs do not name pyarrow batches among map_batches' functions.
    read_slice: Any = export_slice
    dataset = blocks_of(items).map_batches(
        read_slice, fn_kwargs={"job": job}, batch_size=1, batch_format="pyarrow",
        concurrency=limits.concurrency, num_cpus=limits.task_cpus)
    dataset.write_parquet(str(job.target), concurrency=limits.concurrency,
                          ray_remote_args={"num_cpus": limits.task_cpus})
    files = sorted(job.target.rglob("*.parquet"))
    return ExportResult(sum(pq.ParquetFile(f).metadata.num_rows for f in files), files)


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _micros(when: dt.datetime) -> int:
    return (when - _EPOCH) // dt.timedelta(microseconds=1)
