"""Retention of everything that grows: each store keeps what its horizon covers.

Three mechanisms, one set of horizons (``Horizons``, from ``CRASHRAY_*_RETENTION_*``):

* ClickHouse: table TTLs. Events and envelope items expire by their rows'
  ``retention_days`` (``CRASHRAY_RETENTION_DAYS`` when written: it can vary per project
  later, as Snuba's); outcomes, raw sessions and the hourly issue rollup by a table TTL
  that ``apply_ttls`` sets from the settings at every start, and only when it differs
  (an ``ALTER TABLE … MODIFY TTL`` rewrites the TTL information of every part once).
  ClickHouse removes expired rows in its background merges.
* PostgreSQL: ``PruneRule``s, each a table and a condition on a time column, deleted in
  batches of at most ``batch_rows`` rows per statement (short locks, bounded WAL) by
  ``prune_postgres``, which the metrics sampler runs every
  ``CRASHRAY_RETENTION_SWEEP_INTERVAL_S`` (``RetentionSweeper``).
* Ray's session directories of earlier runs under the data directory (their logs and the
  objects they spilled: Ray spills into the session directory), never the live one.

``due_postgres``/``due_clickhouse``/``expired_ray_sessions`` count what the next sweep (or
merge) removes: ``crashray storage`` prints them (storage/sizes.py).

Errors: psycopg's and clickhouse-connect's own; a sweep that fails is retried by the next.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import psycopg
from clickhouse_connect.driver.client import Client

from storage.alert_rules import COARSE_KEEP_S, COARSE_WIDTH_S, FINE_KEEP_S, FINE_WIDTH_S

if TYPE_CHECKING:
    from cluster.settings import Settings

log = logging.getLogger("crashray.retention")

DAY_S: Final = 86_400.0
#: What ``apply_ttls`` adds to the ALTER of a changed TTL: the parts' TTL information is
#: recomputed, so a shorter horizon removes old rows at the next merges, not only new ones.
MATERIALIZE_SETTINGS: Final = {"materialize_ttl_after_modify": 1, "mutations_sync": 0}
#: Ray names each run's directory ``session_<date>_<pid>`` below its temp dir and points
#: ``session_latest`` at the live one.
RAY_SESSION_PREFIX: Final = "session_"
RAY_LIVE_SESSION_LINK: Final = "session_latest"


@dataclass(frozen=True)
class Horizons:
    """How long each kind of data is kept (days unless named otherwise); 0 for
    ``dead_letter_days`` keeps dead letters until an operator replays or drops them."""

    events_days: int = 90
    outcomes_days: int = 90
    sessions_days: int = 90
    rollup_days: int = 365
    issue_days: float = 90.0
    issue_activity_days: float = 365.0
    anomaly_days: float = 90.0
    reprocess_job_days: float = 90.0
    dead_letter_days: float = 0.0
    notify_days: float = 14.0
    notify_failed_days: float = 30.0
    dedup_window_s: float = DAY_S
    login_window_s: float = 300.0
    ray_session_days: float = 7.0

    @classmethod
    def from_settings(cls, s: Settings) -> Horizons:
        return cls(
            events_days=s.retention_days, outcomes_days=s.outcomes_retention_days,
            sessions_days=s.sessions_retention_days, rollup_days=s.rollup_retention_days,
            issue_days=float(s.issue_retention_days or s.retention_days),
            issue_activity_days=s.issue_activity_retention_days,
            anomaly_days=s.anomaly_retention_days,
            reprocess_job_days=s.reprocess_job_retention_days,
            dead_letter_days=s.dead_letter_retention_days,
            notify_days=s.notify_retention_days,
            notify_failed_days=s.notify_failed_retention_days,
            dedup_window_s=s.dedup_window_s, login_window_s=s.login_window_s,
            ray_session_days=s.ray_session_retention_days)


# --- ClickHouse ---------------------------------------------------------------------------
def clickhouse_ttls(h: Horizons) -> dict[str, str]:
    """Each growing ClickHouse table's TTL expression (a row expires when it is past now)."""
    return {
        "events": "toDateTime(timestamp) + toIntervalDay(retention_days)",
        "envelope_items": "toDateTime(received) + toIntervalDay(retention_days)",
        "outcomes": f"hour + toIntervalDay({int(h.outcomes_days)})",
        "sessions_raw": f"toDateTime(received) + toIntervalDay({int(h.sessions_days)})",
        "issue_counts_hourly": f"hour + toIntervalDay({int(h.rollup_days)})",
    }


def _squeezed(expression: str) -> str:
    return "".join(expression.split()).lower()


def current_ttls(client: Client) -> dict[str, str]:
    """The TTL clause of each table of the current database, as ClickHouse prints it."""
    rows = client.query("SELECT name, engine_full FROM system.tables"
                        " WHERE database = currentDatabase()").result_rows
    found = {}
    for name, engine in rows:
        _, ttl_mark, rest = str(engine).partition(" TTL ")
        if ttl_mark:
            found[str(name)] = rest.split(" SETTINGS ")[0].strip()
    return found


def apply_ttls(client: Client, ttls: Mapping[str, str]) -> list[str]:
    """Set each table's TTL to ``ttls[table]`` where it differs (idempotent: a start with
    unchanged settings alters nothing); returns the tables altered. Tables that do not
    exist (an older schema) are skipped."""
    current = current_ttls(client)
    changed = []
    for table, expression in ttls.items():
        if table not in current or _squeezed(current[table]) == _squeezed(expression):
            continue
        client.command(f"ALTER TABLE {table} MODIFY TTL {expression}",
                       settings=MATERIALIZE_SETTINGS)
        changed.append(table)
    if changed:
        log.warning("retention: TTL of %s set from the settings", ", ".join(changed))
    return changed


class RowQueries(Protocol):
    """What the counts need of an ``EventStore``: a raw read."""

    def query_rows(self, sql: str, parameters: dict[str, Any]) -> list[tuple[Any, ...]]: ...


def due_clickhouse(store: RowQueries, h: Horizons, until: dt.datetime) -> dict[str, int]:
    """Rows per table whose TTL is reached by ``until`` (copies of a re-delivered row count
    each). ClickHouse removes expired rows in a merge soon after (the first TTL merge of a
    part runs at once, later ones every ``merge_with_ttl_timeout``), and never returns them
    to reads meanwhile: ask with a future ``until`` (``crashray storage``: a day ahead)."""
    due = {}
    tables = {str(r[0]) for r in store.query_rows(
        "SELECT name FROM system.tables WHERE database = currentDatabase()", {})}
    for table, expression in clickhouse_ttls(h).items():
        if table not in tables:
            continue
        rows = store.query_rows(f"SELECT count() FROM {table} WHERE {expression}"
                                " <= {until:DateTime('UTC')}",
                                {"until": until.astimezone(dt.UTC).replace(microsecond=0)})
        due[table] = int(rows[0][0]) if rows else 0
    return due


# --- PostgreSQL ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PruneRule:
    """Rows of ``table`` matching ``where`` (with ``params``) are past their horizon;
    ``key`` identifies a row (for the batch's sub-select)."""

    name: str
    table: str
    key: str
    where: str
    params: Mapping[str, Any] = field(default_factory=dict)


def postgres_rules(h: Horizons, now: dt.datetime) -> list[PruneRule]:
    """Every PostgreSQL retention rule at ``now``. Issues are ``IssueRule`` (their deletion
    moves the grouping caches on)."""
    def before(seconds: float) -> dict[str, dt.datetime]:
        return {"cutoff": now - dt.timedelta(seconds=seconds)}

    rules = [
        PruneRule("processed_events", "processed_events", "project_id, event_id",
                  "processed_at < %(cutoff)s", before(h.dedup_window_s)),
        PruneRule("login_failures", "login_failures", "id", "at < %(cutoff)s",
                  before(h.login_window_s)),
        PruneRule("user_sessions", "user_sessions", "session_hash", "expires_at <= %(cutoff)s",
                  before(0)),
        PruneRule("issue_activity", "issue_activity", "id", "date_added < %(cutoff)s",
                  before(h.issue_activity_days * DAY_S)),
        PruneRule("anomalies", "anomalies", "id",
                  "status = 'closed' AND closed_at < %(cutoff)s",
                  before(h.anomaly_days * DAY_S)),
        PruneRule("reprocess_jobs", "reprocess_jobs", "id",
                  "status IN ('finished', 'abandoned') AND updated_at < %(cutoff)s",
                  before(h.reprocess_job_days * DAY_S)),
        PruneRule("notifications_delivered", "notification_deliveries", "id",
                  "status = 'delivered' AND delivered_at < %(cutoff)s",
                  before(h.notify_days * DAY_S)),
        PruneRule("notifications_failed", "notification_deliveries", "id",
                  "status = 'failed' AND created_at < %(cutoff)s",
                  before(h.notify_failed_days * DAY_S)),
    ]
    # The alert-condition buckets no rule window reaches any more (storage/alert_rules.py).
    buckets = {"fine_width": FINE_WIDTH_S, "coarse_width": COARSE_WIDTH_S,
               "fine": now - dt.timedelta(seconds=FINE_KEEP_S),
               "coarse": now - dt.timedelta(seconds=COARSE_KEEP_S)}
    bucket_where = ("(width_s = %(fine_width)s AND bucket < %(fine)s)"
                    " OR (width_s = %(coarse_width)s AND bucket < %(coarse)s)")
    rules.append(PruneRule("alert_issue_counts", "alert_issue_counts",
                           "issue_id, width_s, environment, bucket", bucket_where, buckets))
    rules.append(PruneRule("alert_issue_users", "alert_issue_users",
                           "issue_id, width_s, environment, bucket, user_key", bucket_where,
                           buckets))
    # When a rule last fired for an issue: a row older than the rule's frequency no longer
    # holds anything back (a missing row fires as readily: storage/alert_rules.py), and
    # the rows of deleted issues never would; a day's margin for clocks.
    rules.append(PruneRule(
        "alert_rule_fires", "alert_rule_fires", "rule_id, issue_id",
        "last_fired_at < %(cutoff)s - make_interval(mins => (SELECT r.frequency_minutes"
        " FROM alert_rules r WHERE r.id = rule_id))", before(DAY_S)))
    if h.dead_letter_days > 0:
        rules.append(PruneRule("dead_letters", "ingest_dead_letters", "id",
                               "failed_at < %(cutoff)s", before(h.dead_letter_days * DAY_S)))
    return rules


@dataclass(frozen=True)
class IssueRule:
    """Issues last seen before ``cutoff`` (with the issues merged into them)."""

    cutoff: dt.datetime
    name: str = "issues"


def issue_rule(h: Horizons, now: dt.datetime) -> IssueRule:
    return IssueRule(now - dt.timedelta(days=h.issue_days))


def _count(conn: psycopg.Connection[Any], table: str, where: str,
           params: Mapping[str, Any]) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchone()
    return int(row[0]) if row else 0


def due_postgres(conn: psycopg.Connection[Any], h: Horizons, now: dt.datetime
                 ) -> dict[str, int]:
    """Rows per rule that the next sweep removes (issues: the expired ones, without the
    issues merged into them)."""
    due = {r.name: _count(conn, r.table, r.where, r.params) for r in postgres_rules(h, now)}
    rule = issue_rule(h, now)
    due[rule.name] = _count(conn, "issues", "last_seen < %(cutoff)s AND merged_into IS NULL",
                            {"cutoff": rule.cutoff})
    return due


def delete_batch(conn: psycopg.Connection[Any], rule: PruneRule, batch_rows: int) -> int:
    """Delete at most ``batch_rows`` rows of ``rule`` in one statement; how many went. The
    condition is checked again on each row, so a row changed meanwhile (no longer past its
    horizon) stays."""
    with conn.transaction():
        cur = conn.execute(
            f"DELETE FROM {rule.table} WHERE ({rule.key}) IN (SELECT {rule.key} FROM"
            f" {rule.table} WHERE {rule.where} LIMIT %(batch_rows)s) AND ({rule.where})",
            {**rule.params, "batch_rows": batch_rows})
    return max(cur.rowcount, 0)


def delete_issue_batch(conn: psycopg.Connection[Any], rule: IssueRule, batch_rows: int
                       ) -> int:
    """Delete at most ``batch_rows`` issues last seen before the cutoff, with the issues
    merged into them (their hashes and activity go with them: foreign keys), and move the
    grouping epoch of their projects on in the same transaction, so grouping caches forget
    their hashes (actors/grouping.py): a later event opens a new issue. Issues a consumer
    holds locked are skipped this time. Returns the issues deleted."""
    with conn.transaction():
        doomed = [int(r[0]) for r in conn.execute(
            "SELECT id FROM issues WHERE last_seen < %s AND merged_into IS NULL"
            " LIMIT %s FOR UPDATE SKIP LOCKED", (rule.cutoff, batch_rows)).fetchall()]
        if not doomed:
            return 0
        projects = [int(r[0]) for r in conn.execute(
            "DELETE FROM issues WHERE (id = ANY(%s) OR merged_into = ANY(%s))"
            " RETURNING project_id", (doomed, doomed)).fetchall()]
        conn.execute("UPDATE projects SET grouping_epoch = grouping_epoch + 1"
                     " WHERE id = ANY(%s)", (sorted(set(projects)),))
    return len(projects)


def prune_postgres(conn: psycopg.Connection[Any], h: Horizons, now: dt.datetime,
                   batch_rows: int, max_batches: int) -> dict[str, int]:
    """One sweep: each rule's rows past its horizon at ``now``, ``batch_rows`` per
    statement, at most ``max_batches`` statements per rule (the next sweep continues).
    Returns the rows deleted per rule (rules that deleted nothing included)."""
    deleted: dict[str, int] = {}
    for rule in postgres_rules(h, now):
        deleted[rule.name] = _batches(lambda r=rule: delete_batch(conn, r, batch_rows),
                                      batch_rows, max_batches)
    issues = issue_rule(h, now)
    deleted[issues.name] = _batches(lambda: delete_issue_batch(conn, issues, batch_rows),
                                    batch_rows, max_batches)
    return deleted


def _batches(run: Any, batch_rows: int, max_batches: int) -> int:
    total = 0
    for _ in range(max_batches):
        gone = int(run())
        total += gone
        if gone < batch_rows:
            break
    return total


# --- Ray's session directories -------------------------------------------------------------
@dataclass(frozen=True)
class RaySession:
    path: Path
    live: bool
    last_modified_s: float
    size_bytes: int


def directory_bytes(path: Path) -> int:
    """Bytes of the files below ``path`` (not following links; vanishing files skipped)."""
    total = 0
    for item in path.rglob("*"):
        try:
            if item.is_file() and not item.is_symlink():
                total += item.stat().st_size
        except OSError:
            continue
    return total


def _newest_mtime(path: Path) -> float:
    newest = path.lstat().st_mtime
    for item in path.rglob("*"):
        try:
            newest = max(newest, item.lstat().st_mtime)
        except OSError:
            continue
    return newest


def ray_sessions(ray_temp_dir: Path, with_sizes: bool = False) -> list[RaySession]:
    """Ray's session directories below ``ray_temp_dir``: the live one is what
    ``session_latest`` points at (Ray moves the link at each start)."""
    if not ray_temp_dir.is_dir():
        return []
    link = ray_temp_dir / RAY_LIVE_SESSION_LINK
    live = link.resolve() if link.is_symlink() else None
    found = []
    for entry in sorted(ray_temp_dir.iterdir()):
        if (not entry.name.startswith(RAY_SESSION_PREFIX) or entry.is_symlink()
                or not entry.is_dir()):
            continue
        found.append(RaySession(entry, entry.resolve() == live, _newest_mtime(entry),
                                directory_bytes(entry) if with_sizes else 0))
    return found


def expired_ray_sessions(ray_temp_dir: Path, days: float, now_s: float,
                         with_sizes: bool = False) -> list[RaySession]:
    """Session directories of earlier runs untouched for ``days``; never the live one, and
    none when no live one is known (a run starting right now has no link yet)."""
    sessions = ray_sessions(ray_temp_dir, with_sizes)
    if not any(s.live for s in sessions):
        return []
    cutoff = now_s - days * DAY_S
    return [s for s in sessions if not s.live and s.last_modified_s < cutoff]


def prune_ray_sessions(ray_temp_dir: Path, days: float, now_s: float) -> int:
    """Remove the expired session directories; returns how many went."""
    gone = 0
    for session in expired_ray_sessions(ray_temp_dir, days, now_s):
        shutil.rmtree(session.path, ignore_errors=True)
        gone += not session.path.exists()
    return gone


# --- the periodic sweep ---------------------------------------------------------------------
@dataclass(frozen=True)
class SweepConfig:
    """CRASHRAY_RETENTION_* (cluster/settings.py)."""

    horizons: Horizons
    interval_s: float = 3600.0
    batch_rows: int = 5_000
    max_batches: int = 100
    #: Ray's temp dir of the instance (its session directories); None: not swept.
    ray_temp_dir: str | None = None

    @classmethod
    def from_settings(cls, s: Settings, ray_temp_dir: Path | None) -> SweepConfig:
        return cls(Horizons.from_settings(s), s.retention_sweep_interval_s,
                   s.retention_batch_rows, s.retention_max_batches,
                   str(ray_temp_dir) if ray_temp_dir is not None else None)


@dataclass(frozen=True)
class SweepResult:
    postgres: dict[str, int]
    ray_sessions: int

    @property
    def total(self) -> int:
        return sum(self.postgres.values()) + self.ray_sessions


class RetentionSweeper:
    """Sweeps every ``interval_s`` (``claim_if_due``; the first call is due)."""

    def __init__(self, config: SweepConfig) -> None:
        self.config = config
        self._next_s = 0.0

    def claim_if_due(self, monotonic_s: float | None = None) -> bool:
        """Whether a sweep is due now; if so the next is due ``interval_s`` later."""
        clock = time.monotonic() if monotonic_s is None else monotonic_s
        if clock < self._next_s:
            return False
        self._next_s = clock + self.config.interval_s
        return True

    def sweep(self, conn: psycopg.Connection[Any], now: dt.datetime) -> SweepResult:
        """One sweep at ``now`` over ``conn`` (an autocommit connection: each batch is a
        transaction of its own)."""
        c = self.config
        deleted = prune_postgres(conn, c.horizons, now, c.batch_rows, c.max_batches)
        sessions = 0
        if c.ray_temp_dir is not None:
            sessions = prune_ray_sessions(Path(c.ray_temp_dir), c.horizons.ray_session_days,
                                          now.timestamp())
        result = SweepResult(deleted, sessions)
        if result.total:
            log.info("retention sweep: %s; %d Ray session dir(s)",
                     ", ".join(f"{n} {k}" for k, n in deleted.items() if n), sessions)
        return result


def rules_by_table(rules: Sequence[PruneRule]) -> dict[str, list[str]]:
    """Rule names per table (a table may have several rules)."""
    found: dict[str, list[str]] = {}
    for rule in rules:
        found.setdefault(rule.table, []).append(rule.name)
    return found
