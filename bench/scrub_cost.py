"""What sentry-relay's normalization and PII scrub cost per call, and how much of the scrub is
the PII configuration itself (parsed and compiled by sentry-relay on every call).

One process, no Ray: the Python SDK corpus event (tests/fixtures/sdk), normalized once as the
consumers do (events/process.py), then each call repeated ``--calls`` times:

  normalize                 StoreNormalizer(...).normalize_event of the raw event
  scrub, default config     pii_strip_event with the project defaults (scrubData, scrubDefaults)
  scrub, empty config       the same event, a config with no rules: parsing and writing it
  scrub, one-field event    the default config on {"message": "x"}: the config's own cost
  json round trip           orjson dumps + loads of the normalized event

Example: python bench/scrub_cost.py --calls 2000
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import sentry_relay

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support import corpus_event


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def per_call_us(call: Callable[[], object], calls: int) -> float:
    call()
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    raw = orjson.dumps(corpus_event(root / "tests" / "fixtures" / "sdk"))
    config = sentry_relay.convert_datascrubbing_config(  # type: ignore[attr-defined]
        {"scrubData": True, "scrubDefaults": True}, json_dumps=_dumps, json_loads=orjson.loads)

    def normalize() -> dict[str, Any]:
        normalizer = sentry_relay.StoreNormalizer(  # type: ignore[attr-defined]
            project_id=1, client_ip="192.0.2.1", key_id="1", protocol_version="7",
            received_at=dt.datetime.now(dt.UTC).isoformat(), enable_trimming=True,
            normalize_user_agent=True, remove_other=True, json_dumps=_dumps)
        result: dict[str, Any] = normalizer.normalize_event(raw_event=raw,
                                                            json_loads=orjson.loads)
        return result

    event = normalize()

    def scrub(cfg: Any, ev: Any) -> Callable[[], object]:
        return lambda: sentry_relay.pii_strip_event(  # type: ignore[attr-defined]
            cfg, ev, json_dumps=_dumps, json_loads=orjson.loads)

    rows = [("normalize", normalize), ("scrub, default config", scrub(config, event)),
            ("scrub, empty config", scrub({}, event)),
            ("scrub, one-field event", scrub(config, {"message": "x"})),
            ("json round trip", lambda: orjson.loads(orjson.dumps(event)))]
    print(f"event: {len(raw)} bytes; config: {len(_dumps(config))} bytes,"
          f" {len(config.get('applications', {}))} selectors")
    for name, call in rows:
        print(f"{name:28} {per_call_us(call, args.calls):8.0f} µs/call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
