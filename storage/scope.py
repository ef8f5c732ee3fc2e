"""The tenant scope storage functions take: a project within its organization.

``ProjectScope`` is what the consumers know of an item (its organization and project, fixed
by the DSN key at ingest); ``storage.projects.ProjectRef`` (the project as the API resolved
it within the caller's organization, with its slugs) is one too. A function that reads or
writes one project's data takes it as a required parameter, and its SQL names the project;
where a table carries the organization too, the SQL names that as well.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProjectScope:
    organization_id: int
    id: int
