"""What Crashray stores and what retention removes next: ``storage_report``.

Sizes per table of PostgreSQL (``pg_total_relation_size``: heap, indexes, TOAST) and of
ClickHouse (``system.parts``, active parts: bytes on disk, compressed), the data
directory's disk use per top-level folder, and, per retention rule (storage/retention.py),
how many rows are past their horizon now. ``crashray storage`` prints it
(cluster/storage_cli.py); the operator page shows the same report.

Row counts: exact (``count(*)``) for PostgreSQL tables PostgreSQL estimates below
``EXACT_COUNT_BELOW_ROWS``, the planner's estimate above (a count would scan the table);
ClickHouse's are the active parts' rows (copies of a re-delivered row not yet merged count
each).
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psycopg

from storage.retention import (
    Horizons,
    RowQueries,
    clickhouse_ttls,
    directory_bytes,
    due_clickhouse,
    due_postgres,
    expired_ray_sessions,
    postgres_rules,
)

#: ClickHouse hides and soon merges away rows past their TTL, so its "next" is the rows
#: whose TTL is reached within this many seconds.
CLICKHOUSE_LOOKAHEAD_S: Final = 86_400
#: Tables estimated below this many rows are counted exactly.
EXACT_COUNT_BELOW_ROWS: Final = 1_000_000


@dataclass(frozen=True)
class TableSize:
    store: str  # "postgres" or "clickhouse"
    table: str
    rows: int
    bytes: int
    #: Whether ``rows`` is an estimate (PostgreSQL's planner, for large tables).
    estimated: bool = False


@dataclass(frozen=True)
class RetentionDue:
    """Rows of ``table`` past the horizon ``rule`` (``horizon``, as words) at ``now``."""

    store: str
    rule: str
    table: str
    horizon: str
    rows: int


@dataclass(frozen=True)
class StorageReport:
    at: dt.datetime
    tables: list[TableSize]
    due: list[RetentionDue]
    data_dir: str | None = None
    #: Bytes below each top-level folder of the data directory.
    data_dir_bytes: dict[str, int] = field(default_factory=dict)
    disk_free_bytes: int | None = None
    disk_size_bytes: int | None = None
    ray_sessions_expired: int = 0
    ray_sessions_expired_bytes: int = 0

    def total_bytes(self, store: str) -> int:
        return sum(t.bytes for t in self.tables if t.store == store)


def postgres_sizes(conn: psycopg.Connection[Any]) -> list[TableSize]:
    """Every table of the current schema, largest first."""
    rows = conn.execute(
        "SELECT c.relname, greatest(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()").fetchall()
    sizes = []
    for name, estimate, size in rows:
        exact = int(estimate) < EXACT_COUNT_BELOW_ROWS
        if exact:
            counted = conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()
            count = int(counted[0]) if counted else 0
        else:
            count = int(estimate)
        sizes.append(TableSize("postgres", str(name), count, int(size), not exact))
    return sorted(sizes, key=lambda t: (-t.bytes, t.table))


def clickhouse_sizes(store: RowQueries) -> list[TableSize]:
    """Every table of the current ClickHouse database with data, largest first."""
    rows = store.query_rows(
        "SELECT table, sum(rows), sum(bytes_on_disk) FROM system.parts"
        " WHERE active AND database = currentDatabase() GROUP BY table", {})
    return sorted((TableSize("clickhouse", str(r[0]), int(r[1]), int(r[2])) for r in rows),
                  key=lambda t: (-t.bytes, t.table))


def data_dir_usage(data_dir: Path) -> dict[str, int]:
    """Bytes below each top-level entry of ``data_dir``."""
    if not data_dir.is_dir():
        return {}
    usage = {}
    for entry in sorted(data_dir.iterdir()):
        if entry.is_symlink():
            continue
        usage[entry.name] = directory_bytes(entry) if entry.is_dir() else entry.stat().st_size
    return usage


def _days(days: float) -> str:
    return f"older than {days:g} day{'s' if days != 1 else ''}"


def _seconds(seconds: float) -> str:
    return _days(seconds / 86_400) if seconds >= 86_400 else f"older than {seconds:g} s"


def postgres_horizons(h: Horizons) -> dict[str, str]:
    """Each PostgreSQL rule's horizon, as words."""
    return {
        "processed_events": _seconds(h.dedup_window_s),
        "login_failures": _seconds(h.login_window_s), "user_sessions": "expired logins",
        "issue_activity": _days(h.issue_activity_days), "anomalies": _days(h.anomaly_days),
        "reprocess_jobs": _days(h.reprocess_job_days),
        "notifications_delivered": _days(h.notify_days),
        "notifications_failed": _days(h.notify_failed_days),
        "alert_issue_counts": "beyond every alert rule's window",
        "alert_issue_users": "beyond every alert rule's window",
        "alert_rule_fires": "a day past their rule's frequency",
        "dead_letters": _days(h.dead_letter_days),
        "issues": f"not seen for {h.issue_days:g} days"}


def clickhouse_horizons(h: Horizons) -> dict[str, str]:
    per_row = f"older than their rows' retention_days ({h.events_days} when written now)"
    return {"events": per_row, "envelope_items": per_row,
            "outcomes": _days(h.outcomes_days), "sessions_raw": _days(h.sessions_days),
            "issue_counts_hourly": _days(h.rollup_days)}


def retention_due(conn: psycopg.Connection[Any], store: RowQueries | None, h: Horizons,
                  now: dt.datetime) -> list[RetentionDue]:
    """Per rule, the rows past its horizon at ``now``; ClickHouse's (only with ``store``)
    those past it within ``CLICKHOUSE_LOOKAHEAD_S``."""
    tables = {r.name: r.table for r in postgres_rules(h, now)} | {"issues": "issues"}
    words = postgres_horizons(h)
    due = [RetentionDue("postgres", name, tables[name], words[name], rows)
           for name, rows in due_postgres(conn, h, now).items()]
    if store is not None:
        ch_words = clickhouse_horizons(h)
        ahead = now + dt.timedelta(seconds=CLICKHOUSE_LOOKAHEAD_S)
        due += [RetentionDue("clickhouse", table, table, ch_words[table], rows)
                for table, rows in due_clickhouse(store, h, ahead).items()]
    return due


def storage_report(conn: psycopg.Connection[Any], store: RowQueries | None, h: Horizons,
                   now: dt.datetime, data_dir: Path | None = None,
                   ray_temp_dir: Path | None = None) -> StorageReport:
    """Sizes and what retention removes next. ``store``: the instance's ClickHouse (None:
    PostgreSQL only); ``data_dir``: measured when given (on its node); ``ray_temp_dir``:
    its Ray session directories past ``h.ray_session_days`` are counted."""
    tables = postgres_sizes(conn)
    if store is not None:
        tables += clickhouse_sizes(store)
    usage: dict[str, int] = {}
    free = size = None
    if data_dir is not None and data_dir.is_dir():
        usage = data_dir_usage(data_dir)
        disk = shutil.disk_usage(data_dir)
        free, size = disk.free, disk.total
    expired = [] if ray_temp_dir is None else expired_ray_sessions(
        ray_temp_dir, h.ray_session_days, now.timestamp(), with_sizes=True)
    return StorageReport(now, tables, retention_due(conn, store, h, now),
                         None if data_dir is None else str(data_dir), usage, free, size,
                         len(expired), sum(s.size_bytes for s in expired))


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def format_report(report: StorageReport) -> str:
    """The report as ``crashray storage`` prints it."""
    lines = []
    for store in ("postgres", "clickhouse"):
        tables = [t for t in report.tables if t.store == store]
        if not tables:
            continue
        title = "PostgreSQL" if store == "postgres" else "ClickHouse"
        lines.append(f"{title} ({human_bytes(report.total_bytes(store))}):")
        lines.append(f"  {'table':<34} {'rows':>14} {'bytes':>12}")
        for t in tables:
            rows = f"~{t.rows:,}" if t.estimated else f"{t.rows:,}"
            lines.append(f"  {t.table:<34} {rows:>14} {human_bytes(t.bytes):>12}")
    if report.data_dir is not None:
        lines.append(f"Data dir {report.data_dir}"
                     f" ({human_bytes(sum(report.data_dir_bytes.values()))}):")
        for name, n in report.data_dir_bytes.items():
            lines.append(f"  {name:<34} {human_bytes(n):>27}")
        if report.disk_free_bytes is not None and report.disk_size_bytes is not None:
            lines.append(f"  disk: {human_bytes(report.disk_free_bytes)} free of"
                         f" {human_bytes(report.disk_size_bytes)}")
    lines.append("Retention will remove next (PostgreSQL: rows past their horizon now, at"
                 " the next sweep; ClickHouse: rows reaching their TTL within a day):")
    for d in report.due:
        lines.append(f"  {d.store:<10} {d.rule:<26} {d.rows:>12,}  {d.horizon}")
    if report.data_dir is not None:
        lines.append(f"  {'ray':<10} {'session_dirs':<26} {report.ray_sessions_expired:>12,}"
                     f"  earlier runs' logs and spilled objects"
                     f" ({human_bytes(report.ray_sessions_expired_bytes)})")
    return "\n".join(lines)


#: The ClickHouse tables retention covers (for callers listing horizons).
CLICKHOUSE_RETAINED: Final = tuple(clickhouse_ttls(Horizons()))
