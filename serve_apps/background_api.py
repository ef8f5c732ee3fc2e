"""The Web API inside another deployment's replica, built while that replica already serves.

On one node the ingest replicas answer ``/api/0`` (``CRASHRAY_API_OWN_REPLICAS``). Importing
FastAPI and every route and building the app take about a second of a replica's start,
and ``crashray up`` waits for the replica before it prints the DSN: an SDK could send
events a second sooner. So the replica starts the build in a thread of its own and is
ready without it; an API request that comes before the build is done waits for it.

Should the build fail (a broken installation; or Python's import lock refusing an import
that crossed one the replica's own thread made at the same moment), the error is logged
and the next API request builds the app again, in a worker thread, until one succeeds;
until then API requests get the error (a 500), ingest is not affected.
"""

from __future__ import annotations

import asyncio
import logging
import threading
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


def build_answerer(config: ApiConfig) -> Answerer:
    """Import the API and build its app with its services (slow: ~1 s)."""
    from serve_apps.api.app import ApiAnswer, api_within

    return partial(ApiAnswer, api_within(config))


class BackgroundApi:
    """The API app, built in a thread from the moment this is made."""

    def __init__(self, config: ApiConfig,
                 build: Callable[[ApiConfig], Answerer] = build_answerer) -> None:
        self._config = config
        self._build = build
        self._built: Future[Answerer] = Future()
        #: Held by the event loop while a failed build is made again (one at a time).
        self._rebuilding = asyncio.Lock()
        threading.Thread(target=self._build_into, args=(self._built,),
                         name="crashray-api-build", daemon=True).start()

    def _build_into(self, built: Future[Answerer]) -> None:
        try:
            built.set_result(self._build(self._config))
        except BaseException as exc:  # handed to the requests that wait for it
            log.exception("building the Web API failed; the next API request tries again")
            built.set_exception(exc)

    async def answer(self) -> Response:
        """The answer to an API request (the app answers it as an ASGI app)."""
        built = self._built
        try:
            return (await asyncio.wrap_future(built))()
        except Exception:
            async with self._rebuilding:
                if self._built is built:  # no other request built it again meanwhile
                    fresh: Future[Answerer] = Future()
                    await asyncio.to_thread(self._build_into, fresh)
                    self._built = fresh
            return (await asyncio.wrap_future(self._built))()
