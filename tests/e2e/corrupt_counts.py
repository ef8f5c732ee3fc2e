"""Corrupts an issue's derived counts in a running Crashray, as a bug or a crash would:
adds ``EXTRA`` phantom events to its hourly rollup (ClickHouse, through the instance's Ray
cluster) and sets its ``times_seen`` to ``EXTRA`` (PostgreSQL).

Usage: python corrupt_counts.py DATA_DIR PROJECT_ID ISSUE_ID EXTRA"""

import datetime as dt
import sys
from pathlib import Path

from cluster.pipelines_cli import join_ray, prepare_ray
from cluster.runtime import Runtime
from cluster.settings import Settings
from storage import postgres
from storage.clickhouse import clickhouse_dsn


def main() -> None:
    data_dir, project_id, issue_id, extra = Path(sys.argv[1]), *map(int, sys.argv[2:5])
    settings = Settings(data_dir=data_dir)
    prepare_ray(settings)  # before Ray is imported
    from actors.clickhouse import clickhouse_store
    from events.rows import IssueCount, issue_counts_table

    join_ray(settings)
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    store = clickhouse_store(clickhouse_dsn(None, data_dir))
    store.insert("issue_counts_hourly", issue_counts_table(
        [IssueCount(project_id, issue_id, hour, 90, extra)]))
    runtime = Runtime(settings)
    try:
        runtime.start_databases()
        with postgres.connect(runtime.postgres_url) as conn:
            conn.execute("UPDATE issues SET times_seen = %s WHERE id = %s", (extra, issue_id))
    finally:
        runtime.stop()


if __name__ == "__main__":
    main()
