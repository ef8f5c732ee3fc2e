"""Storage errors.

    StorageError            (base)
    ├── MigrationError      a schema migration failed or the schema is newer than the code
    └── NotFound            a scoped lookup found nothing (callers answer 404)

Third-party errors (psycopg, clickhouse-connect) are translated where they cross into
callers that must decide on them; elsewhere they propagate unchanged.
"""


class StorageError(Exception):
    pass


class MigrationError(StorageError):
    pass


class NotFound(StorageError):
    pass
