"""Which grouping version each project uses, and its transitions (PostgreSQL).

A project groups with ``grouping_config``. When it moves to another version, the previous one
becomes its *secondary* config until ``secondary_grouping_expiry``: during that transition an
event's secondary hashes still find the issue its old hashes point to, and the new hashes join
that issue, so the change never splits an issue (Sentry's ``sentry:secondary_grouping_config``).
Projects that keep ``grouping_auto_update`` (the default, as in Sentry) move to the newest
version when an instance starts; choosing a version through the API turns that off.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from storage.issues import bump_grouping_epoch


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
