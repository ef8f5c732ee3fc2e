"""Source fetching's rules (events/source_fetch.py): which hosts a project's allowed
domains admit, which addresses are never fetched, the size limit and the cache. HTTP goes
to a real server on loopback (tests/source_server.py); name resolution is handed in where a
test needs a host to resolve somewhere else."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from events.artifacts import MINIFIED_SOURCE, SOURCE, Artifact, MemoryArtifacts
from events.source_fetch import (
    FetchCache,
    FetchConfig,
    Fetched,
    FetchFailed,
    FetchingArtifacts,
    SourceFetcher,
    is_public_address,
    parse_domain,
    parse_domains,
)
from events.symbolicate import trim_line
from tests.source_server import SourceServer, source_server

LOOPBACK = [parse_domain("127.0.0.1")]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[SourceServer]:
    with source_server() as s:
        yield s


def allowed(pattern: str, url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parse_domain(pattern).matches(parts.scheme, parts.hostname or "", port)


@pytest.mark.parametrize(("pattern", "url", "expected"), [
    ("*", "https://anything.example.net/a.js", True),
    ("cdn.example.com", "https://cdn.example.com/a.js", True),
    ("cdn.example.com", "https://CDN.Example.com./a.js", True),
    ("cdn.example.com", "https://static.example.com/a.js", False),
    ("*.example.com", "https://static.cdn.example.com/a.js", True),
    ("*.example.com", "https://example.com/a.js", True),
    ("*.example.com", "https://evilexample.com/a.js", False),
    ("*.example.com", "https://example.com.evil.net/a.js", False),
    ("example.com", "https://www.example.com/a.js", False),
    ("https://example.com", "http://example.com/a.js", False),
    ("https://example.com", "https://example.com/a.js", True),
    ("example.com:8080", "http://example.com:8080/a.js", True),
    ("example.com:8080", "http://example.com/a.js", False),
])
def test_allowed_domain_patterns_match_as_sentry_documents(pattern: str, url: str,
                                                           expected: bool) -> None:
    assert allowed(pattern, url) is expected


@pytest.mark.parametrize("bad", ["", "exa mple.com", "ftp://example.com", "example.*",
                                 "*example.com", "example.com:99999", "a" * 301])
def test_patterns_that_are_no_domain_are_refused_with_the_syntax(bad: str) -> None:
    with pytest.raises(ValueError, match=r"domain pattern|only http|characters"):
        parse_domain(bad)


def test_more_domains_than_the_limit_are_refused() -> None:
    with pytest.raises(ValueError, match="more than the 100"):
        parse_domains([f"h{i}.example.com" for i in range(101)])


@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True), ("127.0.0.1", False),
    ("10.1.2.3", False), ("192.168.0.10", False), ("172.16.5.4", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("::1", False),
    ("fe80::1", False), ("fd00::1", False), ("::ffff:127.0.0.1", False), ("224.0.0.1", False),
])
def test_only_public_addresses_count_as_public(address: str, public: bool) -> None:
    assert is_public_address(address) is public


def test_a_host_resolving_to_a_private_address_is_not_contacted() -> None:
    fetcher = SourceFetcher(FetchConfig(), resolver=lambda host, port: ["10.0.0.7"])
    with pytest.raises(FetchFailed) as caught:
        fetcher.fetch("https://cdn.example.com/app.js", [parse_domain("cdn.example.com")])
    assert caught.value.error["type"] == "restricted_ip"
    assert "10.0.0.7" in caught.value.error["reason"]
    assert "CRASHRAY_SOURCE_FETCH_ALLOW_PRIVATE" in caught.value.error["reason"]
    assert fetcher.requests == 0


def test_loopback_is_refused_unless_the_setting_allows_it(server: SourceServer) -> None:
    url = server.serve("/app.js", b"function a(){}\n")
    with pytest.raises(FetchFailed, match="private or local"):
        SourceFetcher(FetchConfig()).fetch(url, LOOPBACK)
    assert server.requests == []
    fetched = SourceFetcher(FetchConfig(allow_private=True)).fetch(url, LOOPBACK)
    assert fetched.content == b"function a(){}\n"


def test_a_host_not_allowed_is_neither_resolved_nor_fetched() -> None:
    resolved: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        return ["8.8.8.8"]

    fetcher = SourceFetcher(FetchConfig(), resolver=resolver)
    with pytest.raises(FetchFailed) as caught:
        fetcher.fetch("https://evil.example.net/app.js", [parse_domain("*.example.com")])
    assert caught.value.error["type"] == "security_violation"
    assert "allowedDomains" in caught.value.error["reason"]
    assert resolved == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.js",
                                 "app:///build/app.js", "~/build/app.js"])
def test_only_http_and_https_urls_are_fetched(url: str) -> None:
    with pytest.raises(FetchFailed, match="only http and https"):
        SourceFetcher(FetchConfig()).fetch(url, [parse_domain("*")])


def test_a_redirect_to_a_host_not_allowed_is_not_followed(server: SourceServer) -> None:
    target = f"http://localhost:{server.base_url.rsplit(':', 1)[1]}/elsewhere.js"
    server.serve("/elsewhere.js", b"secret()")
    url = server.serve("/app.js", b"", status=302, headers={"Location": target})
    with pytest.raises(FetchFailed, match="localhost is not among"):
        SourceFetcher(FetchConfig(allow_private=True)).fetch(url, LOOPBACK)
    assert server.count("/elsewhere.js") == 0


def test_reading_stops_at_the_size_limit_declared_or_not(server: SourceServer) -> None:
    body = b"x" * 5000
    declared = server.serve("/declared.js", body)
    undeclared = server.serve("/undeclared.js", body, declare_length=False)
    fetcher = SourceFetcher(FetchConfig(max_bytes=4096, allow_private=True))
    for url in (declared, undeclared):
        with pytest.raises(FetchFailed) as caught:
            fetcher.fetch(url, LOOPBACK)
        assert caught.value.error["type"] == "fetch_too_large"
        assert "CRASHRAY_SOURCE_FETCH_MAX_BYTES (4096)" in caught.value.error["reason"]
    exact = server.serve("/exact.js", b"y" * 4096, declare_length=False)
    assert len(fetcher.fetch(exact, LOOPBACK).content) == 4096


def test_a_gzipped_answer_is_held_to_the_limit_unpacked(server: SourceServer) -> None:
    import gzip

    packed = gzip.compress(b"z" * 100_000)
    url = server.serve("/bomb.js", packed, headers={"Content-Encoding": "gzip"})
    small = server.serve("/small.js", gzip.compress(b"ok()"),
                         headers={"Content-Encoding": "gzip"})
    fetcher = SourceFetcher(FetchConfig(max_bytes=10_000, allow_private=True))
    with pytest.raises(FetchFailed, match="over CRASHRAY_SOURCE_FETCH_MAX_BYTES"):
        fetcher.fetch(url, LOOPBACK)
    assert fetcher.fetch(small, LOOPBACK).content == b"ok()"


def test_fetched_files_and_failures_are_cached_until_their_ttl(server: SourceServer) -> None:
    clock = Clock()
    fetcher = SourceFetcher(FetchConfig(cache_ttl_s=60, failure_ttl_s=10, allow_private=True),
                            clock=clock)
    ok = server.serve("/ok.js", b"ok()")
    missing = server.base_url + "/missing.js"
    for _ in range(3):
        assert fetcher.fetch(ok, LOOPBACK).content == b"ok()"
        with pytest.raises(FetchFailed, match="HTTP 404"):
            fetcher.fetch(missing, LOOPBACK)
    assert (server.count("/ok.js"), server.count("/missing.js")) == (1, 1)
    clock.now += 11  # the failure expired, the file not yet
    with pytest.raises(FetchFailed):
        fetcher.fetch(missing, LOOPBACK)
    fetcher.fetch(ok, LOOPBACK)
    assert (server.count("/ok.js"), server.count("/missing.js")) == (1, 2)
    clock.now += 60
    fetcher.fetch(ok, LOOPBACK)
    assert server.count("/ok.js") == 2


def test_the_cache_keeps_within_its_bytes_dropping_the_least_recently_used() -> None:
    clock = Clock()
    cache = FetchCache(max_bytes=250, clock=clock)
    for name in ("a", "b"):
        cache.put(name, Fetched(name, b"x" * 100), 60)
    assert cache.get("a") is not None  # "b" is now the least recently used
    cache.put("c", Fetched("c", b"x" * 100), 60)
    assert (cache.get("a") is not None, cache.get("b"), cache.get("c") is not None) == (
        True, None, True)
    assert cache.bytes <= 250
    cache.put("huge", Fetched("huge", b"x" * 1000), 60)  # larger than the cache: not kept
    assert cache.get("huge") is None and len(cache) == 2


def test_uploads_win_over_fetching_under_any_name(server: SourceServer) -> None:
    url = server.serve("/static/app.js", b"fetched()")
    uploads = MemoryArtifacts()
    uploads.add(Artifact("~/static/app.js", MINIFIED_SOURCE, b"uploaded()"), release="r1")
    fetching = FetchingArtifacts(uploads, SourceFetcher(FetchConfig(allow_private=True)),
                                 ["127.0.0.1"])
    found = fetching.by_url("r1", None, url, MINIFIED_SOURCE)
    assert found is not None and found.content == b"uploaded()" and not found.fetched
    other = fetching.by_url("r2", None, url, MINIFIED_SOURCE)  # another release: fetched
    assert other is not None and other.content == b"fetched()" and other.fetched
    assert fetching.by_url("r2", None, url, SOURCE) is None  # only files and maps fetched
    assert fetching.by_url("r2", None, "~/static/app.js", MINIFIED_SOURCE) is None
    assert server.count("/static/app.js") == 1


def test_long_lines_are_cut_around_the_column() -> None:
    line = "a" * 100 + "THROW" + "b" * 300
    cut = trim_line(line, 101)
    assert "THROW" in cut and cut.startswith("{snip} ") and cut.endswith(" {snip}")
    assert trim_line("short();", 3) == "short();"


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A certificate for shop.test: (the server's context, a client's trusting it)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=shop.test", "-addext", "subjectAltName=DNS:shop.test",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    return server, ssl.create_default_context(cafile=str(cert))


def test_https_connects_to_the_checked_address_and_verifies_the_host_name(
        tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_context, client_context = tls
    with source_server(server_context, host="shop.test") as server:
        url = server.serve("/app.js", b"shop()")
        slow = server.serve("/slow.js", b"s" * 900, drip_s=0.3, chunk_bytes=100)
        fetcher = SourceFetcher(FetchConfig(allow_private=True, timeout_s=1.0),
                                resolver=lambda host, port: ["127.0.0.1"],
                                ssl_context=client_context)
        test_domains = [parse_domain("*.test")]
        assert fetcher.fetch(url, test_domains).content == b"shop()"
        with pytest.raises(FetchFailed, match="certificate"):  # the name, not the address
            fetcher.fetch(url.replace("shop.test", "other.test"), test_domains)
        with pytest.raises(FetchFailed) as caught:
            fetcher.fetch(slow, test_domains)
        assert caught.value.error["type"] == "fetch_timeout"


def test_a_host_that_timed_out_is_not_asked_again_for_other_files(server: SourceServer
                                                                  ) -> None:
    clock = Clock()
    slow = server.serve("/slow.js", b"s" * 900, drip_s=0.3, chunk_bytes=100)
    other = server.serve("/other.js", b"quick()")
    fetcher = SourceFetcher(FetchConfig(timeout_s=0.5, failure_ttl_s=30, allow_private=True),
                            clock=clock)
    with pytest.raises(FetchFailed, match="CRASHRAY_SOURCE_FETCH_TIMEOUT_S"):
        fetcher.fetch(slow, LOOPBACK)
    with pytest.raises(FetchFailed, match="did not answer moments ago") as caught:
        fetcher.fetch(other, LOOPBACK)
    assert caught.value.error["type"] == "fetch_timeout"
    assert server.count("/other.js") == 0
    clock.now += 31
    assert fetcher.fetch(other, LOOPBACK).content == b"quick()"
