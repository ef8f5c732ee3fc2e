"""Browser security reports as Sentry events: what ``/api/<project>/security/`` accepts.

Pure code (no I/O): the ingest route reads the request and calls ``parse_media_type``,
``is_security_media_type``, ``report_context`` and ``security_events``; each returned event is
handed off as one queue item of type ``security`` (Relay's ``ItemType::Security``, the item
"that allows quick detection of the event type for rate limiting", relay PR #617), so it is
counted in the ``security`` data category and flows through the consumers like any event.

What a body may be (relay-server/src/endpoints/security_report.rs, Relay PRs #3277, #3293,
#3295; relay-event-schema/src/protocol/security_report.rs):

* a legacy ``report-uri`` CSP report ``{"csp-report": {kebab-case keys}}``;
* Reporting API reports (``application/reports+json``): a JSON list, one event per report of
  ``"type": "csp-violation"`` (camelCase ``body``); other report types (``deprecation``,
  ``intervention``, ...) are skipped, as Relay skips them; a single such object is accepted too;
* the legacy HPKP report (``{"known-pins": ..., "hostname": ...}``), Expect-CT
  (``{"expect-ct-report": {...}}``) and Expect-Staple (``{"expect-staple-report": {...}}``).

How a CSP report becomes an event is Relay's ``Csp::apply_to_event`` re-implemented: message
(``"Blocked 'script' from 'evil.example'"``), culprit (the violated directive with its sources
normalized), tags ``effective-directive``, ``blocked-uri``, ``blocked-host``, ``request.url``
(the document) with the ``Referer``; plus what Relay adds around it: ``type: csp``, the
``Origin`` header (``event_from_security_report``), ``logger: csp`` and the ``User-Agent``
header (``normalize_security_report``), ``release``/``environment`` from ``sentry_release`` /
``sentry_environment``.

HPKP, Expect-CT and Expect-Staple are dead in every shipping browser and Relay dropped them in
2026 (getsentry/relay#6230); the sentry-relay library Crashray normalizes with no longer knows
their event types or interfaces (``normalize_event`` nulls an ``hpkp`` interface as
``invalid_attribute`` and turns the type into ``default``). They are converted as the last
Relay that supported them did (message, culprit, tags, ``request.url``), but the report itself
goes under ``contexts.<kind>`` (``{"type": "hpkp", ...}``, snake_case keys), which Relay keeps,
and the event type is left for Relay to infer (``default``). They are still ``security`` items.

Errors (``events.errors`` tree)::

    BadRequest                      400
    ├── (parse_media_type)          an unparsable Content-Type (Relay's "mime parse error: ...")
    └── InvalidSecurityReport       a report that cannot become an event; ``outcome_reason``
                                    is Relay's discard reason (invalid_json, security_report_type,
                                    security_report)
    UnsupportedMediaType            415 for a Content-Type Relay does not take (empty body)

Relay answers 200 to a readable-looking body and drops a bad report later (outcome
``invalid``); Crashray converts at the door and answers 400 naming the report and field, so a
hand-written client learns what is wrong. Browsers ignore the status either way.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import orjson

from events.errors import BadRequest, UnsupportedMediaType

__all__ = [
    "SECURITY_ITEM_TYPE",
    "InvalidSecurityReport",
    "MediaType",
    "ReportContext",
    "event_from_report",
    "is_security_media_type",
    "normalize_uri",
    "parse_media_type",
    "report_context",
    "security_events",
    "unsupported_media_type",
]

#: Queue item type of a converted report (Relay's ``ItemType::Security``); category security.
SECURITY_ITEM_TYPE: Final = "security"

# is_security_mime (relay-server/src/endpoints/security_report.rs) plus reports+json (#3293).
_SECURITY_MEDIA_TYPES: Final = frozenset({
    ("application", "json", None), ("application", "csp-report", None),
    ("application", "expect-ct-report", None), ("application", "expect-ct-report", "json"),
    ("application", "expect-staple-report", None), ("application", "reports", "json")})
ACCEPTED_CONTENT_TYPES: Final = ("application/csp-report", "application/reports+json",
                                 "application/json", "application/expect-ct-report",
                                 "application/expect-ct-report+json",
                                 "application/expect-staple-report")

# Relay's CspDirective (relay-event-schema/src/protocol/security_report.rs).
CSP_DIRECTIVES: Final = frozenset({
    "base-uri", "child-src", "connect-src", "default-src", "fenced-frame-src", "font-src",
    "form-action", "frame-ancestors", "frame-src", "img-src", "manifest-src", "media-src",
    "object-src", "plugin-types", "prefetch-src", "referrer", "script-src", "script-src-attr",
    "script-src-elem", "style-src", "style-src-elem", "style-src-attr",
    "upgrade-insecure-requests", "worker-src", "sandbox", "navigate-to", "report-uri",
    "report-to", "block-all-mixed-content", "require-sri-for", "require-trusted-types-for",
    "trusted-types"})

#: The Reporting API report type Relay turns into events (``CspViolationType``).
CSP_VIOLATION: Final = "csp-violation"


class InvalidSecurityReport(BadRequest):
    """One report cannot become an event; ``outcome_reason`` is Relay's discard reason."""

    def __init__(self, detail: str, cause: str, outcome_reason: str) -> None:
        super().__init__(detail, [cause])
        self.outcome_reason = outcome_reason


# --- the request: media type, query and headers -----------------------------------------

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE_RE = re.compile(rf"\s*({_TOKEN})/({_TOKEN})\s*(;.*)?", re.DOTALL)


@dataclass(frozen=True)
class MediaType:
    """``type/subtype+suffix`` of a Content-Type, lower-cased; parameters are ignored."""

    type: str
    subtype: str
    suffix: str | None


def parse_media_type(header: str | None) -> MediaType:
    """The Content-Type as Relay's ``Mime`` extractor reads it; 400 when it has no slash."""
    match = _MEDIA_TYPE_RE.fullmatch(header or "")
    if match is None:
        # relay-server/src/extractors/mime.rs answers 400 with the mime crate's message.
        raise BadRequest(
            "mime parse error: a slash (/) was missing between the type and subtype",
            [f"Content-Type {header!r:.80} is not a media type; browsers send"
             " application/csp-report or application/reports+json"])
    subtype, _, suffix = match[2].lower().partition("+")
    return MediaType(match[1].lower(), subtype, suffix or None)


def is_security_media_type(media_type: MediaType) -> bool:
    """Whether Relay's security endpoint takes this media type (else it answers 415)."""
    return (media_type.type, media_type.subtype, media_type.suffix) in _SECURITY_MEDIA_TYPES


def unsupported_media_type(media_type: MediaType) -> UnsupportedMediaType:
    suffix = f"+{media_type.suffix}" if media_type.suffix else ""
    return UnsupportedMediaType(
        f"content type {media_type.type}/{media_type.subtype}{suffix} is not a security report",
        [f"send one of {', '.join(ACCEPTED_CONTENT_TYPES)}"])


@dataclass(frozen=True)
class ReportContext:
    """What the request around the reports says (query string and headers)."""

    release: str | None = None
    environment: str | None = None
    user_agent: str | None = None
    origin: str | None = None


def report_context(query_string: str, headers: Mapping[str, str]) -> ReportContext:
    """``sentry_release``/``sentry_environment`` from the query (SecurityReportQuery), the
    ``User-Agent``, and the origin as Relay's RequestMeta reads it: the ``Origin`` header,
    else the ``Referer``, when it is an http(s) URL. ``headers`` keys are lower-case."""
    query: dict[str, str] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=True):
        query.setdefault(name, value)
    origin = _header_url(headers.get("origin")) or _header_url(headers.get("referer"))
    return ReportContext(release=query.get("sentry_release") or None,
                         environment=query.get("sentry_environment") or None,
                         user_agent=headers.get("user-agent") or None, origin=origin)


def _header_url(value: str | None) -> str | None:
    """An http(s) URL serialized as the url crate does (``http://host/`` for no path; the
    query kept, the fragment too)."""
    parsed = _parse_url(value or "")
    if value is None or parsed is None or parsed.scheme not in ("http", "https") \
            or not parsed.host:
        return None
    parts = urlsplit(value)
    port = "" if parsed.port is None else f":{parsed.port}"
    query = f"?{parts.query}" if parts.query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parts.path or '/'}{query}{fragment}"


# --- URLs as Relay's url crate sees them ---------------------------------------------------

_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}
_SPECIAL_SCHEMES: Final = frozenset({*_DEFAULT_PORTS, "file"})
# Python's urlunsplit schemes that take a host (Relay's schema_uses_host, minus "").
_SCHEMES_WITH_HOST: Final = frozenset({
    "ftp", "http", "gopher", "nntp", "telnet", "imap", "wais", "file", "mms", "https", "shttp",
    "snews", "prospero", "rtsp", "rtspu", "rsync", "svn", "svn+ssh", "sftp", "nfs", "git",
    "git+ssh", "ws", "wss"})


@dataclass(frozen=True)
class _Url:
    scheme: str
    host: str | None
    port: int | None


def _parse_url(value: str) -> _Url | None:
    """Scheme, host and non-default port, or None where ``Url::parse`` fails (no scheme, a
    special scheme without host, a bad port). IDNA and percent-decoding are not replicated."""
    match = _SCHEME_RE.match(value)
    if match is None:
        return None
    scheme = match[1].lower()
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    has_authority = value[match.end():].startswith("//")
    host = parts.hostname if scheme in _SPECIAL_SCHEMES or has_authority else None
    if host is not None and ":" in host:
        host = f"[{host}]"
    if scheme in _DEFAULT_PORTS and not host:
        return None
    if port is not None and port == _DEFAULT_PORTS.get(scheme):
        port = None
    return _Url(scheme, host or None, port if has_authority else None)


def _unsplit_uri(scheme: str, host: str) -> str:
    """Python's urlunsplit quirks, as Relay mimics them (``unsplit_uri``)."""
    if host or scheme in _SCHEMES_WITH_HOST:
        return f"{scheme}://{host}"
    return f"{scheme}:{host}" if scheme else ""


def normalize_uri(value: str) -> str:
    """A blocked URI as Relay names it in messages: ``'self'``, the host[:port] of http(s),
    ``scheme://host`` or ``scheme:`` otherwise; unparsable values unchanged."""
    if value in ("", "self", "'self'"):
        return "'self'"
    if ":" not in value:
        return _unsplit_uri(value, "")
    url = _parse_url(value)
    if url is None:
        return value
    if url.scheme in ("http", "https"):
        normalized = url.host or ""
    else:
        normalized = _unsplit_uri(url.scheme, url.host or "")
    return normalized if url.port is None else f"{normalized}:{url.port}"


# --- reading report fields the way Relay's serde structs do ------------------------------


@dataclass(frozen=True)
class _Fields:
    """A report object, which report it is (``report 2 of 3``) and where the object sits in
    it (``csp-report``), for error messages."""

    raw: Mapping[str, Any]
    report: str
    path: str = ""

    def field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, rule: str, value: object) -> InvalidSecurityReport:
        return InvalidSecurityReport(
            "invalid security report",
            f"{self.report}, field {self.field(key)}: {rule}, got {_shown(value)}; browsers"
            " never send this, so check the client that built the report", "security_report")

    def first(self, *names: str) -> tuple[str, Any]:
        """The first of the aliases present (Relay's serde aliases), else (names[0], None)."""
        return next(((n, self.raw[n]) for n in names if n in self.raw), (names[0], None))

    def string(self, *names: str) -> str | None:
        key, value = self.first(*names)
        if value is None or isinstance(value, str):
            return value
        raise self.fail(key, "expected a string", value)

    def required_string(self, *names: str) -> str:
        value = self.string(*names)
        if value is None:
            raise self.fail(names[0], "is required", None)
        return value

    def unsigned(self, *names: str) -> int | None:
        """Relay's ``de_opt_num_or_str``: a non-negative integer, or a string of one."""
        key, value = self.first(*names)
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64:
            return value
        if isinstance(value, str) and re.fullmatch(r"\+?[0-9]{1,20}", value) \
                and int(value) < 2**64:
            return int(value)
        raise self.fail(key, "expected a non-negative integer or a string of digits", value)

    def integer(self, key: str) -> int | None:
        value = self.raw.get(key)
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise self.fail(key, "expected an integer", value)

    def boolean(self, key: str) -> bool | None:
        value = self.raw.get(key)
        if value is None or isinstance(value, bool):
            return value
        raise self.fail(key, "expected true or false", value)

    def strings(self, key: str, required: bool = False) -> list[str] | None:
        value = self.raw.get(key)
        if value is None and not required:
            return None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise self.fail(key, "expected a list of strings", value)

    def date_time(self, key: str) -> str | None:
        """An RFC 3339 date-time, re-serialized as chrono's ``to_rfc3339`` (``+00:00``)."""
        value = self.string(key)
        if value is None:
            return None
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None or "T" not in value.upper():
            raise self.fail(key, "expected an RFC 3339 date-time", value)
        return parsed.astimezone(dt.UTC).isoformat()

    def choice(self, key: str, allowed: Sequence[str]) -> str | None:
        value = self.string(key)
        if value is None or value in allowed:
            return value
        raise self.fail(key, f"expected one of {', '.join(allowed)}", value)

    def nested(self, key: str) -> _Fields:
        value = self.raw.get(key)
        if not isinstance(value, Mapping):
            raise self.fail(key, "expected a JSON object", value)
        return _Fields(value, self.report, self.field(key))


def _shown(value: object) -> str:
    return "nothing" if value is None else repr(value)[:80]


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _tags(*pairs: tuple[str, object]) -> list[list[str]]:
    return [[key, str(value).lower() if isinstance(value, bool) else str(value)]
            for key, value in pairs if value is not None]


# --- CSP ------------------------------------------------------------------------------------

# (interface key, aliases in the report) in Relay's CspRaw order.
_CSP_STRING_FIELDS: Final = (
    ("document_uri", ("document_uri", "documentURL", "document-uri")),
    ("original_policy", ("original_policy", "originalPolicy", "original-policy")),
    ("referrer", ("referrer",)),
    ("source_file", ("source_file", "sourceFile", "source-file")),
    ("script_sample", ("script_sample", "scriptSample", "script-sample", "sample")),
    ("disposition", ("disposition",)),
)
_CSP_NUMBER_FIELDS: Final = (
    ("status_code", ("status_code", "statusCode", "status-code")),
    ("line_number", ("line_number", "lineNumber", "line-number")),
    ("column_number", ("column_number", "columnNumber", "column-number")),
)
_CSP_KNOWN_KEYS: Final = frozenset(
    {"effective_directive", "effectiveDirective", "effective-directive", "blocked_uri",
     "blockedURL", "blocked-uri", "violated_directive", "violatedDirective",
     "violated-directive"}
    | {alias for _, aliases in (*_CSP_STRING_FIELDS, *_CSP_NUMBER_FIELDS) for alias in aliases})


@dataclass(frozen=True)
class CspReport:
    """Relay's ``CspRaw``: the report fields, with Relay's defaults."""

    effective_directive: str
    blocked_uri: str
    violated_directive: str
    fields: Mapping[str, Any]  # the other interface keys, None when absent
    other: Mapping[str, Any]  # unknown keys, kept in the interface (forward compatibility)

    @property
    def document_uri(self) -> str | None:
        value = self.fields.get("document_uri")
        return value if isinstance(value, str) else None


def read_csp(fields: _Fields) -> CspReport:
    raw_effective = fields.string("effective_directive", "effectiveDirective",
                                  "effective-directive")
    violated = fields.string("violated_directive", "violatedDirective",
                             "violated-directive") or ""
    blocked = fields.string("blocked_uri", "blockedURL", "blocked-uri")
    values: dict[str, Any] = {key: fields.string(*names) for key, names in _CSP_STRING_FIELDS}
    values.update({key: fields.unsigned(*names) for key, names in _CSP_NUMBER_FIELDS})
    directive = _effective_directive(raw_effective, violated)
    if directive is None:
        raise fields.fail("effective-directive", "expected a CSP directive (in"
                          " effective-directive or violated-directive) such as script-src",
                          raw_effective if raw_effective is not None else violated or None)
    other = {k: v for k, v in fields.raw.items() if k not in _CSP_KNOWN_KEYS}
    return CspReport(directive, "self" if blocked is None else blocked, violated, values, other)


def _effective_directive(effective: str | None, violated: str) -> str | None:
    """The directive of ``effective-directive``, else of ``violated-directive`` (Firefox sends
    no effective-directive, bugzil.la/1192684); the first space-separated word of each."""
    for candidate in (effective, violated):
        if candidate is not None and candidate.split(" ", 1)[0] in CSP_DIRECTIVES:
            return candidate.split(" ", 1)[0]
    return None


_LOCAL_MESSAGES: Final = {
    "child-src": "Blocked inline 'child'", "connect-src": "Blocked inline 'connect'",
    "font-src": "Blocked inline 'font'", "img-src": "Blocked inline 'image'",
    "manifest-src": "Blocked inline 'manifest'", "media-src": "Blocked inline 'media'",
    "object-src": "Blocked inline 'object'",
    # Relay's wording for these two, swapped as Relay has them.
    "script-src-attr": "Blocked unsafe 'script' element",
    "script-src-elem": "Blocked inline script attribute",
    "style-src": "Blocked inline 'style'",
    "style-src-elem": "Blocked 'style' or 'link' element",
    "style-src-attr": "Blocked style attribute",
    "script-src": "Blocked unsafe (eval() or inline) 'script'",
}
_REMOTE_MESSAGES: Final = {
    "child-src": "Blocked 'child' from '{uri}'", "connect-src": "Blocked 'connect' from '{uri}'",
    "font-src": "Blocked 'font' from '{uri}'", "form-action": "Blocked 'form' action to '{uri}'",
    "img-src": "Blocked 'image' from '{uri}'", "manifest-src": "Blocked 'manifest' from '{uri}'",
    "media-src": "Blocked 'media' from '{uri}'", "object-src": "Blocked 'object' from '{uri}'",
    "script-src": "Blocked 'script' from '{uri}'",
    "script-src-attr": "Blocked inline script attribute from '{uri}'",
    "script-src-elem": "Blocked 'script' from '{uri}'",
    "style-src": "Blocked 'style' from '{uri}'", "style-src-elem": "Blocked 'style' from '{uri}'",
    "style-src-attr": "Blocked style attribute from '{uri}'",
}


def csp_message(report: CspReport) -> str:
    """Relay's ``CspRaw::get_message``."""
    directive, blocked = report.effective_directive, report.blocked_uri
    if directive == "script-src" and blocked == "inline":
        return "Blocked unsafe inline 'script'"
    if directive == "script-src" and blocked == "eval":
        return "Blocked unsafe eval() 'script'"
    if blocked in ("", "self", "'self'"):
        return _LOCAL_MESSAGES.get(directive, f"Blocked inline '{directive}'")
    template = _REMOTE_MESSAGES.get(directive, f"Blocked '{directive}' from '{{uri}}'")
    return template.format(uri=normalize_uri(blocked))


_SOURCE_KEYWORDS: Final = frozenset({"'none'", "'self'", "'unsafe-inline'", "'unsafe-eval'"})
_SCHEMED_SOURCES: Final = ("data:", "mediastream:", "blob:", "filesystem:", "http:", "https:",
                           "file:")


def _culprit_source(value: str, document: str, document_uri: str) -> str:
    """One source of the violated directive as Relay shows it (``CspRaw::normalize_value``):
    the document's own origin becomes ``'self'``; a bare host gets a non-http scheme."""
    if value in _SOURCE_KEYWORDS:
        return value
    if value.startswith(_SCHEMED_SOURCES):
        return "'self'" if document == normalize_uri(value) else value
    if value == document:
        return "'self'"
    scheme = document_uri.split(":", 1)[0] if ":" in document_uri else None
    if scheme is None or scheme in ("http", "https"):
        return value
    return _unsplit_uri(scheme, value)


def csp_culprit(report: CspReport) -> str:
    """Relay's ``CspRaw::get_culprit``: the violated directive, its sources normalized."""
    if not report.violated_directive:
        return ""
    directive, *sources = report.violated_directive.split()
    document_uri = report.document_uri or ""
    document = normalize_uri(document_uri)
    return " ".join([directive, *(_culprit_source(s, document, document_uri) for s in sources)])


def _sanitized_blocked_uri(uri: str) -> str:
    # Relay drops the query of Stripe URLs, which carry card data (CspRaw::sanitized_blocked_uri).
    if uri.startswith("https://api.stripe.com/"):
        return re.split(r"[#?]", uri, maxsplit=1)[0]
    return uri


def csp_tags(report: CspReport) -> list[list[str]]:
    tags = [["effective-directive", report.effective_directive],
            ["blocked-uri", _sanitized_blocked_uri(report.blocked_uri)]]
    url = _parse_url(report.blocked_uri)
    if url is not None and url.scheme in ("http", "https") and url.host:
        tags.append(["blocked-host", url.host])
    return tags


def csp_event(fields: _Fields) -> dict[str, Any]:
    report = read_csp(fields)
    headers = [["Referer", report.fields["referrer"]]] if report.fields.get("referrer") else []
    interface = _drop_none({
        "effective_directive": report.effective_directive, "blocked_uri": report.blocked_uri,
        "document_uri": report.fields.get("document_uri"),
        "original_policy": report.fields.get("original_policy"),
        "referrer": report.fields.get("referrer"), "status_code": report.fields.get("status_code"),
        "violated_directive": report.violated_directive,
        "source_file": report.fields.get("source_file"),
        "line_number": report.fields.get("line_number"),
        "column_number": report.fields.get("column_number"),
        "script_sample": report.fields.get("script_sample"),
        "disposition": report.fields.get("disposition"), **report.other})
    return {"type": "csp", "logentry": {"formatted": csp_message(report)},
            "culprit": csp_culprit(report), "tags": csp_tags(report),
            "request": _drop_none({"url": report.document_uri, "headers": headers}), "csp": interface}


# --- HPKP, Expect-CT, Expect-Staple (see the module docstring) ------------------------------

_SCT_STATUSES: Final = ("unknown", "valid", "invalid")
_SCT_SOURCES: Final = ("tls-extension", "ocsp", "embedded")
_STAPLE_RESPONSE_STATUSES: Final = (
    "MISSING", "PROVIDED", "ERROR_RESPONSE", "BAD_PRODUCED_AT", "NO_MATCHING_RESPONSE",
    "INVALID_DATE", "PARSE_RESPONSE_ERROR", "PARSE_RESPONSE_DATA_ERROR")
_STAPLE_CERT_STATUSES: Final = ("GOOD", "REVOKED", "UNKNOWN")
_HPKP_KEYS: Final = frozenset({
    "date-time", "hostname", "port", "effective-expiration-date", "include-subdomains",
    "noted-hostname", "served-certificate-chain", "validated-certificate-chain", "known-pins"})


def _legacy_event(kind: str, message: str, report: Mapping[str, Any], tags: list[list[str]],
                  culprit: bool) -> dict[str, Any]:
    hostname = report["hostname"]
    event: dict[str, Any] = {
        "logentry": {"formatted": message}, "tags": tags, "request": {"url": hostname},
        "contexts": {kind: {"type": kind, **report}}}
    if culprit:
        event["culprit"] = hostname
    return event


def hpkp_event(fields: _Fields) -> dict[str, Any]:
    """Relay's ``Hpkp::apply_to_event`` (RFC 7469 §3); it set no culprit."""
    report = _drop_none({
        "date_time": fields.date_time("date-time"),
        "hostname": fields.required_string("hostname"), "port": fields.unsigned("port"),
        "effective_expiration_date": fields.date_time("effective-expiration-date"),
        "include_subdomains": fields.boolean("include-subdomains"),
        "noted_hostname": fields.string("noted-hostname"),
        "served_certificate_chain": fields.strings("served-certificate-chain"),
        "validated_certificate_chain": fields.strings("validated-certificate-chain"),
        "known_pins": fields.strings("known-pins", required=True),
        **{k: v for k, v in fields.raw.items() if k not in _HPKP_KEYS}})
    tags = _tags(("hostname", report["hostname"]), ("port", report.get("port")),
                 ("include-subdomains", report.get("include_subdomains")))
    message = f"Public key pinning validation failed for '{report['hostname']}'"
    return _legacy_event("hpkp", message, report, tags, culprit=False)


def _sct(fields: _Fields) -> dict[str, Any]:
    return _drop_none({"version": fields.integer("version"),
                       "status": fields.choice("status", _SCT_STATUSES),
                       "source": fields.choice("source", _SCT_SOURCES),
                       "serialized_sct": fields.string("serialized_sct")})


def _scts(fields: _Fields) -> list[dict[str, Any]] | None:
    scts = fields.raw.get("scts")
    if scts is None:
        return None
    if not isinstance(scts, list):
        raise fields.fail("scts", "expected a list of objects", scts)
    found = []
    for index, sct in enumerate(scts):
        if not isinstance(sct, Mapping):
            raise fields.fail(f"scts[{index}]", "expected a JSON object", sct)
        found.append(_sct(_Fields(sct, fields.report, fields.field(f"scts[{index}]"))))
    return found


def expect_ct_event(fields: _Fields) -> dict[str, Any]:
    """Relay's ``ExpectCt::apply_to_event`` (draft-ietf-httpbis-expect-ct §3.1)."""
    report = _drop_none({
        "date_time": fields.date_time("date-time"),
        "hostname": fields.required_string("hostname"), "port": fields.integer("port"),
        "scheme": fields.string("scheme"),
        "effective_expiration_date": fields.date_time("effective-expiration-date"),
        "served_certificate_chain": fields.strings("served-certificate-chain") or [],
        "validated_certificate_chain": fields.strings("validated-certificate-chain") or [],
        "scts": _scts(fields), "failure_mode": fields.string("failure-mode"),
        "test_report": fields.boolean("test-report")})
    tags = _tags(("hostname", report["hostname"]), ("port", report.get("port")))
    return _legacy_event("expectct", f"Expect-CT failed for '{report['hostname']}'", report,
                         tags, culprit=True)


def expect_staple_event(fields: _Fields) -> dict[str, Any]:
    """Relay's ``ExpectStaple::apply_to_event``."""
    report = _drop_none({
        "date_time": fields.date_time("date-time"),
        "hostname": fields.required_string("hostname"), "port": fields.integer("port"),
        "effective_expiration_date": fields.date_time("effective-expiration-date"),
        "response_status": fields.choice("response-status", _STAPLE_RESPONSE_STATUSES),
        "cert_status": fields.choice("cert-status", _STAPLE_CERT_STATUSES),
        "served_certificate_chain": fields.strings("served-certificate-chain"),
        "validated_certificate_chain": fields.strings("validated-certificate-chain"),
        "ocsp_response": fields.raw.get("ocsp-response")})
    tags = _tags(("hostname", report["hostname"]), ("port", report.get("port")),
                 ("response_status", report.get("response_status")),
                 ("cert_status", report.get("cert_status")))
    return _legacy_event("expectstaple", f"Expect-Staple failed for '{report['hostname']}'",
                         report, tags, culprit=True)


# --- one report, one body -------------------------------------------------------------------

_REPORT_KINDS: Final[tuple[tuple[str, Callable[[_Fields], dict[str, Any]]], ...]] = (
    ("csp-report", lambda f: csp_event(f.nested("csp-report"))),
    ("known-pins", hpkp_event),
    ("expect-staple-report", lambda f: expect_staple_event(f.nested("expect-staple-report"))),
    ("expect-ct-report", lambda f: expect_ct_event(f.nested("expect-ct-report"))),
)


def event_from_report(report: object, context: ReportContext, where: str = "the report"
                      ) -> dict[str, Any] | None:
    """The event for one report, or None for a Reporting API report of a type Relay skips.

    The kind is told by its keys in Relay's order (``SecurityReportType::from_json``):
    ``csp-report``, a ``type`` of ``csp-violation``, ``known-pins``, ``expect-staple-report``,
    ``expect-ct-report``.
    """
    if not isinstance(report, Mapping):
        raise InvalidSecurityReport(
            "invalid security report type",
            f"{where} is a JSON {_json_kind(report)}, not an object", "security_report_type")
    fields = _Fields(report, where)
    if "csp-report" not in report and "type" in report:
        if report["type"] != CSP_VIOLATION:
            return None
        event = csp_event(fields.nested("body"))
    else:
        convert = next((c for key, c in _REPORT_KINDS if key in report), None)
        if convert is None:
            raise _not_a_report(where, report)
        event = convert(fields)
    return _with_context(event, context)


def _not_a_report(where: str, report: Mapping[str, Any]) -> InvalidSecurityReport:
    keys = ", ".join(sorted(report)[:8]) or "no keys"
    return InvalidSecurityReport(
        "invalid security report type",
        f"{where} has {keys}; a security report has a csp-report object, a Reporting API"
        " type (csp-violation), known-pins (HPKP), expect-ct-report or expect-staple-report",
        "security_report_type")


def _with_context(event: dict[str, Any], context: ReportContext) -> dict[str, Any]:
    """The request's parts of the event (see the module docstring), and an event id."""
    request = event.setdefault("request", {})
    headers = request.setdefault("headers", [])
    if context.origin:
        headers.append(["Origin", context.origin])
    if context.user_agent:
        headers.append(["User-Agent", context.user_agent])
    if not headers:
        del request["headers"]
    extra = _drop_none({"release": context.release, "environment": context.environment})
    return {"event_id": uuid.uuid4().hex, **event, "logger": "csp", **extra}


def _json_kind(value: object) -> str:
    return {list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def security_events(body: bytes, context: ReportContext) -> list[dict[str, Any]]:
    """The events of one request body: one per report (a Reporting API list may hold many, of
    which only ``csp-violation`` reports count); [] when none does. Raises
    ``InvalidSecurityReport`` naming the report and the field."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidSecurityReport("invalid JSON data", f"the body is not JSON: {exc}",
                                    "invalid_json") from None
    if not isinstance(document, list):
        event = event_from_report(document, context)
        return [] if event is None else [event]
    events = []
    for index, report in enumerate(document, start=1):
        if not isinstance(report, Mapping) or report.get("type") != CSP_VIOLATION:
            continue  # deprecation, intervention, ... reports: skipped as Relay skips them
        event = event_from_report(report, context, f"report {index} of {len(document)}")
        if event is not None:
            events.append(event)
    return events
