"""``crashray import`` in a running Crashray (real Ray Data job, PostgreSQL, chDB): the
same SDK events imported from envelope files, a tarball or JSON lines make the same issues
and counts as sent through the SDK endpoint; a re-run adds nothing; an interrupted import
resumed duplicates nothing; timestamps stay the original ones; events land only in the
named project, and a project of another organization cannot be named."""

from __future__ import annotations

import datetime as dt
import tarfile
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from actors.clickhouse import clickhouse_store
from cluster.pipelines_cli import _project
from events.envelope import EnvelopeLimits, parse_envelope
from events.errors import NotFound
from pipelines import blocks_of
from pipelines.import_events import (
    IMPORT_REASON,
    ImportJob,
    ImportLimits,
    ImportResult,
    run_import,
    summary_line,
)
from pipelines.import_sources import list_sources
from storage import postgres
from storage.tenancy import create_organization, create_project
from tests.integration.conftest import RunningCrashray
from tests.support import gzip_bytes, python_sdk_headers, wait_until

pytestmark = pytest.mark.integration

SDK_FILES = ("python-sdk-2.75.0-exception", "node-sdk-11.12.0-exception")
ERROR_TYPES = ("ImportedKeyError", "ImportedTypeError", "ImportedValueError")
EVENTS = 24
#: An event older than Relay's 30-day window for live events, kept as it is by an import.
OLD_AGE = dt.timedelta(days=60)


def corpus(corpus_dir: Path) -> list[tuple[str, bytes]]:
    """(event id, envelope) of Python and Node SDK events in several issues, timestamped
    in the last hours (the first one 60 days ago), each envelope as its SDK framed it."""
    now = time.time()
    envelopes = []
    for n in range(EVENTS):
        data = (corpus_dir / f"{SDK_FILES[n % 2]}.envelope").read_bytes()
        parsed = parse_envelope(data, EnvelopeLimits())
        event = orjson.loads(next(i for i in parsed.items if i.type == "event").payload)
        event_id = uuid.uuid4().hex
        age_s = OLD_AGE.total_seconds() if n == 0 else 3600 + 60 * n
        event.update(event_id=event_id, timestamp=now - age_s)
        first = event["exception"]["values"][-1]
        first["type"] = ERROR_TYPES[n % len(ERROR_TYPES)]
        payload = orjson.dumps(event)
        sent_at = dt.datetime.fromtimestamp(now - age_s + 1, dt.UTC).isoformat()
        envelopes.append((event_id, b"\n".join([
            orjson.dumps({"event_id": event_id, "sent_at": sent_at}),
            orjson.dumps({"type": "event", "length": len(payload)}), payload]) + b"\n"))
    return envelopes


def event_line(envelope: bytes) -> bytes:
    return envelope.split(b"\n")[2]


def new_project(c: RunningCrashray, org_id: int = 1) -> tuple[int, str, str]:
    slug = f"imp-{uuid.uuid4().hex[:8]}"
    with postgres.connect(c.runtime.postgres_url) as conn:
        created = create_project(conn, org_id, slug, slug, "v2")
        conn.commit()
    return created.id, slug, created.public_key


def issues_of(c: RunningCrashray, org_id: int, project_id: int) -> dict[str, int]:
    """Issue title → times seen, of one project of one organization."""
    with postgres.connect(c.runtime.postgres_url) as conn:
        rows = conn.execute(
            "SELECT i.title, i.times_seen FROM issues i JOIN projects p ON p.id = i.project_id"
            " WHERE p.organization_id = %s AND p.id = %s", (org_id, project_id)).fetchall()
    return {str(title): int(n) for title, n in rows}


def clickhouse_rows(c: RunningCrashray, org_id: int, project_id: int) -> tuple[int, int]:
    """(rows, distinct event ids) of the project's events in ClickHouse, merges aside."""
    store = clickhouse_store(c.runtime.clickhouse_dsn)
    rows = store.query_rows(
        "SELECT count(), uniqExact(event_id) FROM events WHERE organization_id ="
        " {org:UInt64} AND project_id = {project:UInt64}", {"org": org_id, "project": project_id})
    return int(rows[0][0]), int(rows[0][1])


def run(c: RunningCrashray, org_id: int, project_id: int, paths: list[Path],
        batch_events: int = 5) -> ImportResult:
    s = c.settings
    job = ImportJob(c.runtime.postgres_url, c.runtime.clickhouse_dsn, org_id, project_id,
                    s.retention_days, s.consumer_lease_s, s.grouping_cache_hashes)
    return run_import(job, ImportLimits(1, 0.25, batch_events),
                      list_sources(paths, batch_events))


@pytest.fixture(scope="module")
def events(corpus_dir: Path) -> list[tuple[str, bytes]]:
    return corpus(corpus_dir)


@pytest.fixture(scope="module")
def live(crashray: RunningCrashray, events: list[tuple[str, bytes]]) -> dict[str, int]:
    """The corpus sent through the SDK endpoint into a project of its own: its issues."""
    c = crashray
    project_id, _, key = new_project(c)
    with httpx.Client(timeout=30) as client:
        wait_until(lambda: client.post(
            f"{c.base_url}/api/{project_id}/envelope/", content=gzip_bytes(events[1][1]),
            headers=python_sdk_headers(key)).status_code == 200, 60, "the new key accepted")
        for _, envelope in events:
            response = client.post(f"{c.base_url}/api/{project_id}/envelope/",
                                   content=gzip_bytes(envelope), headers=python_sdk_headers(key))
            assert response.status_code == 200, response.text
    # The first event is older than Relay's window: live ingest stores it at its receipt.
    def counted() -> dict[str, int] | None:
        issues = issues_of(c, 1, project_id)
        return issues if sum(issues.values()) == EVENTS else None

    return wait_until(counted, 180, "the live events counted")


def test_import_of_envelope_files_matches_the_sdk_endpoint_and_a_rerun_adds_nothing(
        crashray: RunningCrashray, events: list[tuple[str, bytes]], live: dict[str, int],
        tmp_path: Path) -> None:
    c = crashray
    folder = tmp_path / "envelopes"
    folder.mkdir()
    for n, (event_id, envelope) in enumerate(events):
        # Half of them gzip-compressed, as a capture tool may keep them.
        name = f"{event_id}.envelope" + (".gz" if n % 2 else "")
        (folder / name).write_bytes(gzip_bytes(envelope) if n % 2 else envelope)
    tarball = tmp_path / "envelopes.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(folder, arcname="envelopes")
    project_id, _, _ = new_project(c)

    first = run(c, 1, project_id, [folder])
    assert (first.tally.imported, first.tally.skipped, sum(first.tally.invalid.values())) \
        == (EVENTS, 0, 0), summary_line(first)
    assert issues_of(c, 1, project_id) == live
    assert len(first.tally.issues) == len(live)

    again = run(c, 1, project_id, [tarball])
    assert (again.tally.imported, again.tally.skipped) == (0, EVENTS), summary_line(again)
    assert issues_of(c, 1, project_id) == live
    assert clickhouse_rows(c, 1, project_id) == (EVENTS, EVENTS)
    outcomes = clickhouse_store(c.runtime.clickhouse_dsn).query_rows(
        "SELECT outcome, reason, sum(quantity) FROM outcomes WHERE organization_id = 1"
        " AND project_id = {project:UInt64} GROUP BY outcome, reason",
        {"project": project_id})
    assert [tuple(r) for r in outcomes] == [("accepted", IMPORT_REASON, EVENTS)]


def test_interrupted_json_lines_import_resumed_duplicates_nothing_and_keeps_timestamps(
        crashray: RunningCrashray, events: list[tuple[str, bytes]], live: dict[str, int],
        tmp_path: Path) -> None:
    c = crashray
    lines = [event_line(envelope) for _, envelope in events]
    part, whole = tmp_path / "part.jsonl", tmp_path / "whole.ndjson"
    part.write_bytes(b"\n".join(lines[: EVENTS // 3]) + b"\n")
    whole.write_bytes(b"\n".join(lines) + b"\n{not json\n")
    project_id, _, _ = new_project(c)

    run(c, 1, project_id, [part])  # the import "stopped" after a third of the events
    resumed = run(c, 1, project_id, [whole])
    assert (resumed.tally.imported, resumed.tally.skipped) == (EVENTS - EVENTS // 3,
                                                                EVENTS // 3)
    assert dict(resumed.tally.invalid) == {"invalid_json": 1}
    assert issues_of(c, 1, project_id) == live
    assert clickhouse_rows(c, 1, project_id) == (EVENTS, EVENTS)

    oldest_id, oldest = events[0][0], orjson.loads(event_line(events[0][1]))
    rows = clickhouse_store(c.runtime.clickhouse_dsn).query_rows(
        "SELECT toUnixTimestamp64Micro(timestamp) FROM events WHERE organization_id = 1"
        " AND project_id = {project:UInt64} AND event_id = {id:UUID}",
        {"project": project_id, "id": str(uuid.UUID(oldest_id))})
    assert abs(rows[0][0] / 1e6 - oldest["timestamp"]) < 0.001


def test_import_lands_only_in_the_named_project_of_the_named_organization(
        crashray: RunningCrashray, events: list[tuple[str, bytes]], tmp_path: Path) -> None:
    c = crashray
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_bytes(b"\n".join(event_line(e) for _, e in events[:6]))
    target_id, target_slug, _ = new_project(c)
    bystander_id, _, _ = new_project(c)
    with postgres.connect(c.runtime.postgres_url) as conn:
        other_org = create_organization(conn, f"other-{uuid.uuid4().hex[:6]}", "Other", None)
        other = create_project(conn, other_org, f"theirs-{uuid.uuid4().hex[:6]}", "t", "v2")
        conn.commit()
        # The command resolves the project within the named organization only.
        assert _project(conn, "crashray", target_slug).id == target_id
        with pytest.raises(NotFound):
            _project(conn, "crashray", other.slug)

    run(c, 1, target_id, [jsonl])
    assert sum(issues_of(c, 1, target_id).values()) == 6
    assert issues_of(c, 1, bystander_id) == {}
    assert issues_of(c, other_org, other.id) == {}
    assert issues_of(c, other_org, target_id) == {}  # the organization scope holds
    assert clickhouse_rows(c, other_org, target_id) == (0, 0)
    assert clickhouse_rows(c, 1, bystander_id) == (0, 0)


def test_each_batch_of_descriptors_is_a_block_of_its_own_beyond_ray_datas_200(
        crashray: RunningCrashray) -> None:
    """A block per batch of descriptors (CRASHRAY_IMPORT_BATCH_EVENTS events), however
    many: with Ray Data's default of at most 200 blocks, a 1,000,000-event import gave each
    processing task 2-3 batches and ran one task at a time (bench/RESULTS.md)."""
    ranges = [{"path": "events.jsonl", "kind": "json_lines", "start": n * 10,
               "end": n * 10 + 10, "first_line": n + 1} for n in range(250)]
    blocks = blocks_of(ranges, 1)  # a range of 2,000 lines is a batch
    assert blocks.num_blocks() == 250
    assert blocks.take(1)[0] == ranges[0]
    files = [{"path": f"{n}.envelope", "kind": "envelope", "start": None, "end": None,
              "first_line": None} for n in range(4500)]
    assert blocks_of(files, 2000).num_blocks() == 3  # 2,000 files a batch
