"""``crashray rollups rebuild``: every derived count of a project recomputed from its stored
events, the repair tool for any count that went wrong. Idempotent: a second run finds
nothing to change.

What is recomputed:

- ClickHouse ``issue_counts_hourly`` (the per-issue hourly rollup that issue ``stats``,
  project stats and the issue stream's graphs read): the project's rows are replaced by
  the distinct stored events per issue and hour (storage/clickhouse.py
  ``rebuild_issue_counts``), under the issue id each event was stored with, as consumers
  count them; readers map merged issues to the survivor as before.
- PostgreSQL ``issues.times_seen``, ``first_seen``, ``last_seen`` of the project's live
  (not merged) issues: the distinct stored events whose grouping hash the issue owns now,
  and the first and last of their timestamps. Issues with no stored event left (their
  events expired) keep their counters, and are reported.

Not recomputed: outcomes (``stats_v2``): they count what ingest accepted, filtered and
rate-limited, most of which is never stored as an event.

The issues are locked (``FOR UPDATE``) before ClickHouse is read and until they are
written, so a consumer committing counts of this project waits for the rebuild. An event
stored in ClickHouse whose consumer has not yet committed (a window of a batch, well under
a second) may be counted twice or, in the rollup, once more when that consumer ships its
counts; run the rebuild again, or while the project receives no events, for exact counts.
It is a repair for counts that went wrong, not a live process.

Tenant scope: the project is resolved within its organization, and every read and write,
in both databases, names the organization and the project.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storage.clickhouse import EventStore
from storage.rollups import IssueTotals, hash_issues, lock_live_issues, set_issue_totals
from storage.scope import ProjectScope


@dataclass(frozen=True)
class RebuildResult:
    #: Events the rebuilt hourly rollup counts.
    rollup_events: int
    #: Live issues whose counters were set, and of those, the ones that had been wrong.
    issues_recounted: int
    issues_corrected: int
    #: Live issues with no stored event (their counters were left as they were).
    issues_without_events: list[int]


def issue_totals(hash_totals: Mapping[str, tuple[int, dt.datetime, dt.datetime]],
                 issue_of_hash: Mapping[str, int], live_issues: set[int]
                 ) -> dict[int, IssueTotals]:
    """Per live issue: the sum of its hashes' events, the first and last timestamps.
    Events whose hash no live issue owns (a deleted issue's) count for none."""
    totals: dict[int, IssueTotals] = {}
    for hash_, (events, first, last) in hash_totals.items():
        issue = issue_of_hash.get(hash_)
        if issue is None or issue not in live_issues:
            continue
        seen = totals.get(issue)
        totals[issue] = IssueTotals(events, first, last) if seen is None else IssueTotals(
            seen.times_seen + events, min(seen.first_seen, first), max(seen.last_seen, last))
    return totals


def rebuild(conn: Any, store: EventStore, project: ProjectScope) -> RebuildResult:
    """Recompute the project's derived counts (call inside a transaction; the caller
    commits)."""
    rollup_events = store.rebuild_issue_counts(project.organization_id, project.id)
    live = lock_live_issues(conn, project)
    totals = issue_totals(store.hash_event_totals(project.organization_id, project.id),
                          hash_issues(conn, project), set(live))
    corrected = set_issue_totals(conn, project, totals)
    return RebuildResult(rollup_events, len(totals), corrected,
                         sorted(set(live) - set(totals)))
