"""Source fetching: a frame's minified file and its source map read from the frame's URL
when no uploaded artifact matches (Sentry's "scraping", spec §8.1 step 4), for the hosts a
project allows only.

Pure but for HTTP (``http.client``); no Ray, no SQL. Off unless a project turns it on
(``scrapeJavaScript`` true and a non-empty ``allowedDomains``: storage/source_fetch_settings.py);
Sentry's defaults are on and ``["*"]``, ours are off because a server that fetches URLs
named by whoever holds a DSN (a public value in every web page) is an SSRF tool.

* ``SourceFetcher``: GETs one http(s) URL within a time budget (``timeout_s`` for the
  whole fetch, not per read: a server trickling bytes is cut off), stops reading past
  ``max_bytes``, follows at most ``MAX_REDIRECTS`` redirects (each one checked again), and
  refuses hosts outside the allowed-domain patterns and hosts that resolve to a private,
  loopback, link-local or otherwise non-global address unless ``allow_private`` (tests and
  intranet installs). It connects to the address it checked, so DNS cannot answer the
  check with one address and the connection with another. Results are cached by URL for
  ``cache_ttl_s``, failures for ``failure_ttl_s`` in a cache bounded in bytes; a host that
  does not answer (refused, timed out) is remembered as down for ``failure_ttl_s`` too, so
  neither the same URL nor its other files are asked again for every event meanwhile.
* ``FetchingArtifacts``: an ``ArtifactSource`` that asks the uploads first (under every
  candidate name of the URL), and fetches only what they do not hold.

Errors (one tree)::

    ArtifactUnavailable (events.artifacts)
    └── FetchFailed        .error: the event's ``errors`` entry, Sentry's EventError types:
                           fetch_generic_error, fetch_invalid_http_code, fetch_too_large,
                           fetch_timeout, js_invalid_content, restricted_ip (a private
                           address), security_violation (a host the project does not allow)
    ValueError             an allowed-domain pattern that is not one (``parse_domain``)
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

from events.artifacts import (
    MINIFIED_SOURCE,
    SOURCE_MAP,
    Artifact,
    ArtifactSource,
    ArtifactUnavailable,
    candidate_urls,
)

#: Sentry's ``EventError`` types for fetching (sentry/models/eventerror.py).
FETCH_GENERIC_ERROR = "fetch_generic_error"
FETCH_INVALID_HTTP_CODE = "fetch_invalid_http_code"
FETCH_TOO_LARGE = "fetch_too_large"
FETCH_TIMEOUT = "fetch_timeout"
JS_INVALID_CONTENT = "js_invalid_content"
RESTRICTED_IP = "restricted_ip"
SECURITY_VIOLATION = "security_violation"

#: Redirects followed per fetch (each target checked as the first was).
MAX_REDIRECTS = 3
#: Allowed-domain patterns a project may have, and the length of one (a host name is at
#: most 253 characters; with a scheme and port, 300).
MAX_ALLOWED_DOMAINS = 100
MAX_DOMAIN_CHARS = 300
#: Bytes a cached failure is counted as (its error text and key).
_FAILURE_BYTES = 512
_READ_CHUNK_BYTES = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_USER_AGENT = "Crashray source fetcher (+https://github.com/crashray)"
_HOST = re.compile(r"^(\*|(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*"
                   r"[a-z0-9_])?)*|\[[0-9a-f:.]+\])$")
_HTML = re.compile(rb"^\s*(<!doctype html|<html)", re.IGNORECASE)


@dataclass(frozen=True)
class FetchConfig:
    """The limits of source fetching (``CRASHRAY_SOURCE_FETCH_*`` in cluster/settings.py)."""

    timeout_s: float = 5.0
    max_bytes: int = 40 * 1024 * 1024
    cache_ttl_s: float = 300.0
    failure_ttl_s: float = 60.0
    cache_bytes: int = 128 * 1024 * 1024
    allow_private: bool = False
    settings_refresh_s: float = 10.0


class FetchFailed(ArtifactUnavailable):
    """A URL that was not fetched, and why (``error``: the event's ``errors`` entry)."""

    def __init__(self, error_type: str, url: str, reason: str, **extra: Any) -> None:
        super().__init__({"type": error_type, "url": url, "reason": reason, **extra})

    @classmethod
    def again(cls, error: Mapping[str, Any]) -> FetchFailed:
        """A new exception for a cached failure (one instance is not raised twice: its
        traceback would be shared between threads)."""
        e = dict(error)
        return cls(e.pop("type"), e.pop("url"), e.pop("reason"), **e)


# --- allowed domains -------------------------------------------------------------------
@dataclass(frozen=True)
class DomainPattern:
    """One allowed-domain entry, in Sentry's syntax: ``*`` (every host), ``example.com``
    (that host), ``*.example.com`` (its subdomains and itself), each optionally with a
    scheme (``https://example.com``) and a port (``example.com:8080``) that must match too."""

    host: str  # "*", "example.com" or "*.example.com"
    scheme: str | None = None
    port: int | None = None

    def matches(self, scheme: str, host: str, port: int) -> bool:
        if self.scheme is not None and self.scheme != scheme:
            return False
        if self.port is not None and self.port != port:
            return False
        host = host.lower().rstrip(".")
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return host == self.host[2:] or host.endswith(self.host[1:])
        return host == self.host


def parse_domain(text: str) -> DomainPattern:
    """``text`` as a ``DomainPattern``; ``ValueError`` saying what is wrong otherwise."""
    value = text.strip().lower()
    if not value or len(value) > MAX_DOMAIN_CHARS:
        raise ValueError(f"{text!r} is not a domain pattern: it must have 1 to"
                         f" {MAX_DOMAIN_CHARS} characters")
    scheme = None
    if "://" in value:
        scheme, value = value.split("://", 1)
        if scheme not in ("http", "https"):
            raise ValueError(f"{text!r}: only http and https URLs are fetched")
    value = value.rstrip("/")
    host, port = value, None
    port_match = re.match(r"^(.*):(\d{1,5})$", value)
    if port_match and not value.endswith("]"):
        host, port = port_match.group(1), int(port_match.group(2))
    if not _HOST.match(host) or (port is not None and not 0 < port < 65536):
        raise ValueError(f"{text!r} is not a domain pattern: use a host (example.com), its"
                         " subdomains (*.example.com) or * for all, optionally with"
                         " http:// or https:// and :port")
    return DomainPattern(host.strip("[]") if host.startswith("[") else host, scheme, port)


def parse_domains(texts: Sequence[str]) -> tuple[DomainPattern, ...]:
    if len(texts) > MAX_ALLOWED_DOMAINS:
        raise ValueError(f"{len(texts)} domains, more than the {MAX_ALLOWED_DOMAINS} allowed")
    return tuple(parse_domain(t) for t in texts)


# --- the fetcher -----------------------------------------------------------------------
@dataclass(frozen=True)
class Fetched:
    url: str  # after redirects
    content: bytes
    #: The response's ``SourceMap``/``X-SourceMap`` header, lower-cased names.
    headers: Mapping[str, str] = field(default_factory=dict)


#: ``(host, port) -> addresses``: ``socket.getaddrinfo`` by default; tests hand in others.
Resolver = Callable[[str, int], list[str]]


def resolve_host(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def is_public_address(address: str) -> bool:
    """Whether ``address`` is on the public internet: not private, loopback, link-local
    (cloud metadata at 169.254.169.254), shared, reserved, multicast or unspecified."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class FetchCache:
    """Fetch results by URL, each until its expiry; least recently used go first beyond
    ``max_bytes``. Thread-safe (a consumer or actor symbolicates from several threads)."""

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Fetched | dict[str, Any], int]] = \
            OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, url: str) -> Fetched | dict[str, Any] | None:
        """The fetched file, or the ``errors`` entry of the failed fetch, until expiry."""
        with self._lock:
            entry = self._entries.get(url)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                self._drop(url)
                return None
            self._entries.move_to_end(url)
            return entry[1]

    def put(self, url: str, value: Fetched | dict[str, Any], ttl_s: float) -> None:
        size = len(url) + (len(value.content) if isinstance(value, Fetched) else _FAILURE_BYTES)
        if ttl_s <= 0 or size > self.max_bytes:
            return
        with self._lock:
            if url in self._entries:
                self._drop(url)
            self._entries[url] = (self._clock() + ttl_s, value, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def _drop(self, url: str) -> None:
        _, _, size = self._entries.pop(url)
        self.bytes -= size


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str  # with query
    address: str  # the checked address to connect to


class SourceFetcher:
    """Fetches source files over HTTP within ``FetchConfig``'s limits, with a cache."""

    def __init__(self, config: FetchConfig, *, resolver: Resolver = resolve_host,
                 clock: Callable[[], float] = time.monotonic,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        """``ssl_context``: the certificates https is verified against (the system's by
        default)."""
        self.config = config
        self._ssl_context = ssl_context
        self.cache = FetchCache(config.cache_bytes, clock)
        self._resolve = resolver
        self.requests = 0  # HTTP requests made (cache misses and redirects)

    def fetch(self, url: str, allowed: Sequence[DomainPattern]) -> Fetched:
        """``url``'s content, or ``FetchFailed``. The allowed domains are checked before
        the cache is read: the cache is shared by projects with different domains."""
        url = url.split("#", 1)[0]
        self._target(url, allowed, resolve=False)
        cached = self.cache.get(url)
        if isinstance(cached, dict):
            raise FetchFailed.again(cached)
        if cached is not None:
            return cached
        try:
            fetched = self._fetch(url, allowed)
        except FetchFailed as exc:
            # A redirect to a host this project does not allow may be allowed to another.
            if exc.error["type"] != SECURITY_VIOLATION:
                self.cache.put(url, exc.error, self.config.failure_ttl_s)
            raise
        self.cache.put(url, fetched, self.config.cache_ttl_s)
        return fetched

    def _fetch(self, url: str, allowed: Sequence[DomainPattern]) -> Fetched:
        deadline = time.monotonic() + self.config.timeout_s
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            target = self._target(current, allowed, resolve=True)
            down = self.cache.get(_host_key(target))
            if isinstance(down, dict):
                raise FetchFailed(down["type"], url, f"{target.host} did not answer moments"
                                  f" ago ({down['reason']}); not asked again for"
                                  " CRASHRAY_SOURCE_FETCH_FAILURE_TTL_S")
            status, location, fetched = self._get(current, target, deadline)
            if fetched is not None:
                return fetched
            if status in _REDIRECTS and location:
                current = urljoin(current, location).split("#", 1)[0]
                continue
            raise FetchFailed(FETCH_INVALID_HTTP_CODE, url,
                              f"{current} answered HTTP {status}", value=status)
        raise FetchFailed(FETCH_GENERIC_ERROR, url,
                          f"more than {MAX_REDIRECTS} redirects (last to {current})")

    def _target(self, url: str, allowed: Sequence[DomainPattern], *, resolve: bool
                ) -> _Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchFailed(FETCH_GENERIC_ERROR, url, "only http and https URLs are fetched")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise FetchFailed(FETCH_GENERIC_ERROR, url, f"bad port: {exc}") from exc
        host = parts.hostname
        if not any(p.matches(parts.scheme, host, port) for p in allowed):
            raise FetchFailed(SECURITY_VIOLATION, url,
                              f"{host} is not among the project's allowed domains (project"
                              " setting allowedDomains); add it there to fetch sources"
                              " from it")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not resolve:
            return _Target(parts.scheme, host, port, path, "")
        return _Target(parts.scheme, host, port, path, self._address(url, host, port))

    def _address(self, url: str, host: str, port: int) -> str:
        try:
            addresses = self._resolve(host, port)
        except OSError as exc:
            raise FetchFailed(FETCH_GENERIC_ERROR, url,
                              f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise FetchFailed(FETCH_GENERIC_ERROR, url, f"{host} has no address")
        if not self.config.allow_private:
            for address in addresses:
                if not is_public_address(address):
                    raise FetchFailed(RESTRICTED_IP, url,
                                      f"{host} resolves to {address}, a private or local"
                                      " address, which is not fetched unless"
                                      " CRASHRAY_SOURCE_FETCH_ALLOW_PRIVATE is set")
        return addresses[0]

    def _get(self, url: str, target: _Target, deadline: float
             ) -> tuple[int, str | None, Fetched | None]:
        """One request: (status, Location, the result when it is a 200)."""
        self.requests += 1
        conn = _connection(target, max(deadline - time.monotonic(), 0.001),
                           self._ssl_context)
        try:
            conn.request("GET", target.path, headers={
                "User-Agent": _USER_AGENT, "Accept-Encoding": "gzip",
                "Host": _host_header(target)})
            # The connected socket (TLS-wrapped for https): the connection lets go of it
            # when a response that ends with the connection arrives.
            sock = conn.sock
            response = conn.getresponse()
            if response.status != 200:
                return response.status, response.getheader("location"), None
            content = self._read(url, sock, response, deadline)
            headers = {name: value for name in ("sourcemap", "x-sourcemap")
                       if (value := response.getheader(name))}
            return 200, None, Fetched(url, content, headers)
        except FetchFailed as exc:
            if exc.error["type"] == FETCH_TIMEOUT:  # too slow to finish: a host in trouble
                self.cache.put(_host_key(target), exc.error, self.config.failure_ttl_s)
            raise
        except TimeoutError as exc:
            failed = self._timeout(url)
            self.cache.put(_host_key(target), failed.error, self.config.failure_ttl_s)
            raise failed from exc
        except (OSError, http.client.HTTPException) as exc:
            failed = FetchFailed(FETCH_GENERIC_ERROR, url, f"{type(exc).__name__}: {exc}")
            if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):
                self.cache.put(_host_key(target), failed.error, self.config.failure_ttl_s)
            raise failed from exc
        finally:
            conn.close()

    def _read(self, url: str, sock: socket.socket | None,
              response: http.client.HTTPResponse, deadline: float) -> bytes:
        limit = self.config.max_bytes
        declared = response.getheader("content-length") or ""
        if declared.isdigit() and int(declared) > limit:
            raise self._too_large(url, int(declared))
        gzipped = (response.getheader("content-encoding") or "").lower() == "gzip"
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
        chunks: list[bytes] = []
        total = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timeout(url)
            if sock is not None:  # a read waits no longer than what is left
                sock.settimeout(remaining)
            chunk = response.read1(_READ_CHUNK_BYTES)
            if not chunk:
                break
            if decoder is not None:
                chunk = decoder.decompress(chunk, limit + 1 - total)
                if decoder.unconsumed_tail:
                    raise self._too_large(url, None)
            total += len(chunk)
            if total > limit:
                raise self._too_large(url, None)
            chunks.append(chunk)
        content = b"".join(chunks)
        if _HTML.match(content[:256]):
            raise FetchFailed(JS_INVALID_CONTENT, url,
                              "the URL answered an HTML page, not JavaScript or a source map"
                              " (a single-page app's fallback page for a missing file?)")
        return content

    def _too_large(self, url: str, size: int | None) -> FetchFailed:
        seen = f"{size} bytes" if size is not None else "larger"
        return FetchFailed(FETCH_TOO_LARGE, url,
                           f"the file is {seen}, over CRASHRAY_SOURCE_FETCH_MAX_BYTES"
                           f" ({self.config.max_bytes}); reading stopped there",
                           max_size=self.config.max_bytes)

    def _timeout(self, url: str) -> FetchFailed:
        return FetchFailed(FETCH_TIMEOUT, url,
                           f"not fetched within CRASHRAY_SOURCE_FETCH_TIMEOUT_S"
                           f" ({self.config.timeout_s:g} s)", timeout=self.config.timeout_s)


def _host_key(target: _Target) -> str:
    """The cache key of a host's being down (no URL has spaces)."""
    return f"host {target.scheme}://{target.host}:{target.port}"


def _host_header(target: _Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


def _connection(target: _Target, timeout_s: float, ssl_context: ssl.SSLContext | None
                ) -> http.client.HTTPConnection:
    """A connection to ``target.host`` that connects to the address already checked (TLS
    still verifies the certificate against the host name)."""
    conn: http.client.HTTPConnection
    if target.scheme == "https":
        conn = http.client.HTTPSConnection(target.host, target.port, timeout=timeout_s,
                                           context=ssl_context)
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=timeout_s)
    address = target.address

    def create_connection(_: tuple[str, int], timeout: float | None = None,
                          source_address: tuple[str, int] | None = None) -> socket.socket:
        return socket.create_connection((address, target.port), timeout, source_address)

    # http.client's hook for opening the socket (both classes use it in connect()).
    conn._create_connection = create_connection  # type: ignore[attr-defined]
    return conn


# --- the artifact source ---------------------------------------------------------------
def fetchable(url: str) -> bool:
    """Only absolute http(s) URLs are fetched (not ``~/`` names, ``app://``, files)."""
    return urlsplit(url).scheme in ("http", "https")


class FetchingArtifacts:
    """``ArtifactSource``: ``inner`` (the uploads) first; a minified file or map the
    uploads do not hold under any candidate name of its URL is fetched from the URL, if
    its host is allowed. A failed fetch raises ``FetchFailed`` (the reason goes into the
    event's errors); a fetched file is an ``Artifact`` with ``fetched`` set and its
    ``SourceMap``/``X-SourceMap`` response header as its ``sourcemap`` header."""

    def __init__(self, inner: ArtifactSource, fetcher: SourceFetcher,
                 allowed_domains: Sequence[str] | Sequence[DomainPattern]) -> None:
        self.inner = inner
        self.fetcher = fetcher
        self.allowed = tuple(d if isinstance(d, DomainPattern) else parse_domain(d)
                             for d in allowed_domains)

    def by_debug_id(self, debug_id: str, kind: str) -> Artifact | None:
        return self.inner.by_debug_id(debug_id, kind)

    def by_url(self, release: str | None, dist: str | None, url: str, kind: str
               ) -> Artifact | None:
        found = self.inner.by_url(release, dist, url, kind)
        if found is not None or kind not in (MINIFIED_SOURCE, SOURCE_MAP) or not fetchable(url):
            return found
        for name in candidate_urls(url)[1:]:  # an upload under any name wins over fetching
            found = self.inner.by_url(release, dist, name, kind)
            if found is not None:
                return found
        fetched = self.fetcher.fetch(url, self.allowed)
        reference = fetched.headers.get("sourcemap") or fetched.headers.get("x-sourcemap")
        headers = {"sourcemap": reference} if reference and kind == MINIFIED_SOURCE else {}
        return Artifact(url, kind, fetched.content, headers, fetched=True)
