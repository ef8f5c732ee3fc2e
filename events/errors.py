"""Errors raised while reading what an SDK sent.

One tree for the whole ingest edge; the HTTP layer (serve_apps/ingest) maps each class to
one status code and answers ``{"detail": message, "causes": [...]}`` as Relay does
(relay-server/src/endpoints/common.rs):

    IngestError                    (base; never raised directly)
    ├── BadRequest          400    malformed body, envelope, item, JSON, compression
    │   └── InvalidEnvelope 400    framing/header errors ("invalid event envelope")
    ├── Unauthorized        401    no, duplicate or unparsable credentials
    ├── Forbidden           403    unknown/disabled key, key of another project
    ├── PayloadTooLarge     413    a named size limit was exceeded
    ├── UnsupportedMediaType 415   a Content-Type the endpoint does not take (security reports;
    │                              Relay answers it with an empty body)
    ├── RateLimited         429    a quota was exceeded (carries the header values)
    └── Overloaded          503    the pipeline cannot take more right now
"""

from __future__ import annotations

from collections.abc import Sequence


class IngestError(Exception):
    """Base of every error the ingest edge answers with; ``status`` is the HTTP status."""

    status: int = 500
    #: (organization id, project id, key id) once the request's key is known, so that a
    #: refused request can still be counted as an outcome of its project.
    sender: tuple[int, int, int] | None = None

    def __init__(self, detail: str, causes: Sequence[str] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.causes = tuple(causes)

    def body(self) -> dict[str, object]:
        """The JSON body Relay answers with for this error."""
        body: dict[str, object] = {"detail": self.detail}
        if self.causes:
            body["causes"] = list(self.causes)
        return body


class BadRequest(IngestError):
    status = 400


class InvalidEnvelope(BadRequest):
    """Envelope framing error; Relay's detail is always "invalid event envelope"."""

    def __init__(self, cause: str) -> None:
        super().__init__("invalid event envelope", [cause])


class Unauthorized(IngestError):
    status = 401


class Forbidden(IngestError):
    status = 403


class PayloadTooLarge(IngestError):
    status = 413


class UnsupportedMediaType(IngestError):
    status = 415


class RateLimited(IngestError):
    status = 429

    def __init__(self, detail: str, retry_after_s: int, rate_limits_header: str) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s
        self.rate_limits_header = rate_limits_header


class Overloaded(IngestError):
    status = 503
