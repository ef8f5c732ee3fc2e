"""Storing processed events: the part live ingest (actors/consumer.py) and ``crashray
import`` (pipelines/import_events.py) share.

    candidates → issues (``resolve_issues``, before the transaction: the resolver commits
    issues and hashes on its own) → inside the caller's PostgreSQL transaction
    (``EventStorage.store``): count the new events into their issues
    (storage/issues.record_events, which skips event ids the project counted before),
    insert the new events' rows (and the caller's extra tables) into ClickHouse, apply the
    issue lifecycle (regressions, un-ignores) → ``queue_counts``: the hourly issue counts
    and outcomes into ``clickhouse_outbox`` (same transaction) → the caller commits →
    ``ship``: the counts to ClickHouse under the outbox row's token.

The caller owns the transaction and what surrounds it (the consumer deletes its queue
items and applies alert rules in it; the import does neither): this module decides
nothing about where the events came from. Its guarantees are the consumer's (its module
docstring): an event's row reaches ClickHouse only when its id was new in
``processed_events`` in this transaction, so a batch re-run after a crash before the
commit inserts rows that collapse with the first copies (ReplacingMergeTree, readers count
distinct ids) and counts nothing twice; the summed counts exist only once committed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pyarrow as pa

from events.grouping import DEFAULT_GROUPING_CONFIG, GROUPING_CONFIGS
from events.grouping.fingerprint_rules import RuleSyntaxError
from events.grouping.rules import GroupingRules, grouping_rules_from_text
from events.lifecycle import (
    IssueState,
    NewEvent,
    counting_windows,
    needs_user_count,
    transition_after_events,
)
from events.ownership import OwnershipRules, OwnershipSyntaxError, parse_ownership
from events.process import EventProcessor, ProcessedEvent, ProjectGrouping
from events.rows import (
    Counts,
    EventRow,
    Outcome,
    decode_counts,
    encode_counts,
    events_table,
    hourly_issue_counts,
    summed_outcomes,
)
from storage import delivery
from storage import issues as issue_store
from storage.clickhouse import EventStore
from storage.ownership import auto_assigned_rules
from storage.projects import ProjectGroupingSettings, grouping_settings, scrubbing_configs
from storage.scope import ProjectScope

log = logging.getLogger("crashray.store_events")


@dataclass(frozen=True)
class EventToStore:
    """A processed event, the tenant it belongs to and its issue (None: its hash belongs
    to a deleted issue, Sentry's ``discarded_hash``: counted, never stored)."""

    organization_id: int
    project_id: int
    processed: ProcessedEvent
    issue_id: int | None

    @property
    def key(self) -> tuple[int, str]:
        return (self.project_id, self.processed.event_id)


@dataclass(frozen=True)
class StoredBatch:
    """What ``EventStorage.store`` did: the rows inserted (new events only), their keys
    (project id, event id), their events per issue and the lifecycle transitions
    (``regression``/``reappeared`` by issue id, as alert rules name them)."""

    rows: list[EventRow]
    new: set[tuple[int, str]]
    new_by_issue: dict[int, list[issue_store.CountedEvent]]
    transitions: dict[int, str] = field(default_factory=dict)


def release_of(p: ProcessedEvent) -> str | None:
    release = p.event.get("release")
    return release if isinstance(release, str) and release else None


def pg_text(value: str) -> str:
    """PostgreSQL text cannot hold NUL; SDKs can send it inside exception messages."""
    return value.replace("\x00", "\ufffd")


def issue_candidate(project_id: int, p: ProcessedEvent) -> issue_store.IssueCandidate:
    """What the resolver needs to find or create the issue of ``p``."""
    e = p.event
    release = release_of(p)
    return issue_store.IssueCandidate(
        project_id=project_id, hashes=p.grouping.hashes,
        grouping_config=p.grouping.config, title=pg_text(p.issue.title),
        culprit=pg_text(p.issue.culprit), type=p.issue.type,
        level=str(e.get("level") or "error"), platform=str(e.get("platform") or "other"),
        timestamp=p.timestamp, release=None if release is None else pg_text(release),
        metadata={k: pg_text(v) if isinstance(v, str) else v
                  for k, v in p.issue.metadata.items()},
        secondary_hashes=() if p.secondary_grouping is None else tuple(
            h for h in p.secondary_grouping.hashes if h not in p.grouping.hashes),
        owner=p.owner)


def resolve_issues(resolver: Any, events: Sequence[tuple[int, int, ProcessedEvent]]
                   ) -> list[EventToStore]:
    """(organization id, project id, event) → the events with their issues, through
    ``resolver`` (actors/grouping.py: ``IssueResolver`` or ``ShardedResolver``)."""
    issue_ids = resolver.issue_ids_for([issue_candidate(p, e) for _, p, e in events])
    return [EventToStore(org, project, e, issue_id)
            for (org, project, e), issue_id in zip(events, issue_ids, strict=True)]


# --- project settings, as processing needs them ---------------------------------------------
def load_project_settings(conn: psycopg.Connection[Any], processor: EventProcessor,
                          project_ids: list[int]) -> None:
    """Install the scrubbing, grouping and ownership settings of ``project_ids`` in
    ``processor`` (ownership rules are parsed here, once per load)."""
    with conn.transaction():
        configs = scrubbing_configs(conn, project_ids)
        groupings = grouping_settings(conn, project_ids)
        owned = auto_assigned_rules(conn, project_ids)
    for project_id in project_ids:
        processor.set_ownership(project_id, _ownership_rules(project_id, owned.get(project_id)))
    for project_id, config in configs.items():
        processor.set_scrubbing(project_id, config)
    for project_id, g in groupings.items():
        processor.set_grouping(project_id, project_grouping(g))


def _ownership_rules(project_id: int, raw: str | None) -> OwnershipRules:
    try:
        return parse_ownership(raw) if raw else OwnershipRules()
    except OwnershipSyntaxError as exc:
        # The API validates rules before storing them (as for grouping rules below).
        log.error("project %s: ownership rules ignored: %s", project_id, exc)
        return OwnershipRules()


def project_grouping(g: ProjectGroupingSettings) -> ProjectGrouping:
    rules = _grouping_rules(g.project_id, g.fingerprinting_rules, g.grouping_enhancements)
    config = g.config
    if config not in GROUPING_CONFIGS:
        log.error("project %s: unknown grouping config %r, grouping with %r", g.project_id,
                  config, DEFAULT_GROUPING_CONFIG)
        config = DEFAULT_GROUPING_CONFIG
    secondary = g.secondary_config if g.secondary_config in GROUPING_CONFIGS else None
    return ProjectGrouping(config, rules, secondary, g.secondary_expiry)


def _grouping_rules(project_id: int, fingerprint_text: str, stacktrace_text: str
                    ) -> GroupingRules | None:
    try:
        return grouping_rules_from_text(fingerprint_text, stacktrace_text)
    except RuleSyntaxError as exc:
        # The API validates rules before storing them; rules edited in the database by hand
        # that no longer parse are skipped (logged) rather than stopping the project's events.
        log.error("project %s: grouping rules ignored: %s", project_id, exc)
        return None


class EventStorage:
    """Counts, inserts and ships processed events for one ClickHouse store."""

    def __init__(self, store: EventStore, retention_days: int, lease_s: float) -> None:
        self.store = store
        self.retention_days = retention_days
        #: How long the outbox row of a batch stays claimed by its caller (a caller that
        #: dies leaves it to the consumers' outbox sweep after this).
        self.lease_s = lease_s
        self.ship_failures = 0

    def store_events(self, conn: psycopg.Connection[Any], events: Sequence[EventToStore],
                     extra_tables: Mapping[str, pa.Table] | None = None,
                     lifecycle: bool = True) -> StoredBatch:
        """Inside the caller's transaction: count the events new to their projects into
        their issues, insert their rows (and ``extra_tables``) into ClickHouse in one
        call, and, with ``lifecycle``, reopen the resolved or ignored issues they concern.
        Events of a discarded hash (no issue) are neither counted nor stored."""
        counted = sorted(  # one lock order for processed_events across writers
            (issue_store.CountedEvent(
                e.project_id, e.processed.event_id, e.issue_id, e.processed.timestamp,
                str(e.processed.event.get("level") or "error"), release_of(e.processed))
             for e in events if e.issue_id is not None),
            key=lambda c: (c.project_id, c.event_id))
        new_by_issue = issue_store.record_events(conn, counted)
        new = {(c.project_id, c.event_id) for cs in new_by_issue.values() for c in cs}
        rows = [EventRow(e.organization_id, e.project_id, e.issue_id, self.retention_days,
                         e.processed) for e in events
                if e.issue_id is not None and e.key in new]
        self.store.insert_batch({  # one call: the owner actor is asked once per batch
            "events": events_table(rows), **(extra_tables or {})})
        transitions = self._apply_lifecycle(conn, new_by_issue, {
            e.project_id: e.organization_id for e in events}) if lifecycle else {}
        return StoredBatch(rows, new, new_by_issue, transitions)

    def queue_counts(self, conn: psycopg.Connection[Any], rows: Sequence[EventRow],
                     outcomes: Sequence[Outcome]) -> delivery.OutboxRow | None:
        """The batch's summed counts into the outbox (inside the batch's transaction)."""
        counts = Counts(tuple(hourly_issue_counts(rows)), tuple(summed_outcomes(outcomes)))
        if not counts.issue_counts and not counts.outcomes:
            return None
        return delivery.add_to_outbox(conn, encode_counts(counts), self.lease_s)

    def ship(self, conn: psycopg.Connection[Any], rows: Sequence[delivery.OutboxRow]) -> int:
        """Insert outbox rows into ClickHouse, each under its token, and forget those
        shipped; returns how many. A row that fails stays for a later sweep."""
        shipped = []
        for row in rows:
            try:
                self.store.insert_counts(row.token, decode_counts(row.rows).tables())
            except Exception:
                # The row is committed in PostgreSQL and stays there: a later sweep (the
                # consumers') ships it again under the same token. Logged and counted.
                self.ship_failures += 1
                log.warning("outbox row %s not shipped to ClickHouse; a later sweep retries",
                            row.id, exc_info=True)
                continue
            shipped.append(row.id)
        delivery.delete_from_outbox(conn, shipped)
        return len(shipped)

    def _apply_lifecycle(self, conn: psycopg.Connection[Any],
                         new_by_issue: dict[int, list[issue_store.CountedEvent]],
                         org_of_project: dict[int, int]) -> dict[int, str]:
        """Reopen resolved or ignored issues that new events concern (inside the batch's
        transaction, so the counts and the state change commit together); returns the
        transitions as alert rules name them (``regression``, ``reappeared``) by issue."""
        transitions: dict[int, str] = {}
        for issue in issue_store.settled_issues(conn, list(new_by_issue)):
            state = self._issue_state(conn, issue, org_of_project[issue.project_id])
            transition = transition_after_events(
                state, [NewEvent(e.release, e.timestamp) for e in new_by_issue[issue.id]])
            if transition is not None:
                scope = ProjectScope(org_of_project[issue.project_id], issue.project_id)
                issue_store.set_status(conn, scope, issue.id,
                                       transition.status, transition.substatus, {},
                                       transition.activity, transition.data, "crashray")
                kind = "regression" if issue.status == "resolved" else "reappeared"
                transitions[issue.id] = kind
        return transitions

    def _issue_state(self, conn: psycopg.Connection[Any], issue: issue_store.IssueStatus,
                     organization_id: int) -> IssueState:
        """What deciding on ``issue`` needs, counted in ClickHouse where its state asks for
        users or windowed counts (this batch's events are already there)."""
        windows = counting_windows(issue.status_details)
        wants_users = needs_user_count(issue.status_details)
        if not (wants_users or windows.events_minutes or windows.users_minutes):
            return IssueState(issue.status, issue.status_details, issue.times_seen)
        hashes = issue_store.hashes_of_issues(
            conn, ProjectScope(organization_id, issue.project_id), [issue.id])
        now = dt.datetime.now(dt.UTC)

        def users(since: dt.datetime | None) -> int:
            counts: dict[int, int] = self.store.user_counts(
                organization_id, issue.project_id, hashes, since)
            return counts.get(issue.id, 0)

        window_events = None
        if windows.events_minutes:
            counts: dict[int, int] = self.store.event_counts(
                organization_id, issue.project_id, hashes,
                now - dt.timedelta(minutes=windows.events_minutes))
            window_events = counts.get(issue.id, 0)
        return IssueState(
            issue.status, issue.status_details, issue.times_seen,
            users=users(None) if wants_users else None, window_events=window_events,
            window_users=users(now - dt.timedelta(minutes=windows.users_minutes))
            if windows.users_minutes else None)
