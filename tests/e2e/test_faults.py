"""Faults under load on one ``crashray up``: ``kill -9`` of each kind of process it runs, and
its PostgreSQL stopped for 10 s, then hung (SIGSTOP) for 10 s (issue 11, "Node loss and
outages").

One instance for the whole module (starting one takes most of a minute). Each fault gets
its own issue: senders post envelopes of one title, the fault strikes mid-load, the senders
go on until ingest answers 200 again. Then every envelope that got a 200 must be stored
exactly once (the issue's count equals the events listed, each listed once, every 200
among them), an envelope ingest itself refused must not be stored, and one whose answer
never came (the connection broke, a proxy answered) may be stored, but once.

The time until full service (from the end of the fault to the first 200, and until the
issue's count caught up) is printed per fault and as a table at the end (``pytest -s``); bench/RESULTS.md keeps
the figures. Nothing here asserts a duration beyond "it recovers within a generous bound".

Processes are this instance's only by proof (``cluster.leftovers.instance_processes``:
its Ray temp dir on the command line or open); the PostgreSQL stopped is the instance's
private one (``data_dir/postgres``), never the machine's.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
import pytest

from cluster.embedded_postgres import running_postmaster_pid
from cluster.leftovers import (
    ProcessView,
    instance_processes,
    live_processes,
    read_process,
    send_signal,
    still_running,
)
from cluster.runtime import instance_paths
from tests.e2e.conftest import CrashrayProcess, start_crashray, stop_crashray
from tests.support import envelope_bytes, error_event, free_port, python_sdk_headers, wait_until

pytestmark = pytest.mark.e2e

T = TypeVar("T")

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sdk"
#: Concurrent senders, and the pause of each between two envelopes: a steady load that
#: leaves the two cores to the instance's recovery.
SENDERS = 4
SEND_PAUSE_S = 0.02
#: A sender gives up on one request after this (then counted as never answered).
SEND_TIMEOUT_S = 10.0
#: Load before the fault strikes, and at least this long after it.
LOAD_BEFORE_S = 1.0
LOAD_AFTER_S = 2.0
#: Generous bounds (a shared machine): ingest answers 200 again, the count catches up.
#: A killed consumer's batch waits for its lease (``CRASHRAY_CONSUMER_LEASE_S``, 30 s).
SERVICE_BACK_WITHIN_S = 120.0
CAUGHT_UP_WITHIN_S = 120.0
#: One page holds every event of a fault's issue.
PAGE_SIZE = 2000
#: How long the private PostgreSQL stays stopped, and how fast ingest must answer
#: meanwhile (503 with Retry-After, not a request left hanging).
POSTGRES_DOWN_S = 10.0
ANSWER_WHILE_DOWN_WITHIN_S = 5.0
#: A process this old is not one being replaced right now.
SETTLED_S = 5.0
HUNG = "PostgreSQL hung for 10 s (times from its thaw)"


# --- the instance --------------------------------------------------------------------


@dataclass
class Instance:
    up: CrashrayProcess
    token: str
    #: Makes this run's titles unique (issues of earlier runs cannot match).
    run: str
    #: What each fault's senders saw, by title, for the final re-check.
    loads: dict[str, list[Answer]] = field(default_factory=dict)
    #: The recovery figures, one row per fault.
    recoveries: list[Recovery] = field(default_factory=list)
    #: When the private PostgreSQL was frozen ("from") and continued ("until").
    postgres_hung: dict[str, float] = field(default_factory=dict)

    def api(self, path: str, **params: Any) -> httpx.Response:
        response = httpx.get(f"{self.up.base_url}/api/0/{path}", params=params, timeout=30,
                             headers={"Authorization": f"Bearer {self.token}"})
        response.raise_for_status()
        return response


@pytest.fixture(scope="module")
def instance() -> Iterator[Instance]:
    # Not below pytest's temp root: run as root, pgserver runs PostgreSQL as its own user
    # and opens the directories above the data dir to it, and every pytest session that
    # starts meanwhile (other suites on the machine) closes pytest's root again (0700), so
    # pg_ctl could no longer reach the data dir to start the server this test stopped.
    base = Path(tempfile.mkdtemp(prefix="crashray-faults-"))
    up = start_crashray(base / "data", free_port(),
                        {"CRASHRAY_API_MAX_PAGE_SIZE": str(PAGE_SIZE)})
    assert up.token is not None
    i = Instance(up, up.token, uuid.uuid4().hex[:8])
    try:
        yield i
    finally:
        print("\n" + recovery_table(i.recoveries))
        code = stop_crashray(up)
        try:
            assert code == 0, "".join(up.output[-40:])
            # Also the PostgreSQL server restarted above, which pgserver did not start.
            assert running_postmaster_pid((up.data_dir / "postgres").resolve()) is None, \
                "crashray up stopped, its PostgreSQL still runs"
        finally:
            shutil.rmtree(base, ignore_errors=True)


# --- load ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What one envelope's sender saw."""

    event_id: str
    #: None: no answer (connection refused or broken, or no answer within the timeout).
    status: int | None
    retry_after: str | None
    #: Answered by ingest itself (its errors carry ``X-Sentry-Error``), not by a proxy.
    by_ingest: bool
    started: float
    ended: float


def accepted(answers: list[Answer]) -> set[str]:
    return {a.event_id for a in answers if a.status == 200}


def refused_by_ingest(answers: list[Answer]) -> set[str]:
    """Envelopes ingest answered with an error: it queued nothing of them."""
    return {a.event_id for a in answers if a.by_ingest and a.status != 200}


def unknown(answers: list[Answer]) -> set[str]:
    """Envelopes without ingest's answer: queued or not, the sender cannot know."""
    return {a.event_id for a in answers if a.status != 200 and not a.by_ingest}


class Load:
    """Senders posting envelopes of one title to the instance, as SDKs do, until stopped."""

    def __init__(self, up: CrashrayProcess, title: str) -> None:
        public_key = up.dsn.split("//", 1)[1].split("@", 1)[0]
        self._url = f"{up.base_url}/api/{up.dsn.rsplit('/', 1)[1]}/envelope/"
        self._headers = python_sdk_headers(public_key, gzipped=False)
        self._event = error_event(FIXTURES, title)
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._senders = [threading.Thread(target=self._send_until_stopped, daemon=True)
                         for _ in range(SENDERS)]

    def __enter__(self) -> Load:
        for sender in self._senders:
            sender.start()
        return self

    def send_one(self) -> Answer:
        with httpx.Client(timeout=SEND_TIMEOUT_S) as client:
            return self._send(client)

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None
                 ) -> None:
        self._stop.set()
        for sender in self._senders:
            sender.join(SEND_TIMEOUT_S + 5)

    def _send_until_stopped(self) -> None:
        with httpx.Client(timeout=SEND_TIMEOUT_S) as client:
            while not self._stop.is_set():
                self.answers.append(self._send(client))  # list.append is atomic
                self._stop.wait(SEND_PAUSE_S)

    def _send(self, client: httpx.Client) -> Answer:
        event_id = uuid.uuid4().hex
        started = time.monotonic()
        try:
            r = client.post(self._url, content=envelope_bytes(self._event, event_id),
                            headers=self._headers)
        except httpx.TransportError:
            return Answer(event_id, None, None, False, started, time.monotonic())
        return Answer(event_id, r.status_code, r.headers.get("retry-after"),
                      "x-sentry-error" in r.headers, started, time.monotonic())

    def first_accepted_since(self, t: float) -> Answer | None:
        """The first 200 to a request sent at ``t`` or later."""
        found = [a for a in list(self.answers) if a.status == 200 and a.started >= t]
        return min(found, key=lambda a: a.ended) if found else None


# --- what was stored -----------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    count: int
    #: Event ids as the issue's event list gives them (a duplicate would show twice).
    event_ids: list[str]


def stored(i: Instance, title: str) -> Stored | None:
    """The issue of ``title``: its count and its events (None: no such issue yet)."""
    issues = i.api("projects/crashray/default/issues/", query="", limit=100).json()
    found = [issue for issue in issues if issue["title"] == title]
    if not found:
        return None
    assert len(found) == 1, f"{len(found)} issues titled {title!r}"
    events = i.api(f"issues/{found[0]['id']}/events/", limit=PAGE_SIZE)
    assert events.links.get("next", {}).get("results") != "true", "more than one page"
    return Stored(int(found[0]["count"]), [e["eventID"] for e in events.json()])


#: What HAProxy answers for a route Serve has not configured yet, and a proxy's answers
#: while no replica is there: not the API's (its errors are JSON with a "code").
PROXY_STATUSES = frozenset({404, 502, 503, 504})


def reachable(call: Callable[[], T]) -> T | None:
    """``call``'s result, or None while the API cannot be reached (HAProxy restarting,
    replicas not there): the outage, not an answer of the API."""
    try:
        return call()
    except httpx.TransportError:
        return None
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code in PROXY_STATUSES and "code" not in exc.response.text:
            return None
        raise


def caught_up(i: Instance, title: str, answers: list[Answer]) -> Stored | None:
    """What is stored once every accepted envelope is and the count matches the list."""
    s = reachable(lambda: stored(i, title))
    if s is None or not accepted(answers) <= set(s.event_ids) or s.count != len(s.event_ids):
        return None
    return s


def assert_stored_exactly_once(s: Stored, answers: list[Answer]) -> None:
    ids = set(s.event_ids)
    assert len(s.event_ids) == len(ids), "an event is listed twice"
    assert s.count == len(ids), f"the issue counts {s.count} events, {len(ids)} are stored"
    missing = accepted(answers) - ids
    assert not missing, f"{len(missing)} envelopes answered 200 are not stored"
    refused = refused_by_ingest(answers) & ids
    assert not refused, f"{len(refused)} envelopes ingest refused are stored"
    assert ids - accepted(answers) <= unknown(answers), "events stored that nobody sent"


# --- recovery figures ----------------------------------------------------------------


@dataclass(frozen=True)
class Recovery:
    fault: str
    answered: int
    accepted: int
    refused: int
    unanswered: int
    #: Envelopes without ingest's answer that were stored all the same.
    unanswered_stored: int
    #: Seconds from the end of the fault (the killed processes gone, the database back)
    #: to the first 200 of a request sent after it.
    first_200_s: float
    #: Seconds from the end of the fault until the issue held every accepted envelope.
    caught_up_s: float
    #: The longest a sender waited for one answer (or gave up: ``SEND_TIMEOUT_S``).
    slowest_answer_s: float


def recovery_of(fault: str, answers: list[Answer], s: Stored, since: float,
                back: Answer, caught_up_at: float) -> Recovery:
    return Recovery(fault, len(answers), len(accepted(answers)),
                    len(refused_by_ingest(answers)), len(unknown(answers)),
                    len(unknown(answers) & set(s.event_ids)), back.ended - since,
                    caught_up_at - since, max(a.ended - a.started for a in answers))


def recovery_table(rows: list[Recovery]) -> str:
    lines = ["| fault | envelopes sent | 200 | refused by ingest | no answer from ingest"
             " (stored anyway) | slowest answer | first 200 after the fault"
             " | count caught up |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.fault} | {r.answered} | {r.accepted} | {r.refused} | {r.unanswered}"
              f" ({r.unanswered_stored}) | {r.slowest_answer_s:.1f} s | {r.first_200_s:.1f} s"
              f" | {r.caught_up_s:.1f} s |" for r in rows]
    return "\n".join(lines)


def healthy(i: Instance) -> bool:
    """Ingest takes an envelope and the API answers (the previous fault is over)."""
    answer = Load(i.up, f"FaultInjected: probe ({i.run})").send_one()  # no senders started
    return answer.status == 200 and reachable(lambda: i.api("projects/")) is not None


def under_load(i: Instance, fault: str, strike: Callable[[], float]) -> list[Answer]:
    """Send; ``strike`` mid-load (it returns the moment recovery is timed from: when the
    killed processes are gone, when the database is back); send on until ingest answers
    200 to a request sent after that, and for at least ``LOAD_AFTER_S``; wait until the
    count caught up, check exactly-once and record the times. Returns what the senders
    saw."""
    wait_until(lambda: healthy(i), SERVICE_BACK_WITHIN_S, "the instance to serve")
    title = f"FaultInjected: {fault} ({i.run})"
    with Load(i.up, title) as load:
        time.sleep(LOAD_BEFORE_S)
        since = strike()
        back = wait_until(lambda: load.first_accepted_since(since),
                          SERVICE_BACK_WITHIN_S, f"ingest to answer 200 again after {fault}")
        time.sleep(max(0.0, since + LOAD_AFTER_S - time.monotonic()))
    answers = load.answers
    s = wait_until(lambda: caught_up(i, title, answers), CAUGHT_UP_WITHIN_S,
                   f"every accepted envelope of {fault} to be stored", interval_s=0.25)
    caught_up_at = time.monotonic()
    assert_stored_exactly_once(s, answers)
    i.loads[title] = answers
    recovery = recovery_of(fault, answers, s, since, back, caught_up_at)
    i.recoveries.append(recovery)
    print(f"\n{fault}: {recovery}")
    return answers


# --- kill -9 of each kind of process -------------------------------------------------


@dataclass(frozen=True)
class Kind:
    name: str
    #: Ray's process title of its actor (``ray::Class``, ``ray::Class.method`` while it
    #: runs a method); None for HAProxy, found by its program.
    title: str | None

    def matches(self, kind: str, argv: tuple[str, ...]) -> bool:
        if self.title is None:
            return kind == "haproxy"
        return kind == "ray" and (argv[0] == self.title or argv[0].startswith(self.title + "."))


KINDS = [
    Kind("ingest replica", "ray::ServeReplica:ingest:ingest"),
    Kind("consumer", "ray::Consumer"),
    # On one node the embedded ClickHouse's owner, the grouping and rate-limit shards (with
    # the notifier, the metrics sampler and the detectors) run in one process
    # (actors/shared_process.py).
    Kind("shared process", "ray::SharedProcess"),
    Kind("Serve controller", "ray::ServeController"),
    Kind("HAProxy", None),
]


def processes_of(i: Instance, kind: Kind) -> list[ProcessView]:
    return [f.view for f in instance_processes(instance_paths(i.up.data_dir))
            if kind.matches(f.kind, f.view.argv)]


def age_s(view: ProcessView) -> float:
    """Seconds since the process started (``/proc/PID/stat`` start time, in clock ticks
    after boot)."""
    uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    return uptime_s - view.started / os.sysconf("SC_CLK_TCK")


def settled(i: Instance, kind: Kind) -> list[ProcessView]:
    """The kind's processes once none is younger than ``SETTLED_S``: not one being
    replaced (Serve reloads HAProxy when its routes change, e.g. after a restart)."""
    views = processes_of(i, kind)
    return views if views and all(age_s(v) >= SETTLED_S for v in views) else []


@pytest.mark.parametrize("kind", KINDS, ids=[k.name.replace(" ", "-") for k in KINDS])
def test_kill_9_mid_load_loses_nothing_and_counts_nothing_twice(
        instance: Instance, kind: Kind) -> None:
    wait_until(lambda: settled(instance, kind), 60, f"a settled {kind.name}")
    killed: list[ProcessView] = []

    def kill() -> float:
        # The processes running now: HAProxy, say, is replaced whenever Serve reloads it.
        killed.extend(processes_of(instance, kind))
        for view in killed:
            send_signal(view, signal.SIGKILL)
        wait_until(lambda: not any(still_running(v) for v in killed), 10,
                   f"the killed {kind.name} to end")
        return time.monotonic()  # recovery is timed from here: all of them are gone

    under_load(instance, f"kill -9 {kind.name}", kill)
    assert killed, f"no {kind.name} ran when the fault struck"
    # It came back: a new process of the kind runs (Ray restarts actors, Serve replicas).
    pids = {v.pid for v in killed}
    wait_until(lambda: [v for v in processes_of(instance, kind) if v.pid not in pids],
               60, f"a new {kind.name} process")


# --- the private PostgreSQL stopped --------------------------------------------------


@dataclass(frozen=True)
class PrivatePostgres:
    """The instance's own PostgreSQL server, driven with the binaries it runs from."""

    pgdata: Path
    pg_ctl: Path
    socket_dir: str
    #: The system user it runs as (pgserver runs it as ``pgserver`` when started by root).
    user: str | None

    @classmethod
    def of(cls, data_dir: Path) -> PrivatePostgres:
        pgdata = (data_dir / "postgres").resolve()
        pid = running_postmaster_pid(pgdata)
        view = read_process(pid) if pid is not None else None
        assert view is not None, f"no PostgreSQL runs on {pgdata}"
        argv = view.argv
        owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name
        return cls(pgdata, Path(argv[0]).with_name("pg_ctl"), argv[argv.index("-k") + 1],
                   owner if owner != pwd.getpwuid(os.geteuid()).pw_name else None)

    def _pg_ctl(self, *args: str) -> None:
        # Output to a file, not a pipe: the server pg_ctl starts would inherit the pipe
        # and hold it open (pgserver's _commands.py).
        with tempfile.TemporaryFile("w+") as output:
            result = subprocess.run([str(self.pg_ctl), "-D", str(self.pgdata), "-w", *args],
                                    user=self.user, stdin=subprocess.DEVNULL, stdout=output,
                                    stderr=subprocess.STDOUT, timeout=60, check=False)
            output.seek(0)
            said = output.read()
        log = self.pgdata / "log"
        assert result.returncode == 0, f"pg_ctl {args[-1]} failed: {said}\n" + (
            log.read_text()[-3000:] if log.exists() else "")

    def stop(self) -> None:
        """A fast shutdown: sessions ended, connections refused from then on."""
        self._pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        """Started as pgserver starts it: no TCP, its socket in ``socket_dir``."""
        self._pg_ctl("-o", '-h ""', "-o", f"-k {self.socket_dir}",
                     "-l", str(self.pgdata / "log"), "start")


def test_postgres_stopped_for_10_s_refuses_with_retry_after_and_loses_nothing(
        instance: Instance) -> None:
    postgres = PrivatePostgres.of(instance.up.data_dir)
    down: dict[str, float] = {}
    readiness: dict[str, int] = {}

    def stop_for_a_while() -> float:
        postgres.stop()
        down["from"] = time.monotonic()
        # The operator's probe says so while it is down (serve_apps/health.py).
        readiness["down"] = wait_until(lambda: _unready(instance), POSTGRES_DOWN_S - 1,
                                       "/readyz to answer 503 while PostgreSQL is stopped")
        time.sleep(max(0.0, down["from"] + POSTGRES_DOWN_S - time.monotonic()))
        down["until"] = time.monotonic()
        postgres.start()
        return down["until"]

    answers = under_load(instance, "PostgreSQL stopped for 10 s (times from its restart)",
                         stop_for_a_while)
    # Sent while it was down, early enough to be answered before it came back.
    while_down = [a for a in answers if down["from"] <= a.started
                  <= down["until"] - ANSWER_WHILE_DOWN_WITHIN_S]
    assert while_down, "nothing was sent while PostgreSQL was down"
    slow = [a for a in while_down if a.ended - a.started > ANSWER_WHILE_DOWN_WITHIN_S]
    assert not slow, f"{len(slow)} requests hung while PostgreSQL was down"
    wrong = {(a.status, a.by_ingest, a.retry_after) for a in while_down
             if not (a.status == 503 and a.by_ingest and a.retry_after)}
    assert not wrong, f"answers while down (status, by ingest, Retry-After): {wrong}"
    assert readiness["down"] == 503
    wait_until(lambda: _readyz(instance).status_code == 200, 60,
               "/readyz to answer 200 again once PostgreSQL is back")


def _readyz(instance: Instance) -> httpx.Response:
    return httpx.get(f"{instance.up.base_url}/readyz", timeout=10)


def _unready(instance: Instance) -> int | None:
    """503 once /readyz answers it, naming PostgreSQL as the failing check."""
    response = _readyz(instance)
    if response.status_code != 503:
        return None
    assert response.json()["checks"]["postgres"]["ok"] is False, response.text
    return 503


def postgres_processes(data_dir: Path) -> list[ProcessView]:
    """The private PostgreSQL's postmaster and every process it forked (sessions, writers)."""
    pid = running_postmaster_pid((data_dir / "postgres").resolve())
    assert pid is not None
    return [v for v in live_processes() if v.pid == pid or v.parent == pid]


def test_postgres_hung_for_10_s_loses_nothing(instance: Instance) -> None:
    """SIGSTOP to the server and all its processes: it neither answers nor refuses, so
    connections hang (a frozen VM, a stalled disk) until it is continued."""
    def hang_for_a_while() -> float:
        frozen = postgres_processes(instance.up.data_dir)
        for view in frozen:
            send_signal(view, signal.SIGSTOP)
        instance.postgres_hung["from"] = time.monotonic()
        try:
            time.sleep(POSTGRES_DOWN_S)
        finally:
            instance.postgres_hung["until"] = time.monotonic()
            for view in frozen:
                send_signal(view, signal.SIGCONT)
        return instance.postgres_hung["until"]

    under_load(instance, HUNG, hang_for_a_while)


def test_while_postgres_hangs_ingest_answers_within_a_bound(instance: Instance) -> None:
    """No request waits for the frozen server past CRASHRAY_HANDOFF_TIMEOUT_S (and the
    time its answer takes): its items are spooled and answered 200 (storage/spool.py),
    or it is refused with 503 and Retry-After; the test after this one finds each
    accepted item stored once."""
    hung = instance.postgres_hung
    answers = instance.loads.get(f"FaultInjected: {HUNG} ({instance.run})")
    assert answers is not None and hung, "the hang did not run"
    in_flight = [a for a in answers if a.started <= hung["until"] and a.ended >= hung["from"]]
    waited = max(a.ended - max(a.started, hung["from"]) for a in in_flight)
    assert waited <= ANSWER_WHILE_DOWN_WITHIN_S, f"a request waited {waited:.1f} s"
    assert all(a.status == 200 or (a.status == 503 and a.by_ingest and a.retry_after)
               for a in in_flight)


# --- afterwards ----------------------------------------------------------------------


def test_after_every_fault_each_accepted_envelope_is_still_stored_once(
        instance: Instance) -> None:
    """Batches leased by killed consumers ran out later; nothing they held is counted
    twice, and nothing ended among the dead letters."""
    assert instance.loads, "no fault ran"
    for title, answers in instance.loads.items():
        s = stored(instance, title)
        assert s is not None, title
        assert_stored_exactly_once(s, answers)
    assert instance.api("organizations/crashray/dead-letters/").json()["total"] == 0
