"""The hash of what grouping reads of a stored event (events/projection.py), which every
events row carries so that ``crashray reprocess`` groups without parsing bodies: events
that differ only in what grouping never reads share it, any difference grouping can see
splits it, and the events the row's columns cannot describe get 0 (parse the body)."""

from __future__ import annotations

from typing import Any

import pytest

from events.projection import UNKNOWN, stored_projection


def stored_event(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "a" * 32, "timestamp": 1_700_000_000.5, "platform": "python",
        "level": "error", "release": "app@1", "environment": "production",
        "exception": {"values": [{"type": "ValueError", "value": "bad input",
                                  "stacktrace": {"frames": [
                                      {"function": "handle", "module": "app.views",
                                       "in_app": True, "lineno": 3}]}}]},
        "tags": [["server_name", "web-1"], ["tenant", "a"]],
        "user": {"id": "u1"}, "request": {"url": "https://example.com/a"},
        "title": "ValueError: bad input", "culprit": "app.views in handle",
        "metadata": {"type": "ValueError", "value": "bad input"},
    }
    event.update(changes)
    return event


def test_events_differing_only_in_what_grouping_never_reads_share_a_projection() -> None:
    first = stored_projection(stored_event())
    assert first != UNKNOWN
    assert stored_projection(stored_event(
        event_id="b" * 32, timestamp=1_800_000_000.0, environment="staging",
        user={"id": "u2"}, request={"url": "https://example.com/b"},
        # The row's columns: the job adds the tags and release its rules read.
        tags=[["server_name", "web-2"], ["tenant", "b"]], release="app@2")) == first


@pytest.mark.parametrize("changes", [
    {"exception": {"values": [{"type": "ValueError", "value": "other input"}]}},
    {"fingerprint": ["{{ default }}", "checkout"]},
    {"level": "warning"},
    {"title": "Renamed"},
    {"contexts": {"csp": {"blocked_uri": "https://evil.example"}}},
    {"errors": [{"type": "js_no_source", "url": "app.js"}]},
    {"release": None},
], ids=["exception", "fingerprint", "level", "summary", "security-context", "errors",
        "release-missing"])
def test_a_difference_grouping_can_see_splits_the_projection(changes: dict[str, Any]
                                                             ) -> None:
    assert stored_projection(stored_event(**changes)) != stored_projection(stored_event())


def test_a_symbolicated_event_keeps_its_release_in_the_projection() -> None:
    """Symbolication read its release (the source maps are the release's)."""
    values = [{"type": "TypeError", "value": "x is undefined",
               "stacktrace": {"frames": [{"function": "render"}]},
               "raw_stacktrace": {"frames": [{"function": "a", "colno": 7}]}}]
    one = stored_event(platform="javascript", exception={"values": values})
    assert stored_projection(one) != stored_projection({**one, "release": "app@2"})


def test_a_fingerprint_naming_a_tag_keeps_every_tag_in_the_projection() -> None:
    one = stored_event(fingerprint=["{{ tags.tenant }}"])
    assert stored_projection(one) != stored_projection(
        {**one, "tags": [["server_name", "web-1"], ["tenant", "b"]]})


@pytest.mark.parametrize("changes", [
    {"errors": []},
    {"tags": [["tenant", "a"], ["tenant", "b"]]},
    {"tags": [["tenant", None]]},
    {"tags": {"tenant": "a"}},
], ids=["empty-errors", "repeated-tag", "null-tag", "tags-not-a-list"])
def test_events_the_row_cannot_describe_have_no_projection(changes: dict[str, Any]) -> None:
    assert stored_projection(stored_event(**changes)) == UNKNOWN
