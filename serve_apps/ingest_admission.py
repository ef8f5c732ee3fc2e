"""Admission at the ingest edge, pure: what a request's items cost against the quotas, which
items a rate limit refuses and the 429 that says so, and the outcomes ingest counts for
what it refuses (summed per replica, handed off once a second).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import orjson

from events.errors import (
    CrashrayError,
    RateLimited,
)
from events.quotas import (
    EVENT_CATEGORIES,
    ORG_BACKLOG_REASON,
    OUTCOMES_ITEM_TYPE,
    RateLimit,
    Usage,
    format_rate_limits,
    item_quantities,
    retry_after_s,
)
from events.security import (
    InvalidSecurityReport,
)
from storage.queue import QueuedItem

RATE_LIMITED_DETAIL = ("Sentry dropped data due to a quota or internal rate limit being"
                       " reached. This will not affect your application. See"
                       " https://docs.sentry.io/product/accounts/quotas/ for more information.")


#: Why an organization over its backlog cap is refused, in the 429's ``causes``.
ORG_BACKLOG_CAUSE = ("this organization has more items (or bytes) waiting to be processed than"
                     " CRASHRAY_MAX_QUEUED_ITEMS_PER_ORG (CRASHRAY_MAX_QUEUED_BYTES_PER_ORG)"
                     " allow; send again once they are processed")


def rate_limited(limits: Sequence[RateLimit]) -> RateLimited:
    causes = [ORG_BACKLOG_CAUSE] if any(
        limit.reason_code == ORG_BACKLOG_REASON for limit in limits) else []
    return RateLimited(RATE_LIMITED_DETAIL, retry_after_s(limits), format_rate_limits(limits),
                       causes)




def invalid_outcome(exc: CrashrayError, security: bool) -> tuple[str, str]:
    """(category, reason) of a refused request's ``invalid`` outcome, with Relay's reasons:
    too large, or unreadable (an envelope; a security report: its own reason)."""
    if exc.status == 413:
        return ("security" if security else "error"), "too_large"
    if not security:
        return "error", "invalid_envelope"
    return "security", exc.outcome_reason if isinstance(exc, InvalidSecurityReport) else "payload"


def item_categories(item: QueuedItem) -> frozenset[str]:
    return frozenset(c for c, _ in item_quantities(item.item_type, len(item.payload)))


def usage_of(items: Sequence[QueuedItem]) -> Usage | None:
    """What the items cost, per category; None when there are no items."""
    if not items:
        return None
    quantities: dict[str, int] = {}
    for item in items:
        for category, quantity in item_quantities(item.item_type, len(item.payload)):
            quantities[category] = quantities.get(category, 0) + quantity
    first = items[0]
    return Usage(first.organization_id, first.project_id, first.key_id, quantities)


def without_refused(items: Sequence[QueuedItem], limits: Sequence[RateLimit]
                    ) -> tuple[list[QueuedItem], list[QueuedItem]]:
    """(kept, refused): an item goes when any of its categories is limited, and an event's
    attachments go with a refused event (as Relay drops them: they would belong to
    nothing)."""
    refused_categories = {c for limit in limits for c in limit.categories}
    if refused_categories & EVENT_CATEGORIES and any(i.item_type == "event" for i in items):
        refused_categories |= {"attachment", "attachment_item"}
    kept: list[QueuedItem] = []
    refused: list[QueuedItem] = []
    for item in items:
        (refused if item_categories(item) & refused_categories else kept).append(item)
    return kept, refused


class OutcomeTally:
    """Refused items per (organization, project, key, hour, outcome, category, reason):
    ``rate_limited`` items, and ``invalid`` requests (unreadable or too large) whose key was
    known. Summed in memory and handed off as one ``outcomes`` queue item per project and
    flush (not one per request, so that a flood of refusals costs little). Lost if the
    replica dies before a flush: at most ``OUTCOME_FLUSH_INTERVAL_S`` of refusal counts,
    never an accepted event."""

    def __init__(self) -> None:
        self.counts: dict[tuple[int, int, int, str, str, str, str], int] = {}

    def add(self, items: Sequence[QueuedItem], limits: Sequence[RateLimit]) -> None:
        for item in items:
            quantities = item_quantities(item.item_type, len(item.payload))
            categories = {c for c, _ in quantities}
            reason = next((limit.reason_code for limit in limits
                           if limit.categories & categories), "")
            for category, quantity in quantities:
                self.count((item.organization_id, item.project_id, item.key_id or 0),
                           item.received_at, "rate_limited", category, reason, quantity)

    def count(self, sender: tuple[int, int, int], at: dt.datetime, outcome: str,
              category: str, reason: str, quantity: int = 1) -> None:
        hour = at.replace(minute=0, second=0, microsecond=0).isoformat()
        key = (*sender, hour, outcome, category, reason)
        self.counts[key] = self.counts.get(key, 0) + quantity

    def take(self) -> list[QueuedItem]:
        """The tally as queue items (one per project), emptied."""
        counts, self.counts = self.counts, {}
        by_project: dict[tuple[int, int], list[dict[str, Any]]] = {}
        for (org, project, key, hour, outcome, category, reason), quantity in counts.items():
            by_project.setdefault((org, project), []).append(
                {"key_id": key, "hour": hour, "category": category, "reason": reason,
                 "outcome": outcome, "quantity": quantity})
        now = dt.datetime.now(dt.UTC)
        return [QueuedItem(project_id=project, organization_id=org, key_id=None,
                           item_type=OUTCOMES_ITEM_TYPE, event_id=None, received_at=now,
                           payload=orjson.dumps(rows), meta={})
                for (org, project), rows in by_project.items()]
