"""The same ingest benchmark against Bugsink, set up as its single-server guide describes.

In a fresh temporary dir: `bugsink-create-conf --template=singleserver`, `bugsink-manage
migrate` (both databases, SQLite), a superuser, team and project, then its gunicorn server
(`bugsink.wsgi`, --workers like Bugsink's own Docker gunicorn config: min(cores, 4)) and its
snappea background worker (`bugsink-runsnappea`, which digests the ingested events).
Quotas are raised and the project's event retention too, so neither rejects nor evicts the
benchmark's events; phone-home is off.

"Processed" here: the event id is in Bugsink's `events_event` table (committed by the
digest task), read from its SQLite database read-only. Memory: PSS of the gunicorn master,
its workers and the snappea process.

Bugsink is best installed in its own virtualenv so its pins leave the system untouched:
  python -m venv /tmp/bugsink-venv && /tmp/bugsink-venv/bin/pip install bugsink
  python bench/bugsink_baseline.py --bugsink-bin /tmp/bugsink-venv/bin --concurrency 16
(--bugsink-bin defaults to $BUGSINK_BIN, else the folder of `bugsink-manage` on PATH.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from _load import (
    add_load_arguments,
    free_port,
    load_template,
    plan_from_args,
    target_from_dsn,
)
from _measure import Report, format_table, measure, memory_of, process_table, with_descendants

#: Quotas (MAX_EVENTS_PER_*) and retention set this high so that no benchmark event is
#: refused with 429 or evicted after digest (Bugsink's defaults: 1,000 per 5 minutes and
#: 10,000 events kept per project, see bugsink/app_settings.py and projects/models.py).
UNLIMITED = 1_000_000_000
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0

CONF_OVERRIDES = """
# --- bench/bugsink_baseline.py: plain HTTP on loopback, no quotas, no phone-home ---
BUGSINK["BASE_URL"] = "http://127.0.0.1:{port}"
BUGSINK["PHONEHOME"] = False
for _quota in ("MAX_EVENTS_PER_PROJECT_PER_5_MINUTES", "MAX_EVENTS_PER_PROJECT_PER_HOUR",
               "MAX_EVENTS_PER_PROJECT_PER_MONTH", "MAX_EVENTS_PER_5_MINUTES",
               "MAX_EVENTS_PER_HOUR", "MAX_EVENTS_PER_MONTH"):
    BUGSINK[_quota] = {unlimited}
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
SECURE_PROXY_SSL_HEADER = None
USE_X_REAL_IP = False
"""

CREATE_PROJECT = """
from django.contrib.auth import get_user_model
from projects.models import Project
from teams.models import Team
get_user_model().objects.create_superuser("bench", "bench@example.org", "bench-password")
team = Team.objects.create(name="bench")
project = Project.objects.create(name="bench", team=team, retention_max_event_count={unlimited})
print("PROJECT", project.id, project.sentry_key.hex)
"""


class SqliteEvents:
    """Bugsink's digested events, read-only from its SQLite database."""

    def __init__(self, db_path: Path) -> None:
        self.conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30,
                                    check_same_thread=False, isolation_level=None)

    def count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM events_event").fetchone()[0])

    def stored_ids(self, event_ids: Sequence[str]) -> set[str]:
        marks = ",".join("?" * len(event_ids))
        rows = self.conn.execute(f"SELECT event_id FROM events_event WHERE event_id IN ({marks})",
                                 list(event_ids)).fetchall()
        return {str(r[0]).replace("-", "") for r in rows}

    def issue_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM issues_issue").fetchone()[0])


@dataclass
class BugsinkInstance:
    base_dir: Path
    bin_dir: Path
    port: int
    dsn: str = ""
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {**os.environ, "DJANGO_SETTINGS_MODULE": "bugsink_conf",
                "PYTHONPATH": str(self.base_dir)}


def find_bin_dir(configured: str | None) -> Path:
    candidate = configured or os.environ.get("BUGSINK_BIN")
    if candidate is None:
        found = shutil.which("bugsink-manage")
        candidate = str(Path(found).parent) if found else None
    if candidate is None or not (Path(candidate) / "bugsink-manage").exists():
        raise SystemExit(
            f"Bugsink not found (looked in {candidate or 'PATH'} for bugsink-manage). Install"
            " it: python -m venv /tmp/bugsink-venv && /tmp/bugsink-venv/bin/pip install"
            " bugsink, then pass --bugsink-bin /tmp/bugsink-venv/bin")
    return Path(candidate)


def _run(instance: BugsinkInstance, *command: str) -> str:
    """One setup command in the instance's dir; its output, or exit naming the step."""
    done = subprocess.run([str(instance.bin_dir / command[0]), *command[1:]],
                          cwd=instance.base_dir, env=instance.env(), capture_output=True,
                          text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"Bugsink setup step {' '.join(command)} failed with exit code"
                         f" {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def configure(instance: BugsinkInstance) -> None:
    """Settings, both databases, and the project whose DSN the load uses."""
    conf = instance.base_dir / "bugsink_conf.py"
    _run(instance, "bugsink-create-conf", "--template=singleserver", "--host=127.0.0.1",
         f"--port={instance.port}", f"--base-dir={instance.base_dir}", f"--output-file={conf}")
    with conf.open("a") as f:
        f.write(CONF_OVERRIDES.format(port=instance.port, unlimited=UNLIMITED))
    _run(instance, "bugsink-manage", "migrate")
    _run(instance, "bugsink-manage", "migrate", "snappea", "--database=snappea")
    out = _run(instance, "bugsink-manage", "shell", "-c",
               CREATE_PROJECT.format(unlimited=UNLIMITED))
    line = next((x for x in out.splitlines() if x.startswith("PROJECT ")), None)
    if line is None:
        raise SystemExit(f"Bugsink project creation printed no PROJECT line:\n{out}")
    _, project_id, key = line.split()
    instance.dsn = f"http://{key}@127.0.0.1:{instance.port}/{project_id}"


def _spawn(instance: BugsinkInstance, log_name: str, *command: str) -> None:
    log = (instance.base_dir / log_name).open("wb")
    instance.processes.append(subprocess.Popen(
        [str(instance.bin_dir / command[0]), *command[1:]], cwd=instance.base_dir,
        env=instance.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True))


def _ready(instance: BugsinkInstance) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{instance.port}/health/ready",
                                    timeout=5) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False  # not listening yet


def start_servers(instance: BugsinkInstance, workers: int) -> None:
    """gunicorn (Bugsink's Docker settings) and the snappea worker; wait for /health/ready."""
    _spawn(instance, "gunicorn.log", "gunicorn", f"--bind=127.0.0.1:{instance.port}",
           f"--workers={workers}", "--access-logfile=-", "bugsink.wsgi")
    _spawn(instance, "snappea.log", "bugsink-runsnappea")
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _ready(instance):
        exited = [p.args for p in instance.processes if p.poll() is not None]
        if exited or time.monotonic() > deadline:
            stop_servers(instance)
            raise SystemExit(f"Bugsink did not come up (exited: {exited}); see"
                             f" {instance.base_dir}/gunicorn.log and snappea.log")
        time.sleep(0.5)


def stop_servers(instance: BugsinkInstance) -> None:
    """SIGTERM to gunicorn's master and to snappea (both stop gracefully on it)."""
    for process in instance.processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in instance.processes:
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"{process.args!r} ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s; killing it",
                  file=sys.stderr)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    instance.processes = []


def bugsink_pids(instance: BugsinkInstance) -> set[int]:
    return with_descendants([p.pid for p in instance.processes], process_table())


def run_bugsink(args: argparse.Namespace) -> Report:
    """Set up Bugsink in a temporary dir, measure, stop it, remove the dir."""
    plan, template = plan_from_args(args), load_template()
    bin_dir = find_bin_dir(args.bugsink_bin)
    base_dir = Path(tempfile.mkdtemp(prefix="bugsink-bench-"))
    instance = BugsinkInstance(base_dir, bin_dir, args.bugsink_port or free_port())
    print(f"setting up Bugsink in {base_dir} ...", file=sys.stderr, flush=True)
    try:
        configure(instance)
        start_servers(instance, args.bugsink_workers)
        return asyncio.run(measure(target_from_dsn("bugsink", instance.dsn), plan, template,
                                   partial(SqliteEvents, base_dir / "db.sqlite3"),
                                   lambda: memory_of(bugsink_pids(instance))))
    finally:
        stop_servers(instance)
        if not args.keep_data:
            shutil.rmtree(base_dir, ignore_errors=True)


def add_bugsink_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Bugsink")
    group.add_argument("--bugsink-bin", help="folder with bugsink-manage, bugsink-runsnappea"
                       " and gunicorn (default: $BUGSINK_BIN, else from PATH)")
    group.add_argument("--bugsink-workers", type=int, default=min(os.cpu_count() or 1, 4),
                       help="gunicorn workers (default min(cores, 4), as Bugsink's Docker image)")
    group.add_argument("--bugsink-port", type=int, help="HTTP port (default: a free one)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser)
    add_bugsink_arguments(parser)
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the temporary Bugsink dir (databases, logs) after the run")
    return parser


def main(argv: list[str] | None = None) -> int:
    report = run_bugsink(build_parser().parse_args(argv))
    print(format_table([report]))
    print(report.json_line())
    return 0 if report.losses == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
