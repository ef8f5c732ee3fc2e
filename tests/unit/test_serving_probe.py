"""How ``crashray up`` tells that its port answers before it prints the DSN
(cluster/runtime.py ``wait_until_serving``): ``/healthz`` on this machine through the port
Serve's proxy listens on, 200 only. Against a real HTTP server on a free port, no Ray."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from cluster.runtime import answers, local_probe_url


class Statuses(http.server.BaseHTTPRequestHandler):
    #: What the next requests are answered, in order (then 200).
    statuses: ClassVar[list[int]] = []

    def do_GET(self) -> None:
        status = self.statuses.pop(0) if self.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Statuses)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_only_a_200_counts_as_answering(server: int) -> None:
    url = local_probe_url("127.0.0.1", server)
    Statuses.statuses = [503, 404]  # Serve's proxy before the route and replica are up
    assert not answers(url)
    assert not answers(url)
    assert answers(url)


def test_a_closed_port_does_not_answer(server: int) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # bound, never listening: refused
        assert not answers(local_probe_url("127.0.0.1", closed), timeout_s=0.5)


def test_the_probe_goes_to_this_machine_for_a_wildcard_host() -> None:
    assert local_probe_url("0.0.0.0", 9000) == "http://127.0.0.1:9000/healthz"
    assert local_probe_url("10.1.2.3", 9000) == "http://10.1.2.3:9000/healthz"


def test_the_probe_ignores_http_proxy_settings(server: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's HTTP_PROXY must not send the local probe elsewhere (a closed port here)."""
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    Statuses.statuses = []
    assert answers(local_probe_url("127.0.0.1", server))
