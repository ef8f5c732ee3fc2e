"""Content-Security-Policy reports from a real browser: Debian's Chromium (driven by Playwright)
loads a page served by this test whose policy blocks a script, and Chromium itself sends the
violation report to a running ``crashray up``. Nothing here builds a report: the body, its
Content-Type and the User-Agent are Chromium's own, and the tests assert they became ``csp``
events and an issue, read back through the Web API with the token ``crashray up`` printed.

* ``report-uri``: Chromium POSTs ``application/csp-report`` straight to
  ``http://127.0.0.1:<port>/api/<project>/security/?sentry_key=…`` at once (headless too).
* ``report-to`` (Reporting API, ``application/reports+json``): observed with Chromium 156 on
  this machine, Chromium delivers these only to an https endpoint; for an
  ``http://127.0.0.1`` endpoint nothing arrived within 40 s, with or without
  ``--short-reporting-delay``. So the page and the endpoint are served over TLS by this test,
  which forwards ``/api/`` requests unchanged to Crashray (as the TLS proxy in front of Relay
  does in self-hosted Sentry) and records Crashray's answer. ``--ignore-certificate-errors``
  accepts the test's self-signed certificate; ``--short-reporting-delay`` makes Chromium send
  at once instead of within about a minute.
"""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.conftest import CrashrayProcess
from tests.support import wait_until

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
REPORT_TIMEOUT_S = 30

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(),
                                    reason="apt-get install chromium (.ci/run does)")


@dataclass
class Site:
    """What the test's web server serves and what it saw."""

    headers_for_page: Callable[[int], dict[str, str]]
    scheme: str = "http"
    forward_to: str | None = None
    forwarded: list[tuple[str, str, int, bytes]] = field(default_factory=list)
    port: int = 0


def handler_for(site: Site) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.startswith("/blocked-"):  # never loaded: the policy blocks it
                self._answer(200, {"Content-Type": "text/javascript"}, b"window.ran = 1;")
                return
            marker = self.path.strip("/")
            page = (f'<html><body><script src="{site.scheme}://localhost:{site.port}/'
                    f'blocked-{marker}.js"></script>CSP test</body></html>').encode()
            self._answer(200, {"Content-Type": "text/html", **site.headers_for_page(site.port)},
                         page)

        def do_POST(self) -> None:
            self._forward()

        def do_OPTIONS(self) -> None:
            self._forward()

        def _forward(self) -> None:
            """Hand an /api/ request to Crashray as it came, and Crashray's answer back."""
            assert site.forward_to is not None
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            passed = {k: v for k, v in self.headers.items()
                      if k.lower() not in ("host", "content-length", "connection")}
            answer = httpx.request(self.command, site.forward_to + self.path, content=body,
                                   headers=passed, timeout=10)
            site.forwarded.append((self.command, self.headers.get("Content-Type", ""),
                                   answer.status_code, answer.content))
            self._answer(answer.status_code, {k: v for k, v in answer.headers.items()
                                              if k.lower().startswith("access-control")},
                         answer.content)

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def serve_site(tmp_path: Path) -> Iterator[Callable[[Site], Site]]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(site: Site) -> Site:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler_for(site))
        if site.scheme == "https":
            server.socket = tls_context(tmp_path).wrap_socket(server.socket, server_side=True)
        site.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return site

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def tls_context(directory: Path) -> ssl.SSLContext:
    """A self-signed certificate for 127.0.0.1 and localhost, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed for the TLS endpoint")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--ignore-certificate-errors", "--short-reporting-delay"])
        yield browser
        browser.close()


def dsn_parts(c: CrashrayProcess) -> tuple[str, str]:
    """(public key, project id) of the DSN ``crashray up`` printed."""
    parts = urlsplit(c.dsn)
    assert parts.username is not None
    return parts.username, parts.path.strip("/")


def api(c: CrashrayProcess, path: str) -> Any:
    response = httpx.get(f"{c.base_url}/api/0/{path}", timeout=10,
                         headers={"Authorization": f"Bearer {c.token}"})
    response.raise_for_status()
    return response.json()


def events_blocking(c: CrashrayProcess, blocked_uri: str) -> list[dict[str, Any]]:
    return [e for e in api(c, "projects/crashray/default/events/")
            if {"key": "blocked-uri", "value": blocked_uri} in e["tags"]]


def load(browser: Any, url: str) -> list[str]:
    """Open ``url`` in a fresh context; the console errors Chromium logged."""
    context = browser.new_context()
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.goto(url)
    page.wait_for_timeout(300)
    context.close()
    return console


@needs_chromium
def test_csp_report_chromium_sends_through_report_uri_is_stored_as_a_csp_issue(
        crashray_up: CrashrayProcess, chromium: Any, serve_site: Callable[[Site], Site]
        ) -> None:
    key, project = dsn_parts(crashray_up)
    marker = uuid.uuid4().hex[:10]
    endpoint = (f"{crashray_up.base_url}/api/{project}/security/?sentry_key={key}"
                f"&sentry_release=csp-e2e%40{marker}&sentry_environment=e2e")
    site = serve_site(Site(lambda _: {
        "Content-Security-Policy": f"script-src 'self'; report-uri {endpoint}"}))
    page_url = f"http://127.0.0.1:{site.port}/{marker}"
    blocked = f"http://localhost:{site.port}/blocked-{marker}.js"
    for _ in range(2):  # the same violation twice
        console = load(chromium, page_url)
        assert any("violates the following Content Security Policy" in m for m in console)

    events = wait_until(lambda: len(e := events_blocking(crashray_up, blocked)) == 2 and e,
                        REPORT_TIMEOUT_S, "Chromium's two reports stored")
    assert {e["title"] for e in events} == {f"Blocked 'script' from 'localhost:{site.port}'"}
    assert len({e["groupID"] for e in events}) == 1
    detail = api(crashray_up, f"projects/crashray/default/events/{events[0]['id']}/")
    assert detail["type"] == "csp" and detail["culprit"] == "script-src-elem"
    assert (detail["release"], detail["environment"]) == (f"csp-e2e@{marker}", "e2e")
    assert detail["contexts"]["browser"]["name"] == "HeadlessChrome"  # Chromium's User-Agent
    issue = api(crashray_up, f"issues/{events[0]['groupID']}/")
    assert issue["title"] == f"Blocked 'script' from 'localhost:{site.port}'"
    assert int(issue["count"]) == 2


@needs_chromium
def test_csp_report_chromium_sends_through_the_reporting_api_is_stored(
        crashray_up: CrashrayProcess, chromium: Any, serve_site: Callable[[Site], Site]
        ) -> None:
    key, project = dsn_parts(crashray_up)
    marker = uuid.uuid4().hex[:10]
    site = serve_site(Site(lambda port: {
        "Reporting-Endpoints": f'csp="https://127.0.0.1:{port}/api/{project}/security/'
                               f'?sentry_key={key}&sentry_release=csp-e2e%40{marker}"',
        "Content-Security-Policy": "script-src 'self'; report-to csp"},
        scheme="https", forward_to=crashray_up.base_url))
    blocked = f"https://localhost:{site.port}/blocked-{marker}.js"
    load(chromium, f"https://127.0.0.1:{site.port}/{marker}")

    events = wait_until(lambda: events_blocking(crashray_up, blocked), REPORT_TIMEOUT_S,
                        "Chromium's Reporting API report stored")
    posts = [f for f in site.forwarded if f[0] == "POST"]
    assert posts and posts[0][1] == "application/reports+json"
    assert (posts[0][2], posts[0][3]) == (200, b"")  # Crashray's answer, as Relay's
    assert events[0]["title"] == f"Blocked 'script' from 'localhost:{site.port}'"
    detail = api(crashray_up, f"projects/crashray/default/events/{events[0]['id']}/")
    assert detail["type"] == "csp" and detail["release"] == f"csp-e2e@{marker}"
