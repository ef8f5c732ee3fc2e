"""Source maps applied by a real consumer before grouping, in its own process and through
the symbolication actors: what a user reads through the API is the original code, two
minified builds of one source are one issue, and an event whose map is missing is stored
as sent, with the reason. Real PostgreSQL, the real ClickHouse engine, real Ray for the
actors; the artifacts come from an in-memory ``ArtifactSource`` (the upload side, and its
``storage.artifacts.ProjectArtifacts``, are tested on their own)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.symbolicate import (
    ShardedSymbolication,
    SymbolicationConfig,
    start_symbolicators,
    symbolicator_name,
)
from events.artifacts import MINIFIED_SOURCE, SOURCE_MAP, Artifact, MemoryArtifacts
from events.symbolicate import JS_PLATFORMS
from storage.clickhouse import ClickHouseStore
from tests.integration.conftest import RunningCrashray
from tests.integration.consumer_harness import Harness, harness

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "fixtures" / "sourcemaps"
RELEASE = "shop@2.0.0"


@pytest.fixture
def h(chdb_store: ClickHouseStore) -> Iterator[Harness]:
    yield from harness(chdb_store, "crashray_symbolication")


def project_artifacts(organization_id: int, project_id: int, for_org: int, for_project: int
                      ) -> MemoryArtifacts:
    """Both fixture builds, uploaded as release files of one project only."""
    artifacts = MemoryArtifacts()
    if (organization_id, project_id) != (for_org, for_project):
        return artifacts
    for build in ("build", "build2"):
        for name, kind in (("app.min.js", MINIFIED_SOURCE), ("app.min.js.map", SOURCE_MAP)):
            artifacts.add(Artifact(f"~/{build}/{name}", kind, (FIXTURES / build / name)
                                   .read_bytes()), release=RELEASE)
    return artifacts


def config_for(h: Harness) -> SymbolicationConfig:
    return SymbolicationConfig(functools.partial(
        project_artifacts, for_org=h.organization_id, for_project=h.project_id))


def node_event(build: str, release: str = RELEASE) -> dict[str, Any]:
    thrown = json.loads((FIXTURES / build / "exception.json").read_bytes())
    return {"platform": "node", "release": release, "level": "error",
            "exception": {"values": [{"type": thrown["type"], "value": thrown["value"],
                                      "stacktrace": {"frames": thrown["frames"]}}]}}


def stored_event(h: Harness, event_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = h.get(
        f"/projects/{h.organization_slug}/{h.project_slug}/events/{event_id}/")
    return shown


def crash_frame(shown: dict[str, Any]) -> dict[str, Any]:
    exception = next(e for e in shown["entries"] if e["type"] == "exception")
    frame: dict[str, Any] = exception["data"]["values"][0]["stacktrace"]["frames"][-1]
    return frame


def drive(h: Harness, consumer_config: dict[str, Any], **extra: Any) -> list[str]:
    """Two builds of the app and one event of a release without maps, through a consumer."""
    items = [h.event_item(node_event("build")), h.event_item(node_event("build2")),
             h.event_item(node_event("build", release="shop@0.9.0"))]
    h.enqueue(items)
    consumer = h.consumer(**consumer_config, **extra)
    while consumer.run_once():
        pass
    return [str(i.event_id) for i in items]


def assert_symbolicated(h: Harness, event_ids: list[str]) -> None:
    first, second, unmapped = (stored_event(h, e) for e in event_ids)
    for shown in (first, second):
        frame = crash_frame(shown)
        assert (frame["filename"], frame["lineNo"]) == ("/src/orders.js", 9)
        assert [9, '      throw new TypeError("unknown coupon " + coupon);'] in frame["context"]
        exception = next(e for e in shown["entries"] if e["type"] == "exception")
        raw = exception["data"]["values"][0]["rawStacktrace"]["frames"][-1]
        assert raw["lineNo"] == 1 and raw["absPath"].endswith("/app.min.js")
    assert first["groupID"] == second["groupID"]
    assert crash_frame(unmapped)["filename"] in ("app:///build/app.min.js", "/build/app.min.js")
    assert [e["type"] for e in unmapped["errors"]] == ["js_no_source"]
    assert unmapped["groupID"] != first["groupID"]
    assert len(h.issues()) == 2


def test_consumer_symbolicates_before_grouping_in_its_own_process(h: Harness) -> None:
    event_ids = drive(h, {"symbolication": config_for(h)})
    assert_symbolicated(h, event_ids)


def test_without_symbolication_minified_builds_stay_apart(h: Harness) -> None:
    first, second, _ = (stored_event(h, e) for e in drive(h, {}))
    assert crash_frame(first)["lineNo"] == 1
    assert first["groupID"] != second["groupID"]
    assert not first.get("errors")


def test_symbolication_actors_resolve_for_the_consumer(crashray: RunningCrashray,
                                                       h: Harness) -> None:
    config = config_for(h)
    actors = start_symbolicators(2, config)
    try:
        sharded = ShardedSymbolication(actors, JS_PLATFORMS)
        items = [h.event_item(node_event("build")), h.event_item(node_event("build2")),
                 h.event_item(node_event("build", release="shop@0.9.0"))]
        h.enqueue(items)
        consumer = h.consumer(symbolicator=sharded, symbolication=config)
        while consumer.run_once():
            pass
        assert_symbolicated(h, [str(i.event_id) for i in items])
        stats = ray.get([a.stats.remote() for a in actors])
        assert sum(s["misses"] for s in stats) == 2  # each build parsed once, on one actor
    finally:
        for i in range(2):
            ray.kill(ray.get_actor(symbolicator_name(i), namespace="crashray"))
