"""Pure parts of the ingest edge: the hand-off that isolates a request the queue refuses
(serve_apps/ingest_handoff.py) and error answers whose headers can hold anything a client
sent (serve_apps/ingest_http.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pytest

from events.errors import BadRequest, Overloaded
from serve_apps.ingest_handoff import hand_off
from serve_apps.ingest_http import error_response, ingest_route
from storage.queue import QueuedItem, UnqueueableData


def request_items(n: int, poison: bool = False) -> list[QueuedItem]:
    payload = b"poison" if poison else b"{}"
    return [QueuedItem(n, n, n, "event", None, dt.datetime.now(dt.UTC), payload, {})
            for _ in range(2)]


class FakeQueue:
    """Refuses, like PostgreSQL's jsonb, any COPY holding a poisoned item."""

    def __init__(self, down: bool = False) -> None:
        self.stored: list[QueuedItem] = []
        self.copies = 0
        self.down = down

    def enqueue(self, items: Sequence[QueuedItem]) -> None:
        self.copies += 1
        if self.down:
            raise ConnectionError("PostgreSQL is down")
        if any(item.payload == b"poison" for item in items):
            raise UnqueueableData("the queue refused an item", ["unsupported Unicode escape"])
        self.stored.extend(items)


def test_a_refused_request_fails_alone_and_its_neighbours_are_queued() -> None:
    groups = [request_items(n, poison=n in (3, 11)) for n in range(40)]
    queue = FakeQueue()
    results = hand_off(groups, queue.enqueue)
    assert [n for n, r in enumerate(results) if r is not None] == [3, 11]
    assert all(isinstance(results[n], UnqueueableData) for n in (3, 11))
    assert sorted(i.project_id for i in queue.stored) == sorted(
        n for n in range(40) if n not in (3, 11) for _ in range(2))
    assert queue.copies <= 1 + 2 * 2 * 6  # halving: a few COPYs per poisoned request


def test_a_clean_batch_is_one_copy() -> None:
    queue = FakeQueue()
    assert hand_off([request_items(n) for n in range(10)], queue.enqueue) == [None] * 10
    assert queue.copies == 1 and len(queue.stored) == 20


def test_an_outage_fails_every_request_and_is_not_retried() -> None:
    queue = FakeQueue(down=True)
    results = hand_off([request_items(n) for n in range(10)], queue.enqueue)
    assert all(isinstance(r, ConnectionError) for r in results)
    assert queue.copies == 1


@pytest.mark.parametrize("detail", ["no ingest endpoint at /api/\u2603/envelope/",
                                    "bad \x00 value\r\nX-Injected: 1", "caf\xe9 \U0001f600"])
def test_x_sentry_error_is_printable_ascii_whatever_the_detail(detail: str) -> None:
    response = error_response(BadRequest(detail))
    header = response.headers["x-sentry-error"]
    assert header.isascii() and header.isprintable()
    assert response.status_code == 400
    assert error_response(Overloaded(detail)).headers["x-sentry-error"].isprintable()


@pytest.mark.parametrize(("path", "project"), [
    ("/api/1/envelope/", 1), ("/api/42/store", 42), ("/api/7/security//", 7),
    ("/api/18446744073709551615/envelope/", 18446744073709551615)])
def test_ingest_routes_name_their_project(path: str, project: int) -> None:
    route = ingest_route(path)
    assert route.project_id == project


@pytest.mark.parametrize(("path", "said"), [
    ("/api/\u2603/envelope/", "project id"),
    ("/api/abc/envelope/", "project id"),
    ("/api/18446744073709551616/envelope/", "project id"),
    ("/api/1/nothing/", "no ingest endpoint"),
    ("/api/1/envelope/\x00", "no ingest endpoint"),
])
def test_odd_ingest_paths_are_a_400_saying_what_is_wrong(path: str, said: str) -> None:
    with pytest.raises(BadRequest) as caught:
        ingest_route(path)
    assert said in caught.value.detail
