"""Triage input, as Sentry's API takes it: whom ``assignedTo`` names, and the @mentions of
a note (comment). Pure: storage/triage.py looks the names up within the issue's
organization.

``assignedTo`` (Sentry's ``ActorField``): ``"user:<id>"``, ``"team:<id>"``, a username or
an e-mail address, a bare number (a user id, as older Sentry clients send), ``"#slug"``
(a team by slug, as the search syntax writes teams); ``""`` or ``null`` unassigns.

A note's mentions: ``@username`` and ``@#team-slug`` in its text, and Sentry's
``mentions`` list (``["user:1", "team:2"]``) in the body.

Errors::

    events.errors.BadRequest
    └── TriageInputError   400   an assignee or a note that cannot be read
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from events.errors import BadRequest

#: Longest name ``assignedTo`` takes (a username or an e-mail address, RFC 5321: 254).
MAX_ASSIGNEE_CHARS: Final = 254
#: ``@name`` in a note: a username (letters, digits, ``_.+-``; also an e-mail address) or
#: ``@#team``; not preceded by a word character, so ``ada@example.com`` mentions nobody.
_MENTION: Final = re.compile(r"(?<![\w@#])@(#?)([A-Za-z0-9_.+-]+(?:@[A-Za-z0-9.-]+)?)")
_ACTOR: Final = re.compile(r"(user|team):([0-9]{1,19})")

AssigneeKind = Literal["user_id", "team_id", "name", "team_slug"]


class TriageInputError(BadRequest):
    code = "invalid_triage"


@dataclass(frozen=True)
class AssigneeRef:
    """What ``assignedTo`` names, before it is looked up in the organization."""

    kind: AssigneeKind
    value: str


def parse_assigned_to(value: str | int | None) -> AssigneeRef | None:
    """The assignee ``assignedTo`` names; None to unassign."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return AssigneeRef("user_id", str(value))
    if not isinstance(value, str):
        raise TriageInputError("assignedTo: expected a string such as \"user:1\", \"team:2\","
                               f" a username or an e-mail address; got {type(value).__name__}")
    text = value.strip()
    if not text:
        return None
    if len(text) > MAX_ASSIGNEE_CHARS:
        raise TriageInputError(f"assignedTo: at most {MAX_ASSIGNEE_CHARS} characters;"
                               f" got {len(text)}")
    actor = _ACTOR.fullmatch(text)
    if actor is not None:
        return AssigneeRef("user_id" if actor[1] == "user" else "team_id", actor[2])
    if text.startswith(("user:", "team:")):
        raise TriageInputError(f"assignedTo: {text!r} must be user:<id> or team:<id> with a"
                               " numeric id")
    if text.isdigit():
        return AssigneeRef("user_id", text)
    if text.startswith("#") and len(text) > 1:
        return AssigneeRef("team_slug", text[1:])
    return AssigneeRef("name", text)


@dataclass(frozen=True)
class Mentions:
    """Who a note mentions: usernames and team slugs from its text, and actor ids
    (``user:1``) from the body's ``mentions``."""

    usernames: tuple[str, ...] = ()
    team_slugs: tuple[str, ...] = ()
    user_ids: tuple[int, ...] = ()
    team_ids: tuple[int, ...] = ()


def note_text(text: object, max_chars: int) -> str:
    """A note's text, checked: non-empty and at most ``max_chars`` characters
    (``CRASHRAY_API_NOTE_MAX_CHARS``)."""
    if not isinstance(text, str) or not text.strip():
        raise TriageInputError("text: a comment needs some text")
    if len(text) > max_chars:
        raise TriageInputError(f"text: a comment has at most {max_chars} characters"
                               f" (CRASHRAY_API_NOTE_MAX_CHARS); this one has {len(text)}")
    if "\x00" in text:
        raise TriageInputError("text: a comment cannot hold a NUL character")
    return text


def mentions_of(text: str, listed: list[str] | None = None) -> Mentions:
    """The @mentions in ``text`` and the ``user:ID`` / ``team:ID`` entries of ``listed``."""
    users: list[str] = []
    teams: list[str] = []
    for match in _MENTION.finditer(text):
        name = match[2].rstrip(".")  # "thanks @ada." mentions ada
        (teams if match[1] else users).append(name)
    user_ids: list[int] = []
    team_ids: list[int] = []
    for entry in listed or []:
        actor = _ACTOR.fullmatch(entry.strip()) if isinstance(entry, str) else None
        if actor is None:
            raise TriageInputError(f"mentions: {entry!r} must be user:<id> or team:<id>")
        (user_ids if actor[1] == "user" else team_ids).append(int(actor[2]))
    return Mentions(tuple(dict.fromkeys(users)), tuple(dict.fromkeys(teams)),
                    tuple(dict.fromkeys(user_ids)), tuple(dict.fromkeys(team_ids)))
