"""Where each millisecond and each MB of Crashray's ingest goes (issue 17: measure first).

Starts `crashray up` in a fresh temporary data dir (as bench/ingest.py does), sends the same
closed- or open-loop load, waits until every accepted event is stored, and prints, per
*role* (one process kind: `ray::Consumer`, `ray::ServeReplica:ingest:ingest`, the private
PostgreSQL's backends, HAProxy, Ray's own processes, ...):

  processes        how many processes have the role
  CPU ms / event   user + system CPU time (/proc/PID/stat) the role's processes spent from
                   the first send until every accepted event was stored, per accepted
                   event; the load generator (this process) is a role too, so the rows add
                   up to everything this machine spent on the run
  PSS idle / peak  proportional set size (/proc/PID/smaps_rollup) summed over the role,
                   before the load and at the run's largest total

and, with --py-spy, where the Python time of the two busiest Python roles goes: py-spy
samples one process of each during the load (`py-spy record --format raw`), and the
functions holding most samples are listed by their own time (the innermost frame) and by
Crashray's own frame nearest to it (the part of our code that led there).

Processes that start or end during the run count with what they spent while seen: a short
role (a PostgreSQL backend per connection) may be under-counted; the total row says how
much CPU the machine's other processes took meanwhile (`/proc/stat` minus the roles).

Example:
  python bench/profile_ingest.py --concurrency 16 --seconds 30 --py-spy
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from _load import add_load_arguments, free_port, load_template, plan_from_args, target_from_dsn
from _measure import MemorySample, Report, measure, pss_kib
from ingest import (
    CrashrayInstance,
    PostgresEvents,
    _kill_leftovers,
    crashray_pids,
    start_crashray,
    stop_crashray,
)

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
#: Where Crashray's own code lives (frames under it are "ours" in the py-spy summary).
REPO = str(Path(__file__).resolve().parent.parent)


def role_of(cmdline: str) -> str:
    """A process's role from its command line (a Ray worker names its actor class)."""
    if cmdline.startswith("ray::"):
        # A worker running a method retitles itself ``ray::Class.method``: one role.
        return cmdline.split()[0].split(".", 1)[0]
    if cmdline.startswith("postgres:") or "/postgres " in cmdline or "postgres -D" in cmdline:
        return "postgres (private)"
    for marker, role in (("gcs_server", "ray gcs_server"), ("raylet", "ray raylet"),
                         ("haproxy", "haproxy"), ("dashboard/dashboard.py", "ray dashboard head"),
                         ("log_monitor", "ray log monitor"), ("monitor.py", "ray autoscaler monitor"),
                         ("runtime_env", "ray runtime env agent"), ("crashray up", "crashray up (driver)")):
        if marker in cmdline:
            return role
    return cmdline.split()[0].rsplit("/", 1)[-1] if cmdline else "?"


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks; 0 once it has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> int:
    """Busy CPU ticks of the whole machine (/proc/stat: all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4]


def cmdline_of(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


@dataclass
class RoleFigures:
    processes: set[int]
    first_ticks: dict[int, int]
    last_ticks: dict[int, int]
    idle_pss_kib: int = 0
    peak_pss_kib: int = 0

    @property
    def ticks(self) -> int:
        return sum(self.last_ticks[p] - self.first_ticks.get(p, 0) for p in self.last_ticks)


class Watch:
    """Per-role CPU ticks and PSS of an instance's processes, polled during the run."""

    def __init__(self, instance: CrashrayInstance) -> None:
        self.instance = instance
        self.me = os.getpid()
        self.roles: dict[str, RoleFigures] = {}
        self.started_machine = machine_ticks()
        self.peak_total = 0
        for pid, role in self._pids():
            figures = self.roles.setdefault(role, RoleFigures(set(), {}, {}))
            figures.processes.add(pid)
            figures.first_ticks[pid] = figures.last_ticks[pid] = cpu_ticks(pid)
            figures.idle_pss_kib += pss_kib(pid)

    def _pids(self) -> Iterable[tuple[int, str]]:
        yield self.me, "load generator (this process)"
        for pid in crashray_pids(self.instance):
            yield pid, role_of(cmdline_of(pid))

    def sample(self) -> MemorySample:
        """One poll (bench/_measure's MemoryWatch calls it every 2 s)."""
        pss: dict[str, int] = defaultdict(int)
        count = 0
        for pid, role in self._pids():
            figures = self.roles.setdefault(role, RoleFigures(set(), {}, {}))
            if pid not in figures.processes:
                figures.processes.add(pid)
                figures.first_ticks[pid] = 0  # started during the run: all it spent counts
            ticks = cpu_ticks(pid)
            if ticks:
                figures.last_ticks[pid] = ticks
            pss[role] += pss_kib(pid)
            count += 1
        total = sum(v for r, v in pss.items() if not r.startswith("load generator"))
        if total > self.peak_total:
            self.peak_total = total
            for role, figures in self.roles.items():
                figures.peak_pss_kib = pss.get(role, 0)
        return MemorySample(total, count)

    def finish(self) -> int:
        """Take the last CPU figures; the machine's busy ticks since the start."""
        self.sample()
        return machine_ticks() - self.started_machine


def table(watch: Watch, machine: int, events: int) -> str:
    rows = sorted(watch.roles.items(), key=lambda kv: -kv[1].ticks)
    per_event = 1000 / TICKS_PER_S / max(events, 1)
    lines = [f"{'role':44} {'procs':>5} {'CPU ms/event':>12} {'PSS idle MiB':>12}"
             f" {'PSS peak MiB':>12}"]
    counted = 0
    for role, f in rows:
        counted += f.ticks
        lines.append(f"{role[:44]:44} {len(f.processes):5d} {f.ticks * per_event:12.3f}"
                     f" {f.idle_pss_kib / 1024:12.1f} {f.peak_pss_kib / 1024:12.1f}")
    server = [f for r, f in watch.roles.items() if not r.startswith("load generator")]
    lines.append(f"{'all Crashray processes':44} {sum(len(f.processes) for f in server):5d}"
                 f" {sum(f.ticks for f in server) * per_event:12.3f}"
                 f" {sum(f.idle_pss_kib for f in server) / 1024:12.1f}"
                 f" {sum(f.peak_pss_kib for f in server) / 1024:12.1f}")
    lines.append(f"{'machine, other processes':44} {'':5} {(machine - counted) * per_event:12.3f}")
    return "\n".join(lines)


def idle_table(watch: Watch, machine: int, seconds: float) -> str:
    """Each role's CPU while the instance sat idle, in % of one core."""
    per_s = 100 / TICKS_PER_S / seconds
    rows = sorted(((r, f) for r, f in watch.roles.items() if not r.startswith("load generator")),
                  key=lambda kv: -kv[1].ticks)
    lines = [f"{'role (idle)':44} {'procs':>5} {'% of a core':>12}"]
    for role, f in rows:
        lines.append(f"{role[:44]:44} {len(f.processes):5d} {f.ticks * per_s:12.2f}")
    lines.append(f"{'all Crashray processes':44} {sum(len(f.processes) for _, f in rows):5d}"
                 f" {sum(f.ticks for _, f in rows) * per_s:12.2f}")
    lines.append(f"{'machine, all processes':44} {'':5} {machine * per_s:12.2f}")
    return "\n".join(lines)


def start_py_spy(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["py-spy", "record", "--pid", str(pid), "--duration",
                             str(max(1, int(seconds))), "--rate", "50", "--nonblocking", "--full-filenames",
                             "--format", "raw", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def summarize_py_spy(path: Path, top: int = 12) -> str:
    """Top functions by own samples, and by Crashray's innermost frame, of a raw py-spy
    file (one ``frame;frame;... count`` line per distinct stack, outermost first)."""
    own: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[_short(frames[-1])] += count
        mine = [f for f in frames if REPO in f and "/bench/" not in f]
        ours[_short(mine[-1]) if mine else "(no Crashray frame: Ray, Serve, idle loops)"] += count
    if not total:
        return "  (no samples)"
    def listing(counter: Counter[str]) -> list[str]:
        return [f"  {100 * n / total:5.1f}%  {name}" for name, n in counter.most_common(top)]
    return "\n".join([f"  {total} samples", "  by own time:", *listing(own),
                      "  by Crashray's innermost frame:", *listing(ours)])


def _short(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()[:100]
    file = match["file"].replace(REPO + "/", "")
    file = re.sub(r"^.*site-packages/", "", file)
    return f"{match['func']} ({file})"


def busiest_python_pids(watch: Watch, count: int) -> list[tuple[str, int]]:
    """One process of each of the ``count`` Python roles that spent most CPU so far."""
    candidates = [(f.ticks, role, max(f.processes, key=lambda p: f.last_ticks.get(p, 0)
                                      - f.first_ticks.get(p, 0)))
                  for role, f in watch.roles.items() if role.startswith("ray::")]
    return [(role, pid) for _, role, pid in sorted(candidates, reverse=True)[:count]]


async def run(args: argparse.Namespace, instance: CrashrayInstance, watch: Watch,
              spy_dir: Path) -> tuple[Report, list[tuple[str, Path]]]:
    plan, template = plan_from_args(args), load_template()
    spies: list[tuple[str, Path, subprocess.Popen[bytes]]] = []

    async def spy_later() -> None:
        await asyncio.sleep(min(5.0, args.seconds / 4))  # the busiest roles show by then
        chosen = busiest_python_pids(watch, 2) + [
            (role, max(f.processes)) for role, f in watch.roles.items() if role in args.spy]
        for role, pid in chosen:
            out = spy_dir / f"{pid}.raw"
            spies.append((role, out, start_py_spy(pid, args.seconds * 0.6, out)))

    spy_task = asyncio.create_task(spy_later()) if args.py_spy else None
    report = await measure(target_from_dsn("crashray", instance.dsn), plan, template,
                           partial(PostgresEvents, instance.pg_url), watch.sample)
    if spy_task is not None:
        await spy_task
    for _, _, process in spies:
        await asyncio.to_thread(process.wait)
    return report, [(role, out) for role, out, _ in spies]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser)
    parser.add_argument("--py-spy", action="store_true",
                        help="also sample the two busiest Python roles with py-spy")
    parser.add_argument("--spy", action="append", default=[], metavar="ROLE",
                        help="with --py-spy, also sample this role (e.g. ray::ServeController)")
    parser.add_argument("--idle-s", type=float, default=10.0,
                        help="seconds to let the started instance settle before measuring")
    parser.add_argument("--idle-cpu-s", type=float, default=0.0, metavar="SECONDS",
                        help="after settling, measure each role's CPU while idle for this long"
                             " (printed as %% of one core) before the load")
    args = parser.parse_args(argv)
    if args.py_spy and shutil.which("py-spy") is None:
        raise SystemExit("--py-spy needs py-spy on PATH (pip install py-spy)")
    data_dir = Path(tempfile.mkdtemp(prefix="crp-"))
    spy_dir = Path(tempfile.mkdtemp(prefix="crp-spy-"))
    started = time.monotonic()
    instance = start_crashray(data_dir, free_port())
    print(f"crashray up to its DSN line: {time.monotonic() - started:.1f} s", flush=True)
    try:
        time.sleep(args.idle_s)
        if args.idle_cpu_s > 0:
            idle = Watch(instance)
            time.sleep(args.idle_cpu_s)
            print(idle_table(idle, idle.finish(), args.idle_cpu_s), flush=True)
        watch = Watch(instance)
        report, spies = asyncio.run(run(args, instance, watch, spy_dir))
        machine = watch.finish()
        accepted = report.accepted
        print(f"\n{accepted} events accepted, {report.processed_per_s} processed"
              f" events/s, losses {report.losses}; load {os.getloadavg()[0]:.1f}")
        print(table(watch, machine, accepted))
        for role, out in spies:
            print(f"\npy-spy, {role}:")
            print(summarize_py_spy(out) if out.exists() else "  (py-spy wrote nothing)")
        return 0 if report.losses == 0 else 1
    finally:
        stop_crashray(instance)
        _kill_leftovers(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(spy_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
