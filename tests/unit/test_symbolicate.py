"""Source maps applied to JavaScript events (events/symbolicate.py), with real esbuild
builds (tests/fixtures/sourcemaps/README.md says how they were made) and the real
normalization and grouping of ``EventProcessor``."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from events.artifacts import (
    MINIFIED_SOURCE,
    SOURCE_MAP,
    Artifact,
    ArtifactSource,
    MemoryArtifacts,
    candidate_urls,
    normalize_debug_id,
)
from events.process import EventProcessor, ItemContext, ProcessedEvent
from events.symbolicate import (
    JavaScriptSymbolicator,
    ProjectSymbolication,
    SourceMapCaches,
    SymbolicationLimits,
    default_handlers,
    display_filename,
    join_url,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "sourcemaps"
RELEASE = "shop@1.0.0"
DEBUG_ID = "c7d3a3b2-6f1e-4b7a-9d39-0a1b2c3d4e5f"
ORG, PROJECT = 7, 42


def fixture(build: str, name: str) -> bytes:
    return (FIXTURES / build / name).read_bytes()


def release_artifacts(build: str = "build", minified: bytes | None = None,
                      source_map: bytes | None = None) -> MemoryArtifacts:
    """The build uploaded as release files (sentry-cli 2.x style ``~/`` names)."""
    artifacts = MemoryArtifacts()
    artifacts.add(Artifact(f"~/{build}/app.min.js", MINIFIED_SOURCE,
                           minified if minified is not None else fixture(build, "app.min.js")),
                  release=RELEASE)
    artifacts.add(Artifact(f"~/{build}/app.min.js.map", SOURCE_MAP,
                           source_map if source_map is not None
                           else fixture(build, "app.min.js.map")), release=RELEASE)
    return artifacts


def node_event(build: str = "build", **extra: Any) -> dict[str, Any]:
    thrown = json.loads(fixture(build, "exception.json"))
    return {"platform": "node", "release": RELEASE, "level": "error",
            "exception": {"values": [{"type": thrown["type"], "value": thrown["value"],
                                      "stacktrace": {"frames": thrown["frames"]}}]},
            **extra}


def process(event: dict[str, Any], artifacts: ArtifactSource | None,
            caches: SourceMapCaches | None = None) -> ProcessedEvent:
    symbolicator = None if artifacts is None else ProjectSymbolication(
        lambda org, project: artifacts, default_handlers(caches or SourceMapCaches(10**8)))
    ctx = ItemContext(project_id=PROJECT, key_id=1, received_at=dt.datetime.now(dt.UTC),
                      organization_id=ORG)
    return EventProcessor(symbolicator).process(orjson.dumps(event), ctx)


def exception_of(processed: ProcessedEvent) -> dict[str, Any]:
    value: dict[str, Any] = processed.event["exception"]["values"][0]
    return value


def frames_of(processed: ProcessedEvent) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = exception_of(processed)["stacktrace"]["frames"]
    return frames


def test_minified_node_frames_show_original_file_line_function_and_context() -> None:
    processed = process(node_event(), release_artifacts())
    *_, apply_coupon, with_coupon, crash = frames_of(processed)
    assert (crash["filename"], crash["lineno"], crash["abs_path"]) == (
        "/src/orders.js", 9, "app:///src/orders.js")
    assert crash["context_line"] == '      throw new TypeError("unknown coupon " + coupon);'
    assert crash["pre_context"][-1] == "    if (factor === undefined) {"
    assert crash["post_context"][0] == "    }"
    assert (apply_coupon["function"], apply_coupon["lineno"]) == ("applyCoupon", 7)
    assert (with_coupon["function"], with_coupon["lineno"]) == ("withCoupon", 3)
    assert apply_coupon["context_line"] == "  return withCoupon(COUPONS, coupon, (factor) => {"
    assert crash["data"]["sourcemap"] == "app:///build/app.min.js.map"
    assert not processed.event.get("errors")
    # The issue's culprit names the original code, not the bundle.
    assert "orders.js" in processed.issue.culprit


def test_minified_frames_are_kept_as_the_raw_stacktrace() -> None:
    raw = exception_of(process(node_event(), release_artifacts()))["raw_stacktrace"]
    crash = raw["frames"][-1]
    sent = node_event()["exception"]["values"][0]["stacktrace"]["frames"][-1]
    assert (crash["abs_path"], crash["lineno"], crash["colno"]) == (
        sent["abs_path"], sent["lineno"], sent["colno"])


def test_node_modules_frames_are_not_in_app() -> None:
    frames = frames_of(process(node_event(), release_artifacts()))
    by_file = {f["filename"]: f["in_app"] for f in frames}
    assert by_file["/src/node_modules/coupon-table/index.js"] is False
    assert by_file["/src/orders.js"] is True


def test_debug_id_finds_the_map_without_release_or_matching_url() -> None:
    artifacts = MemoryArtifacts()
    headers = {"debug-id": DEBUG_ID.upper()}  # either case is the same id
    artifacts.add(Artifact("~/dist/bundle.js", MINIFIED_SOURCE,
                           fixture("build", "app.min.js"), headers))
    artifacts.add(Artifact("~/dist/bundle.js.map", SOURCE_MAP,
                           fixture("build", "app.min.js.map"), headers))
    event = node_event(release=None, debug_meta={"images": [
        {"type": "sourcemap", "code_file": "app:///build/app.min.js",
         "debug_id": DEBUG_ID.replace("-", "")}]})
    crash = frames_of(process(event, artifacts))[-1]
    assert (crash["filename"], crash["lineno"]) == ("/src/orders.js", 9)
    assert crash["data"]["resolved_with"] == "debug-id"


def test_two_minified_builds_of_one_source_group_into_one_issue() -> None:
    first = process(node_event("build"), release_artifacts("build"))
    second = process(node_event("build2"), release_artifacts("build2"))
    sent = [[(f["function"], f["colno"]) for f in node_event(b)["exception"]["values"][0][
        "stacktrace"]["frames"]] for b in ("build", "build2")]
    assert sent[0][1:] != sent[1][1:]  # the builds differ in minified names and columns
    assert first.grouping.primary_hash == second.grouping.primary_hash
    # Unsymbolicated, the two builds are two issues: the maps are what joins them.
    assert (process(node_event("build"), None).grouping.primary_hash
            != process(node_event("build2"), None).grouping.primary_hash)


def test_missing_map_keeps_the_event_minified_with_the_reason() -> None:
    artifacts = MemoryArtifacts()
    artifacts.add(Artifact("~/build/app.min.js", MINIFIED_SOURCE,
                           fixture("build", "app.min.js")), release=RELEASE)
    processed = process(node_event(), artifacts)
    crash = frames_of(processed)[-1]
    assert crash["abs_path"] == "app:///build/app.min.js"
    assert "raw_stacktrace" not in exception_of(processed)
    [error] = processed.event["errors"]
    assert error["type"] == "js_no_source"
    assert error["url"] == "app:///build/app.min.js"
    assert error["sourcemap"] == "app:///build/app.min.js.map"


def test_no_artifact_and_no_release_says_so() -> None:
    [error] = process(node_event(release=None), MemoryArtifacts()).event["errors"]
    assert error["type"] == "js_no_source"
    assert "no debug ID" in error["reason"] and "no release" in error["reason"]


def test_corrupt_map_keeps_the_event_with_js_invalid_source() -> None:
    processed = process(node_event(), release_artifacts(source_map=b'{"version": 3, "mapp'))
    assert frames_of(processed)[-1]["abs_path"] == "app:///build/app.min.js"
    [error] = processed.event["errors"]
    assert error["type"] == "js_invalid_source"
    assert "does not parse" in error["reason"]


def test_map_of_another_build_is_refused_by_debug_id() -> None:
    minified = fixture("build", "app.min.js") + f"\n//# debugId={DEBUG_ID}\n".encode()
    other = json.loads(fixture("build", "app.min.js.map"))
    other["debug_id"] = "00000000-1111-2222-3333-444444444444"
    processed = process(node_event(), release_artifacts(
        minified=minified, source_map=json.dumps(other).encode()))
    [error] = processed.event["errors"]
    assert error["type"] == "js_invalid_source"
    assert "another build" in error["reason"]
    assert frames_of(processed)[-1]["abs_path"] == "app:///build/app.min.js"


def test_position_outside_the_minified_file_is_an_invalid_location() -> None:
    # build2's frames point past build1's lines: a map uploaded for the wrong file.
    event = node_event()
    event["exception"]["values"][0]["stacktrace"]["frames"][-1].update(lineno=4, colno=3)
    processed = process(event, release_artifacts())
    errors = processed.event["errors"]
    assert [e["type"] for e in errors] == ["js_invalid_sourcemap_location"]
    assert (errors[0]["row"], errors[0]["column"]) == (4, 3)
    frames = frames_of(processed)
    assert frames[-1]["lineno"] == 4 and frames[-1]["abs_path"] == "app:///build/app.min.js"
    assert frames[-2]["filename"] == "/src/node_modules/coupon-table/index.js"


def test_map_without_sources_content_resolves_lines_and_says_what_is_missing() -> None:
    bare = json.loads(fixture("build", "app.min.js.map"))
    del bare["sourcesContent"]
    processed = process(node_event(), release_artifacts(source_map=json.dumps(bare).encode()))
    crash = frames_of(processed)[-1]
    assert (crash["filename"], crash["lineno"]) == ("/src/orders.js", 9)
    assert "context_line" not in crash
    assert {e["type"] for e in processed.event["errors"]} == {"js_missing_sources_content"}


def test_inline_data_url_map_and_query_string_in_the_frame_url() -> None:
    source_map = base64.b64encode(fixture("build", "app.min.js.map")).decode()
    minified = fixture("build", "app.min.js").replace(
        b"//# sourceMappingURL=app.min.js.map",
        f"//# sourceMappingURL=data:application/json;base64,{source_map}".encode())
    artifacts = MemoryArtifacts()
    artifacts.add(Artifact("~/build/app.min.js", MINIFIED_SOURCE, minified), release=RELEASE)
    event = node_event()
    for frame in event["exception"]["values"][0]["stacktrace"]["frames"]:
        frame["abs_path"] = "https://shop.example.com/build/app.min.js?v=3"
    crash = frames_of(process(event, artifacts))[-1]
    assert (crash["abs_path"], crash["lineno"]) == ("https://shop.example.com/src/orders.js", 9)


def test_map_named_by_sourcemap_header() -> None:
    artifacts = MemoryArtifacts()
    stripped = fixture("build", "app.min.js").replace(b"//# sourceMappingURL=app.min.js.map", b"")
    artifacts.add(Artifact("~/build/app.min.js", MINIFIED_SOURCE, stripped,
                           {"Sourcemap": "maps/app.js.map"}), release=RELEASE)
    artifacts.add(Artifact("~/build/maps/app.js.map", SOURCE_MAP,
                           fixture("build", "app.min.js.map")), release=RELEASE)
    crash = frames_of(process(node_event(), artifacts))[-1]
    # The map's sources ("../src/orders.js") are relative to the map, not the bundle.
    assert crash["filename"] == "/build/src/orders.js"
    assert crash["data"]["sourcemap"] == "app:///build/maps/app.js.map"


def test_map_over_the_size_limit_is_not_parsed() -> None:
    caches = SourceMapCaches(10**8)
    symbolicator = JavaScriptSymbolicator(caches, SymbolicationLimits(max_map_bytes=100))
    event = symbolicator.symbolicate(node_event(), release_artifacts())
    [error] = event["errors"]
    assert error["type"] == "js_too_large" and "MAX_MAP_BYTES" in error["reason"]
    assert len(caches) == 0


def test_events_that_are_not_javascript_are_untouched() -> None:
    python_event = {
        "platform": "python", "event_id": "ab" * 16, "timestamp": 1796326421.5,
        "contexts": {"trace": {"trace_id": "cd" * 16, "span_id": "ef" * 8}},
        "exception": {"values": [{
        "type": "ValueError", "value": "x", "stacktrace": {"frames": [
            {"filename": "app/x.py", "abs_path": "/srv/app/x.py", "function": "f",
             "lineno": 3, "in_app": True}]}}]}}
    with_maps = process(python_event, release_artifacts())
    without = process(python_event, None)
    assert dict(with_maps.event) | {"received": 0} == dict(without.event) | {"received": 0}
    assert with_maps.grouping.hashes == without.grouping.hashes


def test_parsed_maps_are_cached_by_content_and_evicted_by_bytes() -> None:
    size = len(fixture("build", "app.min.js")) + len(fixture("build", "app.min.js.map"))
    caches = SourceMapCaches(max_bytes=size + 10)
    symbolicator = JavaScriptSymbolicator(caches)
    symbolicator.symbolicate(node_event(), release_artifacts())
    symbolicator.symbolicate(node_event(), release_artifacts())
    assert (caches.misses, caches.hits, len(caches)) == (1, 1, 1)
    symbolicator.symbolicate(node_event("build2"), release_artifacts("build2"))
    assert len(caches) == 1 and caches.bytes <= caches.max_bytes  # build1 evicted
    symbolicator.symbolicate(node_event(), release_artifacts())
    assert caches.misses == 3


@pytest.mark.parametrize(("base", "reference", "joined"), [
    ("app:///build/app.min.js", "app.min.js.map", "app:///build/app.min.js.map"),
    ("app:///build/app.min.js.map", "../src/a.js", "app:///src/a.js"),
    ("https://cdn.example.com/js/app.js", "/maps/app.map", "https://cdn.example.com/maps/app.map"),
    ("https://cdn.example.com/js/app.js", "//other.example.com/m.map",
     "https://other.example.com/m.map"),
    ("/srv/app/dist/main.js", "main.js.map", "/srv/app/dist/main.js.map"),
    ("app:///a.js", "webpack:///./src/x.js", "webpack:///./src/x.js"),
])
def test_join_url(base: str, reference: str, joined: str) -> None:
    assert join_url(base, reference) == joined


@pytest.mark.parametrize(("abs_path", "shown"), [
    ("webpack:///./src/x.js", "./src/x.js"),
    ("webpack://shop-app/./src/cart.js", "./src/cart.js"),  # webpack 5's namespace
    ("webpack://@acme/shop/./src/cart.js", "@acme/shop/./src/cart.js"),  # not a namespace
    ("webpack:///~/lodash/index.js", "~/lodash/index.js"),
    ("webpack:///_N_E/./pages/a.js", "./pages/a.js"),
    ("https://cdn.example.com/js/app.js?v=3", "/js/app.js"),
    ("/srv/app/src/a.js", "/srv/app/src/a.js"),
])
def test_the_filename_a_resolved_frame_shows(abs_path: str, shown: str) -> None:
    assert display_filename(abs_path) == shown


def test_artifact_names_tried_for_a_url() -> None:
    assert candidate_urls("https://h.example/static/app.js?v=2") == [
        "https://h.example/static/app.js?v=2", "https://h.example/static/app.js",
        "~/static/app.js?v=2", "~/static/app.js"]
    assert normalize_debug_id("C7D3A3B26F1E4B7A9D390A1B2C3D4E5F") == DEBUG_ID


def test_artifacts_come_from_the_events_own_organization_and_project() -> None:
    asked: list[tuple[int, int]] = []

    def artifacts_for(organization_id: int, project_id: int) -> ArtifactSource:
        asked.append((organization_id, project_id))
        return release_artifacts() if (organization_id, project_id) == (ORG, PROJECT) \
            else MemoryArtifacts()

    symbolication = ProjectSymbolication(artifacts_for, default_handlers(SourceMapCaches(10**8)))
    mine = symbolication(node_event(), PROJECT, ORG)
    other = symbolication(node_event(), PROJECT + 1, ORG)
    assert mine["exception"]["values"][0]["stacktrace"]["frames"][-1]["lineno"] == 9
    assert [e["type"] for e in other["errors"]] == ["js_no_source"]
    assert asked == [(ORG, PROJECT), (ORG, PROJECT + 1)]


class BrokenArtifacts:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def by_debug_id(self, debug_id: str, kind: str) -> Artifact | None:
        raise self.error

    def by_url(self, release: str | None, dist: str | None, url: str, kind: str
               ) -> Artifact | None:
        raise self.error


def test_a_failing_handler_keeps_the_event_and_says_why() -> None:
    from actors.symbolicate import LocalSymbolication, SymbolicationConfig

    local = LocalSymbolication(SymbolicationConfig(
        lambda org, project: BrokenArtifacts(RuntimeError("parser bug"))))
    event = local(node_event(), PROJECT, ORG)
    assert event["exception"] == node_event()["exception"]
    assert event["errors"] == [{"type": "symbolication_failed",
                                "reason": "RuntimeError: parser bug"}]
    assert local.failures == 1


def test_an_artifact_store_outage_is_retried_not_swallowed() -> None:
    from actors.symbolicate import LocalSymbolication, SymbolicationConfig
    from storage.errors import StorageError

    local = LocalSymbolication(SymbolicationConfig(
        lambda org, project: BrokenArtifacts(StorageError("PostgreSQL is down"))))
    with pytest.raises(StorageError):
        local(node_event(), PROJECT, ORG)


def test_one_build_is_symbolicated_on_one_shard() -> None:
    from actors.symbolicate import shard_for

    def with_debug_id(release: str) -> dict[str, Any]:
        return node_event(release=release, debug_meta={"images": [
            {"type": "sourcemap", "code_file": "app:///a.js", "debug_id": DEBUG_ID}]})

    shards = {shard_for(with_debug_id(f"r{n}"), PROJECT, 8) for n in range(20)}
    assert len(shards) == 1
    by_release = {shard_for(node_event(release=f"r{n}"), PROJECT, 8) for n in range(20)}
    assert len(by_release) > 1  # releases spread over the shards
    assert shard_for(node_event(release="r1"), PROJECT, 8) == shard_for(
        node_event(release="r1"), PROJECT, 8)


def test_unminified_node_files_with_their_own_context_need_no_map() -> None:
    event = node_event()
    frames = event["exception"]["values"][0]["stacktrace"]["frames"]
    for frame in frames:
        frame.update(abs_path="/srv/app/server.js", context_line="  handle(req);")
    processed = process(event, MemoryArtifacts())
    assert not processed.event.get("errors")
    assert frames_of(processed)[-1]["context_line"] == "  handle(req);"
    # A minified file whose map is missing still says so, context or not.
    artifacts = MemoryArtifacts()
    artifacts.add(Artifact("/srv/app/server.js", MINIFIED_SOURCE,
                           b"x()\n//# sourceMappingURL=server.js.map\n"), release=RELEASE)
    [error] = process(event, artifacts).event["errors"]
    assert error["sourcemap"] == "/srv/app/server.js.map"
