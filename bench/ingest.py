"""Ingest benchmark for Crashray: Python SDK error envelopes in, stored events out.

By default starts `crashray up` in a fresh temporary data dir on a free port, sends the
load, waits until every accepted event is stored, stops Crashray with SIGTERM and removes
the data dir. With --dsn/--token/--pg-url it attaches to a running instance instead.

Figures (printed as a table, then as one JSON line):
  accepted events/s     HTTP 200 answers / time from first send to last answer
  processed events/s    accepted events / time from first send until every accepted event
                        id is in PostgreSQL `processed_events` (committed after its
                        ClickHouse insert, so queryable)
  accept latency        p50/p99 of the HTTP answer time; open loop counts from the time the
                        envelope was due, so client-side queueing is included
  accept → queryable    p50/p99 over ~--sample-size traced events: from the 200 until the
                        id shows up in `processed_events` (polled every 0.1 s)
  memory                PSS (/proc/PID/smaps_rollup) summed over the `crashray up` process
                        tree and this instance's Ray processes (raylet, gcs_server, ray::*
                        workers, haproxy) and its pgserver PostgreSQL; peak and after drain
  losses                200s whose event id never reached `processed_events`: must be 0

Examples:
  python bench/ingest.py --concurrency 16 --seconds 20      # closed loop, as fast as it goes
  python bench/ingest.py --rate 500 --seconds 20            # open loop at 500 envelopes/s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TextIO
from urllib.parse import parse_qs, urlsplit

import psycopg
from _load import (
    add_load_arguments,
    free_port,
    load_template,
    plan_from_args,
    target_from_dsn,
)
from _measure import (
    Report,
    format_table,
    latency_by_second,
    measure,
    memory_of,
    process_table,
    with_descendants,
)

#: `crashray up` starts PostgreSQL, Ray, actors and Serve; on 2 busy cores this takes a while.
START_TIMEOUT_S = 600.0
#: `crashray up` stops in up to ~40 s (consumers finish their batch, Ray shuts down).
STOP_TIMEOUT_S = 120.0
#: Process names of a Ray node, matched in command lines (the workers rename themselves).
RAY_PROCESS_MARKERS = ("ray::", "raylet", "gcs_server", "haproxy")


class PostgresEvents:
    """Crashray's stored events as PostgreSQL sees them (autocommit, one connection)."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)

    def count(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM processed_events").fetchone()
        return int(row[0]) if row else 0

    def stored_ids(self, event_ids: Sequence[str]) -> set[str]:
        rows = self.conn.execute("SELECT event_id FROM processed_events"
                                 " WHERE event_id = ANY(%s)", (list(event_ids),)).fetchall()
        return {str(r[0]) for r in rows}

    def issue_count(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM issues").fetchone()
        return int(row[0]) if row else 0


@dataclass
class CrashrayInstance:
    dsn: str
    token: str
    pg_url: str
    process: subprocess.Popen[str] | None = None
    data_dir: Path | None = None
    log_path: Path | None = None
    printed: dict[str, str] = field(default_factory=dict)


def _follow_output(stream: TextIO, log: TextIO, printed: dict[str, str],
                   ready: threading.Event) -> None:
    """Copy `crashray up` output to its log; note the DSN and token lines."""
    with log:
        for line in stream:
            log.write(line)
            log.flush()
            for label in ("DSN", "API token"):
                if line.startswith(f"{label}: "):
                    printed[label] = line.split(": ", 1)[1].strip()
            if line.startswith("Crashray is running"):
                ready.set()
    ready.set()  # exited: the caller checks the return code


def _log_tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _crashray_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Serve's HAProxy binds fixed ports 9101 (metrics) and 8404 (stats) on 0.0.0.0
    (ray/serve/_private/constants.py): a second Serve on this machine, such as a test run,
    makes `crashray up` fail at start, and the benchmark's would break theirs. Free ports
    keep the two apart."""
    return {**os.environ, "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()), **(extra or {})}


def start_crashray(data_dir: Path, port: int, env: dict[str, str] | None = None
                   ) -> CrashrayInstance:
    log_path = data_dir.parent / f"{data_dir.name}-crashray-up.log"
    command = ["crashray", "up", "--data-dir", str(data_dir), "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True, env=_crashray_env(env))
    assert process.stdout is not None  # stdout=PIPE
    printed: dict[str, str] = {}
    ready = threading.Event()
    log = log_path.open("w")
    threading.Thread(target=_follow_output, args=(process.stdout, log, printed, ready),
                     daemon=True).start()
    print(f"starting {' '.join(command)} (log: {log_path}) ...", file=sys.stderr, flush=True)
    if not ready.wait(START_TIMEOUT_S) or process.poll() is not None or "DSN" not in printed:
        stop_crashray(CrashrayInstance("", "", "", process, data_dir, log_path))
        raise SystemExit(f"crashray up did not come up within {START_TIMEOUT_S:.0f} s;"
                         f" last lines of {log_path}:\n{_log_tail(log_path)}")
    pg_url = f"postgresql://postgres:@/postgres?host={data_dir / 'postgres'}"
    return CrashrayInstance(printed["DSN"], printed.get("API token", ""), pg_url, process,
                            data_dir, log_path, printed)


def stop_crashray(instance: CrashrayInstance) -> None:
    """SIGTERM, as Ctrl-C would; SIGKILL only if it has not stopped in STOP_TIMEOUT_S."""
    process = instance.process
    if process is None or process.poll() is not None:
        return
    print("stopping crashray (SIGTERM) ...", file=sys.stderr, flush=True)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"crashray up (pid {process.pid}) ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s;"
              " killing it", file=sys.stderr)
        process.kill()
        process.wait()
    print(f"crashray stopped in {time.monotonic() - started:.1f} s, exit code"
          f" {process.returncode}", file=sys.stderr, flush=True)


def _ray_temp_dir(data_dir: Path) -> Path:
    from cluster.runtime import ray_temp_dir

    return ray_temp_dir(data_dir)


def _pg_socket_dir(pg_url: str) -> str | None:
    hosts = parse_qs(urlsplit(pg_url).query).get("host", [])
    return hosts[0] if hosts and hosts[0].startswith("/") else None


def crashray_pids(instance: CrashrayInstance) -> set[int]:
    """This instance's processes: `crashray up` and its descendants (Ray's gcs_server,
    raylet, ray:: workers, haproxy) plus any process naming its data or Ray temp dir
    (the daemonized pgserver postmaster) and their descendants. Attached to an instance
    not started here, every Ray process on the machine counts, as the owner is unknown."""
    table = process_table()
    roots: set[int] = set()
    if instance.process is not None:
        roots.add(instance.process.pid)
    markers: list[str] = []
    if instance.data_dir is not None:
        markers += [str(instance.data_dir), str(_ray_temp_dir(instance.data_dir))]
    else:
        markers += list(RAY_PROCESS_MARKERS)
        socket_dir = _pg_socket_dir(instance.pg_url)
        markers += [socket_dir] if socket_dir else []
    roots |= {p.pid for p in table.values() if any(m in p.cmdline for m in markers)}
    roots.discard(os.getpid())
    return with_descendants(roots, table) - {os.getpid()}


def leftover_pids(data_dir: Path) -> set[int]:
    markers = (str(data_dir), str(_ray_temp_dir(data_dir)))
    return {p.pid for p in process_table().values()
            if any(m in p.cmdline for m in markers) and p.pid != os.getpid()}


def events_page_request(instance: CrashrayInstance) -> urllib.request.Request:
    """GET the first page of the default project's events, with the instance's token."""
    port = urlsplit(instance.dsn).port
    return urllib.request.Request(
        f"http://127.0.0.1:{port}/api/0/projects/crashray/default/events/",
        headers={"Authorization": f"Bearer {instance.token}"})


def api_check(instance: CrashrayInstance) -> str:
    """One page of the events API, to show stored events are queryable there too."""
    import json
    import urllib.error

    if not instance.token:
        return "API check skipped: no token"
    request = events_page_request(instance)
    url = request.full_url
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            events = json.loads(response.read())
            return f"API check: GET {url} → {response.status}, {len(events)} events on page 1"
    except urllib.error.URLError as exc:
        return f"API check: GET {url} failed: {exc}"


class ApiProbe:
    """The dashboard's view while SDKs send: GET one page of the events API every
    ``interval_s`` from a thread for the load's ``seconds``, timing each answer (what a
    dashboard user waits for while the ingest replicas are loaded; on one node they answer
    the API too)."""

    def __init__(self, instance: CrashrayInstance, interval_s: float, seconds: float) -> None:
        self.request = events_page_request(instance)
        self.probing = interval_s > 0 and bool(instance.token)
        self.interval_s = interval_s
        self.seconds = seconds
        self.latencies_ms: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ApiProbe:
        if self.probing:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        import http.client

        until = time.monotonic() + self.seconds
        while not self._stop.wait(self.interval_s) and time.monotonic() < until:
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self.request, timeout=30) as response:
                    response.read()
                self.latencies_ms.append((time.perf_counter() - started) * 1000)
            except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def summary(self) -> str:
        if not self.latencies_ms and not self.errors:
            return "API under load: not probed (no token, or --api-probe-s 0)"
        ordered = sorted(self.latencies_ms) or [float("nan")]
        p50, p99 = (ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.99))
        return (f"API under load: GET {self.request.full_url} every {self.interval_s:g} s, "
                f"{len(self.latencies_ms)} answered, {len(self.errors)} failed; "
                f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {ordered[-1]:.0f} ms")


def _kill_leftovers(data_dir: Path) -> None:
    """Kill what still runs of an instance after its stop, sparing this process's ancestors
    (the data dir can be in their command lines too: the shell, ``timeout``, …)."""
    table = process_table()
    ancestors, pid = set(), os.getpid()
    while pid in table and pid not in ancestors:
        ancestors.add(pid)
        pid = table[pid].ppid
    left = leftover_pids(data_dir) - ancestors
    if left:
        print(f"processes of {data_dir} still running after stop, killing: {sorted(left)}",
              file=sys.stderr)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def run_crashray(args: argparse.Namespace) -> Report:
    """Start (or attach to) Crashray, measure, stop what was started."""
    plan, template = plan_from_args(args), load_template()
    attached = bool(args.dsn)
    data_dir = None if attached else Path(tempfile.mkdtemp(prefix="crb-"))
    instance = (CrashrayInstance(args.dsn, args.token or "", args.pg_url) if attached
                else start_crashray(data_dir or Path(), args.port or free_port()))
    try:
        if not attached:
            time.sleep(args.idle_s)
        with ApiProbe(instance, args.api_probe_s, args.seconds) as probe:
            report = asyncio.run(measure(target_from_dsn("crashray", instance.dsn), plan,
                                         template, partial(PostgresEvents, instance.pg_url),
                                         lambda: memory_of(crashray_pids(instance)),
                                         args.latency_log))
        print(probe.summary(), file=sys.stderr)
        if args.latency_log:
            print(latency_by_second(args.latency_log), file=sys.stderr)
        print(api_check(instance), file=sys.stderr)
        return report
    finally:
        stop_crashray(instance)
        if data_dir is not None:
            _kill_leftovers(data_dir)
            if not args.keep_data:
                shutil.rmtree(data_dir, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser)
    attach = parser.add_argument_group("attach to a running Crashray instead of starting one")
    attach.add_argument("--dsn", help="its DSN, http://<key>@127.0.0.1:<port>/<project>")
    attach.add_argument("--token", help="its API token (for the API checks)")
    attach.add_argument("--pg-url", help="its PostgreSQL URL, e.g."
                        " postgresql://postgres:@/postgres?host=DATA_DIR/postgres")
    parser.add_argument("--latency-log", metavar="FILE",
                        help="write one JSON line per request to FILE (when it was due in open"
                             " loop, or sent, in seconds from the first; its accept latency in"
                             " ms; its HTTP status, 0: no answer) and print p50/p99 per second")
    parser.add_argument("--api-probe-s", type=float, default=0.5, metavar="SECONDS",
                        help="while sending, GET a page of the events API this often and"
                        " print its p50/p99 (default 0.5; 0: off)")
    own = parser.add_argument_group("the instance started here")
    own.add_argument("--port", type=int, help="HTTP port (default: a free one)")
    own.add_argument("--idle-s", type=float, default=0.0, metavar="SECONDS",
                     help="wait this long after the DSN line before sending (default 0: at"
                          " once, while the instance still finishes starting)")
    own.add_argument("--keep-data", action="store_true",
                     help="keep the temporary data dir after the run")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if bool(args.dsn) != bool(args.pg_url):
        raise SystemExit("attaching needs both --dsn and --pg-url (and --token for the API check)")
    report = run_crashray(args)
    print(format_table([report]))
    print(report.json_line())
    return 0 if report.losses == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
