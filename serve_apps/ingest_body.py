"""Reading an ingest request's body, never more of it than its sender has earned.

A request that names its key outside the body (``X-Sentry-Auth``, ``Authorization``, the
``sentry_key`` query parameter) is authorized first, and only then is its body read and
decompressed, within ``CRASHRAY_MAX_REQUEST_BYTES`` and ``CRASHRAY_MAX_ENVELOPE_BYTES``
(``read_body``): an unknown key costs no body at all.

An envelope may carry its key only in its ``dsn`` header (spec §1.2 #6: offline envelopes
of native SDKs, and browser SDKs behind a ``tunnel`` that forwards the envelope as it is).
For it, ``read_envelope_dsn`` decodes only the envelope's first line, from at most
``CRASHRAY_MAX_UNAUTHENTICATED_BODY_BYTES`` on the wire and decoded, holds those raw bytes,
and hands back the headers; once the key they name is authorized, ``read_body`` decodes the
whole body (the held bytes first) within the full limits. A body whose first line is not
complete within that limit answers 401: a gzip bomb or junk from an unknown sender is cut
off after 64 KiB, and an envelope header (a DSN, an SDK name, a trace context, a time) is
far smaller. Relay reads the whole body first; the answers are the same for real clients.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from events.body import BodyDecoder, BodyLimits, FirstLineProbe
from events.envelope import parse_envelope_headers
from events.errors import Unauthorized

#: The setting that bounds what is read before a key is known (cluster/settings.py).
UNAUTHENTICATED_SETTING = "CRASHRAY_MAX_UNAUTHENTICATED_BODY_BYTES"


def missing_credentials(*causes: str) -> Unauthorized:
    """Relay's 401 for a request without credentials (spec §1.3)."""
    return Unauthorized("missing authorization information", [
        *causes, "send X-Sentry-Auth: Sentry sentry_key=<public key>, sentry_version=7,"
        " or ?sentry_key=<public key>&sentry_version=7 in the URL"])


async def read_body(chunks: AsyncIterator[bytes], content_encoding: str | None,
                    limits: BodyLimits, held: tuple[bytes, ...] = ()) -> bytes:
    """The decoded body: ``held`` (chunks already read), then the rest of ``chunks``."""
    decoder = BodyDecoder(content_encoding, limits)
    for chunk in held:
        decoder.feed(chunk)
    async for chunk in chunks:
        if chunk:
            decoder.feed(chunk)
    return decoder.finish()


@dataclass(frozen=True)
class EnvelopeStart:
    """An envelope's headers, read before its sender is known, and the raw chunks read."""

    headers: Mapping[str, Any]
    held: tuple[bytes, ...] = field(repr=False)


async def read_envelope_dsn(chunks: AsyncIterator[bytes], content_encoding: str | None,
                            max_unauthenticated_bytes: int) -> EnvelopeStart:
    """The envelope's headers from its first line; 401 when the line is not complete
    within ``max_unauthenticated_bytes`` (on the wire or decoded); 400 when it is no
    envelope header."""
    probe = FirstLineProbe(content_encoding, max_unauthenticated_bytes)
    held: list[bytes] = []
    async for chunk in chunks:
        held.append(chunk)
        if probe.feed(chunk):
            break
    else:
        probe.finish()
    if probe.first_line is None:
        raise missing_credentials(
            "no credentials in the X-Sentry-Auth or Authorization header or the query"
            f" string, and no envelope header line within the first"
            f" {max_unauthenticated_bytes} bytes of the body ({UNAUTHENTICATED_SETTING})")
    return EnvelopeStart(parse_envelope_headers(probe.first_line), tuple(held))
