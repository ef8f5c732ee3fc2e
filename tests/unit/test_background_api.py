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


class SlowBuild:
    """A build that finishes once ``release`` is set; counts its builds."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.builds = 0

    def __call__(self, config: Any) -> Answerer:
        self.release.wait(5)
        self.builds += 1
        return lambda: PlainTextResponse("built")


def test_requests_before_the_build_is_done_wait_for_it() -> None:
    slow_build = SlowBuild()

    async def scenario() -> list[Response]:
        api = BackgroundApi(CONFIG, build=slow_build)
        waiting = [asyncio.ensure_future(api.answer()) for _ in range(3)]
        await asyncio.sleep(0.2)
        assert not any(w.done() for w in waiting)  # the build is not done: they wait
        slow_build.release.set()
        return list(await asyncio.gather(*waiting))

    answers = asyncio.run(scenario())
    assert [a.body for a in answers] == [b"built"] * 3
    assert slow_build.builds == 1  # built once, for every request


def test_a_failed_build_is_made_again_by_the_next_request(
        caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []

    def flaky_build(config: Any) -> Answerer:
        attempts.append(1)
        if len(attempts) == 1:
            raise ImportError("deadlock detected by _ModuleLock('fastapi')")
        return lambda: PlainTextResponse("second try")

    async def scenario() -> Response:
        api = BackgroundApi(CONFIG, build=flaky_build, rebuild_interval_s=0)
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


def test_a_request_cancelled_while_it_waits_leaves_the_build_to_the_others() -> None:
    """Serve cancels a request whose client went away (499) or timed out (408)."""
    slow_build = SlowBuild()

    async def scenario() -> tuple[Response, Response]:
        api = BackgroundApi(CONFIG, build=slow_build)
        gone = asyncio.ensure_future(api.answer())
        staying = asyncio.ensure_future(api.answer())
        await asyncio.sleep(0.1)
        gone.cancel()
        await asyncio.sleep(0.1)
        slow_build.release.set()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await staying, await api.answer()

    staying, later = asyncio.run(scenario())
    assert staying.body == later.body == b"built"
    assert slow_build.builds == 1


def test_requests_failing_together_build_again_once() -> None:
    attempts: list[int] = []
    release = threading.Event()

    def build(config: Any) -> Answerer:
        attempts.append(1)
        if len(attempts) == 1:
            raise ImportError("first build fails")
        release.wait(5)  # the rebuild takes a while: the other requests come meanwhile
        return lambda: PlainTextResponse("rebuilt")

    async def scenario() -> list[Response]:
        api = BackgroundApi(CONFIG, build=build, rebuild_interval_s=0)
        waiting = [asyncio.ensure_future(api.answer()) for _ in range(4)]
        await asyncio.sleep(0.2)
        release.set()
        return list(await asyncio.gather(*waiting))

    assert [a.body for a in asyncio.run(scenario())] == [b"rebuilt"] * 4
    assert len(attempts) == 2


def test_a_failed_build_is_not_made_again_before_the_interval() -> None:
    """Each build opens a PostgreSQL pool: a burst of API requests during a failure must
    not each open one."""
    attempts: list[int] = []

    def broken_build(config: Any) -> Answerer:
        attempts.append(1)
        raise ValueError("no actor named ClickHouseOwner")

    async def scenario() -> None:
        api = BackgroundApi(CONFIG, build=broken_build, rebuild_interval_s=60)
        for _ in range(5):
            with pytest.raises(ValueError, match="ClickHouseOwner"):
                await api.answer()

    asyncio.run(scenario())
    assert len(attempts) == 1
