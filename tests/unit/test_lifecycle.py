"""Issue state decisions (pure)."""

from __future__ import annotations

import datetime as dt

import pytest

from events.lifecycle import (
    CountingWindows,
    InvalidStatusUpdate,
    IssueState,
    NewEvent,
    StatusUpdate,
    counting_windows,
    needs_user_count,
    parse_status_update,
    stored_details,
    transition_after_events,
)

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("body", "status", "details"), [
    ({"status": "resolved"}, "resolved", {}),
    ({"status": "unresolved", "statusDetails": {}}, "unresolved", {}),
    ({"status": "ignored"}, "ignored", {}),
    ({"status": "muted"}, "ignored", {}),  # Sentry's older name
    ({"status": "archived"}, "ignored", {}),  # and its newer one
    ({"status": "resolved", "statusDetails": {"inRelease": "shop@1.2.0"}}, "resolved",
     {"inRelease": "shop@1.2.0"}),
    ({"status": "resolved", "statusDetails": {"inNextRelease": True}}, "resolved",
     {"inNextRelease": True}),
    ({"status": "ignored", "statusDetails": {"ignoreCount": 10}}, "ignored", {"ignoreCount": 10}),
    ({"status": "ignored", "statusDetails": {"ignoreCount": 10, "ignoreWindow": 60}}, "ignored",
     {"ignoreCount": 10, "ignoreWindow": 60}),
    ({"status": "ignored", "statusDetails": {"ignoreUserCount": 3, "ignoreUserWindow": 1440}},
     "ignored", {"ignoreUserCount": 3, "ignoreUserWindow": 1440}),
    ({"status": "ignored", "statusDetails": {"ignoreUntil": "2026-12-01T00:00:00Z"}}, "ignored",
     {"ignoreUntil": "2026-12-01T00:00:00+00:00"}),
    ({"status": "ignored", "statusDetails": {"ignoreUntilEscalating": True}}, "ignored",
     {"ignoreUntilEscalating": True}),
])
def test_status_updates_are_understood(body: dict[str, object], status: str,
                                       details: dict[str, object]) -> None:
    update = parse_status_update(body)
    assert (update.status, dict(update.details)) == (status, details)


@pytest.mark.parametrize(("body", "names"), [
    ({}, '"status" must be one of'),
    ({"status": 3}, "got 3"),
    ({"status": "fixed"}, "got 'fixed'"),
    ({"status": "resolved", "statusDetails": []}, '"statusDetails" must be an object'),
    ({"status": "ignored", "statusDetails": {"ignoreWindow": 60}}, 'needs "ignoreCount"'),
    ({"status": "ignored", "statusDetails": {"ignoreUserWindow": 60}},
     'needs "ignoreUserCount"'),
    ({"status": "ignored", "statusDetails": {"ignoreCount": 5, "ignoreWindow": 0}},
     "minutes from 1 to 10080"),
    ({"status": "ignored", "statusDetails": {"ignoreCount": 5, "ignoreWindow": 20000}},
     "minutes from 1 to 10080"),
    ({"status": "ignored", "statusDetails": {"ignoreDuration": 30}}, "not supported"),
    ({"status": "ignored", "statusDetails": {"ignoreUserCount": -2}}, "a positive whole number"),
    ({"status": "ignored", "statusDetails": {"ignoreCount": -1}}, "a positive whole number"),
    ({"status": "ignored", "statusDetails": {"ignoreUntil": "tomorrow"}}, "an ISO 8601 time"),
    ({"status": "ignored", "statusDetails": {"inRelease": "1.0"}}, "does not go with"),
    ({"status": "ignored", "statusDetails": {"ignoreUntilEscalating": "yes"}},
     "ignoreUntilEscalating\" must be true"),
    ({"status": "resolved", "statusDetails": {"ignoreUntilEscalating": True}},
     "does not go with"),
])
def test_unknown_or_unsupported_updates_say_what_was_wrong(body: dict[str, object],
                                                           names: str) -> None:
    with pytest.raises(InvalidStatusUpdate, match=names):
        parse_status_update(body)


def test_thresholds_are_fixed_when_the_state_is_set() -> None:
    assert stored_details(StatusUpdate("resolved", {"inNextRelease": True}), 7, "shop@1.4.2") \
        == {"inNextRelease": True, "inRelease": "shop@1.4.2"}
    assert stored_details(StatusUpdate("ignored", {"ignoreCount": 5}), 7, None) \
        == {"ignoreCount": 5, "ignoreCountBase": 7}
    assert stored_details(StatusUpdate("ignored", {"ignoreUserCount": 2}), 7, None, users=4) \
        == {"ignoreUserCount": 2, "ignoreUserCountBase": 4}
    # A windowed threshold counts inside its window, not from a base.
    assert stored_details(StatusUpdate("ignored", {"ignoreCount": 5, "ignoreWindow": 60}), 7,
                          None) == {"ignoreCount": 5, "ignoreWindow": 60}


def test_windowed_ignores_ask_for_the_counts_they_need() -> None:
    assert counting_windows({"ignoreCount": 5, "ignoreWindow": 60}) == CountingWindows(60, None)
    assert counting_windows({"ignoreUserCount": 5, "ignoreUserWindow": 30}) \
        == CountingWindows(None, 30)
    assert counting_windows({"ignoreCount": 5}) == CountingWindows(None, None)
    assert needs_user_count({"ignoreUserCount": 5})
    assert not needs_user_count({"ignoreUserCount": 5, "ignoreUserWindow": 30})


def event(release: str | None = None, at: dt.datetime = NOW) -> NewEvent:
    return NewEvent(release, at)


def test_any_event_reopens_a_plainly_resolved_issue_as_regressed() -> None:
    t = transition_after_events(IssueState("resolved", {}, 3), [event()])
    assert t is not None and (t.status, t.substatus, t.activity) == (
        "unresolved", "regressed", "set_regression")


@pytest.mark.parametrize(("release", "reopens"), [
    ("shop@1.4.2", False),  # the release it was resolved in
    ("shop@1.4.1", False),  # an older one
    ("shop@1.4.10", True),  # newer (semver, not string order)
    (None, False),  # no release: cannot be newer
    ("web-build-77", True),  # not a version: counted as newer rather than hidden
])
def test_resolved_in_a_release_reopens_only_for_newer_releases(release: str | None,
                                                               reopens: bool) -> None:
    state = IssueState("resolved", {"inRelease": "shop@1.4.2"}, 3)
    assert (transition_after_events(state, [event(release)]) is not None) is reopens


def test_ignored_until_n_more_events_unignores_at_n() -> None:
    details = {"ignoreCount": 2, "ignoreCountBase": 10}
    assert transition_after_events(IssueState("ignored", details, 11), [event()]) is None
    t = transition_after_events(IssueState("ignored", details, 12), [event()])
    assert t is not None and (t.status, t.substatus) == ("unresolved", "escalating")


def test_ignored_until_a_time_unignores_on_the_first_later_event() -> None:
    details = {"ignoreUntil": (NOW + dt.timedelta(hours=1)).isoformat()}
    state = IssueState("ignored", details, 5)
    assert transition_after_events(state, [event(at=NOW)]) is None
    assert transition_after_events(state, [event(at=NOW + dt.timedelta(hours=2))]) is not None


def test_ignored_forever_and_unresolved_issues_do_not_change() -> None:
    assert transition_after_events(IssueState("ignored", {}, 100), [event()]) is None
    assert transition_after_events(IssueState("unresolved", {}, 100), [event()]) is None


def test_ignored_until_escalating_is_not_unignored_by_events_alone() -> None:
    """The escalating detector decides (actors/detectors.py), not the event count."""
    state = IssueState("ignored", {"ignoreUntilEscalating": True}, 10_000)
    assert transition_after_events(state, [event() for _ in range(500)]) is None


def test_ignored_until_n_more_users_unignores_when_the_users_are_there() -> None:
    details = {"ignoreUserCount": 2, "ignoreUserCountBase": 4}
    assert transition_after_events(IssueState("ignored", details, 50, users=5), [event()]) \
        is None
    t = transition_after_events(IssueState("ignored", details, 51, users=6), [event()])
    assert t is not None and t.data["reason"] == "ignoreUserCount"
    # Without a user count (not looked up) nothing is decided from it.
    assert transition_after_events(IssueState("ignored", details, 51), [event()]) is None


def test_ignored_until_n_events_in_a_window_unignores_only_on_a_burst() -> None:
    details = {"ignoreCount": 10, "ignoreWindow": 60}
    # 500 events over the issue's life, but only 9 in the last hour: stays ignored.
    assert transition_after_events(
        IssueState("ignored", details, 500, window_events=9), [event()]) is None
    t = transition_after_events(IssueState("ignored", details, 501, window_events=10),
                                [event()])
    assert t is not None and t.data == {"reason": "ignoreCount", "ignoreCount": 10,
                                        "ignoreWindow": 60}
    # Not counted (window count unknown): nothing is decided from it.
    assert transition_after_events(IssueState("ignored", details, 501), [event()]) is None


def test_ignored_until_n_users_in_a_window_unignores_when_they_come_together() -> None:
    details = {"ignoreUserCount": 3, "ignoreUserWindow": 1440}
    assert transition_after_events(
        IssueState("ignored", details, 50, users=40, window_users=2), [event()]) is None
    t = transition_after_events(IssueState("ignored", details, 51, window_users=3), [event()])
    assert t is not None and t.data["ignoreUserWindow"] == 1440
