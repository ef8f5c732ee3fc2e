"""The grouping memo (events/grouping_memo.py): events that differ only in what grouping
never reads share one result, events that differ in anything it reads do not, and the
processor's memo follows the project's rules. Pure code: no Ray, no database."""

from __future__ import annotations

import copy
import datetime as dt
import json
import uuid
from typing import Any

import orjson
import pytest

from events.grouping import GROUPING_CONFIGS, group_hashes_for_event
from events.grouping.rules import grouping_rules_from_text
from events.grouping_memo import GroupingMemo, grouping_key, rule_texts
from events.process import EventProcessor, ItemContext, ProjectGrouping
from tests.unit.grouping.helpers import CASES_DIR, corpus_event, normalize

NOW = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)
SDK_EVENTS = ("python-sdk-2.75.0-exception.envelope", "node-sdk-11.12.0-exception.envelope",
              "node-sdk-11.12.0-exception-44k.envelope")


def grouping_events() -> list[dict[str, Any]]:
    """Every grouping case and SDK capture, normalized as the grouping stage sees them."""
    cases = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(CASES_DIR.glob("*.json"))]
    events = [normalize({k: v for k, v in c.items() if not k.startswith("_")}) for c in cases]
    return events + [normalize(corpus_event(name)) for name in SDK_EVENTS]


def with_other_locals(event: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """``event`` with other frame locals and source context in every frame; how many frames."""
    changed = copy.deepcopy(event)
    frames = 0
    sections = [changed.get("stacktrace")]
    for key in ("exception", "threads"):
        values = (changed.get(key) or {}).get("values") or []
        sections += [v.get(s) for v in values for s in ("stacktrace", "raw_stacktrace")]
    for section in sections:
        for frame in (section or {}).get("frames") or []:
            frame["vars"] = {"request_id": uuid.uuid4().hex, "n": frames}
            frame["pre_context"] = [f"# {uuid.uuid4().hex}"]
            frame["post_context"] = [f"x = {frames}"]
            frames += 1
    return changed, frames


@pytest.mark.parametrize("config", sorted(GROUPING_CONFIGS))
def test_frame_locals_and_source_context_never_change_a_grouping(config: str) -> None:
    """What makes leaving them out of the key sound, checked on every grouping case and SDK
    capture under every config: the results are equal, and so are the keys."""
    checked = 0
    for event in grouping_events():
        other, frames = with_other_locals(event)
        if not frames:
            continue
        plain = group_hashes_for_event(event, config)
        changed = group_hashes_for_event(other, config)
        assert (changed.hashes, changed.title) == (plain.hashes, plain.title)
        assert grouping_key(config, other, None) == grouping_key(config, event, None)
        checked += 1
    assert checked >= 20


def test_what_grouping_reads_splits_the_key() -> None:
    event = normalize(corpus_event(SDK_EVENTS[0]))
    key = grouping_key("v3", event, frozenset())
    frame_changed = copy.deepcopy(event)
    frame_changed["exception"]["values"][0]["stacktrace"]["frames"][-1]["function"] = "other"
    value_changed = copy.deepcopy(event)
    value_changed["exception"]["values"][0]["value"] = "another message"
    for other in (frame_changed, value_changed, {**event, "platform": "javascript"},
                  {**event, "fingerprint": ["custom"]}):
        assert grouping_key("v3", other, frozenset()) != key
    assert grouping_key("v2", event, frozenset()) != key
    unrelated = {**event, "event_id": uuid.uuid4().hex, "user": {"id": "someone-else"},
                 "extra": {"n": 1}, "timestamp": 1.0, "request": {"url": "https://x/"}}
    assert grouping_key("v3", unrelated, frozenset()) == key


def test_the_memo_of_parsed_rules_reads_the_tags_and_release_they_name() -> None:
    rules = grouping_rules_from_text(
        "tags.region:eu type:ZeroDivisionError -> eu, {{ tags.shard }}\nrelease:app@2 -> two",
        "stack.function:compute_* -app")
    texts = rule_texts(rules)
    assert any("tags.shard" in t for t in texts) and any("-app" in t for t in texts)
    memo = GroupingMemo.for_rules(rules)
    assert memo.tags == frozenset({"region", "shard", "transaction"}) and memo.reads_release
    plain = GroupingMemo.for_rules(grouping_rules_from_text("type:X -> x", ""))
    assert plain.tags == frozenset({"transaction"}) and not plain.reads_release


def processed_hashes(processor: EventProcessor, event: dict[str, Any]) -> tuple[str, ...]:
    ctx = ItemContext(project_id=1, key_id=None, received_at=NOW, organization_id=1)
    return processor.process(orjson.dumps(event), ctx).grouping.hashes


def test_the_processor_groups_with_the_memo_as_without_it() -> None:
    """Events of one issue that differ in locals, ids and untouched tags hit the memo; a tag
    or release a rule reads still splits them, and new rules get a new memo."""
    text = "tags.region:eu -> eu-issue\nrelease:app@2 -> release-two"
    rules = grouping_rules_from_text(text, "")
    memoized, unmemoized = EventProcessor(), EventProcessor(grouping_memo_entries=0)
    for processor in (memoized, unmemoized):
        processor.set_grouping(1, ProjectGrouping(rules=rules))
    base = corpus_event(SDK_EVENTS[0])
    events = []
    for region, release in (("us", "app@1"), ("us", "app@1"), ("eu", "app@1"),
                            ("us", "app@2"), ("us", "app@1")):
        event, _ = with_other_locals(base)
        event.update(event_id=uuid.uuid4().hex, release=release,
                     tags={"region": region, "browser": uuid.uuid4().hex},
                     timestamp=NOW.timestamp())
        events.append(event)
    got = [processed_hashes(memoized, e) for e in events]
    assert got == [processed_hashes(unmemoized, e) for e in events]
    assert got[0] == got[1] == got[4] and len({got[0], got[2], got[3]}) == 3
    memo = memoized.grouping_memo(1)
    assert (memo.hits, memo.misses) == (2, 3)
    # The consumers reload a project's settings every few seconds: the same rules, parsed
    # again, keep the memo.
    memoized.set_grouping(1, ProjectGrouping(rules=grouping_rules_from_text(text, "")))
    assert memoized.grouping_memo(1) is memo
    memoized.set_grouping(1, ProjectGrouping())  # the rules removed: a new memo
    assert memoized.grouping_memo(1) is not memo
    assert processed_hashes(memoized, events[2]) == processed_hashes(
        EventProcessor(grouping_memo_entries=0), events[2]) != got[2]


def test_the_memo_keeps_at_most_its_bound() -> None:
    memo = GroupingMemo(frozenset(), max_entries=2)
    for n in range(4):
        memo.group({"message": f"m{n}", "platform": "python"}, "v3", None)
    assert len(memo._results) == 2 and memo.misses == 4
    memo.group({"message": "m3", "platform": "python"}, "v3", None)
    memo.group({"message": "m0", "platform": "python"}, "v3", None)
    assert (memo.hits, memo.misses) == (1, 5)


def test_a_memo_of_no_entries_remembers_nothing() -> None:
    memo = GroupingMemo(None, max_entries=0)
    for _ in range(2):
        memo.group({"message": "m", "platform": "python"}, "v3", None)
    assert (memo.hits, memo.misses, len(memo._results)) == (0, 0, 0)
