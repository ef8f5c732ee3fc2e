"""Where an SDK's credentials are and what they say (spec §1.1 to §1.3). Parsing only.

Looking the key up (403 for unknown, disabled or foreign keys) is the caller's job; this
module answers only "which public key, protocol version and client did the request name".

Sources, in the order Relay's ``auth_from_parts`` reads them
(relay-server/src/extractors/request_meta.rs); exactly one may be present:

1. ``X-Sentry-Auth: Sentry sentry_key=..., sentry_version=7, ...``       source "x-sentry-auth"
2. ``Authorization: Sentry sentry_key=...``                               source "authorization"
3. ``Authorization: Basic base64(public:secret)``                         source "basic"
4. query string with ``sentry_key=...&sentry_version=7``                  source "query"
5. the ``dsn`` envelope header (see ``auth_from_dsn``)                    source "envelope-dsn"

Errors (``events.errors``): ``Unauthorized`` 401 for missing, duplicate or unparsable
credentials; ``BadRequest`` 400 for a malformed public key or a too-new protocol version.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from events.errors import BadRequest, Unauthorized

__all__ = [
    "AUTH_SOURCES",
    "PROTOCOL_VERSION",
    "Dsn",
    "SentryAuth",
    "auth_from_dsn",
    "auth_from_request",
    "find_request_auth",
    "parse_dsn",
    "validate_public_key",
]

# Newest protocol version Relay speaks (relay_event_schema::protocol::PROTOCOL_VERSION); it is
# also the default when ``sentry_version`` is absent (relay-common auth.rs, spec §1.2).
PROTOCOL_VERSION = 7

AUTH_SOURCES = frozenset({"x-sentry-auth", "authorization", "basic", "query", "envelope-dsn"})

# Relay's ProjectKey::parse (relay-base-schema/src/project.rs) accepts exactly 32 ASCII
# characters; real keys are 32 lowercase hex (spec §1.1). The SDK corpus and our e2e DSNs use
# the literal key "publickey", so we accept a conservative superset: 1 to 64 characters of
# [A-Za-z0-9_-]. Anything else (spaces, quotes, non-ASCII) never names a key we issue, and
# refusing it keeps junk out of key lookups and logs.
_PUBLIC_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Rust's u16::from_str, which Relay uses for the version, accepts an optional leading "+".
_VERSION_RE = re.compile(r"\+?[0-9]{1,5}")
_MAX_U16 = 65535

_SENTRY_SCHEME_PREFIX = "sentry "
_BASIC_SCHEME_PREFIX = "basic "


@dataclass(frozen=True)
class SentryAuth:
    """What one request's credentials said; ``source`` is one of ``AUTH_SOURCES``."""

    public_key: str
    version: int
    client: str | None
    source: str


@dataclass(frozen=True)
class Dsn:
    """``{scheme}://{public_key}[:{secret}]@{host}[:{port}]{path_prefix}/{project_id}``.

    ``path_prefix`` is "" or starts with "/" and has no trailing "/"; ``port`` is None when
    the DSN names none (the scheme's default). The secret key is deprecated and dropped.
    """

    scheme: str
    public_key: str
    host: str
    port: int | None
    path_prefix: str
    project_id: int

    @property
    def base_url(self) -> str:
        """``{scheme}://{host}[:{port}]{path_prefix}``, the base of every endpoint URL."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port is None else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.path_prefix}"

    @property
    def envelope_url(self) -> str:
        """Where SDKs POST envelopes (spec §1.1)."""
        return f"{self.base_url}/api/{self.project_id}/envelope/"

    @property
    def store_url(self) -> str:
        """The legacy /store/ endpoint (spec §1.1)."""
        return f"{self.base_url}/api/{self.project_id}/store/"


def validate_public_key(key: str) -> str:
    """The key without Relay's ``.flag`` suffixes; 400 when it is not key-shaped (§1.3)."""
    # Relay's ProjectKey::parse_with_flags: "key.no-cache" names key "key" with flag "no-cache".
    bare_key = key.split(".", 1)[0]
    if not _PUBLIC_KEY_RE.fullmatch(bare_key):
        raise BadRequest(
            "bad sentry DSN public key",
            [f"public key {bare_key[:80]!r} is not 1 to 64 characters of [A-Za-z0-9_-]"],
        )
    return bare_key


def find_request_auth(headers: Mapping[str, str], query_string: str) -> SentryAuth | None:
    """The request's credentials, or None when it carries none (the envelope may, §1.2 #6).

    ``headers`` keys are lower-case. Raises ``Unauthorized`` for two sources or an unparsable
    one, ``BadRequest`` for a malformed key or an unsupported version.
    """
    found: list[SentryAuth] = []
    sentry_header = _sentry_scheme_value(headers.get("x-sentry-auth"))
    if sentry_header is not None:
        found.append(_auth_from_pairs(_header_pairs(sentry_header), "x-sentry-auth", headers))
    authorization = headers.get("authorization")
    sentry_authorization = _sentry_scheme_value(authorization)
    if sentry_authorization is not None:
        _refuse_second_source(found)
        pairs = _header_pairs(sentry_authorization)
        found.append(_auth_from_pairs(pairs, "authorization", headers))
    basic_key = _basic_auth_key(authorization)
    if basic_key is not None:
        _refuse_second_source(found)
        found.append(_auth_from_pairs([("sentry_key", basic_key)], "basic", headers))
    # Relay's test is literally "the query contains sentry_": any such query is an attempt
    # to authenticate, and fails as "bad x-sentry-auth header" if it has no key.
    if "sentry_" in query_string:
        _refuse_second_source(found)
        pairs = parse_qsl(query_string, keep_blank_values=True)
        found.append(_auth_from_pairs(pairs, "query", headers))
    return found[0] if found else None


def auth_from_request(headers: Mapping[str, str], query_string: str) -> SentryAuth:
    """Like ``find_request_auth`` but a request without credentials is a 401 (§1.3)."""
    auth = find_request_auth(headers, query_string)
    if auth is None:
        # Relay answers 401 here although the develop docs say 403 (spec §1.3 notes).
        raise Unauthorized(
            "missing authorization information",
            [
                "send X-Sentry-Auth: Sentry sentry_key=<public key>, sentry_version=7, "
                "or ?sentry_key=<public key>&sentry_version=7 in the URL"
            ],
        )
    return auth


def auth_from_dsn(dsn: str) -> SentryAuth:
    """Credentials from an envelope's ``dsn`` header (§1.2 #6); 401 when unparsable."""
    parsed = parse_dsn(dsn)
    return SentryAuth(
        public_key=parsed.public_key,
        version=PROTOCOL_VERSION,
        client=None,
        source="envelope-dsn",
    )


def parse_dsn(dsn: str) -> Dsn:
    """Parse a DSN as Relay's ``Dsn::from_str`` does (relay-common/src/dsn.rs).

    Raises ``Unauthorized("bad envelope authentication header")`` with the reason as cause
    (the status Relay gives an unparsable envelope ``dsn``, §1.3), or
    ``BadRequest("bad sentry DSN public key")`` for a malformed key.
    """
    if not isinstance(dsn, str):
        raise _bad_dsn(repr(dsn), f"expected a string, got {type(dsn).__name__}")
    try:
        parts = urlsplit(dsn.strip())
        port = parts.port
    except ValueError as exc:
        raise _bad_dsn(dsn, f"not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise _bad_dsn(dsn, f"scheme must be http or https, got {parts.scheme!r}")
    if not parts.username:
        raise _bad_dsn(dsn, "no public key before the '@'")
    if not parts.hostname:
        raise _bad_dsn(dsn, "no host")
    path_prefix, _, project_id = parts.path.strip("/").rpartition("/")
    if not project_id.isascii() or not project_id.isdigit():
        raise _bad_dsn(dsn, f"last path segment must be a numeric project id, got {project_id!r}")
    return Dsn(
        scheme=parts.scheme,
        public_key=validate_public_key(parts.username),
        host=parts.hostname,
        port=port,
        path_prefix=f"/{path_prefix}" if path_prefix else "",
        project_id=int(project_id),
    )


def _bad_dsn(dsn: str, reason: str) -> Unauthorized:
    return Unauthorized("bad envelope authentication header", [f"{reason} in DSN {dsn[:200]!r}"])


def _sentry_scheme_value(value: str | None) -> str | None:
    """The text after "Sentry ", or None: other schemes are silently ignored (§1.3)."""
    if value is None or value[: len(_SENTRY_SCHEME_PREFIX)].lower() != _SENTRY_SCHEME_PREFIX:
        return None
    return value[len(_SENTRY_SCHEME_PREFIX) :]


def _header_pairs(value: str) -> list[tuple[str, str]]:
    """``k=v, k=v``: pairs split on "," then "=", both sides trimmed; no "=" → skipped."""
    pairs = []
    for item in value.split(","):
        key, sep, val = item.partition("=")
        if sep:
            pairs.append((key.strip(), val.strip()))
    return pairs


def _basic_auth_key(value: str | None) -> str | None:
    """The public key of ``Basic base64(public:secret)``; undecodable values are ignored."""
    if value is None or value[: len(_BASIC_SCHEME_PREFIX)].lower() != _BASIC_SCHEME_PREFIX:
        return None
    try:
        decoded = base64.b64decode(value[len(_BASIC_SCHEME_PREFIX) :], validate=True)
        public_key, sep, _secret = decoded.decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None  # Relay treats an undecodable Basic value as no credentials at all.
    return public_key if sep and public_key else None


def _refuse_second_source(found: list[SentryAuth]) -> None:
    if found:
        raise Unauthorized(
            "multiple authorization payloads detected",
            [
                f"credentials were already given in the {found[0].source} source; "
                "send exactly one of X-Sentry-Auth, Authorization or sentry_* query parameters"
            ],
        )


def _auth_from_pairs(
    pairs: Iterable[tuple[str, str]], source: str, headers: Mapping[str, str]
) -> SentryAuth:
    """Relay's ``Auth::from_pairs``: known keys only, the last occurrence of each wins."""
    values: dict[str, str] = {}
    for key, value in pairs:
        if key in ("sentry_key", "sentry_version", "sentry_client"):
            values[key] = value
    public_key = values.get("sentry_key", "")
    if not public_key:
        raise _bad_auth("missing public key in auth header", source)
    version = _parse_version(values.get("sentry_version"), source)
    # Relay checks the key's shape before the version (request_meta.rs), so we do too.
    public_key = validate_public_key(public_key)
    if version > PROTOCOL_VERSION:
        raise BadRequest(
            f"unsupported protocol version ({version})",
            [f"this server speaks sentry_version {PROTOCOL_VERSION} and older"],
        )
    return SentryAuth(
        public_key=public_key,
        version=version,
        client=values.get("sentry_client") or headers.get("user-agent") or None,
        source=source,
    )


def _parse_version(value: str | None, source: str) -> int:
    """Only the part before the first "." counts: "7.0" is 7 (spec §1.2)."""
    if value is None:
        return PROTOCOL_VERSION
    major = value.split(".", 1)[0]
    if not _VERSION_RE.fullmatch(major) or int(major) > _MAX_U16:
        raise _bad_auth(f"invalid value for version: sentry_version={value[:40]!r}", source)
    return int(major)


def _bad_auth(reason: str, source: str) -> Unauthorized:
    # Relay reports every parse failure as "bad x-sentry-auth header", whichever source it
    # came from (BadEventMeta::BadAuth); the cause says which source we read.
    return Unauthorized("bad x-sentry-auth header", [f"{reason} (from {source})"])
