"""What the issue and event routes read: the issue stream, issues in Sentry's shape with
their users and hourly/daily counts, an issue's hashes and activity. Every function takes
the tenant scope it reads in (an organization and its projects, or one ``ProjectRef``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from events.issue_stream import StreamRequest, link_header, parse_stream_request
from events.search import (
    SearchQuery,
    event_filters,
    in_environments,
    issue_filters,
    needs_events,
    parse_search,
)
from serve_apps.api.deps import Services
from serve_apps.api.shapes import iso, seen_release_json
from storage import issue_environments as env_store
from storage import issues as issue_store
from storage import releases as release_store
from storage import triage as triage_store
from storage.projects import ProjectRef

#: Events matching an issue search are looked up as their primary hashes, at most this many
#: (the most recent first); the issue stream then pages over the issues they belong to.
MAX_MATCHING_HASHES: Final = 50_000
#: Issues ranked by users (``sort=user``): the most recently seen this many.
MAX_USER_SORTED: Final = 1_000
#: Issues per page of the stream unless ``limit`` says otherwise (Sentry's default).
DEFAULT_STREAM_LIMIT: Final = 25
#: How far back an event-side search looks when the request names no period.
DEFAULT_SEARCH_DAYS: Final = 90


@dataclass(frozen=True)
class StreamPage:
    issues: list[dict[str, Any]]
    link: str


def issue_stream(svc: Services, organization_id: int, projects: Sequence[ProjectRef],
                 params: list[tuple[str, str]], url: str, user_id: int | None = None
                 ) -> StreamPage:
    """One page of the issue stream of ``projects`` (all of the organization, all seen by
    the caller): Sentry's search syntax, sort, period, environment and cursor. ``user_id``
    is the caller (``assigned:me``, bookmarks; None: an organization token)."""
    now = dt.datetime.now(dt.UTC)
    request = parse_stream_request(params, DEFAULT_STREAM_LIMIT, svc.config.max_page_size, now)
    by_id = {p.id: p for p in projects}
    ids = sorted(by_id)
    search = parse_search(request.query, now)
    with svc.pool.connection() as conn:
        search = release_store.resolve_latest(conn, organization_id, ids, search)
    issue_ids = _issues_with_matching_events(svc, organization_id, ids, search, request, now)
    page = request.limit + 1
    with svc.pool.connection() as conn:
        filters = issue_filters(search)
        if request.sort == "user":  # by users: rank the first MAX_USER_SORTED by date
            rows = issue_store.search_issues(conn, organization_id, ids, filters, issue_ids,
                                             request.since, "date", MAX_USER_SORTED, 0,
                                             user_id)
        else:
            rows = issue_store.search_issues(conn, organization_id, ids, filters, issue_ids,
                                             request.since, request.sort, page,
                                             request.offset, user_id)
    users = users_by_issue(svc, rows, by_id)
    if request.sort == "user":
        rows = sorted(rows, key=lambda r: (-users.get(r.id, 0), -r.id))[
            request.offset:request.offset + page]
    has_more, rows = len(rows) > request.limit, rows[:request.limit]
    stats = hourly_stats(svc, organization_id, ids, [r.id for r in rows], now)
    triage = triage_fields(svc, organization_id, user_id, rows)
    body = [{**issue_json(svc, by_id[r.project_id], r), **triage[r.id],
             "userCount": users.get(r.id, 0), "stats": {"24h": stats.get(r.id, [])}}
            for r in rows]
    return StreamPage(body, link_header(url, params, request.offset, request.limit, has_more))


def _issues_with_matching_events(svc: Services, organization_id: int, project_ids: list[int],
                                 search: SearchQuery, request: StreamRequest,
                                 now: dt.datetime) -> list[int] | None:
    """Issues with an event matching the event side of the search (None: no such
    condition, every issue passes)."""
    # An ``end`` (start/end) bounds the issues by their events: an issue's last_seen alone
    # cannot say whether it had an event before ``end``.
    if not needs_events(search) and not request.environments and request.until is None:
        return None
    filters = in_environments(event_filters(search), request.environments)
    hashes = svc.clickhouse.matching_hashes(
        organization_id, project_ids, filters,
        request.since or now - dt.timedelta(days=DEFAULT_SEARCH_DAYS),
        request.until or now + dt.timedelta(days=1), MAX_MATCHING_HASHES)
    with svc.pool.connection() as conn:
        return issue_store.issues_with_hashes(conn, organization_id, project_ids, hashes)


def users_by_issue(svc: Services, rows: Sequence[issue_store.IssueRow],
                   projects: dict[int, ProjectRef]) -> dict[int, int]:
    users: dict[int, int] = {}
    for project_id in {r.project_id for r in rows}:
        users.update(user_counts(svc, projects[project_id],
                                 [r.id for r in rows if r.project_id == project_id]))
    return users


def user_counts(svc: Services, project: ProjectRef, issue_ids: list[int]) -> dict[int, int]:
    with svc.pool.connection() as conn:
        issue_of_hash = issue_store.hashes_of_issues(conn, project, issue_ids)
    return svc.clickhouse.user_counts(project.organization_id, project.id, issue_of_hash)


def hourly_stats(svc: Services, organization_id: int, project_ids: list[int],
                 issue_ids: list[int], now: dt.datetime, days: int = 0
                 ) -> dict[int, list[list[int]]]:
    """Each issue's last 24 hours, hour by hour (Sentry's ``stats["24h"]``: pairs of unix
    time and count), or with ``days`` its last days, day by day (``stats["30d"]``), from
    the ClickHouse rollup."""
    if days:
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        buckets = [day - dt.timedelta(days=days - 1 - n) for n in range(days)]
    else:
        hour = now.replace(minute=0, second=0, microsecond=0)
        buckets = [hour - dt.timedelta(hours=23 - n) for n in range(24)]
    with svc.pool.connection() as conn:
        owner = issue_store.merged_group_ids(conn, organization_id, project_ids, issue_ids)
    counts = svc.clickhouse.hourly_counts(organization_id, project_ids, sorted(owner),
                                          buckets[0])
    totals: dict[int, dict[dt.datetime, int]] = {i: {} for i in issue_ids}
    for group_id, by_hour in counts.items():
        target = totals.setdefault(owner.get(group_id, group_id), {})
        for at, n in by_hour.items():
            bucket = at.replace(hour=0) if days else at
            target[bucket] = target.get(bucket, 0) + n
    return {i: [[int(b.timestamp()), totals[i].get(b, 0)] for b in buckets]
            for i in issue_ids}


def issue_json(svc: Services, project: ProjectRef, r: issue_store.IssueRow) -> dict[str, Any]:
    return {
        "id": str(r.id), "shortId": f"{project.slug.upper()}-{r.id}", "title": r.title,
        "culprit": r.culprit, "count": str(r.times_seen), "firstSeen": iso(r.first_seen),
        "lastSeen": iso(r.last_seen), "level": r.level, "status": r.status,
        "substatus": r.substatus, "statusDetails": r.status_details,
        "type": r.type, "metadata": r.metadata,
        "platform": r.platform,
        "permalink": f"{svc.config.base_url}/organizations/{project.organization_slug}"
                     f"/issues/{r.id}/",
        "project": {"id": str(project.id), "slug": project.slug},
    }


def triage_fields(svc: Services, organization_id: int, user_id: int | None,
                  rows: Sequence[issue_store.IssueRow]) -> dict[int, dict[str, Any]]:
    """Per issue, Sentry's ``assignedTo``, ``isBookmarked``, ``isSubscribed`` and
    ``subscriptionDetails`` as the caller (``user_id``) sees them; three queries a page."""
    ids = [r.id for r in rows]
    with svc.pool.connection() as conn:
        users, teams = triage_store.assignees(
            conn, organization_id, [r.assignee_user_id for r in rows if r.assignee_user_id],
            [r.assignee_team_id for r in rows if r.assignee_team_id])
        viewer = triage_store.viewer_state(conn, user_id, ids)
    fields: dict[int, dict[str, Any]] = {}
    for r in rows:
        who = users.get(r.assignee_user_id or 0) or teams.get(r.assignee_team_id or 0)
        reason = viewer.subscribed.get(r.id)
        fields[r.id] = {"assignedTo": assigned_to_json(who),
                        "isBookmarked": r.id in viewer.bookmarked,
                        "isSubscribed": reason is not None,
                        "subscriptionDetails": None if reason is None else {"reason": reason}}
    return fields


def assigned_to_json(who: triage_store.Assignee | None) -> dict[str, Any] | None:
    """Sentry's ``assignedTo``: ``{"type": "user", "id", "name", "email"}`` or
    ``{"type": "team", "id", "name"}`` (a team's name is its slug there)."""
    if who is None:
        return None
    shown: dict[str, Any] = {"type": who.type, "id": str(who.id), "name": who.name}
    if who.type == "user":
        shown["email"] = who.email
    return shown


def issue_detail(svc: Services, project: ProjectRef, row: issue_store.IssueRow,
                 user_id: int | None = None, environments: Sequence[str] = ()
                 ) -> dict[str, Any]:
    """An issue with its users, its last 24 hours and 30 days, its activity, and its
    triage state as the caller (``user_id``) sees it. With ``environments`` (Sentry's
    ``?environment=``), its counts, first and last seen and graphs are those of its
    events in them."""
    now = dt.datetime.now(dt.UTC)
    org = project.organization_id
    if environments:
        totals = _environment_totals(svc, project, row.id, environments, now)
    else:
        totals = {"userCount": user_counts(svc, project, [row.id]).get(row.id, 0), "stats": {
            "24h": hourly_stats(svc, org, [project.id], [row.id], now)[row.id],
            "30d": hourly_stats(svc, org, [project.id], [row.id], now, days=30)[row.id]}}
    with svc.pool.connection() as conn:
        first, last = release_store.issue_releases(conn, org, project.id, row.id)
    return {**issue_json(svc, project, row), **triage_fields(svc, org, user_id, [row])[row.id],
            **totals, "activity": activity(svc, project, row.id),
            "firstRelease": seen_release_json(first), "lastRelease": seen_release_json(last)}


def _environment_totals(svc: Services, project: ProjectRef, issue_id: int,
                        environments: Sequence[str], now: dt.datetime) -> dict[str, Any]:
    """``count``, ``userCount``, ``firstSeen``, ``lastSeen`` and ``stats`` of the issue's
    events in ``environments`` (null first/last seen when it has none there, as Sentry)."""
    hashes = issue_hash_list(svc, project, issue_id)
    found = env_store.environment_totals(svc.clickhouse, project, hashes, environments)
    hour = now.replace(minute=0, second=0, microsecond=0)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    hours = [hour - dt.timedelta(hours=23 - n) for n in range(24)]
    days = [day - dt.timedelta(days=29 - n) for n in range(30)]
    return {"count": str(found.events), "userCount": found.users,
            "firstSeen": iso(found.first_seen) if found.first_seen else None,
            "lastSeen": iso(found.last_seen) if found.last_seen else None,
            "stats": {"24h": env_store.environment_counts(svc.clickhouse, project, hashes,
                                                          environments, hours, daily=False),
                      "30d": env_store.environment_counts(svc.clickhouse, project, hashes,
                                                          environments, days, daily=True)}}


def activity(svc: Services, project: ProjectRef, issue_id: int, kind: str | None = None
             ) -> list[dict[str, Any]]:
    with svc.pool.connection() as conn:
        entries = issue_store.issue_activity(conn, project, issue_id, kind)
    return [activity_json(a) for a in entries]


def activity_json(a: issue_store.Activity) -> dict[str, Any]:
    """One activity entry in Sentry's shape (a note: ``type`` "note", ``data.text``)."""
    user: dict[str, Any] | None = None if a.actor == "crashray" else {"name": a.actor}
    if user is not None and a.user_id is not None:
        user.update(id=str(a.user_id), username=a.actor)
    return {"id": str(a.id), "type": a.type, "data": a.data, "user": user,
            "dateCreated": iso(a.date_added)}


def issue_hash_list(svc: Services, project: ProjectRef, issue_id: int) -> list[str]:
    """The grouping hashes of an issue (its events are the events with these primary
    hashes, wherever merges and unmerges moved them)."""
    with svc.pool.connection() as conn:
        return sorted(issue_store.hashes_of_issues(conn, project, [issue_id]))
