"""A project's environments: the ``environment`` of its stored events (ClickHouse's
``events`` table, read by organization and project with bound parameters). Crashray keeps
no environment table, so an environment whose events all expired is no longer listed.
Each has a stable numeric id derived from its name (``cityHash64``, cut to fit
JavaScript's safe integers), as Sentry's environment ids are numbers."""

from __future__ import annotations

from typing import Final

from storage.retention import RowQueries

#: JavaScript's Number.MAX_SAFE_INTEGER + 1: ids must survive the dashboard's JSON.parse.
_SAFE_ID_MODULUS: Final = 2 ** 53

_ENVIRONMENTS_SQL: Final = (
    "SELECT environment, cityHash64(environment) % {modulus:UInt64} FROM events"
    " WHERE organization_id = {org:UInt64} AND project_id = {project:UInt64}"
    " AND environment != ''"
    " GROUP BY environment ORDER BY environment LIMIT {limit:UInt32}")


def project_environments(store: RowQueries, organization_id: int, project_id: int,
                         limit: int) -> list[tuple[str, int]]:
    """(name, id) of each environment of one project's stored events, by name."""
    rows = store.query_rows(_ENVIRONMENTS_SQL, {
        "org": organization_id, "project": project_id, "modulus": _SAFE_ID_MODULUS,
        "limit": limit})
    return [(str(name), int(env_id)) for name, env_id in rows]
