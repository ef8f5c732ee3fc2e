"""``BackgroundApi`` (serve_apps/background_api.py): on one node the ingest replica builds
the Web API in a thread, so the replica (and ``crashray up``'s DSN line) does not wait for
it; API requests that arrive before it is built wait for it, and a failed build is made
again by the next API request. Driven as the ingest deployment drives it, with no Ray, with
builders that stand for a slow or a failing build."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from starlette.responses import PlainTextResponse, Response

from serve_apps.api.config import ApiConfig
from serve_apps.background_api import Answerer, BackgroundApi

#: Never connected to: these builders stand for the real one, which the end-to-end tests
#: drive through a running ``crashray up`` (every dashboard and API test on one node).
CONFIG = ApiConfig("postgresql://unused", "chdb:///unused", "http://crashray.test", 100)


def test_requests_before_the_build_is_done_wait_for_it() -> None:
    release = threading.Event()
    builds: list[int] = []

    def slow_build(config: Any) -> Answerer:
        release.wait(5)
        builds.append(1)
        return lambda: PlainTextResponse("built")

    async def scenario() -> list[Response]:
        api = BackgroundApi(CONFIG, build=slow_build)
        waiting = [asyncio.ensure_future(api.answer()) for _ in range(3)]
        await asyncio.sleep(0.2)
        assert not any(w.done() for w in waiting)  # the build is not done: they wait
        release.set()
        return list(await asyncio.gather(*waiting))

    answers = asyncio.run(scenario())
    assert [a.body for a in answers] == [b"built"] * 3
    assert builds == [1]  # built once, for every request


def test_a_failed_build_is_made_again_by_the_next_request(
        caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []

    def flaky_build(config: Any) -> Answerer:
        attempts.append(1)
        if len(attempts) == 1:
            raise ImportError("deadlock detected by _ModuleLock('fastapi')")
        return lambda: PlainTextResponse("second try")

    async def scenario() -> Response:
        api = BackgroundApi(CONFIG, build=flaky_build)
        return await api.answer()

    assert asyncio.run(scenario()).body == b"second try"
    assert len(attempts) == 2
    assert "building the Web API failed" in caplog.text


def test_a_build_that_keeps_failing_fails_the_api_request_with_its_error() -> None:
    def broken_build(config: Any) -> Answerer:
        raise ModuleNotFoundError("No module named 'fastapi'")

    async def scenario() -> Response:
        api = BackgroundApi(CONFIG, build=broken_build)
        return await api.answer()

    with pytest.raises(ModuleNotFoundError, match="fastapi"):
        asyncio.run(scenario())
