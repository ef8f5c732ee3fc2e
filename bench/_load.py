"""The load both benchmarks send: Python SDK exception envelopes, over keep-alive HTTP/1.1.

Each envelope is the captured ``python-sdk-2.75.0-exception.envelope`` with a fresh event id
(envelope header and payload), current timestamps, and the exception type varied as
``ZeroDivisionError{n % issues}`` so the events fall into ``issues`` distinct groups. Bodies
are gzip level 9 with the headers the Python SDK 2.75.0 sends
(``sentry_sdk/transport.py``: ``compresslevel=self._compression_level``, 9 by default).

Two modes: open loop (``--rate``: envelopes are due at fixed times whatever the server does;
latency counts from the due time, so a stalled server is not hidden by a stalled client) and
closed loop (``--concurrency`` senders, each sending the next envelope when its previous one
is answered).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gzip
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

CORPUS_ENVELOPE = "python-sdk-2.75.0-exception.envelope"
#: What sentry-python 2.75.0 sends (captured in ``python-sdk-2.75.0-exception.request.json``).
SDK_CLIENT = "sentry.python/2.75.0"
SDK_GZIP_LEVEL = 9
#: A hard cap on envelopes per run, whatever rate and duration ask for.
DEFAULT_MAX_EVENTS = 200_000


def corpus_dir() -> Path:
    """``CRASHRAY_CORPUS_DIR``, else the repository's ``tests/fixtures/sdk``."""
    configured = os.environ.get("CRASHRAY_CORPUS_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "sdk"


@dataclass(frozen=True)
class EnvelopeTemplate:
    headers: dict[str, Any]
    item_headers: dict[str, Any]
    event: dict[str, Any]


def load_template(path: Path | None = None) -> EnvelopeTemplate:
    path = path or corpus_dir() / CORPUS_ENVELOPE
    if not path.is_file():
        raise SystemExit(f"corpus envelope {path} not found; set CRASHRAY_CORPUS_DIR to the"
                         " folder holding python-sdk-2.75.0-exception.envelope")
    lines = path.read_bytes().split(b"\n")
    return EnvelopeTemplate(orjson.loads(lines[0]), orjson.loads(lines[1]),
                            orjson.loads(lines[2]))


@dataclass(frozen=True)
class BuiltEnvelope:
    event_id: str
    body: bytes


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event_for(template: EnvelopeTemplate, event_id: str, exception_type: str) -> dict[str, Any]:
    exception = dict(template.event["exception"])
    values = [dict(v) for v in exception["values"]]
    values[-1]["type"] = exception_type
    exception["values"] = values
    return {**template.event, "event_id": event_id, "timestamp": _now_iso(),
            "exception": exception}


def build_envelope(template: EnvelopeTemplate, n: int, issues: int,
                   public_key: str) -> BuiltEnvelope:
    """Envelope ``n``: a fresh event id and issue ``n % issues``, gzipped like the SDK."""
    event_id = uuid.uuid4().hex
    payload = orjson.dumps(_event_for(template, event_id, f"ZeroDivisionError{n % issues}"))
    trace = {**template.headers.get("trace", {}), "public_key": public_key}
    headers = {**template.headers, "event_id": event_id, "sent_at": _now_iso(), "trace": trace}
    item_headers = {**template.item_headers, "length": len(payload)}
    raw = b"\n".join([orjson.dumps(headers), orjson.dumps(item_headers), payload]) + b"\n"
    return BuiltEnvelope(event_id, gzip.compress(raw, compresslevel=SDK_GZIP_LEVEL))


def sdk_headers(public_key: str) -> dict[str, str]:
    return {
        "Accept-Encoding": "identity",
        "Content-Type": "application/x-sentry-envelope",
        "Content-Encoding": "gzip",
        "User-Agent": SDK_CLIENT,
        "X-Sentry-Auth": f"Sentry sentry_key={public_key}, sentry_version=7,"
                         f" sentry_client={SDK_CLIENT}",
    }


def free_port() -> int:
    """A TCP port nothing listens on right now, outside the kernel's ephemeral range: Ray's
    own servers draw from that range while Crashray starts, and one took a port picked there
    before HAProxy could bind it (``cluster.runtime.free_side_port``, as the tests pick)."""
    from cluster.runtime import free_side_port

    return free_side_port()


@dataclass(frozen=True)
class Target:
    name: str
    envelope_url: str
    public_key: str


def target_from_dsn(name: str, dsn: str) -> Target:
    """``http://<key>@127.0.0.1:<port>/<project>`` → its envelope endpoint; loopback only."""
    from urllib.parse import urlsplit

    parts = urlsplit(dsn)
    if parts.hostname not in ("127.0.0.1", "localhost") or not parts.username:
        raise SystemExit(f"DSN {dsn!r}: the benchmark sends only to 127.0.0.1 and needs a key")
    project = parts.path.strip("/")
    url = f"http://127.0.0.1:{parts.port}/api/{project}/envelope/"
    return Target(name, url, parts.username)


@dataclass(frozen=True)
class LoadPlan:
    rate_per_s: float | None  # None: closed loop
    concurrency: int
    duration_s: float
    max_events: int
    issues: int
    connections: int
    sample_size: int
    drain_timeout_s: float
    request_timeout_s: float = 30.0

    @property
    def mode(self) -> str:
        return "closed" if self.rate_per_s is None else "open"


@dataclass(frozen=True)
class SendRecord:
    event_id: str
    status: int  # 0: no HTTP answer (connection error or timeout)
    latency_s: float
    answered_at_wall: float
    #: When the request was due (open loop) or sent (closed loop), ``time.perf_counter()``.
    started_perf: float


@dataclass
class LoadResult:
    records: list[SendRecord] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    started_perf: float = 0.0
    ended_perf: float = 0.0

    @property
    def accepted(self) -> list[SendRecord]:
        return [r for r in self.records if r.status == 200]


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, str]:
    """The HTTP status, or 0 and the error when no answer came; counted, never raised."""
    try:
        async with session.post(url, data=body) as response:
            await response.read()
            return response.status, ""
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, f"{type(exc).__name__}: {str(exc)[:120]}"


class _Sender:
    def __init__(self, session: aiohttp.ClientSession, target: Target, plan: LoadPlan,
                 template: EnvelopeTemplate, on_accepted: Callable[[SendRecord], None]) -> None:
        self.session, self.target, self.plan = session, target, plan
        self.template, self.on_accepted = template, on_accepted
        self.result = LoadResult()
        self.next_index = 0

    def build(self, n: int) -> BuiltEnvelope:
        return build_envelope(self.template, n, self.plan.issues, self.target.public_key)

    async def send(self, envelope: BuiltEnvelope, started_perf: float) -> None:
        status, error = await _post(self.session, self.target.envelope_url, envelope.body)
        record = SendRecord(envelope.event_id, status, time.perf_counter() - started_perf,
                            time.time(), started_perf)
        self.result.records.append(record)
        if error:
            self.result.errors[error] += 1
        if status == 200:
            self.on_accepted(record)

    async def open_loop(self, rate_per_s: float) -> None:
        total = min(int(rate_per_s * self.plan.duration_s), self.plan.max_events)
        start = time.perf_counter()
        tasks = []
        for n in range(total):
            due = start + n / rate_per_s
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.send(self.build(n), due)))
        await asyncio.gather(*tasks)

    async def closed_loop(self) -> None:
        deadline = time.perf_counter() + self.plan.duration_s

        async def sender() -> None:
            while time.perf_counter() < deadline and self.next_index < self.plan.max_events:
                n, self.next_index = self.next_index, self.next_index + 1
                envelope = self.build(n)
                await self.send(envelope, time.perf_counter())

        await asyncio.gather(*(sender() for _ in range(self.plan.concurrency)))


async def run_load(target: Target, plan: LoadPlan, template: EnvelopeTemplate,
                   on_accepted: Callable[[SendRecord], None]) -> LoadResult:
    """Send the plan's load to ``target``; ``on_accepted`` sees each 200 as it arrives."""
    connector = aiohttp.TCPConnector(limit=plan.connections)
    timeout = aiohttp.ClientTimeout(total=plan.request_timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                     headers=sdk_headers(target.public_key)) as session:
        sender = _Sender(session, target, plan, template, on_accepted)
        sender.result.started_perf = time.perf_counter()
        if plan.rate_per_s is None:
            await sender.closed_loop()
        else:
            await sender.open_loop(plan.rate_per_s)
        sender.result.ended_perf = time.perf_counter()
    return sender.result


def write_latency_log(path: str, result: LoadResult) -> None:
    """One JSON line per request of ``result``, in the order they were due."""
    with open(path, "w") as out:
        for r in sorted(result.records, key=lambda r: r.started_perf):
            out.write(orjson.dumps({"due_s": round(r.started_perf - result.started_perf, 4),
                                    "latency_ms": round(r.latency_s * 1000, 2),
                                    "status": r.status}).decode() + "\n")


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    load = parser.add_argument_group("load (one of --rate or --concurrency)")
    mode = load.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=float, metavar="EV_PER_S",
                      help="open loop: send this many envelopes per second")
    mode.add_argument("--concurrency", type=int, default=16, metavar="N",
                      help="closed loop: N senders back to back (default 16; the default mode)")
    load.add_argument("--seconds", type=float, default=20.0,
                      help="how long to send, seconds (default 20)")
    load.add_argument("--max-events", type=int, default=DEFAULT_MAX_EVENTS,
                      help=f"stop after this many envelopes (default {DEFAULT_MAX_EVENTS})")
    load.add_argument("--issues", type=int, default=1000,
                      help="distinct exception types, hence issues (default 1000)")
    load.add_argument("--connections", type=int, default=64,
                      help="keep-alive connection pool size (default 64)")
    load.add_argument("--sample-size", type=int, default=200,
                      help="events traced for accept-to-queryable latency (default 200)")
    load.add_argument("--drain-timeout", type=float, default=300.0, metavar="SECONDS",
                      help="how long to wait for accepted events to be stored (default 300)")


def plan_from_args(args: argparse.Namespace) -> LoadPlan:
    if args.seconds <= 0 or (args.rate is not None and args.rate <= 0):
        raise SystemExit("--seconds and --rate must be positive")
    return LoadPlan(rate_per_s=args.rate, concurrency=args.concurrency,
                    duration_s=args.seconds, max_events=args.max_events, issues=args.issues,
                    connections=args.connections, sample_size=args.sample_size,
                    drain_timeout_s=args.drain_timeout)
