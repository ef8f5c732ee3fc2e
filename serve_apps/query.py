"""The REST API (``/api/0/…``, Sentry's public Web API shapes) and the start page.

This first version serves the two list endpoints the pipeline is verified with; the full
query API is a later issue. Every request is scoped: the token names an organization,
the URL's organization must be that one, and the project must belong to it. A wrong tenant
answers 404, not 403, so ids cannot be probed.
"""

import datetime as dt
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from psycopg_pool import ConnectionPool
from ray import serve

from actors.clickhouse import clickhouse_store
from events.envelope import normalize_event_id
from events.errors import CrashrayError
from events.grouping import DEFAULT_GROUPING_CONFIG, GROUPING_CONFIGS, group_hashes_for_event
from events.grouping.fingerprint_rules import RuleSyntaxError, parse_fingerprint_rules
from events.grouping.rules import grouping_rules_from_text
from events.grouping.stacktrace_rules import parse_stacktrace_rules
from events.issue_stream import (
    StreamQueryError,
    StreamRequest,
    link_header,
    parse_stream_request,
)
from events.lifecycle import (
    ACTIVITY_FOR_STATUS,
    InvalidStatusUpdate,
    StatusUpdate,
    needs_user_count,
    parse_status_update,
    stored_details,
)
from events.quotas import SpikeProtection
from events.search import (
    SearchQuery,
    SearchSyntaxError,
    event_conditions,
    issue_filters,
    issue_where,
    needs_events,
    parse_search,
)
from events.stats import StatsQueryError, parse_stats_query, stats_response
from serve_apps.event_json import event_json
from serve_apps.quota_api import QuotaApi, need, need_project_write, parse_spike_protection
from serve_apps.tenancy_api import TenancyApi
from storage import issues as issue_store
from storage import quotas as quota_store
from storage import tenancy
from storage.grouping import grouping_settings, set_grouping_config
from storage.postgres import ProjectRef, find_project, project_by_id
from storage.tenancy import (
    Access,
    Caller,
    Session,
    caller_access,
    organization_of_issue,
    session_user,
    token_caller,
)


@dataclass(frozen=True)
class QueryConfig:
    postgres_url: str
    clickhouse_dsn: str
    base_url: str
    max_page_size: int
    #: Seconds the previous grouping version keeps matching after a version change.
    grouping_transition_s: float = 30 * 86_400.0
    #: Browser sessions and the login rate limit (see cluster/settings.py).
    session_lifetime_s: float = 14 * 86_400.0
    login_max_failures: int = 5
    login_window_s: float = 300.0
    spike_defaults: SpikeProtection = field(default_factory=SpikeProtection)


@dataclass(frozen=True)
class Credentials:
    """What a request brings to say who it is."""

    authorization: str | None
    session: str | None
    csrf_token: str | None
    method: str


SESSION_COOKIE = "crashray_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
NO_CREDENTIALS = Credentials(None, None, None, "GET")


def credentials(request: Request) -> Credentials:
    return Credentials(request.headers.get("authorization"),
                       request.cookies.get(SESSION_COOKIE),
                       request.headers.get("x-csrftoken"), request.method)


Auth = Annotated[Credentials, Depends(credentials)]


#: Events matching an issue search are looked up as their primary hashes, at most this many
#: (the most recent first); the issue stream then pages over the issues they belong to.
MAX_MATCHING_HASHES = 50_000
#: Values shown per tag key on an issue (Sentry shows the top 9; its values endpoint more).
TAG_TOP_VALUES = 9
TAG_VALUES_LIMIT = 100
#: Issues ranked by users (``sort=user``): the most recently seen this many.
MAX_USER_SORTED = 1_000


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class Api:
    """Scoped reads; no HTTP here beyond raising ``HTTPException``."""

    def __init__(self, config: QueryConfig) -> None:
        self.config = config
        self.pool = ConnectionPool(config.postgres_url, min_size=1, max_size=4, open=True)
        self.clickhouse = clickhouse_store(config.clickhouse_dsn)
        self.quotas = QuotaApi(self.pool, config.base_url)
        self.tenancy = TenancyApi(self.pool, config.base_url, DEFAULT_GROUPING_CONFIG)

    def caller(self, credentials: Credentials) -> Caller:
        """Who asks: a Bearer token, else a browser session (whose unsafe requests must
        carry its CSRF token in ``X-CSRFToken``); 401 when neither is valid."""
        with self.pool.connection() as conn:
            if credentials.authorization:
                if not credentials.authorization.lower().startswith("bearer "):
                    raise HTTPException(401, "Authentication credentials were not provided.")
                caller = token_caller(conn, credentials.authorization[7:].strip())
                if caller is None:
                    raise HTTPException(401, "Invalid token")
                return caller
            user = session_user(conn, credentials.session) if credentials.session else None
        if user is None:
            raise HTTPException(401, "Authentication credentials were not provided.")
        if credentials.method not in SAFE_METHODS and not (
                credentials.csrf_token and hmac.compare_digest(
                    credentials.csrf_token.encode(errors="replace"),
                    user.csrf_token.encode())):
            raise HTTPException(403, "CSRF token missing or incorrect (send it in X-CSRFToken)")
        return Caller(user.username, user.user_id, None, None)

    def login(self, body: Any, client_ip: str) -> tuple[Session, dict[str, Any]]:
        """Password login (rate limited per username and per address)."""
        if not isinstance(body, dict) or not isinstance(body.get("username"), str) \
                or not isinstance(body.get("password"), str):
            raise HTTPException(400, 'send {"username": "...", "password": "..."}')
        with self.pool.connection() as conn, conn.transaction():
            try:
                user = tenancy.login(conn, body["username"], body["password"], client_ip,
                                     self.config.login_max_failures,
                                     self.config.login_window_s)
            except tenancy.LoginThrottled as exc:
                raise HTTPException(429, str(exc)) from exc
        if user is None:
            raise HTTPException(401, "wrong username or password")
        with self.pool.connection() as conn, conn.transaction():
            session = tenancy.start_session(conn, user, self.config.session_lifetime_s)
        return session, {"user": {"id": str(user), "username": body["username"]},
                         "csrfToken": session.csrf_token}

    def logout(self, credentials: Credentials) -> None:
        if credentials.session:
            self.caller(credentials)  # a logout is an unsafe request: CSRF-checked
            with self.pool.connection() as conn, conn.transaction():
                tenancy.end_session(conn, credentials.session)

    def whoami(self, credentials: Credentials) -> dict[str, Any]:
        caller = self.caller(credentials)
        with self.pool.connection() as conn:
            orgs = tenancy.caller_organizations(conn, caller)
            csrf = None
            if credentials.session and not credentials.authorization:
                user = session_user(conn, credentials.session)
                csrf = None if user is None else user.csrf_token
        return {"user": None if caller.user_id is None else {
                    "id": str(caller.user_id), "username": caller.name},
                "organizations": orgs, "csrfToken": csrf}

    def organizations(self, credentials: Credentials) -> list[dict[str, Any]]:
        caller = self.caller(credentials)
        with self.pool.connection() as conn:
            slugs = tenancy.caller_organizations(conn, caller)
            rows = conn.execute("SELECT id, slug, name, date_added FROM organizations"
                                " WHERE slug = ANY(%s) ORDER BY slug", (slugs,)).fetchall()
        return [{"id": str(r[0]), "slug": r[1], "name": r[2], "dateCreated": iso(r[3])}
                for r in rows]

    def visible_projects(self, scope: Access, wanted: Sequence[str]) -> list[ProjectRef]:
        """The caller's projects named by id (none or -1: all it sees); 400 for a malformed
        id, and an id it cannot see is simply not there (as in Sentry, without probing)."""
        need(scope, "event:read")
        if any(not w.lstrip("-").isdigit() for w in wanted):
            raise HTTPException(400, "project must be project ids, e.g. ?project=1&project=2")
        ids = {int(w) for w in wanted} - {-1}
        chosen = sorted(scope.project_ids & ids if ids else scope.project_ids)
        with self.pool.connection() as conn:
            refs = [project_by_id(conn, scope.organization_id, p) for p in chosen]
        return [r for r in refs if r is not None]

    def organization_projects(self, scope: Access) -> list[dict[str, Any]]:
        need(scope, "project:read")
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT id, slug, name, platform, date_added FROM projects"
                                " WHERE organization_id = %s AND id = ANY(%s) ORDER BY slug",
                                (scope.organization_id, sorted(scope.project_ids))).fetchall()
        return [{"id": str(r[0]), "slug": r[1], "name": r[2], "platform": r[3],
                 "dateCreated": iso(r[4]),
                 "organization": {"slug": scope.organization_slug}} for r in rows]

    def organization(self, credentials: Credentials, org_slug: str) -> Access:
        """The caller's access to ``org_slug``; 404 without any (no probing)."""
        caller = self.caller(credentials)
        with self.pool.connection() as conn:
            access = caller_access(conn, caller, org_slug)
        if access is None:
            raise HTTPException(404, "The requested resource does not exist")
        return access

    def issue_access(self, credentials: Credentials, issue_id: int) -> Access:
        """The caller's access to the organization of issue ``issue_id``; 404 without."""
        caller = self.caller(credentials)
        with self.pool.connection() as conn:
            org_slug = organization_of_issue(conn, issue_id)
            access = None if org_slug is None else caller_access(conn, caller, org_slug)
        if access is None:
            raise HTTPException(404, "The requested resource does not exist")
        return access

    def stats_v2(self, scope: Access, params: list[tuple[str, str]]) -> dict[str, Any]:
        """Outcomes of the projects the caller sees (Sentry's stats_v2, events/stats.py)."""
        need(scope, "org:read")
        project_ids = sorted(scope.project_ids)
        try:
            query = parse_stats_query(params)
            rows = self.clickhouse.outcome_stats(scope.organization_id, project_ids, query)
            return stats_response(query, rows)
        except StatsQueryError as exc:
            raise HTTPException(400, str(exc)) from exc

    def project(self, scope: Access, org_slug: str, project_slug: str, needed: str
                ) -> ProjectRef:
        need(scope, needed)
        if org_slug != scope.organization_slug:
            raise HTTPException(404, "The requested resource does not exist")
        with self.pool.connection() as conn:
            project = find_project(conn, scope.organization_id, project_slug)
        if project is None or project.id not in scope.project_ids:
            raise HTTPException(404, "The requested resource does not exist")
        return project

    def issue_stream(self, scope: Access, projects: Sequence[ProjectRef],
                     params: list[tuple[str, str]], url: str
                     ) -> tuple[list[dict[str, Any]], str]:
        """One page of the issue stream of ``projects`` (the caller sees all of them) and its
        ``Link`` header: Sentry's search syntax, sort, period, environment and cursor."""
        now = dt.datetime.now(dt.UTC)
        try:
            request = parse_stream_request(params, 25, self.config.max_page_size, now)
            search = parse_search(request.query, now)
        except (StreamQueryError, SearchSyntaxError) as exc:
            raise HTTPException(400, str(exc)) from exc
        by_id = {p.id: p for p in projects}
        ids = sorted(by_id)
        where, args = issue_where(issue_filters(search))
        issue_ids = self._issues_with_matching_events(scope, ids, search, request, now)
        page = request.limit + 1
        with self.pool.connection() as conn:
            if request.sort == "user":  # by users: rank the first MAX_USER_SORTED by date
                rows = issue_store.search_issues(conn, ids, where, args, issue_ids,
                                                 request.since, "date", MAX_USER_SORTED, 0)
            else:
                rows = issue_store.search_issues(conn, ids, where, args, issue_ids,
                                                 request.since, request.sort, page,
                                                 request.offset)
        users = self._users_by_issue(rows, by_id)
        if request.sort == "user":
            rows = sorted(rows, key=lambda r: (-users.get(r.id, 0), -r.id))[
                request.offset:request.offset + page]
        has_more, rows = len(rows) > request.limit, rows[:request.limit]
        stats = self._hourly_stats(ids, [r.id for r in rows], now)
        body = [{**self.issue_json(by_id[r.project_id], r), "userCount": users.get(r.id, 0),
                 "stats": {"24h": stats.get(r.id, [])}} for r in rows]
        return body, link_header(url, params, request.offset, request.limit, has_more)

    def _issues_with_matching_events(self, scope: Access, project_ids: list[int],
                                     search: SearchQuery, request: StreamRequest,
                                     now: dt.datetime) -> list[int] | None:
        """Issues with an event matching the event side of the search (None: no such
        condition, every issue passes)."""
        if not needs_events(search) and not request.environments:
            return None
        conditions, values = event_conditions(search)
        if request.environments:
            conditions += " AND environment IN {stream_envs:Array(String)}"
            values["stream_envs"] = list(request.environments)
        hashes = self.clickhouse.matching_hashes(
            scope.organization_id, project_ids, conditions, values,
            request.since or now - dt.timedelta(days=90),
            request.until or now + dt.timedelta(days=1), MAX_MATCHING_HASHES)
        with self.pool.connection() as conn:
            return issue_store.issues_with_hashes(conn, project_ids, hashes)

    def _users_by_issue(self, rows: Sequence[issue_store.IssueRow],
                        projects: dict[int, ProjectRef]) -> dict[int, int]:
        users: dict[int, int] = {}
        for project_id in {r.project_id for r in rows}:
            users.update(self.user_counts(projects[project_id],
                                          [r.id for r in rows if r.project_id == project_id]))
        return users

    def _hourly_stats(self, project_ids: list[int], issue_ids: list[int], now: dt.datetime,
                      days: int = 0) -> dict[int, list[list[int]]]:
        """Each issue's last 24 hours, hour by hour (Sentry's ``stats["24h"]``: pairs of
        unix time and count), or with ``days`` its last days, day by day (``stats["30d"]``),
        from the ClickHouse rollup."""
        if days:
            day = now.replace(hour=0, minute=0, second=0, microsecond=0)
            buckets = [day - dt.timedelta(days=days - 1 - n) for n in range(days)]
        else:
            hour = now.replace(minute=0, second=0, microsecond=0)
            buckets = [hour - dt.timedelta(hours=23 - n) for n in range(24)]
        with self.pool.connection() as conn:
            owner = issue_store.merged_group_ids(conn, project_ids, issue_ids)
        counts = self.clickhouse.hourly_counts(project_ids, sorted(owner), buckets[0])
        totals: dict[int, dict[dt.datetime, int]] = {i: {} for i in issue_ids}
        for group_id, by_hour in counts.items():
            target = totals.setdefault(owner.get(group_id, group_id), {})
            for at, n in by_hour.items():
                bucket = at.replace(hour=0) if days else at
                target[bucket] = target.get(bucket, 0) + n
        return {i: [[int(b.timestamp()), totals[i].get(b, 0)] for b in buckets]
                for i in issue_ids}

    def project_stats(self, project: ProjectRef, resolution: str, since: str | None,
                      until: str | None) -> list[list[int]]:
        """Stored events of a project per hour or day (Sentry's project ``stats/``:
        ``resolution=1h|1d``, ``since``/``until`` unix seconds; default the last 24 hours
        or 30 days), from the rollup."""
        bucket_s = {"1h": 3600, "1d": 86_400}.get(resolution)
        if bucket_s is None:
            raise HTTPException(400, "resolution must be 1h or 1d")
        now = dt.datetime.now(dt.UTC)
        try:
            end = dt.datetime.fromtimestamp(float(until), dt.UTC) if until else now
            start = dt.datetime.fromtimestamp(float(since), dt.UTC) if since else \
                end - dt.timedelta(seconds=bucket_s * (24 if bucket_s == 3600 else 30))
        except (ValueError, OverflowError) as exc:
            raise HTTPException(400, "since and until must be unix times in seconds") from exc
        first = dt.datetime.fromtimestamp(start.timestamp() // bucket_s * bucket_s, dt.UTC)
        if (end - first).total_seconds() / bucket_s > 1000:
            raise HTTPException(400, "at most 1000 buckets; narrow since/until")
        counts = self.clickhouse.project_counts(project.id, first, end, bucket_s)
        buckets, at = [], first
        while at < end:
            buckets.append([int(at.timestamp()), counts.get(at, 0)])
            at += dt.timedelta(seconds=bucket_s)
        return buckets

    def _issue_hashes(self, project: ProjectRef, issue_id: int) -> list[str]:
        with self.pool.connection() as conn:
            return sorted(issue_store.hashes_of_issues(conn, project.id, [issue_id]))

    def event_detail(self, project: ProjectRef, event_id: str,
                     issue: tuple[int, list[str]] | None = None) -> dict[str, Any]:
        """One stored event in Sentry's shape, with its neighbours within its issue."""
        try:
            normalized = normalize_event_id(event_id)
        except CrashrayError:
            normalized = None
        found = None if normalized is None else self.clickhouse.event_timestamp(
            project.organization_id, project.id, normalized)
        body = None if found is None else self.clickhouse.event_body(
            project.organization_id, project.id, normalized)
        if found is None or body is None or normalized is None:
            raise HTTPException(404, "Event not found")
        timestamp, primary_hash = found
        if issue is None:
            with self.pool.connection() as conn:
                owner = issue_store.issues_of_hashes(conn, project.id, [primary_hash])
            issue_id = owner.get(primary_hash, 0)
            hashes = self._issue_hashes(project, issue_id) if issue_id else [primary_hash]
        else:
            issue_id, hashes = issue
            if primary_hash not in hashes:
                raise HTTPException(404, "Event not found")
        previous_id, next_id = self.clickhouse.event_neighbours(
            project.organization_id, project.id, hashes, normalized, timestamp)
        event = orjson.loads(body)
        return event_json(event, event_id=normalized, project_id=project.id,
                          group_id=issue_id, title=str(event.get("title") or ""),
                          date_created=iso(timestamp), previous_id=previous_id,
                          next_id=next_id)

    def issue_events(self, scope: Access, issue_id: int, query: str, limit: int,
                     offset: int) -> list[dict[str, Any]]:
        """An issue's events, newest first, narrowed by Sentry's search syntax (its event
        side: tags, fields, free text)."""
        project, row = self.scoped_issue(scope, issue_id, "event:read")
        try:
            conditions, values = event_conditions(parse_search(query, dt.datetime.now(dt.UTC)))
        except SearchSyntaxError as exc:
            raise HTTPException(400, str(exc)) from exc
        events = self.clickhouse.issue_events(
            project.organization_id, project.id, self._issue_hashes(project, row.id),
            conditions, values, limit, offset)
        return [{"id": e.event_id, "eventID": e.event_id, "groupID": str(row.id),
                 "projectID": str(project.id), "dateCreated": iso(e.timestamp),
                 "title": e.title, "message": e.message, "culprit": e.culprit,
                 "platform": e.platform,
                 "tags": [{"key": k, "value": v} for k, v in [("level", e.level), *e.tags]]}
                for e in events]

    def issue_event(self, scope: Access, issue_id: int, which: str) -> dict[str, Any]:
        """``latest``, ``oldest`` or an event id, of one issue."""
        project, row = self.scoped_issue(scope, issue_id, "event:read")
        hashes = self._issue_hashes(project, row.id)
        event_id = which
        if which in ("latest", "oldest"):
            found = self.clickhouse.latest_event_id(project.organization_id, project.id,
                                                    hashes, oldest=which == "oldest")
            if found is None:
                raise HTTPException(404, "Event not found")
            event_id = found
        return self.event_detail(project, event_id, (row.id, hashes))

    def issue_tags(self, scope: Access, issue_id: int, key: str | None = None,
                   top: int = TAG_TOP_VALUES) -> list[dict[str, Any]]:
        """Tag facets of an issue's events: per key, how many events carry it, how many
        values it takes, and the top values with counts (Sentry's ``/tags/``)."""
        project, row = self.scoped_issue(scope, issue_id, "event:read")
        facets = self.clickhouse.tag_facets(project.organization_id, project.id,
                                            self._issue_hashes(project, row.id), key, top)
        return [{"key": k, "name": k, "totalValues": events, "uniqueValues": distinct,
                 "topValues": [{"key": k, "name": v, "value": v, "count": n}
                               for v, n in values]}
                for k, events, distinct, values in facets]

    def user_counts(self, project: ProjectRef, issue_ids: list[int]) -> dict[int, int]:
        with self.pool.connection() as conn:
            issue_of_hash = issue_store.hashes_of_issues(conn, project.id, issue_ids)
        counts: dict[int, int] = self.clickhouse.user_counts(
            project.organization_id, project.id, issue_of_hash)
        return counts

    def issue_json(self, project: ProjectRef, r: issue_store.IssueRow) -> dict[str, Any]:
        return {
            "id": str(r.id), "shortId": f"{project.slug.upper()}-{r.id}", "title": r.title,
            "culprit": r.culprit, "count": str(r.times_seen), "firstSeen": iso(r.first_seen),
            "lastSeen": iso(r.last_seen), "level": r.level, "status": r.status,
            "substatus": r.substatus, "statusDetails": r.status_details,
            "type": r.type, "metadata": r.metadata,
            "platform": r.platform,
            "permalink": f"{self.config.base_url}/organizations/{project.organization_slug}"
                         f"/issues/{r.id}/",
            "project": {"id": str(project.id), "slug": project.slug},
        }

    def scoped_issue(self, scope: Access, issue_id: int, needed: str
                     ) -> tuple[ProjectRef, issue_store.IssueRow]:
        """The issue and its project, if the token's organization owns it; else 404."""
        need(scope, needed)
        with self.pool.connection() as conn:
            project_id = issue_store.issue_project(conn, scope.organization_id, issue_id)
            project = None if project_id is None else project_by_id(
                conn, scope.organization_id, project_id)
            row = None if project is None else issue_store.get_issue(conn, project.id, issue_id)
        if project is None or row is None or project.id not in scope.project_ids:
            raise HTTPException(404, "The requested resource does not exist")
        return project, row

    def issue_detail(self, scope: Access, issue_id: int) -> dict[str, Any]:
        project, row = self.scoped_issue(scope, issue_id, "event:read")
        users = self.user_counts(project, [row.id]).get(row.id, 0)
        now = dt.datetime.now(dt.UTC)
        stats = {"24h": self._hourly_stats([project.id], [row.id], now)[row.id],
                 "30d": self._hourly_stats([project.id], [row.id], now, days=30)[row.id]}
        return {**self.issue_json(project, row), "userCount": users, "stats": stats,
                "activity": self._activity(project, row.id)}

    def unmerge(self, scope: Access, issue_id: int, hashes: list[str]) -> dict[str, Any]:
        """Move some of an issue's hashes, and the events grouped by them, to a new issue."""
        project, row = self.scoped_issue(scope, issue_id, "event:write")
        with self.pool.connection() as conn:
            own = {h for h, _ in issue_store.issue_hashes(conn, project.id, row.id)}
        wanted = sorted(set(hashes))
        if not wanted or not set(wanted) <= own or set(wanted) == own:
            raise HTTPException(400, "name some, but not all, of this issue's hashes with"
                                     " ?id=<hash>&id=<hash> (see /hashes/)")
        totals = self.clickhouse.hash_totals(project.organization_id, project.id, wanted)
        now = dt.datetime.now(dt.UTC)
        moved = issue_store.MovedEvents(0, now, now, row.title, row.culprit) if totals is None \
            else issue_store.MovedEvents(totals.events, totals.first_seen, totals.last_seen,
                                         totals.title, totals.culprit)
        with self.pool.connection() as conn, conn.transaction():
            new_id = issue_store.unmerge_hashes(conn, project.id, row.id, wanted, moved,
                                                scope.actor)
        return {"issue": str(new_id), "hashes": wanted, "events": moved.count}

    def delete_issue(self, scope: Access, issue_id: int) -> None:
        project, row = self.scoped_issue(scope, issue_id, "event:admin")
        with self.pool.connection() as conn, conn.transaction():
            if not issue_store.delete_issue(conn, project.id, row.id, scope.actor):
                raise HTTPException(404, "The requested resource does not exist")

    def bulk_update(self, scope: Access, project: ProjectRef, ids: list[int],
                    body: Any) -> dict[str, Any]:
        """``PUT /projects/{org}/{project}/issues/?id=…``: merge, or one status for all.
        Ids outside the project are ignored, as if they did not exist."""
        need(scope, "event:write")
        if not ids:
            raise HTTPException(400, "name the issues with ?id=…&id=…")
        if not isinstance(body, dict):
            raise HTTPException(400, 'the body must be a JSON object such as {"merge": 1}')
        if body.get("merge") in (1, True, "1"):
            return self._merge(scope, project, ids)
        try:
            update = parse_status_update(body)
        except InvalidStatusUpdate as exc:
            raise HTTPException(400, str(exc)) from exc
        with self.pool.connection() as conn, conn.transaction():
            for issue_id in sorted(set(ids)):
                row = issue_store.get_issue(conn, project.id, issue_id)
                if row is None or row.merged_into is not None:
                    continue
                self._apply_status(conn, project, row, update, scope.actor)
        return {"status": update.status, "statusDetails": dict(update.details)}

    def _merge(self, scope: Access, project: ProjectRef, ids: list[int]) -> dict[str, Any]:
        with self.pool.connection() as conn, conn.transaction():
            result = issue_store.merge_issues(conn, project.id, ids, scope.actor)
        if result is None:
            raise HTTPException(400, "merging needs at least two unmerged issues of this"
                                     " project")
        survivor, merged = result
        return {"merge": {"parent": str(survivor), "children": [str(m) for m in merged]}}

    def activity(self, scope: Access, issue_id: int) -> list[dict[str, Any]]:
        project, row = self.scoped_issue(scope, issue_id, "event:read")
        return self._activity(project, row.id)

    def _activity(self, project: ProjectRef, issue_id: int) -> list[dict[str, Any]]:
        with self.pool.connection() as conn:
            entries = issue_store.issue_activity(conn, project.id, issue_id)
        return [{"id": str(a.id), "type": a.type, "data": a.data,
                 "user": None if a.actor == "crashray" else {"name": a.actor},
                 "dateCreated": iso(a.date_added)} for a in entries]

    def update_issue(self, scope: Access, issue_id: int, body: Any) -> dict[str, Any]:
        project, row = self.scoped_issue(scope, issue_id, "event:write")
        if not isinstance(body, dict):
            raise HTTPException(400, "the body must be a JSON object such as"
                                     ' {"status": "resolved"}')
        try:
            update = parse_status_update(body)
        except InvalidStatusUpdate as exc:
            raise HTTPException(400, str(exc)) from exc
        with self.pool.connection() as conn, conn.transaction():
            self._apply_status(conn, project, row, update, scope.actor)
        return self.issue_detail(scope, issue_id)

    def _apply_status(self, conn: Any, project: ProjectRef, row: issue_store.IssueRow,
                      update: StatusUpdate, actor: str) -> None:
        """Set one issue's state, its thresholds fixed now (inside the caller's transaction)."""
        users = self.user_counts(project, [row.id]).get(row.id, 0) \
            if needs_user_count(update.details) else 0
        details = stored_details(update, row.times_seen, row.last_release, users)
        substatus = "ongoing" if update.status == "unresolved" else None
        issue_store.set_status(conn, project.id, row.id, update.status, substatus, details,
                               ACTIVITY_FOR_STATUS[update.status],
                               {"status": update.status, **details}, actor)

    def issue_hashes(self, scope: Access, issue_id: int) -> list[dict[str, Any]]:
        project, row = self.scoped_issue(scope, issue_id, "event:read")
        with self.pool.connection() as conn:
            hashes = issue_store.issue_hashes(conn, project.id, row.id)
        return [{"id": h, "groupingConfig": config} for h, config in hashes]

    def grouping_info(self, project: ProjectRef, event_id: str) -> dict[str, Any]:
        """Why an event grouped as it did, recomputed from the stored (normalized) event."""
        try:
            normalized_id = normalize_event_id(event_id)
        except CrashrayError:
            normalized_id = None  # not an event id at all: nothing to find
        body = None if normalized_id is None else self.clickhouse.event_body(
            project.organization_id, project.id, normalized_id)
        if body is None:
            raise HTTPException(404, "Event not found")
        settings = self.project_settings(project)
        rules = grouping_rules_from_text(settings["fingerprintingRules"],
                                         settings["groupingEnhancements"])
        return group_hashes_for_event(orjson.loads(body), settings["groupingConfig"],
                                      rules=rules).to_json_dict()

    def project_settings(self, project: ProjectRef) -> dict[str, Any]:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT name, platform, date_added, scrub_data, scrub_defaults,"
                               " scrub_ip_addresses, sensitive_fields, exclude_fields"
                               " FROM projects WHERE id = %s", (project.id,)).fetchone()
            grouping = grouping_settings(conn, [project.id]).get(project.id)
            spike = quota_store.spike_protection(conn, [project.id],
                                                 self.config.spike_defaults).get(project.id)
        if row is None or grouping is None or spike is None:
            raise HTTPException(404, "The requested resource does not exist")
        expiry = grouping.secondary_expiry
        return {"id": str(project.id), "slug": project.slug, "name": row[0],
                "platform": row[1], "groupingConfig": grouping.config,
                "secondaryGroupingConfig": grouping.secondary_config,
                "secondaryGroupingExpiry": None if expiry is None else int(expiry.timestamp()),
                "groupingAutoUpdate": grouping.auto_update,
                "fingerprintingRules": grouping.fingerprinting_rules,
                "groupingEnhancements": grouping.grouping_enhancements,
                "spikeProtection": {"enabled": spike.enabled, "multiplier": spike.multiplier,
                                    "floorPerHour": spike.floor_per_hour},
                "dataScrubber": row[3], "dataScrubberDefaults": row[4],
                "scrubIPAddresses": row[5], "sensitiveFields": list(row[6]),
                "safeFields": list(row[7]),
                "dateCreated": iso(row[2]),
                "organization": {"slug": project.organization_slug}}

    def update_project(self, scope: Access, project: ProjectRef, body: Any
                       ) -> dict[str, Any]:
        need_project_write(scope, project)
        if not isinstance(body, dict):
            raise HTTPException(400, "the body must be a JSON object")
        updates: dict[str, Any] = {**_rule_updates(body), **_naming_updates(body),
                                   **_scrubbing_updates(body)}
        config, auto_update = _grouping_update(body)
        spike = None
        if body.get("spikeProtection") is not None:
            with self.pool.connection() as conn:
                now = quota_store.spike_protection(conn, [project.id],
                                                   self.config.spike_defaults)[project.id]
            spike = parse_spike_protection(body["spikeProtection"], now)
        with self.pool.connection() as conn, conn.transaction():  # all or nothing
            if spike is not None:
                quota_store.set_spike_protection(conn, project.id, *spike)
            for column, rules in updates.items():  # column names from the fixed lists
                conn.execute(f"UPDATE projects SET {column} = %s WHERE id = %s",
                             (rules, project.id))
            if config is not None or auto_update is not None:
                current = grouping_settings(conn, [project.id])[project.id]
                set_grouping_config(
                    conn, project.id, config or current.config,
                    self.config.grouping_transition_s,
                    # Choosing a version pins it unless the body also asks for updates.
                    auto_update=auto_update if auto_update is not None else (
                        current.auto_update and config in (None, current.config)))
        return self.project_settings(project)

    def events(self, project: ProjectRef, limit: int) -> list[dict[str, Any]]:
        rows = self.clickhouse.list_events(project.organization_id, project.id, limit)
        with self.pool.connection() as conn:
            # Merges and unmerges move hashes, not ClickHouse rows: an event belongs to the
            # issue its primary hash points to now (else to where its group was merged).
            by_hash = issue_store.issues_of_hashes(conn, project.id,
                                                   list({e.primary_hash for e in rows}))
            issue_of = issue_store.merged_into(conn, project.id, list({e.group_id for e in rows}))
        return [{
            "id": e.event_id, "eventID": e.event_id,
            "groupID": str(by_hash.get(e.primary_hash) or issue_of.get(e.group_id, e.group_id)),
            "projectID": str(project.id), "dateCreated": iso(e.timestamp), "title": e.title,
            "message": e.message, "culprit": e.culprit, "platform": e.platform,
            "tags": [{"key": k, "value": v} for k, v in [("level", e.level), *e.tags]],
        } for e in rows]


def _rule_updates(body: dict[str, Any]) -> dict[str, str]:
    """The rule settings a project update sets, each validated (line/column errors)."""
    updates: dict[str, str] = {}
    for setting, column, parse in (
            ("fingerprintingRules", "fingerprinting_rules", parse_fingerprint_rules),
            ("groupingEnhancements", "grouping_enhancements", parse_stacktrace_rules)):
        rules = body.get(setting)
        if rules is None:
            continue
        if not isinstance(rules, str):
            raise HTTPException(400, f"{setting} must be text, one rule a line")
        try:
            parse(rules)
        except RuleSyntaxError as exc:  # both parsers' errors name the line and column
            raise HTTPException(400, f"{setting}: {exc}") from exc
        updates[column] = rules
    return updates


#: Sentry's data-scrubbing project fields → columns (relay-pii's legacy options).
SCRUBBING_FLAGS = {"dataScrubber": "scrub_data", "dataScrubberDefaults": "scrub_defaults",
                   "scrubIPAddresses": "scrub_ip_addresses"}
SCRUBBING_LISTS = {"sensitiveFields": "sensitive_fields", "safeFields": "exclude_fields"}


def _scrubbing_updates(body: dict[str, Any]) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    for setting, column in SCRUBBING_FLAGS.items():
        if body.get(setting) is not None:
            if not isinstance(body[setting], bool):
                raise HTTPException(400, f"{setting} must be true or false")
            updates[column] = body[setting]
    for setting, column in SCRUBBING_LISTS.items():
        if body.get(setting) is not None:
            value = body[setting]
            if not isinstance(value, list) or not all(
                    isinstance(v, str) and v.strip() and len(v) <= 200 for v in value):
                raise HTTPException(400, f"{setting} must be a list of field names, e.g."
                                         ' ["card_number"]')
            updates[column] = [v.strip() for v in value]
    return updates


def _naming_updates(body: dict[str, Any]) -> dict[str, str]:
    """``name`` and ``platform`` of a project update (the slug stays: DSNs and URLs use
    the id and slug)."""
    updates: dict[str, str] = {}
    for setting, column in (("name", "name"), ("platform", "platform")):
        value = body.get(setting)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            raise HTTPException(400, f"{setting} must be text of 1 to 200 characters")
        updates[column] = value.strip()
    return updates


def _grouping_update(body: dict[str, Any]) -> tuple[str | None, bool | None]:
    """``groupingConfig`` (a known version) and ``groupingAutoUpdate`` of a project update."""
    config = body.get("groupingConfig")
    if config is not None and config not in GROUPING_CONFIGS:
        raise HTTPException(400, f"groupingConfig {config!r} is not a grouping version; known:"
                                 f" {', '.join(GROUPING_CONFIGS)}")
    auto_update = body.get("groupingAutoUpdate")
    if auto_update is not None and not isinstance(auto_update, bool):
        raise HTTPException(400, "groupingAutoUpdate must be true or false")
    return config, auto_update




app = FastAPI(title="Crashray API", docs_url=None, redoc_url=None)


@serve.deployment(name="api", ray_actor_options={"num_cpus": 0}, graceful_shutdown_timeout_s=5,
                  graceful_shutdown_wait_loop_s=0.5)
@serve.ingress(app)
class ApiDeployment:
    def __init__(self, config: QueryConfig) -> None:
        self.api = Api(config)

    @app.get("/projects/{org}/{project}/")
    def project_detail(self, org: str, project: str,
                       authorization: Auth = NO_CREDENTIALS
                       ) -> dict[str, Any]:
        ref = self.api.project(self.api.organization(authorization, org), org, project, "project:read")
        return self.api.project_settings(ref)

    @app.put("/projects/{org}/{project}/")
    def update_project(self, org: str, project: str, body: Annotated[Any, Body()] = None,
                       authorization: Auth = NO_CREDENTIALS
                       ) -> dict[str, Any]:
        scope = self.api.organization(authorization, org)
        ref = self.api.project(scope, org, project, "project:read")
        return self.api.update_project(scope, ref, body)

    @app.get("/projects/{org}/{project}/keys/")
    def project_keys(self, org: str, project: str,
                     authorization: Auth = NO_CREDENTIALS
                     ) -> list[dict[str, Any]]:
        scope = self.api.organization(authorization, org)
        ref = self.api.project(scope, org, project, "project:read")
        return self.api.quotas.keys(scope, ref)

    @app.put("/projects/{org}/{project}/keys/{key_id}/")
    def update_key(self, org: str, project: str, key_id: str,
                   body: Annotated[Any, Body()] = None,
                   authorization: Auth = NO_CREDENTIALS) -> dict[str, Any]:
        scope = self.api.organization(authorization, org)
        ref = self.api.project(scope, org, project, "project:read")
        return self.api.quotas.update_key(scope, ref, key_id, body)

    @app.post("/auth/login/")
    def login(self, request: Request, body: Annotated[Any, Body()] = None) -> JSONResponse:
        """Password login: sets the session cookie (HttpOnly, SameSite=Lax; Secure over
        HTTPS) and answers the CSRF token that unsafe requests must send in X-CSRFToken."""
        client_ip = request.client.host if request.client else ""
        session, body_out = self.api.login(body, client_ip)
        response = JSONResponse(body_out)
        response.set_cookie(SESSION_COOKIE, session.cookie, expires=session.expires_at,
                            httponly=True, samesite="lax", path="/",
                            secure=request.url.scheme == "https")
        return response

    @app.delete("/auth/", status_code=204)
    def logout(self, authorization: Auth = NO_CREDENTIALS) -> Response:
        self.api.logout(authorization)
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/auth/")
    def whoami(self, authorization: Auth = NO_CREDENTIALS) -> dict[str, Any]:
        return self.api.whoami(authorization)

    @app.get("/organizations/")
    def organizations(self, authorization: Auth = NO_CREDENTIALS) -> list[dict[str, Any]]:
        return self.api.organizations(authorization)

    @app.post("/organizations/", status_code=201)
    def create_organization(self, body: Annotated[Any, Body()] = None,
                            authorization: Auth = NO_CREDENTIALS) -> dict[str, Any]:
        return self.api.tenancy.create_organization(self.api.caller(authorization), body)

    @app.put("/organizations/{org}/")
    def update_organization(self, org: str, body: Annotated[Any, Body()] = None,
                            authorization: Auth = NO_CREDENTIALS) -> dict[str, Any]:
        return self.api.tenancy.update_organization(self.api.organization(authorization, org),
                                                    body)

    @app.get("/organizations/{org}/teams/")
    def teams(self, org: str, authorization: Auth = NO_CREDENTIALS) -> list[dict[str, Any]]:
        return self.api.tenancy.teams(self.api.organization(authorization, org))

    @app.post("/organizations/{org}/teams/", status_code=201)
    def create_team(self, org: str, body: Annotated[Any, Body()] = None,
                    authorization: Auth = NO_CREDENTIALS) -> dict[str, Any]:
        return self.api.tenancy.create_team(self.api.organization(authorization, org), body)

    @app.get("/organizations/{org}/members/")
    def members(self, org: str, authorization: Auth = NO_CREDENTIALS
                ) -> list[dict[str, Any]]:
        return self.api.tenancy.members(self.api.organization(authorization, org))

    @app.post("/organizations/{org}/members/", status_code=201)
    def add_member(self, org: str, body: Annotated[Any, Body()] = None,
                   authorization: Auth = NO_CREDENTIALS) -> dict[str, Any]:
        return self.api.tenancy.add_member(self.api.organization(authorization, org), body)

    @app.put("/teams/{org}/{team}/")
    def update_team(self, org: str, team: str, body: Annotated[Any, Body()] = None,
                    authorization: Auth = NO_CREDENTIALS) -> dict[str, Any]:
        return self.api.tenancy.update_team(self.api.organization(authorization, org), team,
                                            body)

    @app.post("/teams/{org}/{team}/projects/", status_code=201)
    def create_project(self, org: str, team: str, body: Annotated[Any, Body()] = None,
                       authorization: Auth = NO_CREDENTIALS) -> dict[str, Any]:
        return self.api.tenancy.create_project(self.api.organization(authorization, org),
                                               team, body)

    @app.post("/projects/{org}/{project}/keys/", status_code=201)
    def create_key(self, org: str, project: str, body: Annotated[Any, Body()] = None,
                   authorization: Auth = NO_CREDENTIALS) -> dict[str, Any]:
        scope = self.api.organization(authorization, org)
        ref = self.api.project(scope, org, project, "project:read")
        return self.api.tenancy.create_key(scope, ref, body)

    @app.delete("/projects/{org}/{project}/keys/{key_id}/", status_code=204)
    def delete_key(self, org: str, project: str, key_id: str,
                   authorization: Auth = NO_CREDENTIALS) -> None:
        scope = self.api.organization(authorization, org)
        ref = self.api.project(scope, org, project, "project:read")
        self.api.tenancy.delete_key(scope, ref, key_id)

    @app.get("/api-tokens/")
    def tokens(self, authorization: Auth = NO_CREDENTIALS) -> list[dict[str, Any]]:
        return self.api.tenancy.tokens(self.api.caller(authorization))

    @app.post("/api-tokens/", status_code=201)
    def create_token(self, body: Annotated[Any, Body()] = None,
                     authorization: Auth = NO_CREDENTIALS) -> dict[str, Any]:
        return self.api.tenancy.create_token(self.api.caller(authorization), body)

    @app.get("/organizations/{org}/projects/")
    def organization_projects(self, org: str, authorization: Auth = NO_CREDENTIALS
                              ) -> list[dict[str, Any]]:
        return self.api.organization_projects(self.api.organization(authorization, org))

    @app.get("/organizations/{org}/stats_v2/")
    def stats_v2(self, org: str, request: Request,
                 authorization: Auth = NO_CREDENTIALS) -> dict[str, Any]:
        return self.api.stats_v2(self.api.organization(authorization, org),
                                 request.query_params.multi_items())

    @app.get("/organizations/{org}/quotas/")
    def quotas(self, org: str, authorization: Auth = NO_CREDENTIALS
               ) -> list[dict[str, Any]]:
        return self.api.quotas.quotas(self.api.organization(authorization, org))

    @app.post("/organizations/{org}/quotas/", status_code=201)
    def add_quota(self, org: str, body: Annotated[Any, Body()] = None,
                  authorization: Auth = NO_CREDENTIALS) -> dict[str, Any]:
        return self.api.quotas.add_quota(self.api.organization(authorization, org), body)

    @app.delete("/organizations/{org}/quotas/{quota_id}/", status_code=204)
    def delete_quota(self, org: str, quota_id: int,
                     authorization: Auth = NO_CREDENTIALS) -> None:
        self.api.quotas.delete_quota(self.api.organization(authorization, org), quota_id)

    @app.get("/organizations/{org}/quota-usage/")
    def quota_usage(self, org: str, authorization: Auth = NO_CREDENTIALS
                    ) -> list[dict[str, Any]]:
        return self.api.quotas.usage(self.api.organization(authorization, org))

    @app.get("/projects/{org}/{project}/issues/")
    def list_issues(self, org: str, project: str, request: Request,
                    authorization: Auth = NO_CREDENTIALS) -> JSONResponse:
        scope = self.api.organization(authorization, org)
        ref = self.api.project(scope, org, project, "event:read")
        body, link = self.api.issue_stream(scope, [ref], request.query_params.multi_items(),
                                           str(request.url).split("?", 1)[0])
        return JSONResponse(body, headers={"Link": link})

    @app.get("/projects/{org}/{project}/stats/")
    def project_stats(self, org: str, project: str, authorization: Auth = NO_CREDENTIALS,
                      resolution: str = "1h", since: str | None = None,
                      until: str | None = None) -> list[list[int]]:
        ref = self.api.project(self.api.organization(authorization, org), org, project,
                               "project:read")
        return self.api.project_stats(ref, resolution, since, until)

    @app.get("/projects/{org}/{project}/events/{event_id}/")
    def event_detail(self, org: str, project: str, event_id: str,
                     authorization: Auth = NO_CREDENTIALS) -> dict[str, Any]:
        ref = self.api.project(self.api.organization(authorization, org), org, project,
                               "event:read")
        return self.api.event_detail(ref, event_id)

    @app.get("/issues/{issue_id}/events/")
    def issue_events(self, issue_id: int, authorization: Auth = NO_CREDENTIALS,
                     query: str = "", limit: Annotated[int, Query(ge=1)] = 50,
                     cursor: str = "") -> list[dict[str, Any]]:
        offset = int(cursor.split(":")[1]) if cursor.count(":") == 2 and \
            cursor.split(":")[1].isdigit() else 0
        return self.api.issue_events(self.api.issue_access(authorization, issue_id), issue_id,
                                     query, min(limit, self.api.config.max_page_size), offset)

    @app.get("/issues/{issue_id}/events/{which}/")
    def issue_event(self, issue_id: int, which: str, authorization: Auth = NO_CREDENTIALS
                    ) -> dict[str, Any]:
        return self.api.issue_event(self.api.issue_access(authorization, issue_id), issue_id,
                                    which)

    @app.get("/issues/{issue_id}/tags/")
    def issue_tags(self, issue_id: int, authorization: Auth = NO_CREDENTIALS
                   ) -> list[dict[str, Any]]:
        return self.api.issue_tags(self.api.issue_access(authorization, issue_id), issue_id)

    @app.get("/issues/{issue_id}/tags/{key}/values/")
    def issue_tag_values(self, issue_id: int, key: str, authorization: Auth = NO_CREDENTIALS
                         ) -> list[dict[str, Any]]:
        facets = self.api.issue_tags(self.api.issue_access(authorization, issue_id), issue_id,
                                     key, TAG_VALUES_LIMIT)
        return facets[0]["topValues"] if facets else []

    @app.get("/organizations/{org}/issues/")
    def organization_issues(self, org: str, request: Request,
                            authorization: Auth = NO_CREDENTIALS) -> JSONResponse:
        """Issues of several projects: ``?project=<id>`` (repeatable; none or -1: every
        project the caller sees)."""
        scope = self.api.organization(authorization, org)
        params = request.query_params.multi_items()
        refs = self.api.visible_projects(scope, [v for k, v in params if k == "project"])
        body, link = self.api.issue_stream(scope, refs, params,
                                           str(request.url).split("?", 1)[0])
        return JSONResponse(body, headers={"Link": link})

    @app.get("/issues/{issue_id}/", response_model=None)
    def issue_detail(self, issue_id: int, authorization: Auth = NO_CREDENTIALS
                     ) -> dict[str, Any] | RedirectResponse:
        scope = self.api.issue_access(authorization, issue_id)
        _, row = self.api.scoped_issue(scope, issue_id, "event:read")
        if row.merged_into is not None:  # merged away: Sentry redirects to the survivor
            return RedirectResponse(f"/api/0/issues/{row.merged_into}/", status_code=302)
        return self.api.issue_detail(scope, issue_id)

    @app.delete("/issues/{issue_id}/", status_code=202)
    def delete_issue(self, issue_id: int,
                     authorization: Auth = NO_CREDENTIALS) -> None:
        """Sentry answers 202: the issue is gone and its hashes are tombstoned."""
        self.api.delete_issue(self.api.issue_access(authorization, issue_id), issue_id)

    @app.put("/projects/{org}/{project}/issues/")
    def bulk_update(self, org: str, project: str, body: Annotated[Any, Body()] = None,
                    id: Annotated[list[int] | None, Query()] = None,
                    authorization: Auth = NO_CREDENTIALS) -> dict[str, Any]:
        scope = self.api.organization(authorization, org)
        ref = self.api.project(scope, org, project, "event:read")
        return self.api.bulk_update(scope, ref, id or [], body)

    @app.put("/issues/{issue_id}/")
    def update_issue(self, issue_id: int, body: Annotated[Any, Body()] = None,
                     authorization: Auth = NO_CREDENTIALS) -> dict[str, Any]:
        return self.api.update_issue(self.api.issue_access(authorization, issue_id), issue_id, body)

    @app.get("/issues/{issue_id}/activity/")
    def issue_activity(self, issue_id: int,
                       authorization: Auth = NO_CREDENTIALS
                       ) -> list[dict[str, Any]]:
        return self.api.activity(self.api.issue_access(authorization, issue_id), issue_id)

    @app.delete("/issues/{issue_id}/hashes/", status_code=202)
    def unmerge(self, issue_id: int,
                id: Annotated[list[str] | None, Query()] = None,
                authorization: Auth = NO_CREDENTIALS) -> dict[str, Any]:
        """Sentry's unmerge: the named hashes leave this issue for a new one."""
        return self.api.unmerge(self.api.issue_access(authorization, issue_id), issue_id, id or [])

    @app.get("/issues/{issue_id}/hashes/")
    def issue_hashes(self, issue_id: int,
                     authorization: Auth = NO_CREDENTIALS
                     ) -> list[dict[str, Any]]:
        return self.api.issue_hashes(self.api.issue_access(authorization, issue_id), issue_id)

    @app.get("/projects/{org}/{project}/events/{event_id}/grouping-info/")
    def grouping_info(self, org: str, project: str, event_id: str,
                      authorization: Auth = NO_CREDENTIALS
                      ) -> dict[str, Any]:
        ref = self.api.project(self.api.organization(authorization, org), org, project, "event:read")
        return self.api.grouping_info(ref, event_id)

    @app.get("/projects/{org}/{project}/events/")
    def list_events(self, org: str, project: str,
                    authorization: Auth = NO_CREDENTIALS,
                    limit: Annotated[int, Query(ge=1)] = 100) -> list[dict[str, Any]]:
        ref = self.api.project(self.api.organization(authorization, org), org, project, "event:read")
        return self.api.events(ref, min(limit, self.api.config.max_page_size))
