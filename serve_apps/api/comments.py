"""Comments on an issue: Sentry's notes, activity entries of type ``note`` (``data.text``),
shown in the issue's activity feed too.

    GET    /api/0/issues/{issue_id}/comments/               event:read   newest first
    POST   /api/0/issues/{issue_id}/comments/               event:write  {"text", "mentions"}
    PUT    /api/0/issues/{issue_id}/comments/{note_id}/     event:write  {"text"} (own only)
    DELETE /api/0/issues/{issue_id}/comments/{note_id}/     event:write  (own only)

``@username`` and ``@#team`` in the text (and ``mentions``: ``["user:1", "team:2"]``, as
Sentry's dashboard sends them) name members and teams of the issue's organization; the
author and everyone mentioned follow the issue from then on. A listed mention of anyone
outside the organization is a 400; an ``@word`` that names no member is just text.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from events.errors import Forbidden, not_found
from events.triage import Mentions, TriageInputError, mentions_of, note_text
from serve_apps.api.deps import IssueAccess, Svc, caller, issue_access
from serve_apps.api.issue_views import activity, activity_json
from serve_apps.api.shapes import MAX_BIGINT, Body
from storage import triage as triage_store
from storage.issues import Activity
from storage.tenancy import Caller

router = APIRouter(tags=["comments"])


class NewNote(Body):
    text: str
    mentions: list[str] | None = None


class NoteUpdate(Body):
    text: str


@router.get("/issues/{issue_id}/comments/")
def comments(scope: Annotated[IssueAccess, Depends(issue_access("event:read"))],
             svc: Svc) -> list[dict[str, Any]]:
    return activity(svc, scope.project, scope.issue.id, "note")


@router.post("/issues/{issue_id}/comments/", status_code=201)
def add_comment(body: NewNote, scope: Annotated[IssueAccess, Depends(issue_access("event:write"))],
                who: Annotated[Caller, Depends(caller)], svc: Svc) -> dict[str, Any]:
    text = note_text(body.text, svc.config.note_max_chars)
    mentions = mentions_of(text, body.mentions)
    org = scope.project.organization_id
    with svc.pool.connection() as conn, conn.transaction():
        users, teams, members = triage_store.mentioned_users(
            conn, org, mentions.usernames, mentions.user_ids, mentions.team_slugs,
            mentions.team_ids)
        _check_listed(mentions, users, teams)
        data = {"text": text, "mentions": [f"user:{u}" for u in sorted(users)]
                + [f"team:{t}" for t in sorted(teams)]}
        note = triage_store.add_note(conn, scope.project, scope.issue.id, data,
                                     scope.access.actor, who.user_id)
        if who.user_id is not None:
            triage_store.participate(conn, scope.issue.id, who.user_id, "comment")
        for user in sorted((users | members) - {who.user_id}):
            triage_store.participate(conn, scope.issue.id, user, "mentioned")
    return activity_json(note)


def _check_listed(mentions: Mentions, users: set[int], teams: set[int]) -> None:
    """Listed ``user:ID`` / ``team:ID`` mentions must be of the issue's organization."""
    strangers = [f"user:{u}" for u in mentions.user_ids if u not in users] + [
        f"team:{t}" for t in mentions.team_ids if t not in teams]
    if strangers:
        raise TriageInputError(f"mentions: {', '.join(strangers)} is no member or team of"
                               " this organization; mention its members and teams only")


@router.put("/issues/{issue_id}/comments/{note_id}/")
def edit_comment(note_id: int, body: NoteUpdate,
                 scope: Annotated[IssueAccess, Depends(issue_access("event:write"))],
                 who: Annotated[Caller, Depends(caller)], svc: Svc) -> dict[str, Any]:
    text = note_text(body.text, svc.config.note_max_chars)
    with svc.pool.connection() as conn, conn.transaction():
        note = _own_note(conn, scope, who, note_id)
        updated = triage_store.update_note(conn, scope.project, scope.issue.id, note_id,
                                           {**note.data, "text": text})
    if updated is None:
        raise not_found()
    return activity_json(updated)


@router.delete("/issues/{issue_id}/comments/{note_id}/", status_code=204)
def delete_comment(note_id: int,
                   scope: Annotated[IssueAccess, Depends(issue_access("event:write"))],
                   who: Annotated[Caller, Depends(caller)], svc: Svc) -> None:
    with svc.pool.connection() as conn, conn.transaction():
        _own_note(conn, scope, who, note_id)
        triage_store.delete_note(conn, scope.project, scope.issue.id, note_id)


def _own_note(conn: Any, scope: IssueAccess, who: Caller, note_id: int
              ) -> Activity:
    """The caller's own note on this issue: 404 when the issue has no such note, 403 when
    somebody else wrote it (Sentry lets only the author change a note)."""
    note = None if not 0 < note_id <= MAX_BIGINT else triage_store.get_note(
        conn, scope.project, scope.issue.id, note_id)
    if note is None:
        raise not_found()
    if who.user_id is None or note.user_id != who.user_id:
        raise Forbidden("only the author of a comment edits or deletes it")
    return note
