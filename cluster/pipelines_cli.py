"""``crashray export`` and ``crashray rollups rebuild``: bulk jobs (pipelines/) on the Ray
cluster of a running Crashray.

    crashray export --project SLUG [--org SLUG] [--since T] [--until T] [--query Q] --to DIR
    crashray rollups rebuild --project SLUG [--org SLUG]
    crashray reprocess --project SLUG [--org SLUG] [--release R] [--since T] [--issue ID]
    crashray import --project SLUG [--org SLUG] PATH…

Both read the embedded ClickHouse engine, which answers only through its owner actor on
the instance's Ray cluster, so they join that cluster: the one of ``--address`` (or
``CRASHRAY_RAY_ADDRESS``: an instance deployed there), else the one the running
``crashray up`` of ``--data-dir`` recorded in its instance file. PostgreSQL is found as
every management command finds it (cluster/cli_common.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.cli_common import CliError, add_data_dir, command, database, settings_from
from events.errors import Conflict, NotFound

if TYPE_CHECKING:
    import psycopg

    from cluster.settings import Settings
    from storage.projects import ProjectRef


class InstanceNotRunning(Conflict):
    """The job needs the instance's Ray cluster and no instance runs."""

    code = "instance_not_running"


def ray_address_of(settings: Settings) -> str:
    """The Ray cluster to run a job on: the configured one, else the running instance's."""
    from cluster.runtime import running_instance

    if settings.ray_address:
        return settings.ray_address
    instance = running_instance(settings.data_dir)
    if instance is not None and not instance.ray_address:
        raise InstanceNotRunning(
            f"the Crashray running on {settings.data_dir} (pid {instance.pid}) did not record"
            " its Ray cluster's address (it predates this command): restart it")
    if instance is None:
        raise InstanceNotRunning(
            f"no running Crashray on {settings.data_dir} (its ClickHouse is reached through"
            f" it): start it with `crashray up --data-dir {settings.data_dir}`, or give the"
            " Ray cluster it is deployed on with --address")
    return instance.ray_address


def join_ray(settings: Settings, address: str | None = None) -> None:
    """Connect this process to the instance's Ray cluster (``address``, else found by
    ``ray_address_of``), as a driver of its namespace. Call ``prepare_ray`` first."""
    from cluster.runtime import RAY_DRIVER_LOG_LEVEL

    address = address or ray_address_of(settings)
    import ray

    ray.init(address=address, namespace="crashray", logging_level=RAY_DRIVER_LOG_LEVEL,
             log_to_driver=False)


def prepare_ray(settings: Settings) -> None:
    """Ray's environment as ``crashray up`` set it (its token authentication above all):
    before anything imports Ray, which reads it once."""
    from cluster.runtime import apply_ray_environment

    apply_ray_environment(settings)


def parse_time(option: str, text: str | None) -> dt.datetime | None:
    """An ISO 8601 date or date and time; without a zone it is UTC."""
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise CliError(f"{option} {text!r}: not an ISO 8601 date or time; give e.g."
                       " 2026-01-31 or 2026-01-31T12:00:00Z") from exc
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _project(conn: psycopg.Connection[Any], org: str, slug: str) -> ProjectRef:
    from storage import tenancy
    from storage.projects import find_project

    found = find_project(conn, tenancy.organization_id(conn, org), slug)
    if found is None:
        raise NotFound(f"no project {slug!r} in organization {org!r}")
    return found


def cmd_export(args: argparse.Namespace) -> None:
    from events.search import event_filters, issue_filters, parse_search
    from pipelines.export import ALL_TIME, ExportJob, ExportLimits, check_target, run_export
    from storage.clickhouse import clickhouse_dsn
    from storage.releases import resolve_latest
    from storage.rollups import hash_issues, matching_issues

    settings = settings_from(args)
    prepare_ray(settings)
    since = parse_time("--since", args.since) or ALL_TIME[0]
    until = parse_time("--until", args.until) or ALL_TIME[1]
    if since >= until:
        raise CliError(f"--since {since.isoformat()} is not before --until {until.isoformat()}")
    # Sentry's search syntax, as the issue stream takes it (a bad query fails here, with
    # the position of what is wrong, before anything runs).
    query = parse_search(args.query or "", dt.datetime.now(dt.UTC))
    target = Path(args.to).expanduser().resolve()
    check_target(target)
    address = ray_address_of(settings)
    with database(args) as conn:
        project = _project(conn, args.org, args.project)
        query = resolve_latest(conn, project.organization_id, [project.id], query)
        issue_of_hash = hash_issues(conn, project)
        wanted = issue_filters(query)
        issues = None if wanted.is_empty else frozenset(matching_issues(conn, project, wanted))
    join_ray(settings, address)
    started = time.monotonic()
    result = run_export(
        ExportJob(clickhouse_dsn(settings.clickhouse_url, settings.data_dir),
                  project.organization_id, project.id, since, until, target, issue_of_hash,
                  event_filters(query), issues),
        ExportLimits(settings.pipeline_concurrency, settings.pipeline_task_cpus,
                     settings.export_slice_events))
    took_s = time.monotonic() - started
    print(f"exported {result.events} events of {args.org}/{args.project} to {target}"
          f" ({len(result.files)} Parquet files) in {took_s:.1f} s"
          f" ({result.events / max(took_s, 1e-9):.0f} events/s)")


def cmd_rollups_rebuild(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    prepare_ray(settings)
    from actors.clickhouse import clickhouse_store
    from pipelines.rollups import rebuild
    from storage.clickhouse import clickhouse_dsn

    address = ray_address_of(settings)
    with database(args) as conn:
        project = _project(conn, args.org, args.project)
        join_ray(settings, address)
        store = clickhouse_store(clickhouse_dsn(settings.clickhouse_url, settings.data_dir))
        result = rebuild(conn, store, project)
    print(f"rebuilt the hourly issue counts of {args.org}/{args.project}"
          f" ({result.rollup_events} events); {_issues(result.issues_recounted)} recounted,"
          f" {result.issues_corrected} of them corrected")
    if result.issues_without_events:
        print("issues with no stored events (counters kept): "
              + ", ".join(map(str, result.issues_without_events)))


def cmd_import(args: argparse.Namespace) -> None:
    import sys

    from cluster.cli_common import _connect
    from cluster.runtime import Runtime
    from pipelines.import_sources import list_sources

    settings = settings_from(args)
    prepare_ray(settings)
    # After prepare_ray: the pipeline module imports Ray, which reads its environment once.
    from pipelines.import_events import (
        ImportJob,
        ImportLimits,
        as_paths,
        invalid_examples,
        print_progress,
        run_import,
        stage_line,
        summary_line,
    )

    descriptors = list_sources(as_paths(args.paths), settings.import_batch_events)
    address = ray_address_of(settings)
    runtime = Runtime(settings)
    try:
        with _connect(runtime) as conn:
            project = _project(conn, args.org, args.project)
        consumer = runtime.consumer_config()
    finally:
        runtime.stop()
    job = ImportJob(runtime.postgres_url, runtime.clickhouse_dsn, project.organization_id,
                    project.id, settings.retention_days, settings.consumer_lease_s,
                    settings.grouping_cache_hashes, consumer.symbolication,
                    settings.grouping_memo_entries)
    join_ray(settings, address)
    result = run_import(job, ImportLimits(settings.pipeline_concurrency,
                                          settings.pipeline_task_cpus,
                                          settings.import_batch_events),
                        descriptors, None if args.quiet else print_progress)
    if not args.quiet:
        sys.stderr.write("\n")
    for example in invalid_examples(result):
        print(f"  e.g. {example[:300]}", file=sys.stderr)
    print(summary_line(result) + f" ({args.org}/{args.project})")
    if args.stage_times:
        print(stage_line(result.tally))


def cmd_reprocess(args: argparse.Namespace) -> None:
    """Symbolicate and group a project's stored events again (pipelines/reprocess.py)."""
    settings = settings_from(args)
    prepare_ray(settings)
    from cluster.cli_common import _connect
    from cluster.runtime import Runtime
    from storage.clickhouse import clickhouse_dsn

    address = ray_address_of(settings)
    runtime = Runtime(settings)
    try:
        with _connect(runtime) as conn:
            project = _project(conn, args.org, args.project)
            if args.abandon:
                _abandon(conn, project)
                return
            conn.commit()
        join_ray(settings, address)
        result = _reprocess(args, settings, runtime.postgres_url,
                            clickhouse_dsn(settings.clickhouse_url, settings.data_dir),
                            runtime.consumer_config().symbolication, project)
    finally:
        runtime.stop()
    import ray

    ray.shutdown()  # Ray's own notices (worker start-ups) then come before the summary
    print(reprocess_summary(args.org, args.project, result))


def _abandon(conn: psycopg.Connection[Any], project: ProjectRef) -> None:
    from storage.reprocess import abandon_job
    from storage.scope import ProjectScope

    with conn.transaction():
        job = abandon_job(conn, ProjectScope(project.organization_id, project.id))
    print("no unfinished reprocess job" if job is None else
          f"abandoned reprocess job {job} (each event keeps one row, old or replaced)")


def _reprocess(args: argparse.Namespace, settings: Settings, postgres_url: str,
               dsn: str, symbolication: Any, project: ProjectRef) -> Any:
    from pipelines.reprocess import (
        ReprocessContext,
        ReprocessLimits,
        ReprocessOptions,
        run_reprocess,
    )

    if args.max_slices is not None and args.max_slices < 1:
        raise CliError(f"--max-slices {args.max_slices}: give 1 or more")
    options = ReprocessOptions(args.release, parse_time("--since", args.since), args.issue)
    return run_reprocess(
        ReprocessContext(postgres_url, dsn, project.organization_id, project.id,
                         symbolication, settings.grouping_cache_hashes, settings.kafka()),
        options, ReprocessLimits(settings.pipeline_concurrency, settings.pipeline_task_cpus,
                                 settings.reprocess_slice_events, args.max_slices,
                                 settings.pipeline_nice,
                                 settings.pipeline_clickhouse_threads,
                                 yield_max=settings.pipeline_yield_max))


def reprocess_summary(org: str, slug: str, r: Any) -> str:
    """The command's closing line(s): what it read, moved and changed, and its speed."""
    head = (f"reprocess job {r.job_id} of {org}/{slug}"
            f"{' (resumed)' if r.resumed else ''}: {r.events_read} events read,"
            f" {r.events_changed} changed, {r.events_moved} moved to another issue;")
    if not r.finished:
        return (f"{head} {r.slices_done} of {r.slices_total} slices done, stopped early"
                f" ({r.events_per_s:.0f} events/s); run the same command again to continue")
    stages = ", ".join(f"{stage} {s:.1f}" for stage, s in r.stage_s.items())
    return (f"{head} issues: {len(r.issues_created)} created, {len(r.issues_merged)} merged,"
            f" {len(r.issues_emptied)} emptied (resolved); {r.events_this_run} events in"
            f" {r.took_s:.1f} s ({r.events_per_s:.0f} events/s)"
            + (f"; task seconds by stage: {stages}" if stages else ""))


def _issues(n: int) -> str:
    return f"{n} issue{'' if n == 1 else 's'}"


def _scope(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", required=True, help="the project's slug")
    parser.add_argument("--org", default="crashray", help="its organization (crashray)")
    parser.add_argument("--address", help="the Ray cluster Crashray is deployed on"
                        " (CRASHRAY_RAY_ADDRESS); default: the running `crashray up`'s")
    add_data_dir(parser)


def add_parsers(sub: Any) -> None:
    export = sub.add_parser("export", help="a project's events as Parquet files (schema:"
                            " pipelines/export.py)")
    _scope(export)
    export.add_argument("--since", help="only events at or after this time (ISO 8601, UTC"
                        " unless it names a zone)")
    export.add_argument("--until", help="only events before this time")
    export.add_argument("--query", help="only events this search matches, in the issue"
                        " stream's (Sentry's) syntax, e.g. 'is:unresolved level:error"
                        " release:1.2.*'; default: every event")
    export.add_argument("--to", required=True, help="a new or empty directory for the files")
    command(export, cmd_export)
    rollups = sub.add_parser("rollups", help="derived counts").add_subparsers(
        dest="rollups_command", required=True)
    rebuild = rollups.add_parser("rebuild", help="recompute a project's hourly issue counts"
                                 " and issue counters from its stored events")
    _scope(rebuild)
    command(rebuild, cmd_rollups_rebuild)
    reprocess = sub.add_parser(
        "reprocess", help="symbolicate and group a project's stored events again with its"
        " current source maps, rules and grouping config (pipelines/reprocess.py)")
    _scope(reprocess)
    reprocess.add_argument("--release", help="only events of this release")
    reprocess.add_argument("--since", help="only events at or after this time (ISO 8601,"
                           " UTC unless it names a zone)")
    reprocess.add_argument("--issue", type=int, help="only the events of this issue (id)")
    reprocess.add_argument("--max-slices", type=int, help="stop after this many slices; the"
                           " job stays unfinished and the same command continues it")
    reprocess.add_argument("--abandon", action="store_true", help="drop the project's"
                           " unfinished reprocess job instead (to start one with other"
                           " options)")
    command(reprocess, cmd_reprocess)
    imports = sub.add_parser("import", help="events from envelope files, event JSON (lines),"
                             " tarballs, folders or a Bugsink database into a project"
                             " (pipelines/import_events.py)")
    _scope(imports)
    imports.add_argument("--quiet", action="store_true", help="no progress line")
    imports.add_argument("--stage-times", action="store_true",
                         help="also print the task time spent reading, processing, storing")
    imports.add_argument("paths", nargs="+", metavar="PATH", help="files, folders, tarballs")
    command(imports, cmd_import)
