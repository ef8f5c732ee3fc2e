"""Ownership rules through the Web API (``/projects/{org}/{project}/ownership/``) and the
auto-assignment of new issues by a real consumer: the first owner of the last matching
rule, within the project's organization only. Real parts: see
tests/integration/triage_world.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from storage.clickhouse import ClickHouseStore
from tests.integration.triage_world import World, build_world

pytestmark = pytest.mark.integration


@pytest.fixture
def w(chdb_store: ClickHouseStore) -> Iterator[World]:
    yield from build_world(chdb_store, "crashray_ownership")


def ownership_path(w: World) -> str:
    return f"/projects/{w.h.organization_slug}/{w.h.project_slug}/ownership/"


def framed(error_type: str, filename: str, module: str) -> dict[str, Any]:
    return {"platform": "python", "level": "error",
            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            "exception": {"values": [{"type": error_type, "value": "x", "stacktrace": {
                "frames": [{"filename": filename, "module": module, "function": "f",
                            "lineno": 1, "in_app": True}]}}]}}


def ingest(w: World, events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Store ``events`` with a fresh consumer (it loads the rules) → issues by error type."""
    w.h.enqueue([w.h.event_item(e) for e in events])
    consumer = w.h.consumer(project_settings_refresh_s=0.0)
    while consumer.run_once():
        pass
    shown = w.call("ada", "GET", f"/projects/{w.h.organization_slug}/{w.h.project_slug}/"
                   "issues/", params={"query": ""}).json()
    return {i["metadata"]["type"]: i for i in shown}


RULES = "path:* ada\npath:src/payments/* #backend\nmodule:shop.cart.* bob@example.com"


def test_rules_are_saved_in_sentrys_shape_and_new_issues_go_to_their_owner(
        w: World) -> None:
    assert w.call("ada", "GET", ownership_path(w)).json()["raw"] == ""
    saved = w.call("ada", "PUT", ownership_path(w), json={"raw": RULES})
    assert saved.status_code == 200, saved.text
    assert saved.json()["raw"] == RULES
    assert saved.json()["autoAssignment"] == "Auto Assign to Issue Owner"
    issues = ingest(w, [framed("PayError", "src/payments/card.py", "shop.payments.card"),
                        framed("CartError", "src/cart/views.py", "shop.cart.views"),
                        framed("OtherError", "lib/util.py", "lib.util")])
    assert issues["PayError"]["assignedTo"] == {"type": "team", "id": str(w.backend_team),
                                                "name": "backend"}
    assert issues["CartError"]["assignedTo"]["name"] == "bob"
    assert issues["OtherError"]["assignedTo"]["name"] == "ada"
    # Issues that existed before the rules keep their (absent) assignee.
    assert issues["Alpha"]["assignedTo"] is None
    activity = w.issue("bob", int(issues["CartError"]["id"]))
    assert activity["activity"][0]["type"] == "assigned"
    assert activity["activity"][0]["user"] is None  # by Crashray, not a person
    assert activity["isSubscribed"] is True


def test_auto_assignment_turned_off_assigns_nobody(w: World) -> None:
    w.call("ada", "PUT", ownership_path(w), json={
        "raw": RULES, "autoAssignment": "Turn off Auto-Assignment"})
    issues = ingest(w, [framed("PayError", "src/payments/card.py", "shop.payments.card")])
    assert issues["PayError"]["assignedTo"] is None
    assert w.call("ada", "GET", ownership_path(w)).json()["raw"] == RULES


@pytest.mark.parametrize(("raw", "says"), [
    ("path:src/* #intruders", "#intruders is no member or team of this organization"),
    ("path:src/* eve@example.com", "eve@example.com is no member or team"),
    ("src/* #backend", "line 1: expected type:pattern owner"),
])
def test_rules_naming_strangers_or_malformed_are_refused_and_nothing_changes(
        w: World, raw: str, says: str) -> None:
    w.call("ada", "PUT", ownership_path(w), json={"raw": RULES})
    refused = w.call("ada", "PUT", ownership_path(w), json={"raw": raw})
    assert refused.status_code == 400 and says in refused.json()["detail"]
    assert w.call("ada", "GET", ownership_path(w)).json()["raw"] == RULES


def test_another_organizations_user_cannot_read_or_change_the_rules(w: World) -> None:
    assert w.call("eve", "GET", ownership_path(w)).status_code == 404
    assert w.call("eve", "PUT", ownership_path(w), json={"raw": "path:* eve"}
                  ).status_code == 404
    assert w.call("bob", "PUT", ownership_path(w), json={"raw": "path:* bob"}
                  ).status_code == 403  # a member may read, not change, project settings
