"""The operator page in a real browser (Chromium via Playwright) against the running
``crashray up``: an instance admin who owns the organization sees the key figures, the
node, deployments and consumers, finds a dead letter the real consumers made (an event of
a project deleted after ingest accepted it), restores the project and replays it from the
page; the event then becomes an issue. Screenshots under the test's ``tmp_path``."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from tests.e2e.conftest import CrashrayProcess
from tests.e2e.test_dashboard import (  # noqa: F401  (browser: the shared fixture)
    HERE,
    browser,
    log_in,
    needs_chromium,
    open_page,
)

pytestmark = pytest.mark.e2e

#: Seconds for the consumers to dead-letter the poison item, and to store the replayed one.
CONSUMED_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def instance_admin(crashray_up: CrashrayProcess) -> tuple[str, str]:
    """An instance admin (``--superuser``) who owns the ``crashray`` organization, made
    with the CLI as an operator would."""
    username, password = f"op-{uuid.uuid4().hex[:6]}", f"pw-{uuid.uuid4().hex}"
    subprocess.run([sys.executable, "-m", "cluster.cli", "user", "create", username,
                    "--password-stdin", "--superuser", "--org", "crashray", "--role",
                    "owner", "--data-dir", str(crashray_up.data_dir)],
                   input=password + "\n", capture_output=True, text=True, timeout=120,
                   check=True, cwd=HERE.parents[1])
    return username, password


@contextmanager
def instance_database(c: CrashrayProcess
                      ) -> Iterator[tuple[psycopg.Connection[Any], str]]:
    """The running instance's private PostgreSQL (joined, not started: it runs) and its
    URL."""
    from cluster.runtime import Runtime
    from cluster.settings import Settings
    from storage import postgres

    runtime = Runtime(Settings(data_dir=c.data_dir))
    try:
        runtime.start_databases()
        with postgres.connect(runtime.postgres_url) as conn:
            yield conn, runtime.postgres_url
            conn.commit()
    finally:
        runtime.stop()


def event_item(org_id: int, project_id: int, title: str) -> Any:
    from storage.queue import QueuedItem

    error_type, _, value = title.partition(": ")
    event_id = uuid.uuid4().hex
    event = {"event_id": event_id, "platform": "python", "level": "error",
             "timestamp": dt.datetime.now(dt.UTC).isoformat(),
             "exception": {"values": [{"type": error_type, "value": value}]}}
    return QueuedItem(project_id, org_id, None, "event", event_id, dt.datetime.now(dt.UTC),
                      orjson.dumps(event), {})


def make_dead_letter(c: CrashrayProcess, marker: str) -> tuple[int, int]:
    """Queue, as ingest does, an event for a project that does not exist among good
    ones; the running consumers dead-letter it. Returns (project id, dead letter
    id)."""
    from storage import tenancy
    from storage.queue import PostgresQueue

    with instance_database(c) as (conn, url):
        org_id = tenancy.organization_id(conn, "crashray")
        [(top,)] = conn.execute("SELECT max(id) FROM projects").fetchall()
        [(default,)] = conn.execute("SELECT id FROM projects WHERE organization_id = %s"
                                    " ORDER BY id LIMIT 1", (org_id,)).fetchall()
    missing = int(top) + 1000
    queue = PostgresQueue(url)
    # Good neighbours on both sides: two consumers claiming at once may split the items,
    # and a batch of poison alone is retried (its cause could be the consumer's) rather
    # than dead-lettered at once.
    good = [event_item(org_id, int(default), f"OperatorNeighbour: {marker}")
            for _ in range(6)]
    queue.enqueue([*good[:3], event_item(org_id, missing, f"OperatorReplay: {marker}"),
                   *good[3:]])
    queue.close()
    deadline = time.monotonic() + CONSUMED_TIMEOUT_S
    while time.monotonic() < deadline:
        with psycopg.connect(url) as conn:
            found = conn.execute("SELECT id FROM ingest_dead_letters WHERE project_id = %s",
                                 (missing,)).fetchall()
        if found:
            return missing, int(found[0][0])
        time.sleep(0.5)
    pytest.fail("the consumers did not dead-letter the event of a missing project")


@needs_chromium
def test_an_operator_sees_the_figures_and_replays_a_dead_letter(
        crashray_up: CrashrayProcess, instance_admin: tuple[str, str],
        browser: object, tmp_path: Path) -> None:  # noqa: F811  (the fixture imported above)
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    marker = uuid.uuid4().hex[:10]
    missing, dead_id = make_dead_letter(crashray_up, marker)
    page, errors, shot = open_page(browser, tmp_path)
    try:
        log_in(page, crashray_up, instance_admin)
        page.get_by_role("link", name="Operator", exact=True).click()
        expect(page.get_by_role("heading", name=re.compile(r"^Operator"))).to_be_visible()
        # The instance's figures, live, and what runs where.
        expect(page.locator("[data-figure=queue-waiting] .op-value")).to_have_text(
            re.compile(r"^\d+\+?$"))
        expect(page.locator("[data-figure=consumers] .op-value")).to_have_text(
            re.compile(r"^[1-9]\d* of [1-9]\d* answer$"))
        expect(page.locator("[data-figure=org-dead-letters] .op-value")).not_to_have_text("0")
        nodes = page.get_by_role("table").filter(has_text="Nodes")
        expect(nodes.get_by_role("cell", name="alive")).to_have_count(1)
        deployments = page.get_by_role("table").filter(has_text="Serve deployments")
        # One node: the ingest replicas answer the API too, there is no "api" application.
        expect(deployments.get_by_role("cell", name="ingest", exact=True).first).to_be_visible()
        expect(deployments.get_by_role("cell", name="api", exact=True)).to_have_count(0)
        row = page.locator(f"[data-dead-letter='{dead_id}']")
        expect(row).to_contain_text(f"project {missing} (deleted)")
        expect(row).to_contain_text("ForeignKeyViolation")
        # A refresh comes on its own (the page polls): the "Updated" line changes.
        updated = page.locator(".operator > .hint").first.inner_text()
        expect(page.locator(".operator > .hint").first).not_to_have_text(updated,
                                                                         timeout=10_000)
        shot("1-operator-figures")

        # The cause is fixed (the project is back); replay from the page.
        with instance_database(crashray_up) as (conn, _):
            conn.execute("INSERT INTO projects (id, organization_id, slug, name,"
                         " grouping_config) SELECT %s, organization_id, %s, 'restored',"
                         " grouping_config FROM projects WHERE organization_id ="
                         " (SELECT id FROM organizations WHERE slug = 'crashray')"
                         " ORDER BY id LIMIT 1", (missing, f"restored-{marker}"))
        row.get_by_role("button", name="Replay").click()
        expect(page.locator("#status")).to_contain_text("Replayed 1 dead letter")
        expect(row).to_have_count(0)
        shot("2-replayed")
        assert errors == []
    finally:
        page.context.close()

    # The replayed event is processed into an issue of the restored project.
    auth = {"Authorization": f"Bearer {crashray_up.token}"}
    issues_url = (f"{crashray_up.base_url}/api/0/projects/crashray/restored-{marker}/"
                  "issues/")
    deadline = time.monotonic() + CONSUMED_TIMEOUT_S
    titles: list[str] = []
    while time.monotonic() < deadline and not titles:
        answer = httpx.get(issues_url, headers=auth, params={"query": ""}, timeout=30)
        titles = [i["title"] for i in answer.json()] if answer.status_code == 200 else []
        time.sleep(0.5)
    assert titles == [f"OperatorReplay: {marker}"]
