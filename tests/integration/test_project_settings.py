"""Project data-scrubbing settings through the API change what consumers store (real Ray,
PostgreSQL, chDB)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import orjson

from actors.clickhouse import clickhouse_store
from storage import postgres
from storage.bootstrap import ensure_project
from tests.integration.conftest import RunningCrashray
from tests.support import envelope_bytes, gzip_bytes, python_sdk_headers, wait_until


def call(c: RunningCrashray, method: str, path: str, body: object = None) -> httpx.Response:
    return httpx.request(method, f"{c.base_url}/api/0/{path}", json=body, timeout=10,
                         headers={"Authorization": f"Bearer {c.info.api_token}"})


def test_sensitive_and_safe_fields_set_through_the_api_are_applied(
        crashray: RunningCrashray) -> None:
    slug = f"scrub-{uuid.uuid4().hex[:6]}"
    with postgres.connect(crashray.runtime.postgres_url) as conn:
        project_id, key = ensure_project(conn, 1, slug, "v2")
        conn.commit()
    before = call(crashray, "GET", f"projects/crashray/{slug}/").json()
    assert (before["dataScrubber"], before["dataScrubberDefaults"],
            before["scrubIPAddresses"], before["sensitiveFields"]) == (True, True, True, [])
    bad = call(crashray, "PUT", f"projects/crashray/{slug}/", {"sensitiveFields": "shoe"})
    assert bad.status_code == 400 and "sensitiveFields" in bad.json()["detail"]
    after = call(crashray, "PUT", f"projects/crashray/{slug}/",
                 {"sensitiveFields": ["shoe_size"], "safeFields": ["password"]}).json()
    assert (after["sensitiveFields"], after["safeFields"]) == (["shoe_size"], ["password"])
    time.sleep(1.0)  # consumers re-read project settings every 0.5 s in this suite
    event: dict[str, Any] = {"platform": "python", "message": "scrub me",
                             "extra": {"shoe_size": "44", "password": "kept on purpose",
                                       "colour": "blue"}}
    wait_until(lambda: httpx.post(f"{crashray.base_url}/api/{project_id}/envelope/",
                                  content=gzip_bytes(envelope_bytes(event)),
                                  headers=python_sdk_headers(key), timeout=10
                                  ).status_code == 200, 15, "accepted")
    issues = wait_until(lambda: call(crashray, "GET", f"projects/crashray/{slug}/issues/"
                                     ).json(), 30, "the issue")
    latest = call(crashray, "GET", f"issues/{issues[0]['id']}/events/latest/").json()
    stored = call(crashray, "GET", f"projects/crashray/{slug}/events/{latest['id']}/").json()
    assert stored["_meta"]["extra"]["shoe_size"]  # marked as scrubbed, as Sentry marks it
    assert stored["context"]["shoe_size"] == "[Filtered]"
    body = orjson.loads(clickhouse_store(crashray.runtime.clickhouse_dsn).event_body(
        1, project_id, latest["id"]))
    assert body["extra"]["shoe_size"] == "[Filtered]"
    assert body["extra"]["password"] == "kept on purpose"
    assert body["extra"]["colour"] == "blue"
