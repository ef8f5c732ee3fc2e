"""Captures events one by one through the real sentry-sdk until the server rate-limits it,
then a few more (the SDK drops those itself), and flushes (which sends its client report).

Usage: CRASHRAY_DSN=... python send_rate_limited.py <marker> <sent_first> <dropped_after>
Prints one JSON line: the status of each send as the SDK saw it is not exposed, so it prints
the event ids the SDK returned."""

import json
import os
import sys

import sentry_sdk


def main() -> None:
    sentry_sdk.init(dsn=os.environ["CRASHRAY_DSN"], release="py-e2e@1.0.0",
                    environment="e2e")
    marker, first, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ids = []
    for n in range(first):
        ids.append(sentry_sdk.capture_message(f"limited {marker} {n}", level="error"))
        sentry_sdk.flush(10)  # one request per event, so the server sees them in order
    for n in range(after):
        ids.append(sentry_sdk.capture_message(f"backed off {marker} {n}", level="error"))
    sentry_sdk.flush(10)  # also sends the client report of what the SDK dropped
    print(json.dumps(ids))


if __name__ == "__main__":
    main()
