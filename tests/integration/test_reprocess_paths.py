"""The two ways ``crashray reprocess`` regroups a slice (pipelines/reprocess.py
``run_slice``): in ClickHouse, once per distinct projection (the default), and one event
by one (the reference). The same corpus, stored twice in two organizations of one
PostgreSQL database and the real ClickHouse engine (chDB, in this process), regrouped by
the same rules once each way, must end with the same hashes, issues, titles and bodies;
regrouping one organization leaves the other's rows as they were. Python events are
grouped in ClickHouse; Node events (a platform symbolication handles, with the real
symbolication of the project's artifacts) are grouped in ClickHouse as long as
symbolication leaves them as stored; the events a ``title=`` rule renames go one by one."""

from __future__ import annotations

import datetime as dt
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pyarrow as pa
import pytest

from actors.grouping import IssueResolver
from actors.store_events import issue_candidate
from actors.symbolicate import LocalSymbolication, SymbolicationConfig
from events.grouping import DEFAULT_GROUPING_CONFIG
from events.grouping_memo import referenced_tags, rules_read_release
from events.process import EventProcessor, ItemContext
from events.rows import EventRow, events_table
from pipelines.reprocess import (
    ReprocessJobSpec,
    SliceOutcome,
    project_grouping,
    regroup_slice,
    run_slice,
)
from storage.artifacts import artifact_source
from storage.clickhouse import ClickHouseStore
from storage.projects import grouping_settings
from storage.regroup import PROJECTION_TABLE_PREFIX
from storage.scope import ProjectScope
from tests.support import migrated_project_database

pytestmark = pytest.mark.integration

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: Where the corpus's two hours meet (the hour before last began here).
SLICES_MEET = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).replace(
    minute=0, second=0, microsecond=0)
#: Regroups ValueErrors into one issue, names the KeyErrors' issue (their stored title
#: changes: one by one), and leaves the rest as they were.
RULES = ('type:ValueError -> value-errors\ntype:KeyError -> keys title="Missing keys"\n'
         'tags.tenant:a type:OSError -> tenant-a-errors')
#: Then: the Node RangeErrors (symbolicated by the first job) regrouped too, the KeyErrors'
#: title given back, and the TypeErrors of one release apart.
RULES_AFTER = ("type:ValueError -> value-errors\ntype:RangeError -> ranges\n"
               "release:app@2 type:TypeError -> type-errors-of-2")


@dataclass(frozen=True)
class Loaded:
    scope: ProjectScope
    event_ids: list[str]


def corpus(corpus_dir: Path) -> list[dict[str, Any]]:
    """Python and Node SDK events of several types, values and culprits (some alike)."""
    def event(name: str, error_type: str, value: str, function: str) -> dict[str, Any]:
        e: dict[str, Any] = orjson.loads((corpus_dir / f"{name}.envelope").read_bytes()
                                         .split(b"\n")[2])
        exc = e["exception"]["values"][-1]
        exc["type"], exc["value"] = error_type, value
        exc["stacktrace"]["frames"][-1]["function"] = function
        # Two hours, one slice each (``regroup``): alike events in both.
        e["timestamp"] = (SLICES_MEET + dt.timedelta(minutes=(10, -50)[len(events) % 2])
                          ).timestamp()
        # A tag the rules read, and one they do not (its values must not split groups).
        e["tags"] = {"tenant": "ab"[len(events) // 4 % 2], "request": str(len(events))}
        e["release"] = f"app@{len(events) // 8 % 2 + 1}"
        return e

    events: list[dict[str, Any]] = []
    for n in range(24):
        kind = ("ValueError", "KeyError", "TypeError", "OSError")[n % 4]
        events.append(event("python-sdk-2.75.0-exception", kind, f"bad {n % 3}",
                            f"handler_{n % 2}"))
    for n in range(6):
        events.append(event("node-sdk-11.12.0-exception", ("ValueError", "RangeError")[n % 2],
                            f"node {n % 2}", "handle"))
    return events


def load(conn: psycopg.Connection[Any], store: ClickHouseStore, scope: ProjectScope,
         events: list[dict[str, Any]], unknown_every: int = 0) -> Loaded:
    """The events processed as a consumer does (no rules yet) and stored, with issues;
    every ``unknown_every``-th without its ``grouping_projection`` (as rows written before
    migration 0007 are)."""
    processor = EventProcessor()
    context = ItemContext(scope.id, None, dt.datetime.now(dt.UTC))
    processed = [processor.process(orjson.dumps({**e, "event_id": uuid.uuid4().hex}), context)
                 for e in events]
    issue_ids = IssueResolver(conn, 1000).issue_ids_for(
        [issue_candidate(scope.id, p) for p in processed])
    table = events_table([EventRow(scope.organization_id, scope.id, int(i or 0), 90, p)
                          for p, i in zip(processed, issue_ids, strict=True)])
    assert all(table.column("grouping_projection").to_pylist())
    if unknown_every:
        index = table.schema.get_field_index("grouping_projection")
        table = table.set_column(index, table.schema.field(index), pa.array(
            [0 if n % unknown_every == 0 else h for n, h in
             enumerate(table.column(index).to_pylist())], pa.uint64()))
    store.insert("events", table)
    return Loaded(scope, [p.event_id for p in processed])


def regroup(conn: psycopg.Connection[Any], store: ClickHouseStore, url: str,
            blob_dir: str, scope: ProjectScope, job_id: int, in_clickhouse: bool,
            rules: str) -> SliceOutcome:
    conn.execute("UPDATE projects SET fingerprinting_rules = %s, grouping_config = %s"
                 " WHERE id = %s", (rules, DEFAULT_GROUPING_CONFIG, scope.id))
    spec = ReprocessJobSpec(
        job_id, store.dsn, url, scope.organization_id, scope.id,
        project_grouping(grouping_settings(conn, [scope.id])[scope.id]), None, None, None,
        regroup_in_clickhouse=in_clickhouse)
    # What the job reads of the rules comes from the parsed rules, as from their text.
    assert spec.grouping_tags == referenced_tags(rules)
    assert spec.grouping_reads_release == rules_read_release(rules)
    symbolicator = LocalSymbolication(SymbolicationConfig(
        partial(artifact_source, url, blob_dir, 0.0)))
    resolver = IssueResolver(conn, 1000)
    # Two slices of the job, as its worker process runs them: the second one's projections
    # that the first reprocessed are not reprocessed again (pipelines.reprocess.JobCaches).
    first = run_slice(spec, 0, EPOCH, SLICES_MEET, store, resolver.issue_ids_for,
                      symbolicator)
    second = run_slice(spec, 1, SLICES_MEET, dt.datetime(2100, 1, 1, tzinfo=dt.UTC), store,
                       resolver.issue_ids_for, symbolicator)
    # As the driver does once its run's slices are done (``run_reprocess``).
    store.regroup_delete_replaced_of_job(scope.organization_id, scope.id, job_id)
    both = SliceOutcome(0)
    for o in (first, second):
        both.events_read += o.events_read
        both.events_changed += o.events_changed
        both.events_moved += o.events_moved
        both.events_kept += o.events_kept
        both.events_in_clickhouse += o.events_in_clickhouse
    return both


def stored(store: ClickHouseStore, conn: psycopg.Connection[Any], scope: ProjectScope
           ) -> dict[str, tuple[Any, ...]]:
    """Event id → (primary hash, title, culprit, body, its issue's title, row version,
    issue id)."""
    titles = dict(conn.execute("SELECT id, title FROM issues WHERE project_id = %s",
                               (scope.id,)).fetchall())
    rows = store.query_rows(
        "SELECT replaceAll(toString(event_id), '-', ''), toString(primary_hash), title,"
        " culprit, body, group_id, row_version FROM events WHERE organization_id ="
        " {org:UInt64} AND project_id = {project:UInt64}",
        {"org": scope.organization_id, "project": scope.id})
    out = {}
    for r in rows:
        assert r[0] not in out, f"event {r[0]} has two rows"
        body = orjson.loads(r[4])
        for differs in ("event_id", "project", "received"):  # as loaded, per project
            body.pop(differs, None)
        out[r[0]] = (r[1], r[2], r[3], body, titles[int(r[5])], r[6], int(r[5]))
    return out


@pytest.fixture
def databases(chdb_store: ClickHouseStore) -> Iterator[tuple[str, ProjectScope, str]]:
    with migrated_project_database("crashray_rp_paths") as (url, scope), \
            tempfile.TemporaryDirectory() as blobs:
        yield url, scope, blobs


@pytest.mark.parametrize("unknown_every", [0, 1, 3],
                         ids=["projections-stored", "bodies-parsed", "mixed"])
def test_grouping_in_clickhouse_gives_what_grouping_event_by_event_gives(
        chdb_store: ClickHouseStore, databases: tuple[str, ProjectScope, str],
        corpus_dir: Path, unknown_every: int) -> None:
    """Whether the rows carry the hash of their projection (events/projection.py), or
    not (written before migration 0007: their bodies are parsed), or some do."""
    url, _, blobs = databases
    events = corpus(corpus_dir)
    with psycopg.connect(url, autocommit=True) as conn:
        fast_scope = project_of_its_own(conn, "fast")
        slow_scope = project_of_its_own(conn, "slow")
        fast = load(conn, chdb_store, fast_scope, events, unknown_every)
        slow = load(conn, chdb_store, slow_scope, events)
        slow_before = stored(chdb_store, conn, slow_scope)
        outcomes = []
        for job_id, rules in ((7, RULES), (8, RULES_AFTER)):
            fast_outcome = regroup(conn, chdb_store, url, blobs, fast_scope, job_id, True,
                                   rules)
            if job_id == 7:  # the other organization's project: untouched by the first job
                assert stored(chdb_store, conn, slow_scope) == slow_before
            slow_outcome = regroup(conn, chdb_store, url, blobs, slow_scope, job_id, False,
                                   rules)
            assert_same(stored(chdb_store, conn, fast_scope), fast.event_ids,
                        stored(chdb_store, conn, slow_scope), slow.event_ids, job_id)
            outcomes.append((fast_outcome, slow_outcome))

    for fast_outcome, slow_outcome in outcomes:
        assert (fast_outcome.events_read, fast_outcome.events_changed,
                fast_outcome.events_moved, fast_outcome.events_kept) == (
            slow_outcome.events_read, slow_outcome.events_changed, slow_outcome.events_moved,
            slow_outcome.events_kept)
        assert fast_outcome.events_read == 30 and fast_outcome.events_moved > 0
        assert slow_outcome.events_in_clickhouse == 0
    # Every event but the six KeyErrors, whose stored title changes (renamed, then named
    # back: one by one); the Node events too (symbolication, with no upload, leaves them
    # as stored).
    assert [o[0].events_in_clickhouse for o in outcomes] == [24, 24]
    assert projection_tables(chdb_store, fast_scope) == []  # each slice dropped its own


def projection_tables(store: ClickHouseStore, scope: ProjectScope) -> list[str]:
    """The tables of projection hashes (storage/regroup.py) of the project's slices."""
    return [str(r[0]) for r in store.query_rows(
        "SELECT name FROM system.tables WHERE database = currentDatabase()"
        " AND startsWith(name, {prefix:String})",
        {"prefix": f"{PROJECTION_TABLE_PREFIX}{scope.organization_id}_{scope.id}_"})]



def project_of_its_own(conn: psycopg.Connection[Any], slug: str) -> ProjectScope:
    """A new organization and project whose ids no other test of the session stores events
    under (the session's chDB engine is shared; each test's PostgreSQL database is new)."""
    base = 1_000_000 + uuid.uuid4().int % 1_000_000_000
    for table in ("organizations", "projects"):
        conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), %s)", (base,))
    org = conn.execute("INSERT INTO organizations (slug, name) VALUES (%s, %s) RETURNING id",
                       (slug, slug)).fetchone()
    assert org is not None
    made = conn.execute("INSERT INTO projects (organization_id, slug, name) VALUES"
                        " (%s, 'backend', 'Backend') RETURNING id", (org[0],)).fetchone()
    assert made is not None
    return ProjectScope(int(org[0]), int(made[0]))

def test_a_slices_projection_table_is_its_tenants_alone(
        chdb_store: ClickHouseStore, databases: tuple[str, ProjectScope, str],
        corpus_dir: Path) -> None:
    """A slice of another organization's project with the same job id and hours (its
    table left by an interrupted run) is neither read nor dropped by this project's
    regroup; the sweep when a job finishes drops the project's own leftovers only."""
    url, _, blobs = databases
    events = corpus(corpus_dir)
    with psycopg.connect(url, autocommit=True) as conn:
        ours, theirs = project_of_its_own(conn, "ours"), project_of_its_own(conn, "theirs")
        load(conn, chdb_store, ours, events)
        load(conn, chdb_store, theirs, events)
        theirs_before = stored(chdb_store, conn, theirs)
        spec = ReprocessJobSpec(
            9, chdb_store.dsn, url, theirs.organization_id, theirs.id,
            project_grouping(grouping_settings(conn, [theirs.id])[theirs.id]), None, None,
            None)
        assert spec.grouping_tags == frozenset({"transaction"})
        their_slice = regroup_slice(spec, EPOCH, dt.datetime(2100, 1, 1, tzinfo=dt.UTC),
                                    None)
        assert their_slice is not None
        chdb_store.regroup_projection_groups(their_slice)  # then interrupted

        outcome = regroup(conn, chdb_store, url, blobs, ours, 9, True, RULES)

        assert outcome.events_read == 30 and outcome.events_moved > 0
        assert stored(chdb_store, conn, theirs) == theirs_before
        assert projection_tables(chdb_store, ours) == []
        assert len(projection_tables(chdb_store, theirs)) == 1
        assert chdb_store.regroup_drop_leftover_projections(
            ours.organization_id, ours.id) == 0
        assert len(projection_tables(chdb_store, theirs)) == 1
        assert chdb_store.regroup_drop_leftover_projections(
            theirs.organization_id, theirs.id) == 1
        assert projection_tables(chdb_store, theirs) == []


def assert_same(fast_rows: dict[str, tuple[Any, ...]], fast_ids: list[str],
                slow_rows: dict[str, tuple[Any, ...]], slow_ids: list[str], job_id: int
                ) -> None:
    """Event by event: the same hash, titles and body, one row each, replaced or not
    alike; the same partition into issues. (A new issue takes its title from the event
    that created it: another one of its events in each path.)"""
    for slow_id, fast_id in zip(slow_ids, fast_ids, strict=True):
        f, s = fast_rows[fast_id], slow_rows[slow_id]
        assert f[:3] == s[:3], f"event {fast_id}"
        assert f[3] == s[3], f"body of event {fast_id}"
        assert (f[5] == job_id) == (s[5] == job_id), f"row version of event {fast_id}"

    def partition(rows: dict[str, tuple[Any, ...]], ids: list[str]) -> set[frozenset[int]]:
        by_issue: dict[int, set[int]] = {}
        for n, event_id in enumerate(ids):
            by_issue.setdefault(rows[event_id][6], set()).add(n)
        return {frozenset(v) for v in by_issue.values()}

    assert partition(fast_rows, fast_ids) == partition(slow_rows, slow_ids)
