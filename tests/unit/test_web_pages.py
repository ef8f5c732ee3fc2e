"""The dashboard's pages and the health probes as the ingest replicas answer them
(serve_apps/web.py), and which paths are ingest's: pure, no Serve (the running instance's
pages are checked in tests/e2e/test_dashboard.py and tests/integration/test_health.py)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from starlette.requests import Request
from starlette.responses import Response

from serve_apps.ingest_http import is_ingest_path
from serve_apps.web import DashboardPages


def answer(pages: DashboardPages, method: str, path: str,
           headers: dict[str, str] | None = None) -> Response:
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
    return asyncio.run(pages.answer(Request(scope)))


@pytest.fixture(scope="module")
def pages() -> DashboardPages:
    return DashboardPages(None)


@pytest.mark.parametrize(("path", "ingest"), [
    ("/api", True), ("/api/1/envelope/", True), ("/api/0/projects/", True),
    ("/", False), ("/apiary", False), ("/static/app.js", False), ("/readyz", False)])
def test_ingest_takes_api_paths_and_leaves_the_rest_to_the_pages(path: str,
                                                                 ingest: bool) -> None:
    assert is_ingest_path(path) is ingest


def test_the_page_its_files_and_a_revalidation(pages: DashboardPages) -> None:
    index = answer(pages, "GET", "/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert b"<html" in index.body.lower()
    css = answer(pages, "GET", "/static/app.css")
    assert css.status_code == 200 and css.headers["content-type"] == "text/css; charset=utf-8"
    again = answer(pages, "GET", "/static/app.css", {"If-None-Match": css.headers["etag"]})
    assert again.status_code == 304 and again.body == b""
    icon = answer(pages, "HEAD", "/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg")


def test_what_is_not_there_or_not_allowed_says_so(pages: DashboardPages) -> None:
    for path in ("/static/../index.html", "/static/nope.js", "/nothing-here"):
        missing = answer(pages, "GET", path)
        assert missing.status_code == 404, path
        assert orjson.loads(missing.body)["detail"]
    posted = answer(pages, "POST", "/")
    assert posted.status_code == 405 and posted.headers["allow"] == "GET, HEAD"
    assert "GET" in orjson.loads(posted.body)["detail"]


def test_the_probes_without_and_with_their_settings(pages: DashboardPages) -> None:
    health = answer(pages, "GET", "/healthz")
    assert (health.status_code, orjson.loads(health.body)) == (200, {"status": "ok"})
    assert health.headers["cache-control"] == "no-store"
    unready = answer(pages, "GET", "/readyz")
    assert unready.status_code == 503
    assert "health settings" in orjson.loads(unready.body)["detail"]
