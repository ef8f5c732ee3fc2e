"""Issue state decisions (pure)."""

from __future__ import annotations

import pytest

from events.lifecycle import InvalidStatusUpdate, parse_status_update, regresses


@pytest.mark.parametrize(("body", "status"), [
    ({"status": "resolved"}, "resolved"),
    ({"status": "unresolved", "statusDetails": {}}, "unresolved"),
    ({"status": "ignored"}, "ignored"),
    ({"status": "muted"}, "ignored"),  # Sentry's older name
    ({"status": "archived"}, "ignored"),  # and its newer one
])
def test_plain_status_updates_are_understood(body: dict[str, object], status: str) -> None:
    assert parse_status_update(body).status == status


@pytest.mark.parametrize(("body", "names"), [
    ({}, '"status" must be one of'),
    ({"status": 3}, "got 3"),
    ({"status": "fixed"}, "got 'fixed'"),
    ({"status": "resolved", "statusDetails": []}, '"statusDetails" must be an object'),
    ({"status": "ignored", "statusDetails": {"ignoreCount": 10}}, "statusDetails.ignoreCount"),
])
def test_unknown_or_unsupported_updates_say_what_was_wrong(body: dict[str, object],
                                                           names: str) -> None:
    with pytest.raises(InvalidStatusUpdate, match=names.replace("(", r"\(")):
        parse_status_update(body)


def test_only_resolved_issues_regress() -> None:
    assert regresses("resolved")
    assert not regresses("ignored")
    assert not regresses("unresolved")
