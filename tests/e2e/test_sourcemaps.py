"""Source maps as a user uploads them: esbuild bundles and minifies a small app, the real
``sentry-cli`` 3.8.2 injects debug ids and uploads the output to a running ``crashray up``,
and the stored files are found by debug id and by URL as symbolication looks them up; the
real ``@sentry/node``, and the real ``@sentry/browser`` in Debian's Chromium (driven by
Playwright) on a page bundled by esbuild and by webpack, then throw from the minified code
and the stored event shows the original file, line, function and source line."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from storage.artifacts import ProjectArtifacts
from tests.e2e.conftest import CrashrayProcess, start_crashray, stop_crashray
from tests.support import free_port, scratch_database

pytestmark = pytest.mark.e2e

APP_DIR = Path(__file__).parent / "sourcemaps"
ESBUILD = APP_DIR / "node_modules" / ".bin" / "esbuild"
#: sentry-cli 2.x (npm @sentry/cli), for the release-files flow 3.x no longer has.
SENTRY_CLI_2 = APP_DIR / "node_modules" / ".bin" / "sentry-cli"
NODE_DIR = Path(__file__).parent / "node"
WEBPACK_BUILD = APP_DIR / "webpack.build.js"
CHROMIUM = Path("/usr/bin/chromium")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists() and os.environ.get("CI") != "true",
    reason="apt-get install chromium (.ci/run does)")
#: The shop page: the bundle reads the DSN and release from the globals set before it.
SHOP_PAGE = """<!doctype html><html><head><title>shop</title></head><body>
<button id="buy" disabled>Buy</button> <span id="total"></span>
<script>window.CRASHRAY_DSN = {dsn}; window.CRASHRAY_RELEASE = {release};</script>
<script src="/static/app.min.js"></script></body></html>"""
#: Chunks this small make sentry-cli split the bundle (the default is 8 MiB).
CHUNK_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CrashrayProcess, str]]:
    """``crashray up`` on a scratch database of the machine's PostgreSQL, so the test can
    read what was stored (the embedded one is private to the instance)."""
    with scratch_database("crashray_e2e_sm") as url:
        running = start_crashray(tmp_path_factory.mktemp("sourcemaps"), free_port(), env={
            "CRASHRAY_POSTGRES_URL": url, "CRASHRAY_ARTIFACT_CHUNK_BYTES": str(CHUNK_BYTES)})
        try:
            yield running, url
        finally:
            assert stop_crashray(running) == 0, "".join(running.output[-40:])


def build(out_dir: Path) -> Path:
    """esbuild's minified bundle of the app plus a generated module of ~300 KB of
    incompressible data, so the upload takes several chunks."""
    src = out_dir / "src"
    shutil.copytree(APP_DIR / "src", src)
    (src / "data.js").write_text("export const DATA = " + json.dumps(
        [secrets.token_hex(16) for _ in range(10_000)]) + ";\n")
    (src / "app.js").write_text((src / "app.js").read_text()
                                + 'import { DATA } from "./data.js";\nexport { DATA };\n')
    dist = out_dir / "dist"
    subprocess.run([str(ESBUILD), str(src / "app.js"), "--bundle", "--minify", "--sourcemap",
                    "--platform=node", f"--outfile={dist / 'app.min.js'}"], check=True,
                   capture_output=True)
    return dist


def default_project_artifacts(running: CrashrayProcess, url: str) -> ProjectArtifacts:
    with psycopg.connect(url) as conn:
        org_id, project_id = conn.execute(
            "SELECT o.id, p.id FROM projects p JOIN organizations o ON o.id ="
            " p.organization_id WHERE o.slug = 'crashray' AND p.slug = 'default'").fetchone() \
            or (0, 0)
    return ProjectArtifacts(lambda: psycopg.connect(url), running.data_dir / "artifacts",
                            org_id, project_id)


def sentry_cli(c: CrashrayProcess, *args: str, binary: str = "sentry-cli") -> str:
    env = {**os.environ, "SENTRY_URL": c.base_url, "SENTRY_AUTH_TOKEN": c.token or "",
           "SENTRY_ORG": "crashray", "SENTRY_PROJECT": "default"}
    done = subprocess.run([binary, *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.skipif(not ESBUILD.exists(),
                    reason="run `npm ci` in tests/e2e/sourcemaps (.ci/run does)")
@pytest.mark.skipif(shutil.which("sentry-cli") is None,
                    reason="pip install sentry-cli==3.8.2 (the test extra has it)")
def test_sentry_cli_uploads_esbuild_output_and_the_files_are_found_by_debug_id(
        instance: tuple[CrashrayProcess, str], tmp_path: Path) -> None:
    running, url = instance
    assert "sentry-cli 3.8.2" in sentry_cli(running, "--version")
    dist = build(tmp_path)
    injected = sentry_cli(running, "sourcemaps", "inject", str(dist))
    debug_id = re.findall(r"([0-9a-f-]{36}) - \S*app\.min\.js\b", injected)[0]

    first = sentry_cli(running, "sourcemaps", "upload", "--release", "shop@2.1",
                       "--dist", "web", str(dist))
    assert "Uploaded files to Sentry" in first and "File processing complete" in first
    again = sentry_cli(running, "sourcemaps", "upload", "--release", "shop@2.1",
                       "--dist", "web", str(dist))
    assert "Nothing to upload, all files are on the server" in again

    found = default_project_artifacts(running, url)
    script = found.by_debug_id(debug_id, "minified_source")
    source_map = found.by_debug_id(debug_id, "source_map")
    assert script is not None and source_map is not None
    assert script.content == (dist / "app.min.js").read_bytes()
    assert json.loads(source_map.content)["debugId"] == debug_id
    assert len(script.content) + len(source_map.content) > 4 * CHUNK_BYTES
    assert found.by_url("shop@2.1", "web", "http://localhost:3000/app.min.js",
                        "source_map") is None  # the map is named ~/app.min.js.map
    by_url = found.by_url("shop@2.1", "web", "http://localhost:3000/app.min.js",
                          "minified_source")
    assert by_url is not None and by_url.content == script.content


@pytest.mark.skipif(not (ESBUILD.exists() and SENTRY_CLI_2.exists()),
                    reason="run `npm ci` in tests/e2e/sourcemaps (.ci/run does)")
def test_sentry_cli_2_uploads_release_files_found_by_release_dist_and_url(
        instance: tuple[CrashrayProcess, str], tmp_path: Path) -> None:
    running, url = instance
    cli2 = str(SENTRY_CLI_2)
    assert "sentry-cli 2.58.4" in sentry_cli(running, "--version", binary=cli2)
    dist = build(tmp_path)
    assert "Created release cart@1.0" in sentry_cli(running, "releases", "new", "-p",
                                                    "default", "cart@1.0", binary=cli2)
    uploaded = sentry_cli(running, "releases", "files", "cart@1.0", "upload-sourcemaps",
                          "--dist", "web", "--url-prefix", "~/static", str(dist), binary=cli2)
    assert "Upload type: single file/legacy upload" in uploaded
    assert "Finalized release cart@1.0" in sentry_cli(running, "releases", "finalize",
                                                      "cart@1.0", binary=cli2)
    listed = sentry_cli(running, "releases", "files", "cart@1.0", "list", binary=cli2)
    assert "~/static/app.min.js.map" in listed

    found = default_project_artifacts(running, url)
    script = found.by_url("cart@1.0", "web", "https://shop.example/static/app.min.js",
                          "minified_source")
    assert script is not None and script.content == (dist / "app.min.js").read_bytes()
    assert script.headers.get("sourcemap") == "app.min.js.map"
    source_map = found.by_url("cart@1.0", "web",
                              "https://shop.example/static/app.min.js.map", "source_map")
    assert source_map is not None and json.loads(source_map.content)["mappings"]
    assert found.by_url("cart@1.0", "other", "https://shop.example/static/app.min.js",
                        "minified_source") is None


def esbuild_cjs(out_dir: Path) -> Path:
    """The app as a minified CommonJS bundle for node (it throws while it loads)."""
    dist = out_dir / "dist"
    subprocess.run([str(ESBUILD), str(APP_DIR / "src" / "app.js"), "--bundle", "--minify",
                    "--sourcemap", "--platform=node", "--format=cjs",
                    f"--outfile={dist / 'app.min.js'}"], check=True, capture_output=True)
    return dist


def run_node_bundle(c: CrashrayProcess, bundle: Path, release: str) -> str:
    done = subprocess.run(["node", str(NODE_DIR / "run_bundle.js"), str(bundle)],
                          env={**os.environ, "CRASHRAY_DSN": c.dsn, "CRASHRAY_RELEASE": release},
                          capture_output=True, text=True, timeout=60, check=True)
    event_id: str = json.loads(done.stdout.strip().splitlines()[-1])
    return event_id.replace("-", "")


def stored_event(c: CrashrayProcess, event_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.get(f"{c.base_url}/api/0/projects/crashray/default/events/{event_id}/",
                             headers={"Authorization": f"Bearer {c.token}"}, timeout=10)
        if response.status_code == 200:
            event: dict[str, Any] = response.json()
            return event
        assert response.status_code == 404, response.text
        assert time.monotonic() < deadline, f"event {event_id} was not stored in {timeout_s} s"
        time.sleep(0.5)


def exception_value(event: dict[str, Any]) -> dict[str, Any]:
    entry = next(e for e in event["entries"] if e["type"] == "exception")
    value: dict[str, Any] = entry["data"]["values"][-1]
    return value


@pytest.mark.skipif(not (ESBUILD.exists() and (NODE_DIR / "node_modules").exists()),
                    reason="run `npm ci` in tests/e2e/sourcemaps and tests/e2e/node"
                           " (.ci/run does)")
@pytest.mark.skipif(shutil.which("sentry-cli") is None,
                    reason="pip install sentry-cli==3.8.2 (the test extra has it)")
def test_node_sdk_event_thrown_in_a_minified_bundle_shows_the_original_source(
        instance: tuple[CrashrayProcess, str], tmp_path: Path) -> None:
    running, _ = instance
    dist = esbuild_cjs(tmp_path)
    sentry_cli(running, "sourcemaps", "inject", str(dist))
    sentry_cli(running, "sourcemaps", "upload", "--release", "node-shop@1.0", str(dist))

    event = stored_event(running, run_node_bundle(running, dist / "app.min.js",
                                                  "node-shop@1.0"))
    value = exception_value(event)
    assert value["value"] == "cart is empty: nothing to check out"
    frames = value["stacktrace"]["frames"]
    top = frames[-1]
    assert top["filename"].endswith("src/cart.js"), top
    assert (top["function"], top["lineNo"]) == ("checkout", 4), top
    assert top["context"][[n for n, _ in top["context"]].index(4)][1].strip() \
        == 'throw new Error("cart is empty: nothing to check out");'
    assert any(f["filename"].endswith("src/app.js") and f["function"] == "main"
               for f in frames), frames
    raw = value["rawStacktrace"]["frames"]
    assert raw[-1]["filename"].endswith("app.min.js") and raw[-1]["lineNo"] != 4
    assert not [e for e in event.get("errors", []) if "app.min.js" in json.dumps(e)]


def bundle_browser_app(bundler: str, out_dir: Path) -> Path:
    """``src/browser.js`` (with @sentry/browser) bundled and minified by ``bundler``, with
    its source map, in ``out_dir/static``."""
    static = out_dir / "static"
    entry = APP_DIR / "src" / "browser.js"
    if bundler == "esbuild":
        command = [str(ESBUILD), str(entry), "--bundle", "--minify", "--sourcemap",
                   "--platform=browser", f"--outfile={static / 'app.min.js'}"]
    else:
        command = ["node", str(WEBPACK_BUILD), str(entry), str(static)]
    subprocess.run(command, check=True, capture_output=True, cwd=APP_DIR)
    return static


@pytest.fixture
def shop_site(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A static web server (another origin than Crashray's) for the shop page."""
    root = tmp_path / "site"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def click_buy_in_chromium(page_url: str) -> str:
    """Open the shop in Chromium, click Buy and return the event id @sentry/browser sent
    (read from the envelope request it made; the SDK sends sessions in others)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(page_url)
            page.wait_for_selector("#buy:not([disabled])", timeout=15_000)
            with page.expect_response(lambda r: "/envelope/" in r.url and
                                      '"type":"event"' in (r.request.post_data or ""),
                                      timeout=15_000) as sent:
                page.click("#buy")
            response = sent.value
            assert response.status == 200, response.text()
            header = json.loads((response.request.post_data or "").split("\n", 1)[0])
            return str(header["event_id"])
        finally:
            browser.close()


@needs_chromium
@pytest.mark.skipif(not (ESBUILD.exists() and WEBPACK_BUILD.exists()
                         and (APP_DIR / "node_modules" / "webpack").exists()),
                    reason="run `npm ci` in tests/e2e/sourcemaps (.ci/run does)")
@pytest.mark.skipif(shutil.which("sentry-cli") is None,
                    reason="pip install sentry-cli==3.8.2 (the test extra has it)")
@pytest.mark.parametrize("bundler", ["esbuild", "webpack"])
def test_browser_sdk_event_in_chromium_shows_the_original_source(
        instance: tuple[CrashrayProcess, str], shop_site: tuple[Path, str], bundler: str
        ) -> None:
    running, _ = instance
    root, site = shop_site
    release = f"web-shop-{bundler}@1.0"
    static = bundle_browser_app(bundler, root)
    sentry_cli(running, "sourcemaps", "inject", str(static))
    sentry_cli(running, "sourcemaps", "upload", "--release", release, str(static))
    (root / "index.html").write_text(SHOP_PAGE.format(dsn=json.dumps(running.dsn),
                                                      release=json.dumps(release)))

    event = stored_event(running, click_buy_in_chromium(f"{site}/index.html"))
    value = exception_value(event)
    assert value["value"] == "cart is empty: nothing to check out"
    frames = value["stacktrace"]["frames"]
    top = frames[-1]
    assert top["filename"] == "./src/cart.js" if bundler == "webpack" \
        else top["filename"].endswith("/src/cart.js"), top
    # terser (webpack's minifier) inlines ``checkout`` into the click handler: the code
    # that threw runs in an anonymous arrow function, the scope Sentry names too.
    function = {"esbuild": "checkout", "webpack": "<anonymous>"}[bundler]
    assert (top["function"], top["lineNo"], top["inApp"]) == (function, 4, True), top
    assert top["context"][[n for n, _ in top["context"]].index(4)][1].strip() \
        == 'throw new Error("cart is empty: nothing to check out");'
    assert any(f["filename"].endswith("src/browser.js") for f in frames), frames
    sdk_frames = [f for f in frames if "node_modules" in (f["absPath"] or "")]
    assert all(not f["inApp"] for f in sdk_frames)
    raw = value["rawStacktrace"]["frames"]
    assert raw[-1]["absPath"] == f"{site}/static/app.min.js", raw[-1]
