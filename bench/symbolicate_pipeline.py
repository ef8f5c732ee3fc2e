"""The ingest pipeline's events/s with symbolication doing its work vs not (issue 12).

One ``crashray up``; the same real ``@sentry/node`` 11.12.0 event (thrown while loading an
esbuild-minified bundle whose debug id ``sentry-cli`` 3.8.2 injected; captured once by a
local HTTP server) is sent, closed loop, to

* ``maps``: project ``default``, where ``sentry-cli sourcemaps upload`` put the bundle and
  its map: every event's frames are looked up, mapped and given context lines;
* ``no maps``: a second project without uploads: the same lookups find nothing and the
  frames stay minified (what a project that uploads nothing pays);
* ``python``: the Python SDK's event (no JavaScript handler: symbolication is skipped),
  for scale.

The ratio ``maps / no maps`` of fully processed events/s is the cost of symbolication on
the pipeline. Needs ``npm ci`` in tests/e2e/sourcemaps and tests/e2e/node and the test
extra's ``sentry-cli``.

    flock /tmp/crashray-heavy.lock python bench/symbolicate_pipeline.py --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from _load import add_load_arguments, free_port, load_template, plan_from_args, target_from_dsn
from _measure import Report, format_table, measure, memory_of
from ingest import PostgresEvents, crashray_pids, start_crashray, stop_crashray

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "tests" / "e2e" / "sourcemaps"
ESBUILD = APP_DIR / "node_modules" / ".bin" / "esbuild"
RUN_BUNDLE = ROOT / "tests" / "e2e" / "node" / "run_bundle.js"
RELEASE = "bench-shop@1.0"


def build_bundle(out: Path) -> Path:
    dist = out / "dist"
    subprocess.run([str(ESBUILD), str(APP_DIR / "src" / "app.js"), "--bundle", "--minify",
                    "--sourcemap", "--platform=node", "--format=cjs",
                    f"--outfile={dist / 'app.min.js'}"], check=True, capture_output=True)
    return dist


def sentry_cli(base_url: str, token: str, *args: str) -> None:
    env = {**os.environ, "SENTRY_URL": base_url, "SENTRY_AUTH_TOKEN": token,
           "SENTRY_ORG": "crashray", "SENTRY_PROJECT": "default"}
    subprocess.run(["sentry-cli", *args], env=env, check=True, capture_output=True,
                   timeout=300)


def capture_node_envelope(bundle: Path, out: Path) -> Path:
    """The envelope the real @sentry/node sends for the bundle's error, as a file of its
    three lines (envelope header, item header, event), as bench/_load.py reads them."""
    events: list[bytes] = []

    class Capture(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = (_read_chunked(self.rfile)
                    if self.headers.get("Transfer-Encoding") == "chunked"  # node's fetch
                    else self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            lines = body.split(b"\n")
            if len(lines) >= 3 and json.loads(lines[1]).get("type") == "event":
                events.append(b"\n".join(lines[:3]) + b"\n")
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dsn = f"http://{'0' * 32}@127.0.0.1:{server.server_address[1]}/1"
        subprocess.run(["node", str(RUN_BUNDLE), str(bundle)], check=True, timeout=60,
                       capture_output=True, env={**os.environ, "CRASHRAY_DSN": dsn,
                                                 "CRASHRAY_RELEASE": RELEASE})
    finally:
        server.shutdown()
        server.server_close()
    if not events:
        raise SystemExit("@sentry/node sent no event to the capture server")
    path = out / "node-sdk-11.12.0-minified.envelope"
    path.write_bytes(events[0])
    return path


def _read_chunked(stream: Any) -> bytes:
    body = b""
    while True:
        size = int(stream.readline().split(b";", 1)[0].strip(), 16)
        chunk = stream.read(size + 2)[:size]  # each chunk ends with CRLF
        if size == 0:
            return body
        body += chunk


def second_project(base_url: str, token: str) -> str:
    """A project without uploads; returns its DSN."""
    auth = {"Authorization": f"Bearer {token}"}
    made = httpx.post(f"{base_url}/api/0/teams/crashray/crashray/projects/", headers=auth,
                      json={"name": "nomaps", "platform": "node"}, timeout=30)
    made.raise_for_status()
    keys = httpx.get(f"{base_url}/api/0/projects/crashray/{made.json()['slug']}/keys/",
                     headers=auth, timeout=30)
    keys.raise_for_status()
    return str(keys.json()[0]["dsn"]["public"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_load_arguments(parser)
    args = parser.parse_args(argv)
    if not ESBUILD.exists() or shutil.which("sentry-cli") is None:
        raise SystemExit("needs `npm ci` in tests/e2e/sourcemaps and tests/e2e/node, and"
                         " `pip install -e '.[test]'` (sentry-cli)")
    plan = plan_from_args(args)
    work = Path(tempfile.mkdtemp(prefix="crb-sym-"))
    instance = start_crashray(work / "data", free_port())
    try:
        base = "http://" + instance.dsn.split("@", 1)[1].rsplit("/", 1)[0]
        dist = build_bundle(work)
        sentry_cli(base, instance.token, "sourcemaps", "inject", str(dist))
        sentry_cli(base, instance.token, "sourcemaps", "upload", "--release", RELEASE,
                   str(dist))
        node_template = load_template(capture_node_envelope(dist / "app.min.js", work))
        runs = [("maps", instance.dsn, node_template),
                ("no maps", second_project(base, instance.token), node_template),
                ("python", instance.dsn, load_template())]
        reports: list[Report] = []
        # Not measured: the first seconds after a start (workers importing, caches cold)
        # would be charged to whichever run came first.
        print("--- warm-up (not measured)", file=sys.stderr, flush=True)
        for name, dsn, template in runs:
            asyncio.run(measure(target_from_dsn(name, dsn), replace(plan, duration_s=3.0),
                                template, lambda: PostgresEvents(instance.pg_url),
                                lambda: memory_of(crashray_pids(instance))))
        for name, dsn, template in runs:
            print(f"--- {name}", file=sys.stderr, flush=True)
            reports.append(asyncio.run(measure(
                target_from_dsn(name, dsn), plan, template,
                lambda: PostgresEvents(instance.pg_url),
                lambda: memory_of(crashray_pids(instance)))))
        print(format_table(reports))
        maps, no_maps = reports[0].processed_per_s, reports[1].processed_per_s
        if maps and no_maps:
            print(f"symbolication on / off (processed events/s): {maps / no_maps:.2f}")
        return 0 if all(r.losses == 0 for r in reports) else 1
    finally:
        stop_crashray(instance)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
