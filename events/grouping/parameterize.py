"""Message / exception-value normalisation for grouping (spec §6.6).

Two steps, both part of the v1 hash (so this table is frozen with v1):

1. keep at most the first two non-blank lines, joined by ``\\n``; if that changed the string,
   append ``...``;
2. replace variable-looking tokens with ``<name>`` placeholders. The patterns form ONE
   alternation tried left to right, so at any position the first alternative that matches
   wins (email before url before hostname ... before bool), exactly the order of the table in
   §6.6 / Sentry's ``parameterization.py``.

The regexes are written for Crashray from the spec's descriptions, not taken from Sentry; where
the spec is vague (the TLD list, the date forms) the choices are documented next to the
pattern. §6.6 itself notes message-only hashes depend on the exact table, so it never changes
once v1 ships.
"""

from __future__ import annotations

import re
from typing import Final

# Step 1 ------------------------------------------------------------------------------------

MAX_MESSAGE_LINES: Final = 2


def trim_message_lines(message: str) -> str:
    """First two non-blank lines joined by ``\\n``, plus ``...`` if anything was dropped (§6.6.1)."""
    lines = [line for line in message.splitlines() if line.strip()]
    trimmed = "\n".join(lines[:MAX_MESSAGE_LINES])
    if trimmed != message:
        trimmed += "..."
    return trimmed


# Step 2 ------------------------------------------------------------------------------------

# Local part: the usual unquoted characters; domain: dot-separated labels (``root@localhost``
# counts). The look-behind makes a match start at a token boundary, which also keeps the
# engine from rescanning every suffix of a long word.
_EMAIL = r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*"

# §6.6: http(s)://, ws(s)://, ftp:// followed by non-space characters.
_URL = r"\b(?:https?|wss?|ftp)://\S+"

# "~100 common TLDs". Chosen for Crashray: common gTLDs and country codes, leaving out TLDs that
# collide with everyday code tokens in error messages (py, rs, sh, pl, md, cc, so, ms, id, at,
# is, be, by, to, do, app, info, name, int, email, ...: ``user.id``, ``logger.info``,
# ``self.app``, ``arr.at``, ``script.py`` must stay untouched).
_TLDS = (
    "com", "net", "org", "edu", "gov", "mil", "biz", "mobi", "io", "ai", "co", "me", "tv", "dev",
    "xyz", "eu", "us", "uk", "de", "fr", "nl", "ch", "it", "es", "pt", "se", "no", "dk", "fi",
    "ie", "cz", "sk", "hu", "ro", "bg", "gr", "tr", "ru", "ua", "kz", "cn", "jp", "kr", "tw",
    "hk", "sg", "in", "th", "vn", "ph", "au", "nz", "ca", "mx", "br", "ar", "cl", "pe", "ve",
    "za", "ng", "ke", "eg", "il", "ir", "sa", "ae", "pk", "bd", "lk", "np", "ee", "lv", "lt",
    "si", "hr", "ba", "al", "ge", "am", "az", "uz", "lu", "li", "mt", "cy", "ma", "tn", "dz",
    "gh", "tz", "ug", "cm", "sn", "cu", "pr", "gt", "cr", "pa", "uy", "bo", "ec", "fm", "ly",
    "gg", "ws", "nu",
)
_HOSTNAME = (
    r"(?<![\w.-])(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?\.)+"
    r"(?i:" + "|".join(sorted(_TLDS, key=lambda t: (-len(t), t))) + r")\b"
)

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4_BODY = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
_H16 = r"[0-9a-fA-F]{1,4}"
# IPv6 in the usual forms (§6.6): link-local with zone, IPv4-mapped/embedded, full, then the
# compressed ``::`` forms. The trailing look-ahead forces backtracking into the alternative that
# consumes the whole address (``1:2::3:4`` must not stop at ``1:2::3``). A bare ``::`` is not
# matched: in messages it is far more often a scope operator than the unspecified address.
_IPV6_FORMS = (
    rf"[fF][eE]80:(?::{_H16}){{0,4}}%[0-9a-zA-Z]+",
    rf"::(?:[fF]{{4}}(?::0{{1,4}})?:)?{_IPV4_BODY}",
    rf"(?:{_H16}:){{1,4}}:{_IPV4_BODY}",
    rf"(?:{_H16}:){{7}}{_H16}",
    rf"(?:{_H16}:){{1,6}}:{_H16}",
    rf"(?:{_H16}:){{1,5}}(?::{_H16}){{1,2}}",
    rf"(?:{_H16}:){{1,4}}(?::{_H16}){{1,3}}",
    rf"(?:{_H16}:){{1,3}}(?::{_H16}){{1,4}}",
    rf"(?:{_H16}:){{1,2}}(?::{_H16}){{1,5}}",
    rf"{_H16}:(?::{_H16}){{1,6}}",
    rf"(?:{_H16}:){{1,7}}:",
    rf":(?::{_H16}){{1,7}}",
)
_IP = (
    rf"\b{_IPV4_BODY}\b"
    rf"|(?<![\w:])(?:{'|'.join(_IPV6_FORMS)})(?![\w:])"
)

_UUID = r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
_SHA1 = r"\b[0-9a-fA-F]{40}\b"
_MD5 = r"\b[0-9a-fA-F]{32}\b"

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_WEEKDAY = r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_ZONE = r"(?:[A-Z]{1,5}|[+-]\d{4})(?!\w)"
# The forms listed in §6.6, most specific first.
_DATE_FORMS = (
    # Python repr: datetime.datetime(2024, 5, 1, 10, 0, tzinfo=...)
    r"\bdatetime\.datetime\([^()]*\)",
    # RFC 822 / 1123 (weekday optional): [Mon, ]02 Jan 2006 15:04[:05] MST|-0700
    rf"\b(?:{_WEEKDAY},\s)?\d{{1,2}}\s{_MONTH}\s\d{{2,4}}\s\d{{2}}:\d{{2}}(?::\d{{2}})?\s{_ZONE}",
    # RFC 850: Monday, 02-Jan-06 15:04:05 MST
    rf"\b{_LONG_WEEKDAY},\s\d{{2}}-{_MONTH}-\d{{2}}\s\d{{2}}:\d{{2}}:\d{{2}}\s{_ZONE}",
    # Mon Jan 02, 1999
    rf"\b{_WEEKDAY}\s{_MONTH}\s\d{{1,2}},\s\d{{4}}\b",
    # RFC 3339 / ISO 8601 incl. "YYYY-MM-DD hh:mm:ss", optional fraction and zone; or the date alone
    r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?(?![\d:])",
    # hh:mm:ss[.fraction]
    r"\b(?:[01]?\d|2[0-3]):[0-5]\d:[0-5]\d(?:[.,]\d+)?(?![\d:])",
    # "kitchen" times: 3:04, 3:04 PM
    r"\b(?:1[0-2]|0?[1-9]):[0-5]\d(?:\s?[AaPp][Mm]\b)?(?![\d:])",
)
_DATE = "|".join(_DATE_FORMS)

# §6.6 lists 123ms and 1.5s; sub-millisecond units are included as obvious siblings.
_DURATION = r"\b\d+(?:\.\d+)?(?:ns|us|µs|ms|s)\b"
_HEX = r"\b0[xX][0-9a-fA-F]+\b"
# Word-bounded numbers: ``user_42`` and ``v2`` stay untouched (the look-behind excludes word
# characters, so the minus sign is taken only when it starts a token).
_FLOAT = r"(?<!\w)-?\d+\.\d+\b"
_INT = r"(?<!\w)-?\d+\b"
# Only right after "=" (key=value pairs).
_QUOTED_STR = r"(?<==)(?:'[^']*'|\"[^\"]*\")"
_BOOL = r"(?<==)(?:True|true|False|false)\b"

PLACEHOLDER_PATTERNS: Final[tuple[tuple[str, str], ...]] = (
    ("email", _EMAIL),
    ("url", _URL),
    ("hostname", _HOSTNAME),
    ("ip", _IP),
    ("uuid", _UUID),
    ("sha1", _SHA1),
    ("md5", _MD5),
    ("date", _DATE),
    ("duration", _DURATION),
    ("hex", _HEX),
    ("float", _FLOAT),
    ("int", _INT),
    ("quoted_str", _QUOTED_STR),
    ("bool", _BOOL),
)

_PARAMETERIZATION_RE: Final = re.compile(
    "|".join(f"(?P<{name}>{pattern})" for name, pattern in PLACEHOLDER_PATTERNS)
)


def _placeholder(match: re.Match[str]) -> str:
    return f"<{match.lastgroup}>"


def parameterize(text: str) -> str:
    """Replace variable-looking tokens by ``<name>`` placeholders (§6.6 step 2)."""
    return _PARAMETERIZATION_RE.sub(_placeholder, text)


def normalize_message_for_grouping(message: str) -> str:
    """Both §6.6 steps: trim to two non-blank lines, then parameterize."""
    return parameterize(trim_message_lines(message))
