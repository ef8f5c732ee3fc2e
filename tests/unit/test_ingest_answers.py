"""The ingest edge's error answers (serve_apps.ingest_http.error_response)."""

from __future__ import annotations

import orjson

from events.errors import OVERLOADED_RETRY_AFTER_S, BadRequest, Overloaded
from serve_apps.ingest_http import error_response


def test_an_overload_answers_503_with_retry_after() -> None:
    """Nothing was queued (PostgreSQL down, backlog or disk full): the SDK is told when to
    try again, as issue 11 asks of a PostgreSQL outage."""
    response = error_response(Overloaded("failed to queue envelope"))
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(OVERLOADED_RETRY_AFTER_S)
    assert orjson.loads(response.body) == {"detail": "failed to queue envelope"}


def test_a_malformed_request_gets_no_retry_after() -> None:
    response = error_response(BadRequest("invalid event envelope"))
    assert response.status_code == 400
    assert "retry-after" not in response.headers
