"""Ingest's metrics for one answered request (``crashray_ingest_*``, cluster/metrics.py):
one call per answer in ``IngestDeployment.__call__``, whatever the answer was.

Items are counted per data category as the quotas count them
(``ingest_admission.usage_of``): accepted, or refused with the answer's error code as
the reason (``rate_limited`` for the items a quota refused while others of the request
were queued).
"""

from __future__ import annotations

from collections.abc import Sequence

from cluster import metrics
from events.errors import CrashrayError, RateLimited
from events.quotas import RateLimit
from serve_apps.ingest_admission import usage_of, without_refused
from serve_apps.ingest_http import ROUTE
from storage.queue import QueuedItem

#: The ``endpoint`` tag of a path that matched no ingest route.
UNKNOWN_ENDPOINT = "unknown"


def endpoint_of(path: str) -> str:
    """The ``endpoint`` tag: envelope, store, security or csp-report (bounded by the
    route's pattern, never the path itself)."""
    match = ROUTE.match(path)
    return match["endpoint"] if match is not None else UNKNOWN_ENDPOINT


def record_answer(endpoint: str, started_s: float, items: Sequence[QueuedItem],
                  limits: Sequence[RateLimit] = (), error: CrashrayError | None = None
                  ) -> None:
    """Record one answered request: ``items`` the request carried (empty when it was
    refused before they were read), ``limits`` the quotas that refused some of them,
    ``error`` what the request was answered with (None: accepted), ``started_s`` its
    ``time.perf_counter()`` on arrival."""
    if error is not None and (not isinstance(error, RateLimited) or not limits):
        refused = usage_of(items)
        metrics.record_ingest(endpoint, started_s, {},
                              refused.quantities if refused else {}, error.code)
        return
    kept, refused_items = without_refused(items, limits)
    accepted, refused = usage_of(kept), usage_of(refused_items)
    reason = error.code if error is not None else ""
    metrics.record_ingest(endpoint, started_s, accepted.quantities if accepted else {},
                          refused.quantities if refused else {}, reason)
