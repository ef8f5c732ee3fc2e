"""Turning a claimed batch of queue items into rows and counts — pure decisions.

The consumer actor (actors/consumer) claims items and does the I/O; this module decides,
for every item, what it becomes: an event to store, session rows, outcomes, or a
rejection. Nothing here touches a database.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence, Set
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import orjson

from events.items import client_report_outcomes, session_rows
from events.process import EventProcessor, InvalidEvent, ItemContext, ProcessedEvent
from events.quotas import OUTCOMES_ITEM_TYPE
from events.rows import Outcome

#: Items that are processed into stored events; ``security`` is a converted browser security
#: report (events/security.py), an event counted in the ``security`` category.
EVENT_ITEM_TYPES = frozenset({"event", "security"})
#: Items accepted and counted as outcomes but not stored by this version.
COUNTED_ONLY = {"transaction": "transaction"}
#: Items kept as sent (ClickHouse ``envelope_items``) and counted, not yet interpreted.
STORED_RAW = {"attachment": "attachment", "user_report": "feedback", "feedback": "feedback",
              "check_in": "monitor"}
#: The outcome reason of an event whose id the project has stored before (it is dropped,
#: outcome ``invalid``). Sentry's ingest consumer drops such an event without an outcome
#: (sentry/ingest/consumer/processors.py); Relay's reason for an item that must be unique
#: and came twice is ``duplicate_item`` (relay-server/src/services/outcome.rs,
#: DiscardReason::DuplicateItem), which Sentry's stats already know.
DUPLICATE_REASON = "duplicate_item"


@dataclass(frozen=True)
class WorkItem:
    """One claimed queue item, as the pure code needs it."""

    queue_id: int
    attempts: int
    organization_id: int
    project_id: int
    key_id: int | None
    item_type: str
    event_id: str | None
    received_at: dt.datetime
    payload: bytes
    meta: Mapping[str, Any]


@dataclass
class BatchPlan:
    """What a batch turns into; filled by ``plan_batch``. Every row and outcome is kept
    with its queue item, so that a consumer stores and counts exactly the items its
    commit finishes (another consumer may have finished some of them meanwhile)."""

    events: list[tuple[WorkItem, ProcessedEvent]] = field(default_factory=list)
    #: Session rows, each with the ``queue_id`` of its item.
    sessions: list[dict[str, Any]] = field(default_factory=list)
    raw_items: list[WorkItem] = field(default_factory=list)
    #: Outcomes of the items that are not events, by queue item (an event's outcome
    #: depends on its issue and on whether its id was seen before: see ``event_outcome``).
    outcomes_of: dict[int, list[Outcome]] = field(default_factory=dict)
    #: Items finished without a stored event (sessions, reports).
    done_ids: list[int] = field(default_factory=list)
    #: Items that can never become an event: (item, why); kept as dead letters.
    invalid: list[tuple[WorkItem, str]] = field(default_factory=list)
    #: Items whose processing raised unexpectedly: (item, error text); retried later.
    failed: list[tuple[WorkItem, str]] = field(default_factory=list)

    @property
    def outcomes(self) -> list[Outcome]:
        return [o for outcomes in self.outcomes_of.values() for o in outcomes]

    def add_outcomes(self, item: WorkItem, outcomes: Sequence[Outcome]) -> None:
        self.outcomes_of.setdefault(item.queue_id, []).extend(outcomes)


def _outcome(item: WorkItem, outcome: str, reason: str, category: str, quantity: int = 1
             ) -> Outcome:
    return Outcome(item.organization_id, item.project_id, item.key_id or 0, item.received_at,
                   outcome, reason, category, quantity)


def event_outcome(item: WorkItem, processed: ProcessedEvent, discarded: bool,
                  duplicate: bool = False) -> Outcome:
    """Accepted; filtered when its hash belongs to a deleted issue (Sentry's
    ``discarded_hash``); invalid when its event id was stored before (``DUPLICATE_REASON``)."""
    category = "error" if processed.event.get("type") == "error" else "default"
    if item.item_type == "security":
        category = "security"  # Relay: DataCategory::Security for every security event type
    if duplicate:
        return _outcome(item, "invalid", DUPLICATE_REASON, category)
    if discarded:
        return _outcome(item, "filtered", "discarded_hash", category)
    return _outcome(item, "accepted", "", category)


def first_of_each_event_id(events: Sequence[tuple[WorkItem, ProcessedEvent]],
                           stored_before: Set[tuple[int, str]]
                           ) -> tuple[list[tuple[WorkItem, ProcessedEvent]],
                                      list[tuple[WorkItem, ProcessedEvent]]]:
    """(events to store, duplicates): an event whose (project, event id) was stored before,
    or that comes after another with the same id in this batch (oldest queue item first),
    is a duplicate; the first one stays, as Sentry keeps the first (Snuba's
    ReplacingMergeTree and the ingest consumer's ``ev:{project}:{event_id}`` check)."""
    seen = set(stored_before)
    firsts: list[tuple[WorkItem, ProcessedEvent]] = []
    duplicates: list[tuple[WorkItem, ProcessedEvent]] = []
    for item, processed in sorted(events, key=lambda e: e[0].queue_id):
        key = (item.project_id, processed.event_id)
        (duplicates if key in seen else firsts).append((item, processed))
        seen.add(key)
    return firsts, duplicates


def _context(item: WorkItem) -> ItemContext:
    meta = item.meta
    return ItemContext(project_id=item.project_id, key_id=item.key_id,
                       received_at=item.received_at, envelope_event_id=item.event_id,
                       client_ip=meta.get("client_ip"), sent_at=meta.get("sent_at"),
                       client=meta.get("client"), organization_id=item.organization_id)


def _processed_in(pool: Executor, items: Sequence[WorkItem], processor: EventProcessor
                  ) -> dict[int, ProcessedEvent | Exception]:
    """The batch's events processed on ``pool``'s threads: queue id → the processed event,
    or what processing raised (raised again, in order, by ``plan_batch``). sentry-relay's
    calls (most of an event's cost) release the GIL, so two threads use two cores."""
    def one(item: WorkItem) -> ProcessedEvent | Exception:
        try:
            return processor.process(item.payload, _context(item))
        except Exception as exc:  # planned below as the sequential path plans it
            return exc
    events = [i for i in items if i.item_type in EVENT_ITEM_TYPES]
    return dict(zip([i.queue_id for i in events], pool.map(one, events), strict=True))


def plan_batch(items: Sequence[WorkItem], processor: EventProcessor,
               pool: Executor | None = None) -> BatchPlan:
    """What to do with each item of a batch, in the batch's order. With ``pool`` the
    events are processed on its threads first (``CRASHRAY_CONSUMER_THREADS``); the plan is
    the same either way."""
    plan = BatchPlan()
    done = _processed_in(pool, items, processor) if pool is not None and len(items) > 1 else {}
    for item in items:
        try:
            _plan_item(item, processor, plan, done.get(item.queue_id))
        except InvalidEvent as exc:
            plan.add_outcomes(item, [_outcome(item, "invalid", exc.reason, _category(item))])
            plan.invalid.append((item, str(exc)))
        except Exception as exc:
            # it is retried and dead-lettered after consumer_max_attempts, never dropped.
            plan.failed.append((item, f"{type(exc).__name__}: {exc}"))
    return plan


def _category(item: WorkItem) -> str:
    if item.item_type == "event":
        return "error"
    if item.item_type == "security":
        return "security"
    known = COUNTED_ONLY.get(item.item_type) or STORED_RAW.get(item.item_type)
    return known or ("session" if "session" in item.item_type else "default")


def _counted_outcomes(item: WorkItem) -> list[Outcome]:
    rows = orjson.loads(item.payload)
    if not isinstance(rows, list):
        raise InvalidEvent("invalid_outcomes", "an outcomes item must hold a JSON list")
    return [Outcome(item.organization_id, item.project_id, int(r["key_id"]),
                    dt.datetime.fromisoformat(r["hour"]), str(r["outcome"]), str(r["reason"]),
                    str(r["category"]), int(r["quantity"])) for r in rows]


def _plan_item(item: WorkItem, processor: EventProcessor, plan: BatchPlan,
               done: ProcessedEvent | Exception | None = None) -> None:
    if item.item_type in EVENT_ITEM_TYPES:
        if isinstance(done, Exception):
            raise done
        processed = done or processor.process(item.payload, _context(item))
        plan.events.append((item, processed))
        return  # its outcome depends on its issue: see event_outcome
    if item.item_type in ("session", "sessions"):
        rows = session_rows(item.item_type, item.payload, item.organization_id,
                            item.project_id, item.received_at)
        # (queue_id, row) identify each row across re-deliveries (ReplacingMergeTree).
        plan.sessions.extend({**r, "queue_id": item.queue_id, "row": n}
                             for n, r in enumerate(rows))
        plan.add_outcomes(item, [_outcome(item, "accepted", "", "session",
                                          sum(r["quantity"] for r in rows))])
    elif item.item_type == OUTCOMES_ITEM_TYPE:
        plan.add_outcomes(item, _counted_outcomes(item))
    elif item.item_type == "client_report":
        plan.add_outcomes(item, client_report_outcomes(
            item.payload, item.organization_id, item.project_id, item.key_id or 0,
            item.received_at))
    elif item.item_type in STORED_RAW:
        category = STORED_RAW[item.item_type]
        # Attachments count in bytes (at least 1), as Relay's attachment category does.
        quantity = max(len(item.payload), 1) if category == "attachment" else 1
        plan.raw_items.append(item)
        plan.add_outcomes(item, [_outcome(item, "accepted", "", category, quantity)])
    elif item.item_type in COUNTED_ONLY:
        plan.add_outcomes(item, [_outcome(item, "accepted", "", COUNTED_ONLY[item.item_type])])
    plan.done_ids.append(item.queue_id)
