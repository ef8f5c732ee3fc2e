"""Issue title / culprit / metadata rules (see events/issue_meta.py docstring)."""

from __future__ import annotations

from events.issue_meta import issue_metadata_for_event
from tests.unit.grouping.helpers import normalize


def _exc(**fields: object) -> dict[str, object]:
    return {"platform": "python", "exception": {"values": [fields]}}


def test_title_uses_last_exception_and_first_line_of_value() -> None:
    event = {"platform": "python", "exception": {"values": [
        {"type": "KeyError", "value": "'sku'"},
        {"type": "ValueError", "value": "\nbad input\nsecond line"},
    ]}}
    assert issue_metadata_for_event(normalize(event)).title == "ValueError: bad input"


def test_title_value_truncated_to_100_chars() -> None:
    title = issue_metadata_for_event(normalize(_exc(type="E", value="x" * 150))).title
    assert title == "E: " + "x" * 97 + "..."


def test_title_is_type_alone_without_value() -> None:
    assert issue_metadata_for_event(normalize(_exc(type="SystemExit"))).title == "SystemExit"


def test_message_event_title_is_first_line_stripped() -> None:
    meta = issue_metadata_for_event(normalize({"message": "  disk full\nmore detail"}))
    assert (meta.type, meta.title, meta.metadata) == (
        "default", "disk full", {"title": "disk full"})


def test_unlabeled_event() -> None:
    assert issue_metadata_for_event(normalize({})).title == "<unlabeled event>"


def test_transaction_wins_culprit() -> None:
    event = _exc(type="E", stacktrace={"frames": [{"module": "m", "function": "f", "in_app": True}]})
    event["transaction"] = "/checkout"
    assert issue_metadata_for_event(normalize(event)).culprit == "/checkout"


def test_culprit_from_top_most_in_app_frame_python() -> None:
    event = _exc(type="E", stacktrace={"frames": [
        {"module": "app.views", "function": "checkout", "in_app": True},
        {"module": "app.pricing", "function": "total", "in_app": True},
        {"module": "decimal", "function": "div", "in_app": False},
    ]})
    assert issue_metadata_for_event(normalize(event)).culprit == "app.pricing in total"


def test_culprit_without_in_app_frames_uses_top_most_frame_and_filename() -> None:
    event = _exc(type="E", stacktrace={"frames": [
        {"filename": "lib/a.py", "function": "a"}, {"filename": "lib/b.py", "function": "b"},
    ]})
    assert issue_metadata_for_event(normalize(event)).culprit == "lib/b.py in b"


def test_culprit_javascript_format() -> None:
    event = {"platform": "javascript", "exception": {"values": [{"type": "TypeError", "stacktrace": {
        "frames": [{"abs_path": "https://x.example.com/app.js", "function": "Cart.add", "in_app": True}]}}]}}
    assert issue_metadata_for_event(normalize(event)).culprit == "Cart.add(/app.js)"


def test_culprit_falls_back_to_request_url_and_is_capped() -> None:
    event = {"message": "m", "request": {"url": "https://example.com/" + "p" * 300}}
    culprit = issue_metadata_for_event(normalize(event)).culprit
    assert len(culprit) == 200
    assert culprit.endswith("...")


def test_metadata_skips_unknown_functions() -> None:
    event = _exc(type="E", value="v", stacktrace={"frames": [
        {"filename": "a.py", "function": "real", "in_app": True},
        {"filename": "b.py", "function": "<unknown>", "in_app": True},
    ]})
    meta = issue_metadata_for_event(normalize(event)).metadata
    assert (meta["filename"], meta["function"]) == ("a.py", "real")
