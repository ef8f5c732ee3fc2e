"""Projects in PostgreSQL: finding them within an organization (``ProjectRef``, the tenant
scope every project-level storage function takes) and every project setting — name and
platform, data scrubbing, grouping version and rules, spike protection, source fetching
(``allowedDomains``/``scrapeJavaScript``) — read and written
here and nowhere else.

Grouping versions and their transitions: a project groups with ``grouping_config``. When it
moves to another version, the previous one becomes its *secondary* config until
``secondary_grouping_expiry``: during that transition an event's secondary hashes still find
the issue its old hashes point to, and the new hashes join that issue, so the change never
splits an issue (Sentry's ``sentry:secondary_grouping_config``). Projects that keep
``grouping_auto_update`` (the default, as in Sentry) move to the newest version when an
instance starts; choosing a version through the API turns that off.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg.rows import dict_row

from events.quotas import SpikeProtection
from storage.issues import bump_grouping_epoch
from storage.scope import ProjectScope


@dataclass(frozen=True)
class ProjectRef(ProjectScope):
    """A project as the API resolved it within the caller's organization (a
    ``ProjectScope`` with its slugs)."""

    slug: str
    organization_slug: str


_REF_SQL: Final = ("SELECT p.id, p.organization_id, p.slug, o.slug FROM projects p"
                   " JOIN organizations o ON o.id = p.organization_id"
                   " WHERE p.organization_id = %s")


def find_project(conn: psycopg.Connection[Any], org_id: int, project_slug: str
                 ) -> ProjectRef | None:
    """The project ``project_slug`` within organization ``org_id`` only (tenant scope)."""
    row = conn.execute(_REF_SQL + " AND p.slug = %s", (org_id, project_slug)).fetchone()
    return None if row is None else ProjectRef(int(row[1]), int(row[0]), str(row[2]),
                                               str(row[3]))


def project_by_id(conn: psycopg.Connection[Any], org_id: int, project_id: int
                  ) -> ProjectRef | None:
    """Project ``project_id`` if it belongs to organization ``org_id`` (tenant scope)."""
    row = conn.execute(_REF_SQL + " AND p.id = %s", (org_id, project_id)).fetchone()
    return None if row is None else ProjectRef(int(row[1]), int(row[0]), str(row[2]),
                                               str(row[3]))


@dataclass(frozen=True)
class ProjectSummary:
    ref: ProjectRef
    name: str
    platform: str | None
    date_added: dt.datetime


def list_projects(conn: psycopg.Connection[Any], org_id: int, project_ids: Sequence[int]
                  ) -> list[ProjectSummary]:
    """The organization's projects among ``project_ids`` (those a caller sees), by slug."""
    rows = conn.execute(
        "SELECT p.id, p.organization_id, p.slug, o.slug, p.name, p.platform, p.date_added"
        " FROM projects p JOIN organizations o ON o.id = p.organization_id"
        " WHERE p.organization_id = %s AND p.id = ANY(%s) ORDER BY p.slug",
        (org_id, sorted(project_ids))).fetchall()
    return [ProjectSummary(ProjectRef(int(r[1]), int(r[0]), str(r[2]), str(r[3])), str(r[4]),
                           r[5], r[6]) for r in rows]


# --- settings ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ProjectSettings:
    """Everything a project's settings page shows."""

    ref: ProjectRef
    name: str
    platform: str | None
    date_added: dt.datetime
    scrub_data: bool
    scrub_defaults: bool
    scrub_ip_addresses: bool
    sensitive_fields: tuple[str, ...]
    safe_fields: tuple[str, ...]
    grouping: ProjectGroupingSettings
    spike: SpikeProtection
    allowed_domains: tuple[str, ...] = ()
    scrape_javascript: bool = False


def project_settings(conn: psycopg.Connection[Any], project: ProjectRef,
                     spike_defaults: SpikeProtection) -> ProjectSettings | None:
    row = conn.execute("SELECT name, platform, date_added, scrub_data, scrub_defaults,"
                       " scrub_ip_addresses, sensitive_fields, exclude_fields, allowed_domains,"
                       " scrape_javascript FROM projects"
                       " WHERE organization_id = %s AND id = %s",
                       (project.organization_id, project.id)).fetchone()
    grouping = grouping_settings(conn, [project.id]).get(project.id)
    spike = spike_protection(conn, [project.id], spike_defaults).get(project.id)
    if row is None or grouping is None or spike is None:
        return None
    return ProjectSettings(project, str(row[0]), row[1], row[2], bool(row[3]), bool(row[4]),
                           bool(row[5]), tuple(row[6]), tuple(row[7]), grouping, spike,
                           tuple(row[8]), bool(row[9]))


@dataclass(frozen=True)
class SpikeUpdate:
    enabled: bool
    multiplier: float | None
    floor_per_hour: int | None


@dataclass(frozen=True)
class ProjectUpdate:
    """A project settings change, validated at the edge; None leaves a setting as it is."""

    name: str | None = None
    platform: str | None = None
    fingerprinting_rules: str | None = None
    grouping_enhancements: str | None = None
    scrub_data: bool | None = None
    scrub_defaults: bool | None = None
    scrub_ip_addresses: bool | None = None
    sensitive_fields: tuple[str, ...] | None = None
    safe_fields: tuple[str, ...] | None = None
    grouping_config: str | None = None
    grouping_auto_update: bool | None = None
    spike: SpikeUpdate | None = None
    allowed_domains: tuple[str, ...] | None = None
    scrape_javascript: bool | None = None


#: ProjectUpdate fields stored as plain columns of ``projects``.
_COLUMNS: Final = {"name": "name", "platform": "platform",
                   "fingerprinting_rules": "fingerprinting_rules",
                   "grouping_enhancements": "grouping_enhancements",
                   "scrub_data": "scrub_data", "scrub_defaults": "scrub_defaults",
                   "scrub_ip_addresses": "scrub_ip_addresses",
                   "sensitive_fields": "sensitive_fields", "safe_fields": "exclude_fields",
                   "allowed_domains": "allowed_domains",
                   "scrape_javascript": "scrape_javascript"}


def update_project(conn: psycopg.Connection[Any], project: ProjectRef, update: ProjectUpdate,
                   grouping_transition_s: float) -> None:
    """Apply ``update`` to ``project`` (call inside a transaction: all or nothing)."""
    for attribute, column in _COLUMNS.items():  # column names from the fixed table
        value = getattr(update, attribute)
        if value is not None:
            conn.execute(f"UPDATE projects SET {column} = %s WHERE organization_id = %s"
                         " AND id = %s", (list(value) if isinstance(value, tuple) else value,
                                          project.organization_id, project.id))
    if update.spike is not None:
        set_spike_protection(conn, project.id, update.spike.enabled, update.spike.multiplier,
                             update.spike.floor_per_hour)
    if update.grouping_config is not None or update.grouping_auto_update is not None:
        current = grouping_settings(conn, [project.id])[project.id]
        config = update.grouping_config
        # Choosing a version pins it, unless the same update also asks for auto-updates.
        auto_update = update.grouping_auto_update if update.grouping_auto_update is not None \
            else current.auto_update and config in (None, current.config)
        set_grouping_config(conn, project.id, config or current.config, grouping_transition_s,
                            auto_update=auto_update)


def scrubbing_configs(conn: psycopg.Connection[Any], project_ids: list[int]
                      ) -> dict[int, dict[str, Any]]:
    """Sentry's legacy data-scrubbing options per project, in sentry-relay's input shape
    (``convert_datascrubbing_config``); for consumers, whose items carry their project."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT id, scrub_data, scrub_defaults, scrub_ip_addresses, sensitive_fields,"
            " exclude_fields FROM projects WHERE id = ANY(%s)", (project_ids,)
        ).fetchall()
    return {
        int(r["id"]): {
            "scrubData": r["scrub_data"],
            "scrubDefaults": r["scrub_defaults"],
            "scrubIpAddresses": r["scrub_ip_addresses"],
            "sensitiveFields": list(r["sensitive_fields"]),
            "excludeFields": list(r["exclude_fields"]),
        }
        for r in rows
    }


@dataclass(frozen=True)
class SourceFetchSettings:
    """A project's source fetching options (Sentry's ``allowedDomains`` and
    ``scrapeJavaScript``); fetching happens only with both set."""

    allowed_domains: tuple[str, ...]
    scrape_javascript: bool

    @property
    def enabled(self) -> bool:
        return self.scrape_javascript and bool(self.allowed_domains)


def source_fetch_settings(conn: psycopg.Connection[Any], organization_id: int,
                          project_id: int) -> SourceFetchSettings | None:
    """Project ``project_id`` of organization ``organization_id`` (tenant scope); None
    when there is no such project there."""
    row = conn.execute("SELECT allowed_domains, scrape_javascript FROM projects"
                       " WHERE organization_id = %s AND id = %s",
                       (organization_id, project_id)).fetchone()
    return None if row is None else SourceFetchSettings(tuple(row[0]), bool(row[1]))


def spike_protection(conn: psycopg.Connection[Any], project_ids: Sequence[int],
                     default: SpikeProtection) -> dict[int, SpikeProtection]:
    rows = conn.execute(
        "SELECT id, spike_protection, spike_multiplier, spike_floor_per_hour FROM projects"
        " WHERE id = ANY(%s)", (list(project_ids),)).fetchall()
    return {int(r[0]): SpikeProtection(
        bool(r[1]), default.multiplier if r[2] is None else float(r[2]),
        default.floor_per_hour if r[3] is None else int(r[3])) for r in rows}


def set_spike_protection(conn: psycopg.Connection[Any], project_id: int, enabled: bool,
                         multiplier: float | None, floor_per_hour: int | None) -> None:
    conn.execute("UPDATE projects SET spike_protection = %s, spike_multiplier = %s,"
                 " spike_floor_per_hour = %s WHERE id = %s",
                 (enabled, multiplier, floor_per_hour, project_id))


# --- grouping versions -------------------------------------------------------------------
@dataclass(frozen=True)
class ProjectGroupingSettings:
    project_id: int
    config: str
    secondary_config: str | None
    secondary_expiry: dt.datetime | None
    auto_update: bool
    fingerprinting_rules: str
    grouping_enhancements: str


def grouping_settings(conn: psycopg.Connection[Any], project_ids: Sequence[int]
                      ) -> dict[int, ProjectGroupingSettings]:
    rows = conn.execute(
        "SELECT id, grouping_config, secondary_grouping_config, secondary_grouping_expiry,"
        " grouping_auto_update, fingerprinting_rules, grouping_enhancements FROM projects"
        " WHERE id = ANY(%s)", (list(project_ids),)).fetchall()
    return {int(r[0]): ProjectGroupingSettings(int(r[0]), str(r[1]), r[2], r[3], bool(r[4]),
                                               str(r[5]), str(r[6])) for r in rows}


def set_grouping_config(conn: psycopg.Connection[Any], project_id: int, config: str,
                        transition_s: float, *, auto_update: bool) -> None:
    """Move a project to ``config`` (call inside a transaction). Its current config, if
    different, stays the secondary one for ``transition_s`` seconds (none when 0)."""
    conn.execute(
        "UPDATE projects SET"
        " secondary_grouping_config = CASE WHEN grouping_config <> %(config)s"
        "  AND %(transition)s > 0 THEN grouping_config ELSE secondary_grouping_config END,"
        " secondary_grouping_expiry = CASE WHEN grouping_config <> %(config)s"
        "  THEN CASE WHEN %(transition)s > 0"
        "   THEN now() + make_interval(secs => %(transition)s) END"
        "  ELSE secondary_grouping_expiry END,"
        " grouping_config = %(config)s, grouping_auto_update = %(auto)s WHERE id = %(id)s",
        {"config": config, "transition": transition_s, "auto": auto_update, "id": project_id})
    bump_grouping_epoch(conn, project_id)


def upgrade_grouping_configs(conn: psycopg.Connection[Any], latest: str,
                             older: Sequence[str], transition_s: float) -> list[int]:
    """Move every auto-updating project on one of the ``older`` versions to ``latest``, each
    with a transition; returns the projects moved."""
    with conn.transaction():
        ids = [int(r[0]) for r in conn.execute(
            "SELECT id FROM projects WHERE grouping_auto_update AND grouping_config = ANY(%s)"
            " ORDER BY id FOR UPDATE", (list(older),)).fetchall()]
        for project_id in ids:
            set_grouping_config(conn, project_id, latest, transition_s, auto_update=True)
    return ids


def grouping_epochs(conn: psycopg.Connection[Any], project_ids: Sequence[int]
                    ) -> dict[int, int]:
    """Each project's grouping epoch: it moves whenever hashes may have changed issue."""
    rows = conn.execute("SELECT id, grouping_epoch FROM projects WHERE id = ANY(%s)",
                        (list(project_ids),)).fetchall()
    return {int(r[0]): int(r[1]) for r in rows}
