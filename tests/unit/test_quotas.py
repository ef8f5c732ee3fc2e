"""Quota decisions, windows, headers and spike protection (pure; the clock is a number)."""

from __future__ import annotations

import pytest

from events.quotas import (
    InvalidQuota,
    LeaseBook,
    LimitCache,
    Quota,
    RateLimit,
    SpikeProtection,
    Usage,
    decide,
    format_rate_limits,
    item_quantities,
    key_rate_limit_quota,
    retry_after_s,
    spike_limit,
    window_at,
)

NOW = 1_795_000_000.0  # a unix time; every test passes its clock explicitly


def usage(errors: int = 1, project: int = 2, key: int | None = 7, org: int = 1,
          **more: int) -> Usage:
    return Usage(org, project, key, {"error": errors, **more} if errors else dict(more))


def test_windows_are_shifted_by_the_organization_id() -> None:
    # org 1, 60 s windows: they start at ...:01, not at whole minutes.
    aligned = 1_795_000_020.0  # a multiple of 60
    w = window_at(1, 60, aligned)
    assert w.expires_at == aligned + 1 and w.retry_after_s(aligned) == 1
    assert window_at(1, 60, aligned + 1).slot == w.slot + 1
    # Another organization's window over the same minute ends elsewhere.
    assert window_at(45, 60, aligned).expires_at == aligned + 45
    assert window_at(61, 60, aligned) == window_at(1, 60, aligned)


def test_retry_after_rounds_up_and_is_at_least_a_second() -> None:
    w = window_at(0, 60, 1_795_000_020.2)
    assert w.retry_after_s(1_795_000_020.2) == 60
    assert w.retry_after_s(w.expires_at - 0.01) == 1


def test_a_key_limit_admits_exactly_its_count_per_window() -> None:
    quota = key_rate_limit_quota(1, 7, count=3, window_s=60)
    counters: dict[tuple[str, int], int] = {}
    verdicts = decide([usage() for _ in range(5)], lambda u: [quota], counters, NOW)
    assert [d.accepted for d in verdicts.decisions] == [frozenset({"error"})] * 3 + [
        frozenset()] * 2
    refused = verdicts.decisions[3].limits[0]
    assert (refused.categories, refused.scope, refused.reason_code) == (
        frozenset({"error"}), "key", "key_quota")
    assert sum(verdicts.increments.values()) == 3
    # The next batch sees the stored counters: still full until the window ends ...
    counters = {k: v for k, v in verdicts.increments.items()}
    assert not decide([usage()], lambda u: [quota], counters, NOW).decisions[0].accepted
    # ... and a new window starts empty.
    later = window_at(1, 60, NOW).expires_at
    assert decide([usage()], lambda u: [quota], counters, later).decisions[0].accepted


def test_other_keys_projects_and_organizations_do_not_share_a_counter() -> None:
    key_quota = key_rate_limit_quota(1, 7, count=1, window_s=60)
    per_project = Quota("p", 1, "project", None, frozenset({"error"}), 1, 60)
    verdicts = decide([usage(), usage(key=8), usage(project=3, key=9), usage(org=2)],
                      lambda u: [key_quota, per_project], {}, NOW)
    assert [bool(d.accepted) for d in verdicts.decisions] == [True, False, True, True]
    assert verdicts.decisions[1].limits[0].scope == "project"


def test_a_refused_category_does_not_refuse_the_others_or_count() -> None:
    errors_only = Quota("e", 1, "organization", 1, frozenset({"error"}), 0, 60, "disabled")
    verdict = decide([usage(attachment=500, attachment_item=1)], lambda u: [errors_only], {},
                     NOW).decisions[0]
    assert verdict.accepted == {"attachment", "attachment_item"}
    assert verdict.refused == {"error"}
    assert verdict.limits[0].retry_after_s == 60  # limit 0: for the window's length


def test_a_quantity_is_counted_only_when_every_quota_lets_it_through() -> None:
    roomy = Quota("roomy", 1, "organization", None, frozenset(), 100, 60)
    tight = Quota("tight", 1, "project", 2, frozenset({"error"}), 1, 60)
    verdicts = decide([usage(), usage()], lambda u: [roomy, tight], {}, NOW)
    assert [bool(d.accepted) for d in verdicts.decisions] == [True, False]
    assert sorted(verdicts.increments.values()) == [1, 1]  # the refused one counted nowhere


def test_attachments_are_limited_in_bytes() -> None:
    bytes_quota = Quota("b", 1, "organization", None, frozenset({"attachment"}), 1000, 60)
    verdicts = decide([usage(0, attachment=600), usage(0, attachment=600)],
                      lambda u: [bytes_quota], {}, NOW)
    assert [bool(d.accepted) for d in verdicts.decisions] == [True, False]
    assert item_quantities("attachment", 600) == (("attachment", 600), ("attachment_item", 1))
    assert item_quantities("event", 10_000) == (("error", 1),)
    assert item_quantities("client_report", 50) == ()  # never limited


def test_unlimited_quotas_only_count() -> None:
    counting = Quota("c", 1, "project", None, frozenset(), None, 3600)
    verdicts = decide([usage(5)], lambda u: [counting], {}, NOW)
    assert verdicts.decisions[0].accepted == {"error"}
    assert list(verdicts.increments.values()) == [5]


@pytest.mark.parametrize(("quota", "message"), [
    (lambda: Quota("x", 1, "team", None, frozenset(), 1, 60), "scope 'team'"),
    (lambda: Quota("x", 1, "project", None, frozenset({"errors"}), 1, 60),
     "unknown categories errors"),
    (lambda: Quota("x", 1, "project", None, frozenset(), -1, 60), "negative"),
    (lambda: Quota("x", 1, "project", None, frozenset(), 5, 0), "window 0"),
    (lambda: Quota("x", 1, "project", None, frozenset({"attachment", "error"}), 5, 60),
     "mixes categories counted in bytes"),
])
def test_quotas_that_cannot_be_counted_are_refused_with_the_reason(quota: object,
                                                                    message: str) -> None:
    with pytest.raises(InvalidQuota, match=message):
        quota()  # type: ignore[operator]


def test_the_header_names_each_limit_with_its_categories_scope_and_reason() -> None:
    limits = [RateLimit(frozenset({"error"}), "key", "key_quota", 42, 7),
              RateLimit(frozenset({"default"}), "key", "key_quota", 42, 7),
              RateLimit(frozenset({"transaction"}), "project", "", 3600, 2),
              RateLimit(frozenset({"attachment"}), "organization", "usage_exceeded", 10, 1)]
    assert format_rate_limits(limits) == (
        "3600:transaction:project, 42:default;error:key:key_quota,"
        " 10:attachment:organization:usage_exceeded")
    assert retry_after_s(limits) == 3600


def test_spike_protection_follows_the_projects_own_volume() -> None:
    protection = SpikeProtection(multiplier=10, floor_per_hour=1_000)
    assert spike_limit([0] * 72, protection) == 1_000  # a new project gets the floor
    assert spike_limit([720] * 72, protection) == 7_200  # 10 times its hourly average
    assert spike_limit([7_200] + [0] * 71, protection) == 1_000  # one busy hour ≠ a baseline
    assert spike_limit([5] * 200, protection) == 1_000  # only the trailing 72 hours count
    assert spike_limit([720] * 72, SpikeProtection(enabled=False)) is None


def test_cached_limits_refuse_only_their_scope_and_categories_until_they_end() -> None:
    cache = LimitCache(max_age_s=60)
    cache.add(1, [RateLimit(frozenset({"error"}), "key", "key_quota", 30, 7)], NOW)
    [active] = cache.active(usage(attachment=10), NOW + 10)
    assert (active.categories, active.retry_after_s) == (frozenset({"error"}), 20)
    assert cache.active(usage(key=8), NOW + 10) == []  # another key
    assert cache.active(usage(org=2, key=7), NOW + 10) == []  # another organization
    assert cache.active(usage(0, session=1), NOW + 10) == []  # another category
    assert cache.active(usage(), NOW + 30) == []  # the window is over


def test_cached_limits_are_asked_again_after_their_maximum_age() -> None:
    cache = LimitCache(max_age_s=5)
    cache.add(1, [RateLimit(frozenset({"error"}), "key", "key_quota", 3600, 7)], NOW)
    [active] = cache.active(usage(), NOW + 4)
    assert active.retry_after_s == 3596  # SDKs still hear the whole window
    assert cache.active(usage(), NOW + 5) == []  # but the rate limiter is asked again


def test_roomy_quotas_grant_a_lease_of_one_percent_counted_at_once() -> None:
    roomy = key_rate_limit_quota(1, 7, count=50_000, window_s=3600)
    verdicts = decide([usage(), usage()], lambda u: [roomy], {}, NOW, leases=True)
    [lease] = verdicts.decisions[0].leases
    assert (lease.category, lease.units) == ("error", 500)  # 1 % of 50,000
    assert verdicts.decisions[1].leases == ()  # one lease per sender and batch
    assert list(verdicts.increments.values()) == [2 + 500]
    assert lease.expires_at == NOW + 1.0


def test_tight_or_nearly_used_quotas_grant_no_lease() -> None:
    small = key_rate_limit_quota(1, 7, count=100, window_s=60)  # 1 % is 1 unit
    assert decide([usage()], lambda u: [small], {}, NOW, leases=True).decisions[0].leases == ()
    roomy = key_rate_limit_quota(1, 7, count=50_000, window_s=3600)
    key = (roomy.counter(usage()), window_at(1, 3600, NOW).slot)
    nearly = decide([usage()], lambda u: [roomy], {key: 49_995}, NOW, leases=True)
    assert nearly.decisions[0].leases == ()


def test_a_replica_admits_on_its_lease_and_hands_back_what_is_left() -> None:
    roomy = key_rate_limit_quota(1, 7, count=50_000, window_s=3600)
    [lease] = decide([usage()], lambda u: [roomy], {}, NOW, leases=True).decisions[0].leases
    book = LeaseBook()
    book.add([lease])
    assert all(book.admit(usage(), NOW + 0.5) for _ in range(500))
    assert not book.admit(usage(), NOW + 0.5)  # used up: ask the rate limiter
    assert not book.admit(usage(key=8), NOW + 0.5)  # another sender
    assert book.expired(NOW + 0.5) == []
    book.add([lease])  # a fresh lease; the old one (all used) gives nothing back
    assert book.admit(usage(5), NOW + 0.5)
    assert not book.admit(usage(), NOW + 1.0)  # expired
    # Both leases end: the replaced one gave everything out, the second kept 495 units.
    assert book.expired(NOW + 1.0) == [(1, lease.counters[0], 0, 500),
                                       (1, lease.counters[0], 495, 500)]


def test_leases_on_one_quota_together_hold_at_most_one_percent() -> None:
    """An organization quota shared by 120 projects: one lease of 1 %, the rest decided
    exactly, and nobody refused while the quota has room."""
    shared = Quota("org", 1, "organization", None, frozenset({"error"}), 10_000, 3600)
    senders = [usage(project=p, key=None) for p in range(120)]
    verdicts = decide(senders, lambda u: [shared], {}, NOW, leases=True)
    assert all(d.accepted == {"error"} for d in verdicts.decisions)
    assert sum(len(d.leases) for d in verdicts.decisions) == 1
    assert sum(verdicts.leased.values()) == 100
    key = next(iter(verdicts.leased))
    more = decide([usage(project=500, key=None)], lambda u: [shared], {}, NOW, leases=True,
                  leased={key: 100})
    assert more.decisions[0].leases == ()  # 1 % is already out on leases
