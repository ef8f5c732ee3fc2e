"""Grouping versions and grouping actors in a running Crashray (real Ray, PostgreSQL, chDB):
a project moving to a new grouping version keeps its issues together, and a grouping shard
killed by Ray comes back without losing or splitting anything."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import ray

from actors.shared_process import find, process_of
from storage import postgres
from storage.bootstrap import ensure_project
from tests.integration.conftest import RunningCrashray
from tests.support import envelope_bytes, gzip_bytes, python_sdk_headers, wait_until


def new_project(c: RunningCrashray, grouping_config: str) -> tuple[int, str, str]:
    """A project of the `crashray` organization on ``grouping_config``: (id, slug, key)."""
    slug = f"versions-{uuid.uuid4().hex[:8]}"
    with postgres.connect(c.runtime.postgres_url) as conn:
        project_id, key = ensure_project(conn, 1, slug, grouping_config)
        conn.commit()
    return project_id, slug, key


def send(c: RunningCrashray, project_id: int, key: str, event: dict[str, Any]) -> None:
    def accepted() -> bool:  # the key cache learns new keys within its refresh
        response = httpx.post(f"{c.base_url}/api/{project_id}/envelope/",
                              content=gzip_bytes(envelope_bytes(event)),
                              headers=python_sdk_headers(key), timeout=10)
        return response.status_code == 200

    wait_until(accepted, 15, "the event accepted")


def api(c: RunningCrashray, method: str, path: str, body: object = None) -> Any:
    response = httpx.request(method, f"{c.base_url}/api/0/{path}", json=body, timeout=10,
                             headers={"Authorization": f"Bearer {c.info.api_token}"})
    assert response.status_code == 200, response.text
    return response.json()


def chunk_error(chunk: int) -> dict[str, Any]:
    return {"platform": "javascript", "level": "error", "exception": {"values": [{
        "type": "ChunkLoadError", "value": f"Loading chunk {chunk} failed.",
        "stacktrace": {"frames": [{"function": f"load{chunk}", "filename": "/static/app.js",
                                   "abs_path": "https://shop.example/static/app.js",
                                   "lineno": 10 + chunk, "in_app": True}]}}]}}


def issues_with_counts(c: RunningCrashray, slug: str) -> list[tuple[str, str]]:
    return sorted((i["id"], i["count"]) for i in api(c, "GET",
                                                      f"projects/crashray/{slug}/issues/"))


def test_a_new_grouping_version_keeps_existing_issues_together(
        crashray: RunningCrashray) -> None:
    project_id, slug, key = new_project(crashray, "v1")
    send(crashray, project_id, key, chunk_error(1))
    [(issue, _)] = wait_until(lambda: issues_with_counts(crashray, slug), 15, "the v1 issue")
    settings = api(crashray, "PUT", f"projects/crashray/{slug}/", {"groupingConfig": "v2"})
    assert (settings["groupingConfig"], settings["secondaryGroupingConfig"],
            settings["groupingAutoUpdate"]) == ("v2", "v1", False)
    days_left = (settings["secondaryGroupingExpiry"] - time.time()) / 86_400
    assert 29.9 < days_left <= 30
    time.sleep(1.0)  # consumers re-read project settings every 0.5 s in this suite
    # v2 groups every ChunkLoadError as one (Sentry's built-in fingerprint); the first one
    # still finds the v1 issue through its v1 hash, and takes the v2 hash along ...
    send(crashray, project_id, key, chunk_error(1))
    wait_until(lambda: issues_with_counts(crashray, slug) == [(issue, "2")], 15,
               "the same error joining the v1 issue")
    # ... so another chunk's error, a new issue under v1, joins it too.
    send(crashray, project_id, key, chunk_error(2))
    wait_until(lambda: issues_with_counts(crashray, slug) == [(issue, "3")], 15,
               "another chunk joining the same issue")
    configs = {h["groupingConfig"] for h in api(crashray, "GET", f"issues/{issue}/hashes/")}
    assert configs == {"v1", "v2"}


def test_grouping_config_updates_are_validated(crashray: RunningCrashray) -> None:
    _, slug, _ = new_project(crashray, "v1")
    response = httpx.put(f"{crashray.base_url}/api/0/projects/crashray/{slug}/",
                         json={"groupingConfig": "newstyle:2099"}, timeout=10,
                         headers={"Authorization": f"Bearer {crashray.info.api_token}"})
    assert response.status_code == 400 and "v1" in response.json()["detail"]
    assert api(crashray, "GET", f"projects/crashray/{slug}/")["groupingConfig"] == "v1"


def test_a_killed_grouping_shard_comes_back_and_events_still_find_their_issue(
        crashray: RunningCrashray) -> None:
    project_id, slug, key = new_project(crashray, "v2")
    marker = uuid.uuid4().hex[:8]
    event = {"platform": "python", "exception": {"values": [
        {"type": f"Shard{marker}", "value": "down"}]}}
    send(crashray, project_id, key, event)
    [(issue, _)] = wait_until(lambda: issues_with_counts(crashray, slug), 15, "the issue")
    shard = find(f"crashray-grouping-{project_id % crashray.settings.grouping_shards}")
    ray.kill(process_of(shard), no_restart=False)
    for _ in range(3):
        send(crashray, project_id, key, event)
    wait_until(lambda: issues_with_counts(crashray, slug) == [(issue, "4")], 30,
               "all events in the one issue after the restart")
    stats = wait_until(lambda: ray.get(shard.stats.remote(), timeout=10), 15, "shard stats")
    assert stats["misses"] >= 1  # it restarted empty and refilled from PostgreSQL


def spring_proxy_error(build: str) -> dict[str, Any]:
    """A Java error through a Spring CGLIB proxy whose generated suffix changes per build."""
    return {"platform": "java", "level": "error", "exception": {"values": [{
        "type": "java.lang.IllegalStateException", "value": "cart is locked",
        "stacktrace": {"frames": [
            {"module": f"shop.CheckoutService$$EnhancerBySpringCGLIB$${build}",
             "function": "placeOrder", "in_app": True},
            {"module": "shop.CheckoutService", "function": "placeOrder", "in_app": True}]}}]}}


def test_moving_from_v2_to_v3_keeps_issues_and_joins_new_proxy_builds(
        crashray: RunningCrashray) -> None:
    project_id, slug, key = new_project(crashray, "v2")
    send(crashray, project_id, key, spring_proxy_error("7f3a9c21"))
    [(issue, _)] = wait_until(lambda: issues_with_counts(crashray, slug), 15, "the v2 issue")
    settings = api(crashray, "PUT", f"projects/crashray/{slug}/", {"groupingConfig": "v3"})
    assert (settings["groupingConfig"], settings["secondaryGroupingConfig"]) == ("v3", "v2")
    time.sleep(1.0)  # consumers re-read project settings every 0.5 s in this suite
    # v3 hashes the proxy as $$EnhancerBySpringCGLIB$$<auto>: the same build finds the v2
    # issue through its v2 hash and brings the v3 hash along ...
    send(crashray, project_id, key, spring_proxy_error("7f3a9c21"))
    wait_until(lambda: issues_with_counts(crashray, slug) == [(issue, "2")], 15,
               "the same build joining the v2 issue")
    # ... so the next build (another generated suffix, a new issue under v2) joins it too.
    send(crashray, project_id, key, spring_proxy_error("0b1c2d3e"))
    wait_until(lambda: issues_with_counts(crashray, slug) == [(issue, "3")], 15,
               "the next build joining the same issue")
    configs = {h["groupingConfig"] for h in api(crashray, "GET", f"issues/{issue}/hashes/")}
    assert configs == {"v2", "v3"}
