"""Source-map symbolication costs (issue 12): frames/s with a warm cache, the cold cost of
parsing a map by its size, and the memory one parsed map holds.

Pure: no Ray, no database. Synthetic builds of a given map size: an original source of
many small functions in ten files, "minified" onto long lines, with a real v3 source map
(VLQ mappings, names, ``sourcesContent``) that ``symbolic`` parses like any bundler's.

    python bench/symbolicate.py [--sizes-mb 1 10] [--frames 20] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from symbolic.sourcemapcache import SourceMapCache

from events.artifacts import MINIFIED_SOURCE, SOURCE_MAP, Artifact, MemoryArtifacts
from events.symbolicate import JavaScriptSymbolicator, SourceMapCaches, content_key

MB = 1000 * 1000
SOURCES = 10
FUNCTIONS_PER_LINE = 400
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def vlq(value: int) -> str:
    """One Base64 VLQ number, as source maps encode every mapping field."""
    n = (-value << 1) | 1 if value < 0 else value << 1
    out = ""
    while True:
        digit, n = n & 31, n >> 5
        out += _B64[digit | (32 if n else 0)]
        if not n:
            return out


@dataclass(frozen=True)
class Build:
    minified: bytes
    source_map: bytes
    #: (1-based line, 1-based column) of every ``return`` in the minified file.
    positions: list[tuple[int, int]]


def synthetic_build(target_map_bytes: int) -> Build:
    """A build whose map is about ``target_map_bytes`` (each function adds ~190 bytes)."""
    functions = max(target_map_bytes // 190, 10)
    originals: list[list[str]] = [[] for _ in range(SOURCES)]
    minified_lines: list[str] = []
    mapping_lines: list[str] = []
    positions: list[tuple[int, int]] = []
    state = {"src": 0, "line": 0, "col": 0, "name": 0}
    line, segments, gen_col_prev = "", [], 0
    for i in range(functions):
        src = i % SOURCES
        body = originals[src]
        first = len(body)
        body += [f"function computeTotal_{i}(order, rate) {{",
                 f"  const subtotal = order.amount * rate + {i};",
                 f"  return applyDiscount_{i}(subtotal);", "}"]
        piece_start = len(line)
        piece = f"function c{i}(o,r){{const s=o.amount*r+{i};return d{i}(s)}}"
        ret_col = piece_start + piece.index("return")
        for gen_col, (oline, ocol, name) in (
                (piece_start, (first, 0, None)), (piece_start + 9, (first, 9, 2 * i)),
                (ret_col, (first + 2, 2, None)),
                (piece_start + piece.index(f"d{i}("), (first + 2, 9, 2 * i + 1))):
            # Every field is a delta from the previous segment's (columns: on this line).
            seg = (vlq(gen_col - gen_col_prev) + vlq(src - state["src"])
                   + vlq(oline - state["line"]) + vlq(ocol - state["col"]))
            state.update(src=src, line=oline, col=ocol)
            if name is not None:
                seg += vlq(name - state["name"])
                state["name"] = name
            segments.append(seg)
            gen_col_prev = gen_col
        line += piece
        positions.append((len(minified_lines) + 1, ret_col + 1))
        if (i + 1) % FUNCTIONS_PER_LINE == 0:
            minified_lines.append(line)
            mapping_lines.append(",".join(segments))
            line, segments, gen_col_prev = "", [], 0
    if line:
        minified_lines.append(line)
        mapping_lines.append(",".join(segments))
    names = [n for i in range(functions) for n in (f"computeTotal_{i}", f"applyDiscount_{i}")]
    source_map = {"version": 3, "file": "app.min.js",
                  "sources": [f"../src/module_{s}.js" for s in range(SOURCES)],
                  "sourcesContent": ["\n".join(b) + "\n" for b in originals],
                  "names": names, "mappings": ";".join(mapping_lines)}
    minified = "\n".join(minified_lines) + "\n//# sourceMappingURL=app.min.js.map\n"
    return Build(minified.encode(), json.dumps(source_map).encode(), positions)


#: Run in a fresh interpreter. The first parse grows the heap by its peak (several times
#: the map), which later parses reuse; so the bytes one parsed map keeps are the slope of
#: the resident size over the 10th to 30th parsed copies (each from fresh buffers: the
#: parsed form copies what it needs).
_RSS_PROBE = """
import os, sys
from symbolic.sourcemapcache import SourceMapCache
minified, source_map = open(sys.argv[1], 'rb').read(), open(sys.argv[2], 'rb').read()
def rss():
    with open(f'/proc/{os.getpid()}/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
kept, sizes = [], []
for _ in range(30):
    kept.append(SourceMapCache.from_bytes(bytes(bytearray(minified)),
                                          bytes(bytearray(source_map))))
    sizes.append(rss())
print((sizes[29] - sizes[9]) / 20)
"""


def rss_per_parsed_map(build: Build) -> float:
    """Resident bytes one more parsed map keeps, measured in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, "app.min.js"), os.path.join(tmp, "app.min.js.map")]
        for path, content in zip(paths, (build.minified, build.source_map), strict=True):
            with open(path, "wb") as f:
                f.write(content)
        out = subprocess.run([sys.executable, "-c", _RSS_PROBE, *paths], check=True,
                             capture_output=True, text=True).stdout
    return float(out.strip())


def best_of(runs: int, fn: Any) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def event_for(build: Build, frames: int, rng: random.Random) -> dict[str, Any]:
    picked = rng.sample(build.positions, min(frames, len(build.positions)))
    return {"platform": "javascript", "release": "bench@1", "exception": {"values": [{
        "type": "TypeError", "value": "x", "stacktrace": {"frames": [
            {"abs_path": "https://cdn.example.com/static/app.min.js", "function": "c",
             "lineno": line, "colno": col, "in_app": True} for line, col in picked]}}]}}


def measure(size_mb: float, frames: int, seconds: float) -> dict[str, Any]:
    build = synthetic_build(int(size_mb * MB))
    parse_s = best_of(3, lambda: SourceMapCache.from_bytes(build.minified, build.source_map))
    key_s = best_of(3, lambda: content_key(build.minified, build.source_map))
    per_map = rss_per_parsed_map(build)
    artifacts = MemoryArtifacts()
    artifacts.add(Artifact("~/static/app.min.js", MINIFIED_SOURCE, build.minified),
                  release="bench@1")
    artifacts.add(Artifact("~/static/app.min.js.map", SOURCE_MAP, build.source_map),
                  release="bench@1")
    symbolicator = JavaScriptSymbolicator(SourceMapCaches(1 << 34))
    rng = random.Random(1)
    events = [event_for(build, frames, rng) for _ in range(50)]
    symbolicator.symbolicate(events[0], artifacts)  # warm the cache
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        out = symbolicator.symbolicate(events[done % len(events)], artifacts)
        done += 1
    elapsed = time.perf_counter() - start
    assert not out.get("errors"), out.get("errors")
    lookups = _raw_lookups_per_s(build, seconds / 2)
    return {"map_mb": len(build.source_map) / MB, "minified_mb": len(build.minified) / MB,
            "parse_ms": parse_s * 1000, "key_ms": key_s * 1000, "rss_mb_per_map": per_map / MB,
            "events_per_s": done / elapsed, "frames_per_s": done * frames / elapsed,
            "lookups_per_s": lookups}


def _raw_lookups_per_s(build: Build, seconds: float) -> float:
    cache = SourceMapCache.from_bytes(build.minified, build.source_map)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        line, col = build.positions[done % len(build.positions)]
        cache.lookup(line, col, 5)
        done += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--frames", type=int, default=20, help="frames per event")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(f"{'map MB':>7} {'min MB':>7} {'cold parse ms':>14} {'hash ms':>8} "
          f"{'RSS MB/map':>11} {'events/s':>9} {'frames/s':>9} {'lookups/s':>10}")
    for size in args.sizes_mb:
        r = measure(size, args.frames, args.seconds)
        print(f"{r['map_mb']:7.2f} {r['minified_mb']:7.2f} {r['parse_ms']:14.1f} "
              f"{r['key_ms']:8.2f} {r['rss_mb_per_map']:11.2f} {r['events_per_s']:9.0f} "
              f"{r['frames_per_s']:9.0f} {r['lookups_per_s']:10.0f}")


if __name__ == "__main__":
    main()
