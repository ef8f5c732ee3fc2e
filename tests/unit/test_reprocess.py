"""The pure parts of ``crashray reprocess`` (pipelines/reprocess.py): taking a stored event
back to its minified frames, regrouping it as ingest would, deciding what becomes of an
emptied issue, and the command's summary line. No Ray, no databases."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from cluster.pipelines_cli import reprocess_summary
from events.grouping.rules import grouping_rules_from_text
from events.grouping_memo import GroupingMemo, grouping_key, referenced_tags, rules_read_release
from events.process import ProjectGrouping
from pipelines.reprocess import (
    EmptiedIssue,
    GroupingSettingsInvalid,
    JobCaches,
    ProjectionDecision,
    ReprocessJobSpec,
    emptied_issues,
    job_caches,
    moves_into,
    project_grouping,
    raw_event,
    regroup_event,
    was_symbolicated,
    yield_to_live,
)
from storage.projects import ProjectGroupingSettings

NOW = dt.datetime(2026, 12, 4, 12, tzinfo=dt.UTC)
MINIFIED = {"abs_path": "app:///build/app.min.js", "lineno": 1, "colno": 785}
ORIGINAL = {"abs_path": "/src/orders.js", "lineno": 9, "colno": 13, "function": "apply",
            "data": {"sourcemap": "app:///build/app.min.js.map"}}


def symbolicated_event() -> dict[str, Any]:
    return {
        "event_id": uuid.uuid4().hex, "platform": "node", "timestamp": NOW.timestamp(),
        "exception": {"values": [{"type": "TypeError", "value": "unknown coupon",
                                  "stacktrace": {"frames": [ORIGINAL]},
                                  "raw_stacktrace": {"frames": [MINIFIED]}}]},
        "errors": [{"type": "js_no_source", "url": "app:///vendor.js"},
                   {"type": "invalid_data", "name": "user.email"}],
        "title": "TypeError: unknown coupon", "culprit": "apply(/src/orders.js)",
        "metadata": {"type": "TypeError"}, "location": "/src/orders.js",
        "tags": [["level", "error"]]}


def test_a_symbolicated_event_goes_back_to_its_minified_frames_and_keeps_relay_errors() -> None:
    stored = symbolicated_event()
    raw = raw_event(stored)
    value = raw["exception"]["values"][0]
    assert value["stacktrace"] == {"frames": [MINIFIED]} and "raw_stacktrace" not in value
    assert raw["errors"] == [{"type": "invalid_data", "name": "user.email"}]
    assert not {"title", "culprit", "metadata", "location"} & set(raw)
    assert stored["exception"]["values"][0]["stacktrace"] == {"frames": [ORIGINAL]}  # as was


def test_an_event_never_symbolicated_is_unchanged_but_for_the_derived_summary() -> None:
    stored = {"event_id": "a" * 32, "exception": {"values": [
        {"type": "KeyError", "stacktrace": {"frames": [{"function": "f"}]}}]},
        "title": "KeyError", "errors": [{"type": "js_no_source"}]}
    assert raw_event(stored) == {"event_id": "a" * 32, "exception": stored["exception"]}


def test_a_regrouped_event_follows_the_projects_current_fingerprint_rules() -> None:
    event = raw_event(symbolicated_event())
    before = regroup_event(event, 1, 1, ProjectGrouping(), None, NOW, NOW)
    rules = grouping_rules_from_text('type:TypeError -> coupons title="Coupons"', "")
    after = regroup_event(event, 1, 1, ProjectGrouping(rules=rules), None, NOW, NOW)
    assert before.grouping.hashes != after.grouping.hashes
    assert after.issue.title == "Coupons" and after.event["title"] == "Coupons"
    assert after.timestamp == NOW and after.received == NOW


def test_the_symbolicator_sees_the_minified_frames() -> None:
    seen: list[dict[str, Any]] = []

    def symbolicate(event: dict[str, Any], project_id: int, org_id: int | None
                    ) -> dict[str, Any]:
        seen.append(event)
        return event

    regroup_event(raw_event(symbolicated_event()), 7, 3, ProjectGrouping(), symbolicate, NOW,
                  NOW)
    assert seen[0]["exception"]["values"][0]["stacktrace"]["frames"] == [MINIFIED]


def test_an_issue_emptied_into_one_issue_merges_and_into_several_is_resolved() -> None:
    moves = {10: {30: 2}, 11: {30: 1, 31: 4}, 12: {30: 1}}
    # 12 still has events; 31 was merged into 32 meanwhile.
    assert emptied_issues(moves, with_events={12, 30, 32}, live_of={31: 32}) == [
        EmptiedIssue(10, 30, {30: 2}), EmptiedIssue(11, None, {30: 1, 32: 4})]


def test_an_issue_merged_elsewhere_meanwhile_is_left_alone() -> None:
    assert emptied_issues({10: {30: 2}}, with_events={30}, live_of={10: 40}) == []


def test_moves_are_seen_from_the_receiving_issue() -> None:
    assert moves_into({10: {30: 2}, 11: {30: 1, 31: 4}}) == {30: {10: 2, 11: 1}, 31: {11: 4}}


def settings(fingerprint: str = "", config: str = "v3") -> ProjectGroupingSettings:
    return ProjectGroupingSettings(5, config, None, None, True, fingerprint, "")


def test_rules_that_do_not_parse_stop_the_job_naming_the_project() -> None:
    with pytest.raises(GroupingSettingsInvalid, match="project 5: its grouping rules"):
        project_grouping(settings("type:X ->"))
    with pytest.raises(GroupingSettingsInvalid, match="unknown grouping config 'v99'"):
        project_grouping(settings(config="v99"))
    assert project_grouping(settings("type:X -> x")).rules is not None


def test_the_summary_line_names_what_moved_and_the_rate() -> None:
    result = SimpleNamespace(job_id=4, resumed=True, finished=True, slices_done=3,
                             slices_total=3, events_read=1000, events_changed=600,
                             events_moved=500, issues_created=[9], issues_merged=[1, 2],
                             issues_emptied=[3], events_this_run=400, took_s=2.0,
                             events_per_s=200.0, stage_s={})
    assert reprocess_summary("acme", "web", result) == (
        "reprocess job 4 of acme/web (resumed): 1000 events read, 600 changed, 500 moved"
        " to another issue; issues: 1 created, 2 merged, 1 emptied (resolved); 400 events"
        " in 2.0 s (200 events/s)")
    stopped = SimpleNamespace(**{**vars(result), "finished": False, "slices_done": 1})
    assert reprocess_summary("acme", "web", stopped).endswith(
        "1 of 3 slices done, stopped early (200 events/s); run the same command again to"
        " continue")


def test_rules_naming_tags_make_those_tags_part_of_the_grouping_key() -> None:
    assert referenced_tags("tags.server_name:web-* -> web", "") == frozenset(
        {"server_name", "transaction"})
    assert referenced_tags("type:X -> {{ tags.region }}", "") == frozenset(
        {"region", "transaction"})
    assert referenced_tags("tags.*:x -> y", "") is None
    event = {"exception": {"values": [{"type": "X"}]}, "event_id": "1", "timestamp": 1.0,
             "tags": [["browser", "Chrome"], ["region", "eu"]]}
    other_browser = {**event, "event_id": "2", "timestamp": 2.0,
                     "tags": [["browser", "Firefox"], ["region", "eu"]]}
    other_region = {**event, "tags": [["browser", "Chrome"], ["region", "us"]]}
    tags = referenced_tags("type:X -> {{ tags.region }}", "")
    assert grouping_key("v3", event, tags) == grouping_key("v3", other_browser, tags)
    assert grouping_key("v3", event, tags) != grouping_key("v3", other_region, tags)
    assert grouping_key("v3", event, None) != grouping_key("v3", other_browser, None)
    assert grouping_key("v3", event, tags) != grouping_key("v2", event, tags)
    own = {**event, "fingerprint": ["{{ tags.browser }}"]}
    assert grouping_key("v3", own, tags) != grouping_key(
        "v3", {**own, "tags": other_browser["tags"]}, tags)


def test_the_release_is_part_of_the_grouping_key_only_when_rules_read_it() -> None:
    rules = "release:app@2 type:X -> two"
    event = {"exception": {"values": [{"type": "X"}]}, "release": "app@1", "event_id": "1"}
    other = {**event, "release": "app@2"}
    assert rules_read_release(rules) and not rules_read_release("type:X -> x")
    assert grouping_key("v3", event, None, reads_release=False) == grouping_key(
        "v3", other, None, reads_release=False)
    assert grouping_key("v3", event, None, reads_release=True) != grouping_key(
        "v3", other, None, reads_release=True)
    grouping = ProjectGrouping(rules=grouping_rules_from_text(rules, ""))
    memo = GroupingMemo(None, reads_release=rules_read_release(rules))
    hashes = [regroup_event(e, 1, 1, grouping, None, NOW, NOW, memo).grouping.hashes
              for e in (event, other)]
    assert hashes[0] != hashes[1] and memo.misses == 2


def test_a_worker_keeps_one_jobs_decisions_across_its_slices() -> None:
    """A job's projections decided in one slice are not reprocessed in the next one; a
    worker that moves to another job (or the same job id of another project or database)
    starts afresh, and the oldest decisions go first past the bound."""
    spec = ReprocessJobSpec(4, "chdb:///x", "postgresql:///a", 1, 2, ProjectGrouping(),
                            None, None, None)
    caches = job_caches(spec)
    caches.remember(11, ProjectionDecision(None, "a" * 32))
    assert job_caches(replace(spec, nice=10)) is caches  # the same job, another task
    assert set(job_caches(spec).decisions()) == {11}
    for other in (replace(spec, job_id=5), replace(spec, project_id=3),
                  replace(spec, postgres_url="postgresql:///b")):
        assert job_caches(other).decisions() == {}
    bounded = JobCaches(("k",), spec, max_decisions=2)
    for projection in (1, 2, 3):
        bounded.remember(projection, ProjectionDecision(None, "b" * 32))
    snapshot = bounded.decisions()
    bounded.remember(4, ProjectionDecision(None, "c" * 32))
    assert set(snapshot) == {2, 3} and set(bounded.decisions()) == {3, 4}


def test_a_task_pauses_while_live_events_wait_but_no_longer_than_its_bound() -> None:
    slept: list[float] = []
    waiting = iter([True, True, False])
    assert yield_to_live(lambda: next(waiting), 2.0, 0.25, slept.append) == 0.5
    assert slept == [0.25, 0.25]
    slept.clear()
    assert yield_to_live(lambda: True, 0.6, 0.25, slept.append) == pytest.approx(0.6)
    assert slept == [0.25, 0.25, pytest.approx(0.1)]
    assert yield_to_live(lambda: True, 0.0, 0.25, slept.append) == 0.0  # setting 0
    assert yield_to_live(lambda: False, 5.0, 0.25, slept.append) == 0.0  # nothing waits


def test_memoized_grouping_is_the_grouping() -> None:
    rules = grouping_rules_from_text("type:TypeError -> {{ tags.region }}", "")
    grouping = ProjectGrouping(rules=rules)
    memo = GroupingMemo(referenced_tags("type:TypeError -> {{ tags.region }}", ""))
    events = []
    for region in ("eu", "us", "eu"):
        event = raw_event(symbolicated_event())
        event["tags"] = [["region", region], ["browser", uuid.uuid4().hex]]
        events.append(event)
    plain = [regroup_event(e, 1, 1, grouping, None, NOW, NOW).grouping for e in events]
    memoized = [regroup_event(e, 1, 1, grouping, None, NOW, NOW, memo).grouping
                for e in events]
    assert [g.hashes for g in memoized] == [g.hashes for g in plain]
    assert plain[0].hashes == plain[2].hashes != plain[1].hashes
    assert (memo.hits, memo.misses) == (1, 2)


def test_tags_are_derived_again_only_from_an_event_symbolication_changed() -> None:
    stored = symbolicated_event()
    assert was_symbolicated(stored)
    plain = {**raw_event(stored), "errors": [], "tags": [["level", "error"], ["custom", "x"]]}
    assert not was_symbolicated(plain)
    kept = regroup_event(dict(plain), 1, 1, ProjectGrouping(), None, NOW, NOW,
                         tags_current=True)
    assert kept.event["tags"] == plain["tags"]
    derived = regroup_event(dict(plain), 1, 1, ProjectGrouping(), None, NOW, NOW)
    assert ["mechanism", "generic"] not in derived.event["tags"]
    assert ["custom", "x"] in derived.event["tags"]


def test_projection_tables_are_named_per_tenant_job_and_slice() -> None:
    """A slice's table of projection hashes (storage/regroup.py) is its own: another
    organization, project, job or slice start never shares its name, and the name is a
    plain identifier (a start before 1970 too)."""
    from storage.regroup import (
        PROJECTION_TABLE_PREFIX,
        RegroupProjection,
        RegroupSlice,
        projection_table,
    )

    start = dt.datetime(2026, 12, 5, 3, tzinfo=dt.UTC)
    base = RegroupSlice(1, 2, start, start + dt.timedelta(hours=1), None, None, 7,
                        RegroupProjection(("exception",), (), None, (), ()))
    variants = [base, replace(base, organization_id=3), replace(base, project_id=3),
                replace(base, version=8), replace(base, since=start - dt.timedelta(hours=1)),
                replace(base, since=dt.datetime(1969, 12, 31, tzinfo=dt.UTC))]
    names = [projection_table(v) for v in variants]

    assert len(set(names)) == len(names)
    assert all(n.startswith(PROJECTION_TABLE_PREFIX) and n.replace("_", "").isalnum()
               for n in names)
    assert names[0].startswith(f"{PROJECTION_TABLE_PREFIX}1_2_7_")
