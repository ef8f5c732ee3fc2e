"""The event API's JSON (serve_apps/event_json.py) for events processed by the real
pipeline code (sentry-relay normalization, tags, title) and for events stored before."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import sentry_relay

from events.artifacts import MINIFIED_SOURCE, SOURCE_MAP, Artifact, MemoryArtifacts
from events.process import EventProcessor, ItemContext
from events.symbolicate import ProjectSymbolication, SourceMapCaches, default_handlers
from serve_apps.event_json import USER_API_FIELDS, event_json

SDK = Path(__file__).parents[1] / "fixtures" / "sdk"
SOURCEMAPS = Path(__file__).parents[1] / "fixtures" / "sourcemaps"
CHROME_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36"
             " (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36")


def processed(payload: bytes) -> dict[str, Any]:
    ctx = ItemContext(project_id=1, key_id=1, received_at=dt.datetime.now(dt.UTC),
                      client_ip="203.0.113.9")
    return dict(EventProcessor().process(payload, ctx).event)


def as_api(event: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return event_json(event, event_id="a" * 32, project_id=1, group_id=5,
                      date_created="2026-11-28T13:00:00Z", **kwargs)


def python_capture() -> bytes:
    return (SDK / "python-sdk-2.75.0-exception.envelope").read_bytes().split(b"\n")[2]


def test_event_api_answers_title_culprit_and_location_of_a_python_sdk_event() -> None:
    answer = as_api(processed(python_capture()))
    assert answer["title"] == "ZeroDivisionError: division by zero"
    assert answer["culprit"] == "__main__ in compute_ratio"
    assert answer["location"] == "py_client.py"
    assert answer["metadata"]["type"] == "ZeroDivisionError"


def test_events_stored_before_get_title_culprit_and_location_from_their_body() -> None:
    # Relay's output alone: what the event store held before events carried these fields.
    old = sentry_relay.StoreNormalizer(project_id=1).normalize_event(
        raw_event=python_capture(), json_loads=orjson.loads)
    assert "title" not in old and "location" not in old
    answer = as_api(old)
    new = as_api(processed(python_capture()))
    assert (answer["title"], answer["culprit"], answer["location"]) == (
        new["title"], new["culprit"], new["location"])


def test_user_answers_sentrys_user_fields_and_no_internal_ones() -> None:
    event = processed(orjson.dumps({"platform": "javascript", "message": "m",
                                    "user": {"id": "42", "email": "ada@example.com",
                                             "segment": "paid"}}))
    assert event["user"].get("sentry_user") == "id:42"  # Relay's internal field is stored
    user = as_api(event)["user"]
    assert list(user) == list(USER_API_FIELDS)
    assert (user["id"], user["email"], user["username"]) == ("42", "ada@example.com", None)
    assert "sentry_user" not in user and "segment" not in user


def test_an_event_without_a_user_answers_null() -> None:
    assert as_api(processed(python_capture()))["user"] is None


def test_tags_are_sorted_by_key_with_a_search_query_on_the_user_tag() -> None:
    event = processed(orjson.dumps({
        "platform": "javascript", "message": "m", "tags": {"zone": "eu", "area": "shop"},
        "user": {"email": 'ada"x@example.com'},
        "request": {"url": "https://shop.example.com/", "headers": {"User-Agent": CHROME_UA}}}))
    tags = as_api(event)["tags"]
    assert [t["key"] for t in tags] == sorted(t["key"] for t in tags)
    by_key = {t["key"]: t for t in tags}
    assert by_key["browser"] == {"key": "browser", "value": "Chrome 120.0.0"}
    assert by_key["user"] == {"key": "user", "value": 'email:ada"x@example.com',
                              "query": 'user.email:"ada\\"x@example.com"'}
    assert {"zone", "area", "level", "url"} <= set(by_key)


def test_tags_relay_refused_are_left_out_and_their_meta_follows_the_answered_order() -> None:
    event = processed(orjson.dumps({"message": "m", "tags": [
        ["zz", "a\nb"], ["long", "x" * 250], ["aa", "ok"]]}))
    answer = as_api(event)
    keys = [t["key"] for t in answer["tags"]]
    assert "zz" not in keys and keys.index("aa") == 0
    position = keys.index("long")
    assert answer["tags"][position]["value"].endswith("...")
    assert answer["_meta"]["tags"] == {
        str(position): {"value": event["_meta"]["tags"]["1"]["1"]}}


def test_a_symbolicated_event_answers_original_frames_its_raw_frames_and_why_not() -> None:
    """Through the real source-map symbolication (tests/fixtures/sourcemaps): the original
    frames under ``stacktrace``, the minified ones under ``rawStacktrace`` (Sentry's event
    API), and a frame whose file has no map named in the top-level ``errors``."""
    build = SOURCEMAPS / "build"
    artifacts = MemoryArtifacts()
    for name, kind in (("app.min.js", MINIFIED_SOURCE), ("app.min.js.map", SOURCE_MAP)):
        artifacts.add(Artifact(f"~/build/{name}", kind, (build / name).read_bytes()),
                      release="shop@1.0.0")
    thrown = orjson.loads((build / "exception.json").read_bytes())
    unmapped = {"function": "boot", "abs_path": "app:///build/vendor.min.js", "lineno": 1,
                "colno": 40, "in_app": True}
    event = {"platform": "node", "release": "shop@1.0.0", "exception": {"values": [
        {"type": thrown["type"], "value": thrown["value"],
         "stacktrace": {"frames": [unmapped, *thrown["frames"]]}}]}}
    symbolicator = ProjectSymbolication(lambda org, project: artifacts,
                                        default_handlers(SourceMapCaches(10**8)))
    ctx = ItemContext(project_id=1, key_id=1, received_at=dt.datetime.now(dt.UTC),
                      organization_id=7)
    stored = dict(EventProcessor(symbolicator).process(orjson.dumps(event), ctx).event)

    answer = as_api(stored)
    value = next(e for e in answer["entries"] if e["type"] == "exception")["data"]["values"][0]
    crash = value["stacktrace"]["frames"][-1]
    assert (crash["filename"], crash["lineNo"]) == ("/src/orders.js", 9)
    assert [9, '      throw new TypeError("unknown coupon " + coupon);'] in crash["context"]
    raw_crash = value["rawStacktrace"]["frames"][-1]
    assert (raw_crash["absPath"], raw_crash["lineNo"], raw_crash["colNo"]) == (
        "app:///build/app.min.js", 1, thrown["frames"][-1]["colno"])
    assert raw_crash["context"] == []
    assert value["rawStacktrace"]["frames"][0]["absPath"] == "app:///build/vendor.min.js"
    assert [(e["type"], e["message"], e["data"]["url"]) for e in answer["errors"]] == [
        ("js_no_source", "Source code or source map not found", "app:///build/vendor.min.js")]
    assert "release 'shop@1.0.0'" in answer["errors"][0]["data"]["reason"]


def test_threads_answer_their_raw_stacktrace_and_unsymbolicated_events_null() -> None:
    frames = [{"function": "a", "abs_path": "app:///x.js", "lineno": 1, "colno": 2}]
    event = {"platform": "node", "threads": {"values": [
        {"id": 1, "stacktrace": {"frames": [{**frames[0], "filename": "src/x.ts"}]},
         "raw_stacktrace": {"frames": frames}}]},
        "exception": {"values": [{"type": "E", "stacktrace": {"frames": frames}}]}}
    entries = {e["type"]: e["data"] for e in as_api(event)["entries"]}
    thread = entries["threads"]["values"][0]
    assert thread["rawStacktrace"]["frames"][0]["absPath"] == "app:///x.js"
    assert thread["stacktrace"]["frames"][0]["filename"] == "src/x.ts"
    assert entries["exception"]["values"][0]["rawStacktrace"] is None
    assert as_api(event)["errors"] == []


def test_relay_normalization_errors_answer_sentrys_type_message_and_data() -> None:
    event = processed(orjson.dumps({"platform": "python", "message": "m",
                                    "timestamp": "yesterday-ish", "level": "loud"}))
    stored = {(e["type"], e.get("name")) for e in event["errors"]}
    answered = as_api(event)["errors"]
    assert {(e["type"], e["data"].get("name")) for e in answered} == stored
    assert all(set(e) == {"type", "message", "data"} and e["message"] for e in answered)
    assert "invalid_data" in {e["type"] for e in answered}
    assert as_api({**event, "errors": [{"type": "brand_new_kind"}, "junk"]})["errors"] == [
        {"type": "brand_new_kind", "message": "Brand new kind", "data": {}}]
