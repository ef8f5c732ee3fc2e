"""``storage/bugsink.py`` reads a database made by the real Bugsink (issue 14).

Bugsink 2.6.2 from PyPI is installed into a virtualenv of its own (it pins its own Django),
cached under the system temp dir per Bugsink and Python version with an empty database its
``migrate`` made, so only the first run pays for them (about 30 s here: pip 15 s, migrate
6 s; later runs take about 6 s). The database is made as a Bugsink user makes one:
``bugsink-create-conf --template=local``, ``bugsink-manage migrate``, two projects made in
``bugsink-manage shell``, Bugsink's own gunicorn server, and events sent to it by the real
``sentry-sdk`` (Bugsink's own dependency, run with the virtualenv's Python). The ``local``
template digests each event inside its ingest request (``SNAPPEA["TASK_ALWAYS_EAGER"]``),
so the events are in the database once the SDK has flushed.

No Ray is started. Without network and without a cached virtualenv the tests skip, except
in CI (``CI=true``, set by .ci/run), where they fail instead.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg
import pytest

from storage.bugsink import (
    BugsinkSourceError,
    bugsink_projects,
    payload_with_event_id,
    read_bugsink,
)
from tests.integration.conftest import RunningCrashray

BUGSINK_VERSION = "2.6.2"
#: Reused across runs: keyed by Bugsink and Python version, complete once MARKER exists.
VENV_DIR = Path(tempfile.gettempdir()) / (
    f"crashray-bugsink-{BUGSINK_VERSION}-py{sys.version_info.major}.{sys.version_info.minor}")
MARKER = "crashray-installed"
INSTALL_TIMEOUT_S = 600
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 20

CONF_OVERRIDES = """
# --- tests/integration/test_bugsink_source.py: loopback only, nothing sent outside ---
BUGSINK["BASE_URL"] = "http://127.0.0.1:{port}"
BUGSINK["PHONEHOME"] = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
"""

CREATE_PROJECTS = """
import json
from projects.models import Project
projects = [Project.objects.create(name=name) for name in ("alpha", "beta")]
print("PROJECTS", json.dumps({p.name: [p.id, p.sentry_key.hex] for p in projects}))
"""

#: Run by the virtualenv's Python: one project's events through the real sentry-sdk.
SEND_EVENTS = """
import json, sys
import sentry_sdk

dsn, kinds = sys.argv[1], json.loads(sys.argv[2])
sentry_sdk.init(dsn=dsn, default_integrations=False, release="shop@1.4.2",
                environment="staging")
sent = []
for type_name, value in kinds:
    error_class = {"ValueError": ValueError, "KeyError": KeyError,
                   "RuntimeError": RuntimeError}[type_name]
    try:
        raise error_class(value)
    except Exception as error:
        sent.append([sentry_sdk.capture_exception(error), type_name, value])
sentry_sdk.flush(timeout=30)
print("SENT", json.dumps(sent))
"""

#: (exception type, value) sent per project; KeyError's value is its repr, as Python's.
EVENTS_BY_PROJECT = {
    "alpha": [("ValueError", "cart total is negative"), ("ValueError", "cart total is NaN"),
              ("KeyError", "sku-1234")],
    "beta": [("RuntimeError", "payment gateway timed out")],
}


@dataclass(frozen=True)
class SentEvent:
    project: str
    type: str
    value: str


@dataclass(frozen=True)
class BugsinkDatabase:
    base_dir: Path
    db: Path
    projects: dict[str, int]
    events: dict[str, SentEvent]
    sent_from: dt.datetime
    sent_until: dt.datetime
    #: The event ids read while Bugsink's server was still running (its database in WAL).
    read_while_running: frozenset[str]


def _bugsink_env(conf_dir: Path) -> dict[str, str]:
    """Bugsink's settings module from ``conf_dir``, and none of Crashray's packages on the
    path (Bugsink has an ``events`` app too)."""
    return {**os.environ, "DJANGO_SETTINGS_MODULE": "bugsink_conf", "PYTHONPATH": str(conf_dir)}


def _run(python: Path, *args: str, cwd: Path,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False, env=_bugsink_env(cwd))


def _checked(done: subprocess.CompletedProcess[str], step: str) -> str:
    if done.returncode != 0:
        pytest.fail(f"Bugsink step {step!r} exited {done.returncode}:\n"
                    f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def _install_bugsink() -> tuple[Path, Path]:
    """The cached virtualenv's python and an empty database Bugsink's ``migrate`` made,
    both made first if no earlier run did (under a lock: parallel runs make them once).
    The migrated database is cached too: ``migrate`` takes 4-6 s on this machine."""
    python = VENV_DIR / "bin" / "python"
    migrated = VENV_DIR / "migrated"
    with open(f"{VENV_DIR}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = VENV_DIR / MARKER
        if not marker.exists() or not marker.read_text().startswith(_made_by()):
            _pip_install_bugsink(python)
        if not (migrated / MARKER).exists():
            shutil.rmtree(migrated, ignore_errors=True)
            migrated.mkdir()
            _checked(_run(python, "-m", "bugsink.scripts.create_conf", "--template=local",
                          cwd=migrated), "bugsink-create-conf")
            _checked(_run(python, "-m", "bugsink.scripts.manage", "migrate", cwd=migrated),
                     "bugsink-manage migrate")
            (migrated / MARKER).touch()
    return python, migrated / "db.sqlite3"


def _pip_install_bugsink(python: Path) -> None:
    shutil.rmtree(VENV_DIR / "migrated", ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV_DIR)], check=True,
                   timeout=INSTALL_TIMEOUT_S)
    started = time.monotonic()
    done = _run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                f"bugsink=={BUGSINK_VERSION}", cwd=VENV_DIR, timeout=INSTALL_TIMEOUT_S)
    if done.returncode != 0:
        reason = (f"cannot install bugsink=={BUGSINK_VERSION} from PyPI into {VENV_DIR}:"
                  f" {done.stderr.strip()[-1500:]}")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason + " (no network? CI=true makes this a failure)")
    (VENV_DIR / MARKER).write_text(
        f"{_made_by()}pip install took {time.monotonic() - started:.1f} s\n")


def _made_by() -> str:
    """The Python a cached virtualenv was made with: another one (a patch release moved
    the interpreter) makes it anew."""
    return f"{Path(sys.executable).resolve()} {sys.version}\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(server: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready",
                                        timeout=5) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet
        if server.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"Bugsink's gunicorn did not come up on port {port}:\n"
                        f"{log.read_text()[-3000:]}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def bugsink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BugsinkDatabase]:
    python, migrated_db = _install_bugsink()
    base = tmp_path_factory.mktemp("bugsink")
    port = _free_port()
    _checked(_run(python, "-m", "bugsink.scripts.create_conf", "--template=local",
                  "--host=127.0.0.1", f"--port={port}", cwd=base), "bugsink-create-conf")
    with (base / "bugsink_conf.py").open("a") as conf:
        conf.write(CONF_OVERRIDES.format(port=port))
    _copy(migrated_db, base / "db.sqlite3")
    out = _checked(_run(python, "-m", "bugsink.scripts.manage", "shell", "-c",
                        CREATE_PROJECTS, cwd=base), "create projects")
    made = json.loads(next(line for line in out.splitlines()
                           if line.startswith("PROJECTS "))[len("PROJECTS "):])
    log = base / "gunicorn.log"
    with log.open("wb") as log_file:
        server = subprocess.Popen(
            [str(python), "-m", "gunicorn", f"--bind=127.0.0.1:{port}", "--workers=1",
             "bugsink.wsgi"], cwd=base, stdout=log_file, stderr=subprocess.STDOUT,
            env=_bugsink_env(base))
    try:
        _wait_ready(server, port, log)
        sent_from = dt.datetime.now(dt.UTC)
        events: dict[str, SentEvent] = {}
        for name, kinds in EVENTS_BY_PROJECT.items():
            project_id, key = made[name]
            out = _checked(_run(python, "-c", SEND_EVENTS,
                                f"http://{key}@127.0.0.1:{port}/{project_id}",
                                json.dumps(kinds), cwd=base), f"send {name}'s events")
            for event_id, type_name, value in json.loads(out.split("SENT ", 1)[1]):
                events[event_id] = SentEvent(name, type_name, value)
        sent_until = dt.datetime.now(dt.UTC)
        read_while_running = frozenset(_by_event_id(read_bugsink(base / "db.sqlite3")))
    finally:
        server.send_signal(signal.SIGTERM)  # gunicorn's graceful stop
        server.wait(STOP_TIMEOUT_S)
    yield BugsinkDatabase(base, base / "db.sqlite3",
                          {name: ids[0] for name, ids in made.items()}, events, sent_from,
                          sent_until, read_while_running)


Payloads = dict[str, tuple[dict[str, object], dt.datetime]]


def _by_event_id(events: Iterator[tuple[bytes, dt.datetime]]) -> Payloads:
    return {(payload := orjson.loads(body))["event_id"]: (payload, received)
            for body, received in events}


def _exception(payload: dict[str, object]) -> tuple[str, str]:
    values = payload["exception"]["values"]  # type: ignore[index]
    return values[-1]["type"], values[-1]["value"]  # type: ignore[no-any-return]


def test_every_event_bugsink_stored_is_read_with_its_payload_and_receipt_time(
        bugsink: BugsinkDatabase) -> None:
    read = _by_event_id(read_bugsink(bugsink.db))

    assert set(read) == set(bugsink.events)
    for event_id, (payload, received) in read.items():
        sent = bugsink.events[event_id]
        assert _exception(payload) == (sent.type, repr(sent.value) if sent.type == "KeyError"
                                       else sent.value)
        assert payload["release"] == "shop@1.4.2" and payload["environment"] == "staging"
        assert received.tzinfo is not None and received.utcoffset() == dt.timedelta(0)
        assert bugsink.sent_from <= received <= bugsink.sent_until
        happened = dt.datetime.fromisoformat(str(payload["timestamp"]).replace("Z", "+00:00"))
        assert bugsink.sent_from <= happened <= received


def test_a_running_bugsinks_database_is_read(bugsink: BugsinkDatabase) -> None:
    assert bugsink.read_while_running == set(bugsink.events)


def test_events_come_in_bugsink_digest_order(bugsink: BugsinkDatabase) -> None:
    received = [at for _, at in read_bugsink(bugsink.db)]
    assert received == sorted(received)


def test_projects_are_listed_and_one_project_reads_only_its_own_events(
        bugsink: BugsinkDatabase) -> None:
    assert bugsink_projects(bugsink.db) == sorted(
        (project_id, name) for name, project_id in bugsink.projects.items())

    for name, project_id in bugsink.projects.items():
        read = _by_event_id(read_bugsink(bugsink.db, project=project_id))
        assert set(read) == {event_id for event_id, sent in bugsink.events.items()
                             if sent.project == name}


def test_an_unknown_project_is_refused_naming_the_projects_there(
        bugsink: BugsinkDatabase) -> None:
    with pytest.raises(BugsinkSourceError, match=r"project 999 does not exist; its projects"
                       r" are \d+ \(alpha\), \d+ \(beta\)"):
        read_bugsink(bugsink.db, project=999)


def test_a_project_being_deleted_is_left_out(bugsink: BugsinkDatabase,
                                             tmp_path: Path) -> None:
    db = _copy(bugsink.db, tmp_path / "db.sqlite3")
    _execute(db, "UPDATE projects_project SET is_deleted = 1 WHERE id = ?",
             bugsink.projects["beta"])
    assert [name for _, name in bugsink_projects(db)] == ["alpha"]
    assert {bugsink.events[event_id].project for event_id in _by_event_id(read_bugsink(db))} \
        == {"alpha"}
    with pytest.raises(BugsinkSourceError, match="is being deleted in Bugsink"):
        read_bugsink(db, project=bugsink.projects["beta"])


def test_unreadable_rows_are_skipped_and_counted(bugsink: BugsinkDatabase,
                                                 tmp_path: Path) -> None:
    db = _copy(bugsink.db, tmp_path / "db.sqlite3")
    broken_json, broken_utf8, *fine = sorted(bugsink.events)
    _execute(db, "UPDATE events_event SET data = '{\"exception\": ' WHERE event_id = ?",
             broken_json)
    _execute(db, "UPDATE events_event SET data = CAST(X'7B22ff7D' AS TEXT) WHERE event_id = ?",
             broken_utf8)

    events = read_bugsink(db)
    assert set(_by_event_id(events)) == set(fine)
    assert (events.yielded, events.skipped) == (len(fine), 2)
    assert all("data is not JSON" in reason for reason in events.skip_reasons)


def test_bodies_in_bugsink_file_event_storage(bugsink: BugsinkDatabase,
                                              tmp_path: Path) -> None:
    """Bugsink's own ``migrate_to_current_eventstorage`` moves the bodies into a gzip
    FileEventStorage: without its directory reading is refused naming the setting, with
    it the same payloads come back."""
    storage = tmp_path / "event_storage"
    _copy(bugsink.db, tmp_path / "db.sqlite3")
    conf = (bugsink.base_dir / "bugsink_conf.py").read_text() + (
        '\nBUGSINK["EVENT_STORAGES"] = {"files": {"STORAGE": "events.storage.FileEventStorage",'
        f' "OPTIONS": {{"basepath": "{storage}", "compression_algorithm": "gzip"}},'
        ' "USE_FOR_WRITE": True}}\n')
    (tmp_path / "bugsink_conf.py").write_text(conf)
    _checked(_run(VENV_DIR / "bin" / "python", "-m", "bugsink.scripts.manage",
                  "migrate_to_current_eventstorage", cwd=tmp_path), "to file storage")
    assert len(list(storage.glob("*.json.gz"))) == len(bugsink.events)

    with pytest.raises(BugsinkSourceError, match=r"event storage 'files' \(its setting"
                       r' BUGSINK\["EVENT_STORAGES"\]'):
        read_bugsink(tmp_path / "db.sqlite3")
    moved = _by_event_id(read_bugsink(tmp_path / "db.sqlite3", event_storage_dir=storage))
    inline = _by_event_id(read_bugsink(bugsink.db))
    assert moved == inline

    lost = sorted(storage.glob("*.json.gz"))[0]
    lost.unlink()
    events = read_bugsink(tmp_path / "db.sqlite3", event_storage_dir=storage)
    assert len(list(events)) == len(bugsink.events) - 1
    assert events.skipped == 1
    assert f"no event storage file {lost.name.removesuffix('.json.gz')}" in events.skip_reasons[0]


def test_the_payload_carries_the_event_id_bugsink_shows() -> None:
    """Bugsink keeps the envelope header's event_id over the body's; the payload is
    yielded as stored when they agree, else with Bugsink's id."""
    event_id = "0123456789abcdef0123456789abcdef"
    same = b'{"event_id": "01234567-89ab-cdef-0123-456789abcdef", "level": "error"}'
    assert payload_with_event_id(same, event_id) is same
    for body in (b'{"level": "error"}', b'{"event_id": "ffffffffffffffffffffffffffffffff"}'):
        assert orjson.loads(payload_with_event_id(body, event_id))["event_id"] == event_id


def test_files_that_are_not_a_bugsink_database_are_refused(bugsink: BugsinkDatabase,
                                                           tmp_path: Path) -> None:
    with pytest.raises(BugsinkSourceError, match="no such file"):
        read_bugsink(tmp_path / "missing.sqlite3")
    conf = bugsink.base_dir / "bugsink_conf.py"
    with pytest.raises(BugsinkSourceError, match="not an SQLite database"):
        read_bugsink(conf)
    other = tmp_path / "notes.sqlite3"
    _execute(other, "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    with pytest.raises(BugsinkSourceError, match=r"not a Bugsink database: it has no table"
                       r" events_event .* it has 1 tables: notes"):
        bugsink_projects(other)
    db = _copy(bugsink.db, tmp_path / "db.sqlite3")
    _execute(db, "ALTER TABLE events_event DROP COLUMN ingested_at")
    with pytest.raises(BugsinkSourceError, match="table events_event has no column ingested_at"):
        read_bugsink(db)


def _copy(source: Path, target: Path) -> Path:
    """A consistent copy through SQLite's backup API (the source may be in WAL mode)."""
    with closing(sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)) as src, \
            closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return target


def _execute(db: Path, statement: str, *params: object) -> None:
    """One change to a copy of the database (to make the damage a test reads)."""
    with closing(sqlite3.connect(db)) as writable, writable:
        writable.execute(statement, params)


def test_a_bugsink_database_imports_into_a_crashray_project(
        bugsink: BugsinkDatabase, crashray: RunningCrashray) -> None:
    """``crashray import``'s job over the database the real Bugsink made: every event
    becomes a Crashray event of the named project, grouped into issues by type and stack,
    with the ids Bugsink showed; a second run adds nothing."""
    from tests.integration.test_import import issues_of, new_project, run

    project_id, _, _ = new_project(crashray)
    first = run(crashray, 1, project_id, [bugsink.db])
    assert (first.tally.imported, first.tally.skipped) == (len(bugsink.events), 0)
    assert not first.tally.invalid
    titles = issues_of(crashray, 1, project_id)
    assert sum(titles.values()) == len(bugsink.events)
    assert {t.split(":", 1)[0] for t in titles} == {e.type for e in bugsink.events.values()}
    with psycopg.connect(crashray.runtime.postgres_url) as conn:
        stored = {r[0] for r in conn.execute(
            "SELECT event_id FROM processed_events WHERE project_id = %s",
            (project_id,)).fetchall()}
    assert stored == set(bugsink.events)
    again = run(crashray, 1, project_id, [bugsink.db])
    assert (again.tally.imported, again.tally.skipped) == (0, len(bugsink.events))
