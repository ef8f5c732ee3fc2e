"""Storage errors, part of Crashray's one error tree (events/errors.py).

    events.errors.CrashrayError
    └── StorageError        500  a database did something unexpected
        ├── MigrationError  500  a schema migration failed or the schema is newer than the code
        └── IssueGone       500  an issue a batch was grouped into was deleted meanwhile

A scoped lookup that finds nothing raises ``events.errors.NotFound`` (404). Third-party
errors (psycopg, clickhouse-connect) are translated where they cross into callers that must
decide on them; elsewhere they propagate unchanged.
"""

from events.errors import CrashrayError


class StorageError(CrashrayError):
    code = "storage_error"


class MigrationError(StorageError):
    code = "migration_failed"


class IssueGone(StorageError):
    """Events were to be counted into issues that no longer exist: deleted (retention of
    issues unseen for their horizon, or a user's delete) after the batch was grouped. The
    transaction is rolled back and the batch retried; the deletion moved the project's
    grouping epoch on, so the retry groups the events afresh (into a new issue)."""

    code = "issue_gone"
