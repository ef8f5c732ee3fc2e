"""Sends the same exception twice through the real sentry-sdk; prints the event ids.

Usage: CRASHRAY_DSN=... python send_python_exceptions.py <marker> [count] [error class]

Exceptions of one class from ``charge`` group into one issue whatever the marker (the same
stack trace), so tests sharing an instance pass their own error class name."""

import json
import os
import sys

import sentry_sdk

ERROR = ValueError if len(sys.argv) <= 3 else type(sys.argv[3], (ValueError,), {})


def charge(marker: str) -> None:
    raise ERROR(f"card {marker} declined")


def main() -> None:
    sentry_sdk.init(dsn=os.environ["CRASHRAY_DSN"], release="py-e2e@1.0.0", environment="e2e")
    marker, count = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2
    ids = []
    for _ in range(count):
        try:
            charge(marker)
        except ValueError as exc:
            ids.append(sentry_sdk.capture_exception(exc))
    sentry_sdk.flush(10)
    print(json.dumps(ids))


if __name__ == "__main__":
    main()
