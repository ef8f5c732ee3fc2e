"""The API's guards without servers: the client address behind proxies, the login delays,
the body limit and NUL refusal in front of every route, HAProxy's forwardfor rewrite, and
a start page without tenant data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient

from dashboards.assets import INDEX_FILE, load_assets, render_index
from events.login_throttle import LoginLimits, RecentFailures, address_key, delay_s, wait_s
from events.proxies import client_address
from serve_apps.api.app import create_app
from serve_apps.api.config import ApiConfig
from serve_apps.api.deps import Services
from serve_apps.api.shapes import Body

LOOPBACK = ("127.0.0.1", "::1")


# --- the client address -------------------------------------------------------------------
@pytest.mark.parametrize(("peer", "forwarded", "trusted", "client"), [
    ("203.0.113.5", "10.0.0.1", LOOPBACK, "203.0.113.5"),  # an untrusted peer's header is ignored
    ("127.0.0.1", None, LOOPBACK, "127.0.0.1"),
    ("127.0.0.1", "198.51.100.7", LOOPBACK, "198.51.100.7"),
    # the client wrote the left entry, HAProxy appended the right one: the right one wins
    ("127.0.0.1", "203.0.113.9, 127.0.0.2", LOOPBACK, "127.0.0.2"),
    ("127.0.0.1", "203.0.113.9, 198.51.100.7, 10.1.2.3", ("127.0.0.1", "10.0.0.0/8"),
     "198.51.100.7"),
    ("127.0.0.1", "127.0.0.1, ::1", LOOPBACK, "127.0.0.1"),  # all trusted: the leftmost
    ("127.0.0.1", "198.51.100.7:4711", LOOPBACK, "198.51.100.7"),
    ("127.0.0.1", "[2001:db8::1]:4711", LOOPBACK, "2001:db8::1"),
    ("127.0.0.1", "198.51.100.7", (), "127.0.0.1"),  # nothing trusted
])
def test_the_client_is_the_rightmost_address_not_appended_by_a_trusted_proxy(
        peer: str, forwarded: str | None, trusted: tuple[str, ...], client: str) -> None:
    assert client_address(peer, forwarded, trusted) == client


# --- login delays ---------------------------------------------------------------------------
LIMITS = LoginLimits.of(5, 300.0, 60.0)


def test_delays_start_after_the_free_failures_double_and_stop_at_the_cap() -> None:
    assert [delay_s(n, 5, 60.0) for n in range(4, 13)] == [0, 1, 2, 4, 8, 16, 32, 60, 60]
    assert delay_s(10**6, 5, 60.0) == 60.0


def test_an_address_that_failed_waits_after_its_last_failure() -> None:
    assert wait_s(RecentFailures(pair=4, pair_last_ago_s=0.1), LIMITS) == 0
    assert wait_s(RecentFailures(pair=5, pair_last_ago_s=0.1), LIMITS) == 1
    assert wait_s(RecentFailures(pair=8, pair_last_ago_s=3.0), LIMITS) == 5
    assert wait_s(RecentFailures(pair=8, pair_last_ago_s=9.0), LIMITS) == 0


def test_others_failures_do_not_hold_up_an_address_that_has_not_failed() -> None:
    flood = RecentFailures(pair=0, username=500, username_last_ago_s=0.0)
    assert wait_s(flood, LIMITS) == 0
    assert wait_s(RecentFailures(pair=1, pair_last_ago_s=0.0, username=500,
                                 username_last_ago_s=0.0), LIMITS) == 60


def test_an_address_failing_for_many_usernames_waits_out_the_window() -> None:
    assert wait_s(RecentFailures(address=19, address_oldest_ago_s=10), LIMITS) == 0
    assert wait_s(RecentFailures(address=20, address_oldest_ago_s=100), LIMITS) == 200


def test_ipv6_addresses_count_by_their_64_network() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") \
        == "2001:db8:1:2::/64"
    assert address_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert address_key("198.51.100.7") == "198.51.100.7"
    assert address_key("not an address") == "not an address"


# --- the body limit and NUL, in front of every route ----------------------------------------
LIMIT = 1000


class Sample(Body):
    name: str


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = create_app()
    app.state.services = Services(ApiConfig("", "", "http://x", 100, max_body_bytes=LIMIT),
                                  None, None)  # type: ignore[arg-type]
    router = APIRouter()

    @router.post("/sample/")
    def sample(body: Sample) -> dict[str, Any]:
        return {"length": len(body.name)}

    @router.get("/things/{name}/")
    def thing(name: str, q: str = "") -> dict[str, Any]:
        return {"name": name, "q": q}

    app.include_router(router)
    with TestClient(app) as test_client:
        yield test_client


def test_a_body_over_the_limit_answers_413_naming_the_setting(client: TestClient) -> None:
    response = client.post("/sample/", json={"name": "a" * LIMIT})
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"
    assert "CRASHRAY_API_MAX_BODY_BYTES" in response.json()["detail"]


def test_a_chunked_body_over_the_limit_answers_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(10):
            yield b"a" * 200
        yield b'"}'

    response = client.post("/sample/", content=chunks(),
                           headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and response.json()["code"] == "too_large"


def test_a_chunked_body_within_the_limit_reaches_the_route(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        yield b"a" * 500
        yield b'"}'

    response = client.post("/sample/", content=chunks(),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 200 and response.json() == {"length": 500}


def test_a_nul_in_the_path_or_query_is_a_400(client: TestClient) -> None:
    for url in ("/things/a%00b/", "/things/a/?q=%00", "/things/a/?q=x%00"):
        response = client.get(url)
        assert response.status_code == 400, url
        assert "NUL" in response.json()["detail"]
    assert client.get("/things/%C3%A9t%C3%A9/?q=%F0%9F%92%A5").json() == {
        "name": "été", "q": "💥"}


def test_openapi_is_not_served(client: TestClient) -> None:
    assert client.get("/openapi.json").status_code == 404


# --- the start page -------------------------------------------------------------------------
def test_the_start_page_is_the_same_for_everyone_and_names_no_tenant() -> None:
    assets = load_assets()
    page = render_index(INDEX_FILE.read_text(encoding="utf-8"), assets)
    assert "{{" not in page and "@" not in page and "dsn" not in page.lower()
    assert f"{assets.prefix}/app.js" in page
