"""The Web API inside another deployment's replica, built while that replica already serves.

On one node the ingest replicas answer ``/api/0`` (``CRASHRAY_API_OWN_REPLICAS``). Importing
FastAPI and every route and building the app take about a second of a replica's start,
and ``crashray up`` waits for the replica before it prints the DSN: an SDK could send
events a second sooner. So the replica starts the build in a thread of its own and is
ready without it; an API request that comes before the build is done waits for it.

Should the build fail (a broken installation, the shared process gone; or Python's import
lock refusing an import that crossed one the replica's own thread made at the same moment),
the error is logged and an API request builds the app again, in a worker thread, at most
once every ``REBUILD_INTERVAL_S``, until one succeeds; until then API requests get the
error (a 500), ingest is not affected. A request cancelled while it waits (its client went
away) leaves the build alone.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import TYPE_CHECKING

from starlette.responses import Response

if TYPE_CHECKING:
    from serve_apps.api.config import ApiConfig

log = logging.getLogger(__name__)

#: Makes the answer to one API request: ``ApiAnswer`` bound to the built app.
Answerer = Callable[[], Response]
#: Seconds after a failed build before a request builds the app again (each build opens
#: a PostgreSQL pool: requests arriving while the failure lasts must not each open one).
REBUILD_INTERVAL_S = 5.0


def build_answerer(config: ApiConfig) -> Answerer:
    """Import the API and build its app with its services (slow: ~1 s)."""
    from serve_apps.api.app import ApiAnswer, api_within

    return partial(ApiAnswer, api_within(config))


class BackgroundApi:
    """The API app, built in a thread from the moment this is made."""

    def __init__(self, config: ApiConfig,
                 build: Callable[[ApiConfig], Answerer] = build_answerer,
                 rebuild_interval_s: float = REBUILD_INTERVAL_S) -> None:
        self._config = config
        self._build = build
        self._rebuild_interval_s = rebuild_interval_s
        self._built = self._started()
        #: When the last build failed (``time.monotonic``).
        self._failed_at = float("-inf")
        #: Held by the event loop while a failed build is made again (one at a time).
        self._rebuilding = asyncio.Lock()
        threading.Thread(target=self._build_into, args=(self._built,),
                         name="crashray-api-build", daemon=True).start()

    @staticmethod
    def _started() -> Future[Answerer]:
        # Running: a waiting request that is cancelled (asyncio.wrap_future cancels its
        # source) cannot cancel the build the other requests wait for.
        future: Future[Answerer] = Future()
        future.set_running_or_notify_cancel()
        return future

    def _build_into(self, built: Future[Answerer]) -> None:
        try:
            built.set_result(self._build(self._config))
        except BaseException as exc:  # handed to the requests that wait for it
            self._failed_at = time.monotonic()
            log.exception("building the Web API failed; an API request tries again")
            built.set_exception(exc if isinstance(exc, Exception) else RuntimeError(
                f"building the Web API failed: {exc!r}"))

    async def answer(self) -> Response:
        """The answer to an API request (the app answers it as an ASGI app)."""
        built = self._built
        try:
            return (await asyncio.wrap_future(built))()
        except Exception:
            async with self._rebuilding:
                due = time.monotonic() - self._failed_at >= self._rebuild_interval_s
                if self._built is built and due:  # nobody built it again meanwhile
                    fresh = self._started()
                    await asyncio.to_thread(self._build_into, fresh)
                    self._built = fresh
            return (await asyncio.wrap_future(self._built))()
