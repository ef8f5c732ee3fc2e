"""JSON shapes of the API's resources as Sentry answers them, and the request-body base
model (pure; the routers build responses with these)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator
from starlette.requests import Request

from storage.keys import ProjectKey
from storage.projects import ProjectRef
from storage.releases import SeenRelease

#: The largest number PostgreSQL stores (bigint); ids and counts beyond it cannot exist.
MAX_BIGINT = 2**63 - 1
#: The largest PostgreSQL ``integer``: key rate limits and quota windows are stored as one.
MAX_INTEGER = 2**31 - 1


class Body(BaseModel):
    """Base of every request body: unknown fields are ignored, as Sentry's serializers do;
    values keep their JSON types (no "true" → True coercion). No value, however deep, may
    hold a NUL character (no PostgreSQL text can) or a whole number beyond a bigint."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    @field_validator("*")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        problem = unstorable(value)
        if problem:
            raise ValueError(problem)
        return value


def unstorable(value: Any) -> str | None:
    """Why a JSON value cannot be stored (None: it can)."""
    if isinstance(value, str):
        return "has a NUL character (\\u0000); remove it" if "\x00" in value else None
    if isinstance(value, int) and not isinstance(value, bool):
        return None if -MAX_BIGINT <= value <= MAX_BIGINT else \
            f"must be between -{MAX_BIGINT} and {MAX_BIGINT}"
    if isinstance(value, BaseModel):
        value = dict(value)
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, (list, tuple)):
        return next((p for p in map(unstorable, value) if p), None)
    return None


def page_url(request: Request) -> str:
    """The URL a paginated list's ``Link`` header points to (without its query string)."""
    return str(request.url).split("?", 1)[0]


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def dsn(base_url: str, public_key: str, project_id: int, secret_key: str | None = None) -> str:
    credentials = public_key if secret_key is None else f"{public_key}:{secret_key}"
    return f"{base_url.replace('://', f'://{credentials}@', 1)}/{project_id}"


def key_json(key: ProjectKey, base_url: str) -> dict[str, Any]:
    """A DSN key as Sentry's project-keys endpoint shows it."""
    return {
        "id": key.public_key, "name": key.label, "label": key.label,
        "public": key.public_key, "secret": key.secret_key, "projectId": key.project_id,
        "isActive": key.is_active,
        "rateLimit": None if key.rate_limit_count is None else {
            "window": key.rate_limit_window_s, "count": key.rate_limit_count},
        "dsn": {"public": dsn(base_url, key.public_key, key.project_id),
                "secret": dsn(base_url, key.public_key, key.project_id, key.secret_key)},
        "dateCreated": iso(key.date_added),
    }


def project_ref_json(project: ProjectRef) -> dict[str, Any]:
    return {"id": str(project.id), "slug": project.slug}


def seen_release_json(seen: SeenRelease | None) -> dict[str, Any] | None:
    """An issue's ``firstRelease`` / ``lastRelease`` as Sentry nests them: the release's
    version and dates (null when the issue's events named no release)."""
    if seen is None:
        return None
    r = seen.release
    return {"version": seen.version, "shortVersion": seen.version,
            "url": r.url if r else None, "dateCreated": iso(r.date_added) if r else None,
            "dateReleased": iso(r.date_released) if r and r.date_released else None}
