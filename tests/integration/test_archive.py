"""The raw archive of a running Crashray (``CRASHRAY_ARCHIVE_DIR``): what the SDK endpoint
accepted is in the hourly Parquet files within seconds, as it was queued, and what it
refused is not.

Real parts: the integration suite's running Crashray (Ray Serve ingest replicas writing
the archive), PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest

from storage import postgres
from storage.archive import read_archive
from storage.bootstrap import ensure_project
from storage.queue import QueuedItem
from tests.integration.conftest import RunningCrashray
from tests.integration.test_pipeline import post_envelope
from tests.support import (
    envelope_bytes,
    error_event,
    gzip_bytes,
    python_sdk_headers,
    wait_until,
)

pytestmark = pytest.mark.integration


def test_accepted_items_reach_the_archive_as_queued(crashray: RunningCrashray,
                                                    corpus_dir: Path) -> None:
    with postgres.connect(crashray.runtime.postgres_url) as conn:
        project_id, key = ensure_project(conn, 1, f"archived-{uuid.uuid4().hex[:8]}", "v2")
        conn.commit()
    sent = []
    for i in range(3):
        event = error_event(corpus_dir, f"ValueError: archived {i}")
        response = post_envelope(crashray, gzip_bytes(envelope_bytes(event)),
                                 python_sdk_headers(key), project=project_id)
        assert response.status_code == 200, response.text
        sent.append(response.json()["id"])
    refused = post_envelope(crashray, gzip_bytes(envelope_bytes(error_event(
        corpus_dir, "ValueError: refused"))), python_sdk_headers(crashray.public_key),
        project=project_id)
    assert refused.status_code == 403  # another project's key: never queued, never archived

    directory = crashray.settings.archive_dir
    assert directory is not None

    def archived() -> list[QueuedItem] | None:
        if not any(directory.glob("hour=*/*.parquet")):
            return None
        found = [i for i in read_archive(directory, project_id=project_id)
                 if i.item_type == "event"]
        return found if len(found) >= 3 else None

    items = wait_until(archived, 30, "the three events in the archive")
    assert sorted(i.event_id for i in items) == sorted(sent)
    first = items[0]
    assert first.organization_id == 1 and first.key_id is not None
    event = orjson.loads(first.payload)
    assert event["exception"]["values"][0]["type"] == "ValueError"
    assert "archived" in event["exception"]["values"][0]["value"]
