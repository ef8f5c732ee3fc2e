"""Per-organization backlog caps: when an organization's queued items or bytes refuse its
requests, what SDKs are told, and how the refusal is counted (pure; no Ray, no database)."""

from __future__ import annotations

import datetime as dt

import orjson

from events.quotas import (
    ORG_BACKLOG_RETRY_AFTER_S,
    BacklogCaps,
    RateLimit,
    Usage,
    org_backlog_limit,
)
from serve_apps.ingest_admission import (
    OutcomeTally,
    rate_limited,
    usage_of,
    without_refused,
)
from storage.queue import QueuedItem

CAPS = BacklogCaps(max_items=1000, max_bytes=10_000_000)
AT = dt.datetime(2026, 12, 3, 10, 15, tzinfo=dt.UTC)


def item(item_type: str, payload: bytes = b"{}", org: int = 5) -> QueuedItem:
    return QueuedItem(project_id=50, organization_id=org, key_id=500, item_type=item_type,
                      event_id="e" * 32, received_at=AT, payload=payload)


def errors(org: int = 5, count: int = 1) -> Usage:
    return Usage(org, 50, 500, {"error": count})


def test_an_organization_below_both_caps_is_not_refused() -> None:
    assert org_backlog_limit(errors(), 999, 9_999_999, CAPS) is None
    assert org_backlog_limit(errors(), 0, 0, CAPS) is None


def test_reaching_the_item_cap_refuses_every_category_of_the_request() -> None:
    usage = Usage(5, 50, 500, {"error": 1, "attachment": 2048, "attachment_item": 1})
    limit = org_backlog_limit(usage, 1000, 0, CAPS)
    assert limit == RateLimit(frozenset({"error", "attachment", "attachment_item"}),
                              "organization", "org_backlog", ORG_BACKLOG_RETRY_AFTER_S, 5)


def test_reaching_the_bytes_cap_refuses_even_with_few_items() -> None:
    limit = org_backlog_limit(errors(org=9), 3, 10_000_000, CAPS)
    assert limit is not None and limit.scope_id == 9 and limit.categories == {"error"}


def test_a_cap_of_zero_is_off() -> None:
    assert org_backlog_limit(errors(), 10**9, 5, BacklogCaps(0, 10_000)) is None
    assert org_backlog_limit(errors(), 5, 10**12, BacklogCaps(100, 0)) is None
    assert org_backlog_limit(errors(), 10**9, 10**12, BacklogCaps(0, 0)) is None


def test_a_request_that_costs_nothing_is_not_refused() -> None:
    # Client reports cost no category (never rate limited, as in Relay).
    assert org_backlog_limit(Usage(5, 50, 500, {}), 10**6, 10**12, CAPS) is None


def test_sdks_are_told_a_429_for_the_organization_naming_the_settings() -> None:
    usage = usage_of([item("event"), item("attachment", b"x" * 300)])
    assert usage is not None
    limit = org_backlog_limit(usage, 5000, 0, CAPS)
    assert limit is not None
    refusal = rate_limited([limit])
    assert refusal.status == 429
    assert refusal.retry_after_s == ORG_BACKLOG_RETRY_AFTER_S
    assert refusal.rate_limits_header == (
        f"{ORG_BACKLOG_RETRY_AFTER_S}:attachment;attachment_item;error:organization:org_backlog")
    body = orjson.dumps(refusal.body()).decode()
    assert "CRASHRAY_MAX_QUEUED_ITEMS_PER_ORG" in body
    assert "CRASHRAY_MAX_QUEUED_BYTES_PER_ORG" in body


def test_the_refused_items_are_counted_as_rate_limited_with_the_reason() -> None:
    items = [item("event", b"{}"), item("attachment", b"x" * 300), item("client_report")]
    usage = usage_of(items)
    assert usage is not None
    limit = org_backlog_limit(usage, 1000, 0, CAPS)
    assert limit is not None
    kept, refused = without_refused(items, [limit])
    # The client report still goes through: it costs nothing and carries the SDK's counts.
    assert [i.item_type for i in kept] == ["client_report"]
    tally = OutcomeTally()
    tally.add(refused, [limit])
    (outcomes,) = tally.take()
    rows = sorted(orjson.loads(outcomes.payload), key=lambda r: r["category"])
    assert outcomes.organization_id == 5 and outcomes.project_id == 50
    assert [(r["outcome"], r["category"], r["reason"], r["quantity"]) for r in rows] == [
        ("rate_limited", "attachment", "org_backlog", 300),
        ("rate_limited", "attachment_item", "org_backlog", 1),
        ("rate_limited", "error", "org_backlog", 1)]
