"""Crashray's one error tree: every domain error of ``events/``, ``storage/`` and ``cluster/``
derives from ``CrashrayError``, which carries the HTTP status it answers with and a short
machine-readable ``code``.

Three places turn an error into what a user sees, each in one spot:

* the Web API (serve_apps/api/app.py): one exception handler answers ``status`` with
  ``{"detail": message, "code": code}`` (Sentry's ``{"detail": …}`` plus the code);
* the ingest edge (serve_apps/ingest.py): Relay's body ``{"detail": …, "causes": […]}``
  (relay-server/src/endpoints/common.rs), plus ``Retry-After``/``X-Sentry-Rate-Limits``
  for a rate limit and ``Retry-After`` for an overload (503: nothing was queued);
* the CLI (cluster/cli_common.py): ``crashray <command>: <message>`` and exit code 2 for a
  4xx (the user can fix it), 1 for a 5xx.

::

    CrashrayError                      500 internal_error   (base; never raised directly)
    ├── BadRequest                     400 bad_request      malformed input, named field
    │   ├── InvalidEnvelope            400 invalid_envelope ("invalid event envelope")
    │   ├── UnstorableValue            400 unstorable_value events/storable.py (NUL, huge int)
    │   ├── UnqueueableData            400 unqueueable_data storage/queue.py (COPY refused it)
    │   ├── InvalidEvent               400 invalid_event    events/process.py
    │   ├── SearchSyntaxError          400 invalid_search   events/search.py
    │   ├── RuleSyntaxError            400 invalid_rules    events/grouping/fingerprint_rules.py
    │   ├── RuleError                  400 invalid_alert_rule  events/alert_rules.py
    │   ├── StatsQueryError            400 invalid_stats_query  events/stats.py
    │   ├── StreamQueryError           400 invalid_stream_query events/issue_stream.py
    │   ├── InvalidQuota               400 invalid_quota    events/quotas.py
    │   ├── InvalidStatusUpdate        400 invalid_status   events/lifecycle.py
    │   ├── AccessError                400 invalid_access   events/access.py (roles, scopes)
    │   ├── InvalidPoolPolicy          400 invalid_pool_policy  events/pool_scaling.py
    │   ├── InvalidScalingSettings     400 invalid_scaling_settings  cluster/scaling.py
    │   ├── TenancyError               400 invalid_tenancy  storage/tenancy.py (slugs, passwords)
    │   ├── InvalidNotification        400 invalid_notification  events/notify.py (actions, URLs)
    │   ├── InvalidNotifySettings      400 invalid_notify_settings  events/notify.py
    │   └── CliError                   400 invalid_command_line  cluster/cli_common.py
    ├── Unauthorized                   401 unauthorized     no, bad or duplicate credentials
    ├── Forbidden                      403 forbidden        a scope or role does not allow it
    ├── NotFound                       404 not_found        nothing there (or not the caller's)
    ├── MethodNotAllowed               405 method_not_allowed  (carries the allowed methods)
    ├── Conflict                       409 conflict
    │   ├── NameTaken                  409 name_taken       storage/tenancy.py
    │   └── StartError                 409 cannot_start     cluster/runtime.py (port, data dir)
    ├── PayloadTooLarge                413 too_large        a named size limit was exceeded
    ├── UnsupportedMediaType           415 unsupported_media_type  a Content-Type the endpoint
    │                                                       does not take (security reports)
    ├── Throttled                      429 throttled
    │   ├── LoginThrottled             429 login_throttled  storage/tenancy.py
    │   └── RateLimited                429 rate_limited     a quota (carries the header values)
    ├── Overloaded                     503 overloaded       the pipeline cannot take more now
    └── StorageError                   500 storage_error    storage/errors.py
        ├── MigrationError             500 migration_failed
        └── StorageOutage              500 storage_unavailable  actors/consumer.py (retried)

Third-party errors (psycopg, clickhouse-connect, sentry-relay) are translated where they
cross into code that must decide on them; elsewhere they propagate and answer 500.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar


class CrashrayError(Exception):
    """Base of every error Crashray answers with; never raised directly."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    #: (organization id, project id, key id) once an ingest request's key is known, so a
    #: refused request can still be counted as an outcome of its project.
    sender: tuple[int, int, int] | None = None

    def __init__(self, detail: str, causes: Sequence[str] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.causes = tuple(causes)

    def body(self) -> dict[str, object]:
        """The JSON body Relay answers with at the ingest edge."""
        body: dict[str, object] = {"detail": self.detail}
        if self.causes:
            body["causes"] = list(self.causes)
        return body

    def api_body(self) -> dict[str, object]:
        """The JSON body of the Web API: Sentry's ``detail`` and the machine code."""
        return {"detail": self.detail, "code": self.code}

    def header_detail(self) -> str:
        """``detail`` fit for an HTTP header (``X-Sentry-Error``): printable ASCII, whatever
        the client sent that the detail quotes (a path with a snowman, a NUL, a newline)."""
        return printable_ascii(self.detail)


#: Longest ``X-Sentry-Error`` value; the body carries the whole detail.
MAX_HEADER_DETAIL_CHARS = 1000


def printable_ascii(text: str, max_chars: int = MAX_HEADER_DETAIL_CHARS) -> str:
    """``text`` with every character outside printable ASCII as a backslash escape
    (``\\x00``, ``\\u2603``, ``\\U0001f600``), cut to ``max_chars``: what an HTTP header
    can hold (RFC 9110 §5.5) and no client can use to split a header."""
    out: list[str] = []
    for char in text[:max_chars]:
        code = ord(char)
        if 0x20 <= code < 0x7F:
            out.append(char)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)[:max_chars]


class BadRequest(CrashrayError):
    status = 400
    code = "bad_request"


class InvalidEnvelope(BadRequest):
    """Envelope framing error; Relay's detail is always "invalid event envelope"."""

    code = "invalid_envelope"

    def __init__(self, cause: str) -> None:
        super().__init__("invalid event envelope", [cause])


class UnstorableValue(BadRequest):
    """A value ingest would hand off that the queue cannot store (events/storable.py)."""

    code = "unstorable_value"


class Unauthorized(CrashrayError):
    status = 401
    code = "unauthorized"


class Forbidden(CrashrayError):
    status = 403
    code = "forbidden"


class NotFound(CrashrayError):
    status = 404
    code = "not_found"


class MethodNotAllowed(CrashrayError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, detail: str, allowed: Sequence[str]) -> None:
        super().__init__(detail)
        #: For the ``Allow`` header the answer must carry (RFC 9110 §15.5.6).
        self.allowed = tuple(allowed)


class Conflict(CrashrayError):
    status = 409
    code = "conflict"


class PayloadTooLarge(CrashrayError):
    status = 413
    code = "too_large"


class UnsupportedMediaType(CrashrayError):
    status = 415
    code = "unsupported_media_type"


class Throttled(CrashrayError):
    status = 429
    code = "throttled"


class RateLimited(Throttled):
    code = "rate_limited"

    def __init__(self, detail: str, retry_after_s: int, rate_limits_header: str,
                 causes: Sequence[str] = ()) -> None:
        super().__init__(detail, causes)
        self.retry_after_s = retry_after_s
        self.rate_limits_header = rate_limits_header


#: Seconds an SDK is asked to wait after a 503 (``Retry-After``): about what a PostgreSQL
#: or replica restart takes, and short because SDKs that honour ``Retry-After`` on any
#: status (@sentry/core's ``updateRateLimits``) drop everything they capture meanwhile.
OVERLOADED_RETRY_AFTER_S = 10


class Overloaded(CrashrayError):
    """Nothing was queued; the sender should try again after ``retry_after_s``."""

    status = 503
    code = "overloaded"
    retry_after_s: int = OVERLOADED_RETRY_AFTER_S


#: What the Web API answers for anything the caller cannot see: the same text whether it
#: does not exist or belongs to another tenant, so ids cannot be probed (as in Sentry).
NOT_FOUND_DETAIL = "The requested resource does not exist"


def not_found(detail: str = NOT_FOUND_DETAIL) -> NotFound:
    return NotFound(detail)
