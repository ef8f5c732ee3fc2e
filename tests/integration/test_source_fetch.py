"""Source fetching end to end: a browser event whose bundle was never uploaded is
symbolicated from the bundle and map a real HTTP server on loopback serves, once the
project allows that server through its settings (``allowedDomains``/``scrapeJavaScript`` set
through the API), by a real consumer, before grouping; what a user reads through the API
is the original code. Off by default, a host not allowed, a file over the size limit and a
slow server each leave the event minified with the reason, without hanging the consumer.
Real PostgreSQL, the real ClickHouse engine (chDB), no Ray."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.symbolicate import SymbolicationConfig
from events.artifacts import ArtifactSource, MemoryArtifacts
from events.source_fetch import FetchConfig, FetchingArtifacts, SourceFetcher
from events.symbolicate import JavaScriptSymbolicator, SourceMapCaches
from storage import postgres, tenancy
from storage.clickhouse import ClickHouseStore
from storage.source_fetch_settings import fetching_artifacts_for
from tests.integration.consumer_harness import Harness, harness
from tests.source_server import SourceServer, source_server

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "fixtures" / "sourcemaps"
#: Loopback is private: only a test may fetch from it (CRASHRAY_SOURCE_FETCH_ALLOW_PRIVATE).
FETCH = FetchConfig(allow_private=True, settings_refresh_s=0.0, cache_ttl_s=0.0,
                    failure_ttl_s=0.0)


@pytest.fixture
def h(chdb_store: ClickHouseStore) -> Iterator[Harness]:
    yield from harness(chdb_store, "crashray_source_fetch")


@pytest.fixture
def server() -> Iterator[SourceServer]:
    with source_server() as s:
        yield s


def no_uploads(organization_id: int, project_id: int) -> ArtifactSource:
    return MemoryArtifacts()


def serve_build(server: SourceServer, **route: Any) -> str:
    """The esbuild fixture bundle and its map at /build/; the bundle's URL."""
    server.serve("/build/app.min.js.map", (FIXTURES / "build" / "app.min.js.map").read_bytes())
    return server.serve("/build/app.min.js", (FIXTURES / "build" / "app.min.js").read_bytes(),
                        **route)


def browser_event(bundle_url: str) -> dict[str, Any]:
    """The fixture's exception as the browser SDK sends it: URLs, no source lines."""
    thrown = json.loads((FIXTURES / "build" / "exception.json").read_bytes())
    frames = [{**f, "abs_path": bundle_url} for f in thrown["frames"]]
    return {"platform": "javascript", "level": "error",
            "exception": {"values": [{"type": thrown["type"], "value": thrown["value"],
                                      "stacktrace": {"frames": frames}}]}}


def put_settings(h: Harness, body: dict[str, Any], token: str | None = None) -> Any:
    return h.api.put(f"/projects/{h.organization_slug}/{h.project_slug}/", json=body,
                     headers={"Authorization": f"Bearer {token or h.token}"})


def process(h: Harness, event: dict[str, Any]) -> dict[str, Any]:
    """``event`` through a consumer symbolicating with fetching; as the API shows it."""
    item = h.event_item(event)
    h.enqueue([item])
    config = SymbolicationConfig(functools.partial(fetching_artifacts_for, no_uploads,
                                                   h.url, FETCH))
    consumer = h.consumer(symbolication=config)
    while consumer.run_once():
        pass
    shown: dict[str, Any] = h.get(f"/projects/{h.organization_slug}/{h.project_slug}"
                                  f"/events/{item.event_id}/")
    return shown


def crash_frame(shown: dict[str, Any]) -> dict[str, Any]:
    exception = next(e for e in shown["entries"] if e["type"] == "exception")
    frame: dict[str, Any] = exception["data"]["values"][0]["stacktrace"]["frames"][-1]
    return frame


def test_a_browser_event_is_symbolicated_from_fetched_sources(h: Harness,
                                                              server: SourceServer) -> None:
    bundle = serve_build(server)
    assert put_settings(h, {"allowedDomains": ["127.0.0.1"], "scrapeJavaScript": True}
                        ).status_code == 200
    shown = process(h, browser_event(bundle))
    frame = crash_frame(shown)
    assert (frame["filename"], frame["lineNo"]) == ("/src/orders.js", 9)
    assert frame["absPath"] == f"{server.base_url}/src/orders.js"
    assert [9, '      throw new TypeError("unknown coupon " + coupon);'] in frame["context"]
    assert not shown["errors"]
    assert server.count("/build/app.min.js") == 1 and server.count("/build/app.min.js.map") == 1


def test_fetching_is_off_by_default(h: Harness, server: SourceServer) -> None:
    bundle = serve_build(server)
    settings = h.get(f"/projects/{h.organization_slug}/{h.project_slug}/")
    assert (settings["allowedDomains"], settings["scrapeJavaScript"]) == ([], False)
    shown = process(h, browser_event(bundle))
    assert crash_frame(shown)["lineNo"] == 1
    assert [e["type"] for e in shown["errors"]] == ["js_no_source"]
    # Allowed domains alone do not turn it on: scrapeJavaScript must be set too.
    put_settings(h, {"allowedDomains": ["127.0.0.1"]})
    process(h, browser_event(bundle))
    assert server.requests == []


def test_a_host_not_allowed_is_not_fetched_and_the_event_says_why(
        h: Harness, server: SourceServer) -> None:
    bundle = serve_build(server)
    put_settings(h, {"allowedDomains": ["cdn.example.com"], "scrapeJavaScript": True})
    shown = process(h, browser_event(bundle))
    [error] = shown["errors"]
    assert error["type"] == "security_violation"
    assert "127.0.0.1 is not among the project's allowed domains" in error["data"]["reason"]
    assert crash_frame(shown)["lineNo"] == 1
    assert server.requests == []


def test_unminified_javascript_gets_context_lines_from_the_fetched_file(
        h: Harness, server: SourceServer) -> None:
    lines = [f"// line {i}" for i in range(1, 20)]
    lines[9] = "  checkout(cart); // line 10"
    url = server.serve("/js/shop.js", "\n".join(lines).encode())
    put_settings(h, {"allowedDomains": ["*"], "scrapeJavaScript": True})
    event = browser_event(url)
    event["exception"]["values"][0]["stacktrace"]["frames"] = [
        {"function": "checkout", "abs_path": url, "lineno": 10, "colno": 3, "in_app": True}]
    shown = process(h, event)
    frame = crash_frame(shown)
    assert (frame["filename"], frame["lineNo"]) == ("/js/shop.js", 10)
    context = dict(frame["context"])
    assert context[10] == "  checkout(cart); // line 10"
    assert context[5] == "// line 5" and context[15] == "// line 15"
    assert not shown["errors"]  # plain source needs no map


def symbolicate_fetching(event: dict[str, Any], config: FetchConfig) -> dict[str, Any]:
    fetching = FetchingArtifacts(MemoryArtifacts(), SourceFetcher(config), ["127.0.0.1"])
    return JavaScriptSymbolicator(SourceMapCaches(10**8)).symbolicate(event, fetching)


def test_a_map_over_the_size_limit_is_a_processing_error(server: SourceServer) -> None:
    bundle = serve_build(server)
    event = symbolicate_fetching(browser_event(bundle),
                                 FetchConfig(max_bytes=1500, allow_private=True))
    [error] = event["errors"]  # the bundle (852 bytes) is fetched, its map (1983) is not
    assert error["type"] == "fetch_too_large"
    assert error["url"] == f"{server.base_url}/build/app.min.js.map"
    assert "CRASHRAY_SOURCE_FETCH_MAX_BYTES (1500)" in error["reason"]
    frames = event["exception"]["values"][0]["stacktrace"]["frames"]
    assert frames[-1]["lineno"] == 1


def test_a_slow_server_is_cut_off_at_the_timeout(server: SourceServer) -> None:
    # 852 bytes, 100 every 0.3 s: each read is quick, the whole takes about 2.7 s; the
    # fetch may take 1 s in all.
    bundle = serve_build(server, drip_s=0.3, chunk_bytes=100)
    started = time.monotonic()
    event = symbolicate_fetching(browser_event(bundle),
                                 FetchConfig(timeout_s=1.0, allow_private=True))
    elapsed = time.monotonic() - started
    [error] = event["errors"]
    assert error["type"] == "fetch_timeout"
    assert "CRASHRAY_SOURCE_FETCH_TIMEOUT_S (1 s)" in error["reason"]
    assert elapsed < 5.0, "the fetch waited for the whole slow body"


def test_the_sourcemap_header_names_the_map_of_a_fetched_bundle(server: SourceServer) -> None:
    stripped = (FIXTURES / "build" / "app.min.js").read_bytes().replace(
        b"//# sourceMappingURL=app.min.js.map", b"")
    server.serve("/maps/app.js.map", (FIXTURES / "build" / "app.min.js.map").read_bytes())
    bundle = server.serve("/build/app.min.js", stripped,
                          headers={"SourceMap": "/maps/app.js.map"})
    event = symbolicate_fetching(browser_event(bundle), FetchConfig(allow_private=True))
    crash = event["exception"]["values"][0]["stacktrace"]["frames"][-1]
    assert crash["lineno"] == 9 and crash["data"]["sourcemap"].endswith("/maps/app.js.map")


def test_source_fetch_settings_through_the_api(h: Harness) -> None:
    path = f"/projects/{h.organization_slug}/{h.project_slug}/"
    bad = put_settings(h, {"allowedDomains": ["cdn.example.com", "exa mple.com"]})
    assert bad.status_code == 400
    assert "allowedDomains" in bad.json()["detail"] and "exa mple.com" in bad.json()["detail"]
    wrong_type = put_settings(h, {"scrapeJavaScript": "sometimes"})
    assert wrong_type.status_code == 400 and "scrapeJavaScript" in wrong_type.json()["detail"]
    done = put_settings(h, {"allowedDomains": [" CDN.Example.com ", "*.example.org"],
                            "scrapeJavaScript": True}).json()
    assert (done["allowedDomains"], done["scrapeJavaScript"]) == (
        ["cdn.example.com", "*.example.org"], True)
    assert h.get(path)["allowedDomains"] == ["cdn.example.com", "*.example.org"]
    # Another organization's token cannot see or change the project.
    with postgres.connect(h.url) as conn:
        evil = tenancy.create_organization(conn, f"evil-{h.project_id}", "Evil", None)
        token = tenancy.create_token(conn, "evil", ["project:read", "project:write"],
                                     org_id=evil)
        conn.commit()
    stolen = put_settings(h, {"allowedDomains": ["*"]}, token=token)
    assert stolen.status_code == 404
    assert h.get(path)["allowedDomains"] == ["cdn.example.com", "*.example.org"]
