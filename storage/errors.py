"""Storage errors, part of Crashray's one error tree (events/errors.py).

    events.errors.CrashrayError
    └── StorageError        500  a database did something unexpected
        └── MigrationError  500  a schema migration failed or the schema is newer than the code

A scoped lookup that finds nothing raises ``events.errors.NotFound`` (404). Third-party
errors (psycopg, clickhouse-connect) are translated where they cross into callers that must
decide on them; elsewhere they propagate unchanged.
"""

from events.errors import CrashrayError


class StorageError(CrashrayError):
    code = "storage_error"


class MigrationError(StorageError):
    code = "migration_failed"
