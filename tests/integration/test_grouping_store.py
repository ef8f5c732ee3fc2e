"""Hash → issue resolution with the grouping cache, and grouping-version transitions, against
the machine's real PostgreSQL (no Ray needed: the resolver is what a grouping shard runs)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from actors.grouping import IssueResolver
from events.process import ProjectGrouping
from storage import postgres
from storage.bootstrap import bootstrap, ensure_project
from storage.issues import IssueCandidate, delete_issue, merge_issues, unmerge_hashes
from storage.projects import grouping_settings, set_grouping_config, upgrade_grouping_configs
from storage.scope import ProjectScope
from tests.support import scratch_database

#: The bootstrapped project (organization 1, project 1) the tests work in.
PROJECT = ProjectScope(1, 1)

A, B, C, OLD, NEW = ("a" * 32, "b" * 32, "c" * 32, "0" * 32, "f" * 32)


@pytest.fixture
def conn() -> Iterator[psycopg.Connection[Any]]:
    with scratch_database("crashray_grouping") as url:
        postgres.migrate(url)
        with psycopg.connect(url) as connection:
            bootstrap(connection, grouping_config="v1")
            yield connection


def candidate(*hashes: str, secondary: tuple[str, ...] = (), project: int = 1
              ) -> IssueCandidate:
    return IssueCandidate(project, hashes, "v1", f"Error: {hashes[0][:4]}", "", "error",
                          "error", "python", dt.datetime.now(dt.UTC), None,
                          secondary_hashes=secondary)


def issue_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM issues").fetchone()
    assert row is not None
    return int(row[0])


def test_known_hashes_come_from_the_cache_and_name_the_same_issue(
        conn: psycopg.Connection[Any]) -> None:
    resolver = IssueResolver(conn, max_cached_hashes=100)
    first = resolver.issue_ids_for([candidate(A, B)])
    again = resolver.issue_ids_for([candidate(A, B), candidate(A, B)])
    assert again == first * 2 and issue_count(conn) == 1
    assert resolver.stats() == {"cached_hashes": 2, "hits": 2, "misses": 1}
    # A known hash beside a new one is not a cache hit: the new hash must join the issue.
    assert resolver.issue_ids_for([candidate(C, B)]) == first
    assert resolver.issue_ids_for([candidate(C)]) == first
    assert issue_count(conn) == 1


def test_a_merge_reaches_the_cache_before_the_next_batch(conn: psycopg.Connection[Any]) -> None:
    resolver = IssueResolver(conn, max_cached_hashes=100)
    [a] = resolver.issue_ids_for([candidate(A)])
    [b] = resolver.issue_ids_for([candidate(B)])
    assert a is not None and b is not None and a != b
    with conn.transaction():
        merged = merge_issues(conn, PROJECT, [a, b], "test")
    assert merged is not None
    survivor, _ = merged
    assert resolver.issue_ids_for([candidate(A), candidate(B)]) == [survivor, survivor]


def test_an_unmerge_and_a_delete_reach_the_cache(conn: psycopg.Connection[Any]) -> None:
    from storage.issues import MovedEvents

    resolver = IssueResolver(conn, max_cached_hashes=100)
    [issue] = resolver.issue_ids_for([candidate(A, B)])
    assert issue is not None
    now = dt.datetime.now(dt.UTC)
    with conn.transaction():
        split = unmerge_hashes(conn, PROJECT, issue, [B], MovedEvents(0, now, now, "t", ""), "test")
    assert resolver.issue_ids_for([candidate(B)]) == [split]
    with conn.transaction():
        assert delete_issue(conn, PROJECT, split, "test")
    # The deleted issue's hash is tombstoned: its events are discarded, not re-grouped.
    assert resolver.issue_ids_for([candidate(B)]) == [None]
    assert resolver.issue_ids_for([candidate(A)]) == [issue]


def test_the_cache_stays_within_its_bound(conn: psycopg.Connection[Any]) -> None:
    resolver = IssueResolver(conn, max_cached_hashes=2)
    ids = resolver.issue_ids_for([candidate(A), candidate(B), candidate(C)])
    assert resolver.stats()["cached_hashes"] == 2
    # Evicted hashes are found again in PostgreSQL, in the same issues.
    assert resolver.issue_ids_for([candidate(A), candidate(B), candidate(C)]) == ids


def test_secondary_hashes_keep_an_issue_together_across_a_version_change(
        conn: psycopg.Connection[Any]) -> None:
    resolver = IssueResolver(conn, max_cached_hashes=100)
    [old_issue] = resolver.issue_ids_for([candidate(OLD)])
    # The new version hashes the same error differently; its old hash still finds the issue.
    assert resolver.issue_ids_for([candidate(NEW, secondary=(OLD,))]) == [old_issue]
    # And the new hash now belongs to that issue for good (after the transition, too).
    assert IssueResolver(conn, 100).issue_ids_for([candidate(NEW)]) == [old_issue]
    # Secondary hashes never create issues: an unknown one gives a new issue of NEW hashes.
    [fresh] = resolver.issue_ids_for([candidate(C, secondary=(B,))])
    assert fresh != old_issue
    rows = conn.execute("SELECT hash FROM group_hashes WHERE issue_id = %s", (fresh,)).fetchall()
    assert rows == [(C,)]


def test_a_version_change_keeps_the_old_one_as_secondary_for_the_transition(
        conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        set_grouping_config(conn, 1, "v2", 3600, auto_update=False)
    settings = grouping_settings(conn, [1])[1]
    assert (settings.config, settings.secondary_config, settings.auto_update) == (
        "v2", "v1", False)
    assert settings.secondary_expiry is not None
    left = settings.secondary_expiry - dt.datetime.now(dt.UTC)
    assert dt.timedelta(minutes=59) < left <= dt.timedelta(hours=1)
    grouping = ProjectGrouping(settings.config, None, settings.secondary_config,
                               settings.secondary_expiry)
    assert grouping.secondary_at(dt.datetime.now(dt.UTC)) == "v1"
    assert grouping.secondary_at(dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)) is None
    # Setting the same version again keeps the running transition.
    with conn.transaction():
        set_grouping_config(conn, 1, "v2", 3600, auto_update=False)
    assert grouping_settings(conn, [1])[1].secondary_expiry == settings.secondary_expiry


def test_upgrades_move_only_auto_updating_projects_on_older_versions(
        conn: psycopg.Connection[Any]) -> None:
    pinned, _ = ensure_project(conn, 1, "pinned", "v1")
    conn.execute("UPDATE projects SET grouping_auto_update = false WHERE id = %s", (pinned,))
    current, _ = ensure_project(conn, 1, "current", "v2")
    conn.commit()
    assert upgrade_grouping_configs(conn, "v2", ["v1"], 86_400) == [1]
    settings = grouping_settings(conn, [1, pinned, current])
    assert (settings[1].config, settings[1].secondary_config) == ("v2", "v1")
    assert settings[pinned].config == "v1" and settings[current].secondary_config is None
    assert upgrade_grouping_configs(conn, "v2", ["v1"], 86_400) == []


def test_a_hash_unmerged_to_another_issue_is_not_cached_as_the_events(
        conn: psycopg.Connection[Any]) -> None:
    """An event with hashes of two issues (A, and B unmerged from it) joins A; the cache
    must still send events with only B's hash to B."""
    from storage.issues import MovedEvents

    resolver = IssueResolver(conn, max_cached_hashes=100)
    [a] = resolver.issue_ids_for([candidate(A, B)])
    assert a is not None
    now = dt.datetime.now(dt.UTC)
    with conn.transaction():
        b = unmerge_hashes(conn, PROJECT, a, [B], MovedEvents(0, now, now, "t", ""), "test")
    assert resolver.issue_ids_for([candidate(A, B)]) == [a]
    assert resolver.issue_ids_for([candidate(B)]) == [b]
    assert resolver.issue_ids_for([candidate(B)]) == [b]  # from the cache, too
