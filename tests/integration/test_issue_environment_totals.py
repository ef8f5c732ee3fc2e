"""The issue page's totals follow the environment chosen (Sentry's issue details with
``?environment=``): ``count``, ``userCount``, ``firstSeen``/``lastSeen`` and the 24-hour
and 30-day graphs count the issue's events in that environment only. Over the world of
tests/integration/test_environments.py (real PostgreSQL, chDB, a real consumer): Gamma
has an event in production an hour ago and one in staging ten days ago."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.integration import test_environments
from tests.integration.test_environments import Envs

pytestmark = pytest.mark.integration

#: The stored world of the environments test, shared, not copied.
envs = test_environments.envs


def issue(e: Envs, name: str, **params: str) -> dict[str, Any]:
    response = e.get(f"/issues/{e.issues[name]}/", **params)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def total(series: list[list[int]]) -> int:
    return sum(n for _, n in series)


def test_an_issues_counts_and_graphs_follow_the_environment_asked_for(envs: Envs) -> None:
    everywhere = issue(envs, "Gamma")
    assert everywhere["count"] == "2" and total(everywhere["stats"]["30d"]) == 2
    production = issue(envs, "Gamma", environment="production")
    assert production["count"] == "1"
    assert total(production["stats"]["24h"]) == 1 and total(production["stats"]["30d"]) == 1
    assert production["firstSeen"] == production["lastSeen"]
    seen = dt.datetime.fromisoformat(production["lastSeen"])
    assert dt.timedelta(minutes=50) < dt.datetime.now(dt.UTC) - seen < dt.timedelta(hours=2)
    staging = issue(envs, "Gamma", environment="staging")
    assert staging["count"] == "1"
    assert total(staging["stats"]["24h"]) == 0 and total(staging["stats"]["30d"]) == 1
    assert staging["lastSeen"] < production["firstSeen"]
    # The graphs keep Sentry's shape: 24 hourly and 30 daily [unix time, count] pairs.
    assert len(staging["stats"]["24h"]) == 24 and len(staging["stats"]["30d"]) == 30
    # The issue itself (title, status, id) does not change with the environment.
    assert {k: staging[k] for k in ("id", "title", "status")} == {
        k: everywhere[k] for k in ("id", "title", "status")}


def test_an_environment_without_events_of_the_issue_counts_nothing(envs: Envs) -> None:
    nowhere = issue(envs, "Alpha", environment="staging")
    assert (nowhere["count"], nowhere["userCount"]) == ("0", 0)
    assert nowhere["firstSeen"] is None and nowhere["lastSeen"] is None
    assert total(nowhere["stats"]["24h"]) == total(nowhere["stats"]["30d"]) == 0


def test_another_organization_cannot_read_an_issue_in_any_environment(envs: Envs) -> None:
    response = envs.get(f"/issues/{envs.issues['Gamma']}/", token=envs.eve,
                        environment="production")
    assert response.status_code == 404


def test_an_issues_tag_facets_follow_the_environment_asked_for(envs: Envs) -> None:
    """Gamma's tags: both environments over all its events, one of them per environment,
    and the same for a key's values."""
    def facets(**params: str) -> dict[str, dict[str, int]]:
        response = envs.get(f"/issues/{envs.issues['Gamma']}/tags/", **params)
        assert response.status_code == 200, response.text
        return {f["key"]: {v["value"]: v["count"] for v in f["topValues"]}
                for f in response.json()}

    assert facets()["environment"] == {"production": 1, "staging": 1}
    assert facets(environment="production")["environment"] == {"production": 1}
    assert facets(environment="staging")["environment"] == {"staging": 1}
    assert all(sum(values.values()) == 1 for values in facets(environment="staging").values())
    values = envs.get(f"/issues/{envs.issues['Gamma']}/tags/environment/values/",
                      environment="staging")
    assert values.status_code == 200, values.text
    assert [(v["value"], v["count"]) for v in values.json()] == [("staging", 1)]
    assert facets(environment="nowhere") == {}
