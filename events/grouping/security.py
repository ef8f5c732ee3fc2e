"""Grouping strategies of browser security reports (grouping v3, FROZEN with it).

Sentry groups the events its security endpoint makes from CSP, HPKP, Expect-CT and
Expect-Staple reports with strategies of their own (``src/sentry/grouping/strategies/
security.py``): they rank below the stack-trace strategies and above the message one (scores
``csp:v1`` 1003, ``hpkp:v1`` 1002, ``expect-staple:v1`` 1001, ``expect-ct:v1`` 1000, message
0), each producing the ``default`` variant, and apply whenever the event carries the interface
(``csp``, ``hpkp``, ``expectct``, ``expectstaple``, snake_case as Relay writes them).

* HPKP, Expect-CT, Expect-Staple: the report kind (``hpkp``, ``expect-ct``,
  ``expect-staple``) and the ``hostname`` the report is about.
* CSP: the ``effective_directive`` (the salt), then either the kind of a local script
  violation (``'unsafe-inline'`` / ``'unsafe-eval'``: a ``script-src`` report whose blocked URI
  is the page itself and whose violated directive names that keyword) or the normalised
  blocked URI (``normalize_blocked_uri``). So reports from every page that blocked the same
  host under one directive are one issue, whatever the path or query of the blocked URL.

A directive or hostname that Relay always sets but that is missing or not a string here
(hand-made events) simply does not contribute (Sentry would hash the text ``None``); a missing
blocked URI counts as the page itself, as Relay fills it in (``"self"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from events.grouping.component import Component, component
from events.grouping.shape import as_mapping, as_str, get_path

DEFAULT: Final = "default"
#: The document's own origin, as CSP writes it (Sentry ``sentry.security.csp.LOCAL``).
LOCAL: Final = "'self'"
_LOCAL_SPELLINGS: Final = frozenset({"", LOCAL, "self"})
_UNSAFE_KEYWORDS: Final = ("unsafe-inline", "unsafe-eval")

# (event key, salt) in Sentry's score order, highest first.
HOSTNAME_REPORTS: Final = (
    ("hpkp", "hpkp"),
    ("expectstaple", "expect-staple"),
    ("expectct", "expect-ct"),
)


def _split_best_effort(value: str) -> tuple[str, str]:
    """(scheme, netloc) as ``urllib.parse.urlsplit`` gives them, or, for what it refuses
    (``https://[not-a-url/x``), cut by hand (Sentry ``sentry.utils.urls.urlsplit_best_effort``)."""
    try:
        parts = urlsplit(value)
    except ValueError:
        scheme, _, rest = value.partition(":")
        netloc = ""
        if rest.startswith("//"):
            netloc = rest[2:]
            for stop in "/?#":
                netloc = netloc.split(stop, 1)[0]
        return scheme.lower(), netloc
    return parts.scheme, parts.netloc


def normalize_blocked_uri(value: str) -> str:
    """Sentry ``sentry.security.csp.normalize_value``: ``''``/``self``/``'self'`` are the page
    itself (``'self'``); a bare word is a scheme (``data`` → ``data:``, ``blob`` → ``blob:``,
    ``inline`` → ``inline:``); an http(s) URL is its host (with port); any other URL its
    scheme and host (``chrome-extension://abc``, ``data:image/png;…`` → ``data:``)."""
    if value in _LOCAL_SPELLINGS:
        return LOCAL
    if ":" not in value:
        return urlunsplit((value, "", "", "", ""))
    scheme, host = _split_best_effort(value)
    if scheme in ("http", "https"):
        return host
    return urlunsplit((scheme, host, "", "", ""))


def local_script_violation(csp: Mapping[str, Any], blocked: str) -> str | None:
    """``unsafe-inline``/``unsafe-eval`` for a ``script-src`` report of the page's own inline
    script or eval (Sentry ``Csp.local_script_violation_type``), else ``None``."""
    violated = as_str(csp.get("violated_directive"))
    if violated is None or csp.get("effective_directive") != "script-src" or blocked != LOCAL:
        return None
    for keyword in _UNSAFE_KEYWORDS:
        if f"'{keyword}'" in violated:
            return keyword
    return None


def _salt(value: str | None) -> Component:
    return component("salt", (value,) if value is not None else ())


def csp_component(csp: Mapping[str, Any]) -> Component:
    blocked = normalize_blocked_uri(as_str(csp.get("blocked_uri")) or "")
    violation = local_script_violation(csp, blocked)
    if violation is not None:
        violation_part = component("violation", (f"'{violation}'",))
        uri = component("uri", (blocked,), contributes=False, hint="violation takes precedence")
    else:
        violation_part = component("violation", contributes=False,
                                   hint="not a local script violation")
        uri = component("uri", (blocked,))
    return component("csp", (_salt(as_str(csp.get("effective_directive"))), violation_part, uri))


def csp_strategy(event: Mapping[str, Any]) -> dict[str, Component]:
    csp = as_mapping(event.get("csp"))
    return {} if csp is None else {DEFAULT: csp_component(csp)}


def hostname_report_strategy(key: str, salt: str, event: Mapping[str, Any]
                             ) -> dict[str, Component]:
    """Group an HPKP/Expect-CT/Expect-Staple report by its hostname. The report is the
    event's interface of that name, as Sentry stored it; sentry-relay has since dropped
    those interfaces (getsentry/relay#6230: its normalization nulls them), so Crashray's
    ingest keeps the report under ``contexts.<kind>`` (events/security.py): read either."""
    report = as_mapping(event.get(key)) or as_mapping(get_path(event, "contexts", key))
    if report is None:
        return {}
    hostname = as_str(report.get("hostname"))
    host = component("hostname", (hostname,) if hostname is not None else ())
    return {DEFAULT: component(salt, (_salt(salt), host))}
