"""Export benchmark: ``crashray export`` rows/s over N stored events.

Loads N events in M issues of ``crashray/default`` into a fresh data dir by bench/_bulk.py
(straight into the embedded PostgreSQL and chDB, before Crashray starts), starts
``crashray up`` on it, then runs ``crashray export`` once per ``--concurrency`` value
(``CRASHRAY_PIPELINE_CONCURRENCY``) into a new directory, reads the files back with
pyarrow to check the row count, and prints rows/s (wall time of the command, Ray's
connection included) and the files' size.

  python bench/export.py                          # 100,000 events, 1,000 issues
  python bench/export.py --events 20000 --concurrency 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from _load import free_port
from ingest import start_crashray, stop_crashray


def bulk_load(data_dir: Path, events: int, issues: int) -> dict[str, object]:
    summary_path = data_dir / "bulk-summary.json"
    subprocess.run([sys.executable, str(Path(__file__).with_name("_bulk.py")),
                    "--data-dir", str(data_dir), "--events", str(events), "--issues",
                    str(issues), "--summary", str(summary_path)], check=True)
    summary: dict[str, object] = json.loads(summary_path.read_text())
    return summary


def export_once(data_dir: Path, target: Path, concurrency: int) -> dict[str, float]:
    environment = {**os.environ, "CRASHRAY_PIPELINE_CONCURRENCY": str(concurrency)}
    started = time.perf_counter()
    result = subprocess.run(["crashray", "export", "--project", "default", "--data-dir",
                             str(data_dir), "--to", str(target)], capture_output=True,
                            text=True, env=environment, stdin=subprocess.DEVNULL)
    wall_s = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"crashray export failed:\n{result.stderr[-3000:]}")
    files = sorted(target.rglob("*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return {"concurrency": concurrency, "rows": rows, "wall_s": round(wall_s, 2),
            "rows_per_s": round(rows / wall_s), "files": len(files),
            "mib": round(sum(f.stat().st_size for f in files) / 2**20, 1),
            "printed": result.stdout.splitlines()[-1]}  # type: ignore[dict-item]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--issues", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crashray-bench-export-"))
    data_dir = work / "data"
    data_dir.mkdir()
    try:
        started = time.perf_counter()
        bulk_load(data_dir, args.events, args.issues)
        print(f"loaded {args.events} events in {time.perf_counter() - started:.1f} s",
              flush=True)
        instance = start_crashray(data_dir, free_port())
        try:
            results = [export_once(data_dir, work / f"export-{c}", c)
                       for c in args.concurrency]
        finally:
            stop_crashray(instance)
        for r in results:
            print(f"concurrency {r['concurrency']}: {r['rows']} rows in {r['wall_s']} s ="
                  f" {r['rows_per_s']} rows/s, {r['files']} files, {r['mib']} MiB")
        print(json.dumps({"bench": "export", "events": args.events, "results": results}))
        return 0 if all(r["rows"] == args.events for r in results) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
