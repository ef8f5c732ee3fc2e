"""A real HTTP server on loopback for source fetching tests (http.server in a thread on a
free port): serves fixed routes, can trickle a body or leave out its length, and counts the
requests it gets."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before each ``chunk_bytes`` of the body (a slow server).
    drip_s: float = 0.0
    chunk_bytes: int = 100
    #: Send ``Content-Length`` (without it, the body ends when the connection closes).
    declare_length: bool = True


@dataclass
class SourceServer:
    base_url: str
    routes: dict[str, Route]
    requests: list[str]

    def serve(self, path: str, body: bytes, **route: object) -> str:
        self.routes[path] = Route(body, **route)  # type: ignore[arg-type]
        return self.base_url + path

    def count(self, path: str) -> int:
        return sum(1 for p in self.requests if p == path)


@contextmanager
def source_server(tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
                  ) -> Iterator[SourceServer]:
    """The server; with ``tls`` (a server context holding its certificate) on https, its
    URLs naming ``host``."""
    routes: dict[str, Route] = {}
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            route = routes.get(self.path, Route(b"not found", status=404))
            self.send_response(route.status)
            for name, value in route.headers.items():
                self.send_header(name, value)
            if route.declare_length:
                self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            try:
                for start in range(0, len(route.body), route.chunk_bytes):
                    if route.drip_s:
                        time.sleep(route.drip_s)
                    self.wfile.write(route.body[start:start + route.chunk_bytes])
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass  # the fetcher gave up, as it should

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        scheme = "http" if tls is None else "https"
        yield SourceServer(f"{scheme}://{host}:{server.server_address[1]}", routes, requests)
    finally:
        server.shutdown()
        server.server_close()
