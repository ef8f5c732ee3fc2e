"""Message / exception-value parameterization of grouping v3: Sentry's current table.

FROZEN with v3 (STYLE.md): message-only hashes depend on every pattern here, so a change is a
new table for a new version, never an edit.

Step 1 (keep the first two non-blank lines, ``...`` if anything was dropped) is the same as in
v1 (``parameterize.trim_message_lines``). Step 2 follows Sentry's
``src/sentry/grouping/parameterization.py`` (``DEFAULT_PARAMETERIZATION_REGEXES``, all of them,
as its ``Parameterizer`` uses them by default; looked up in its 2025 revision with
``traceparent``, ``swift_txn_id``, ``git_sha`` and the 4-to-128-digit ``hex`` forms):
seventeen patterns joined into ONE alternation, so at each position the first pattern that
matches wins, and each match becomes ``<name>``. ``SENTRY_PATTERNS`` below is that table,
written for Crashray from those facts (the same languages, not Sentry's code), in Sentry's order:

    email, url, hostname, ip, traceparent, uuid, sha1, md5, date, duration, swift_txn_id, hex,
    git_sha, float, int, quoted_str, bool

Bounded work (why a 10 KB hostile message takes milliseconds). Used as one ``re.sub``, four
parts of that table rescan the rest of a run from every position of it, which is quadratic
(and, for hostnames, quadratic times a 200-literal TLD alternation):

* ``email``: ``[local]+@…`` tries every position of a long run of local-part characters;
* ``hostname``: ``\\b(label\\.)+?TLD\\b`` walks a whole dotted chain from every label of it;
* ``duration``'s second form ``\\d+(\\.\\d+)?s\\b`` has no leading boundary, so it rescans a
  digit run from every digit;
* ``date``'s ``datetime.datetime\\(.*?\\)`` and the JavaScript form's ``(\\s\\([^)]+\\))?``
  scan to the next ``)`` from every start.

Whether such a pattern matches at a position (and where the match ends) depends only on the
text, not on how the scan got there: for email it is decided by the end of the local-part run
the position lies in, for the duration form by the end of its digit run, for a hostname by the
chain after the position's first label (the TLD check after each label, the same for every
start in the chain), for the two date forms by the next ``)``. ``_expensive_sources`` computes
those answers once per run or chain (memoised), in linear time, and the scan takes, at each
step, the leftmost candidate of the cheap alternation (every other pattern, whose work per
position is bounded by its quantifier limits) and of these precomputed ones, breaking ties at
one position by Sentry's pattern order (and, inside ``duration`` and ``date``, by the order of
their own alternatives). The result is the same as Sentry's single ``re.sub`` (checked
against it by a differential property test), while every character is examined a bounded
number of times.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from events.grouping.parameterize import trim_message_lines

__all__ = ["SENTRY_PATTERNS", "normalize_message_for_grouping", "parameterize"]

# --- the table (Sentry's patterns, in Sentry's order) ---------------------------------------

_LOCAL_PART_CHARS: Final = r"a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-"
_DOMAIN: Final = r"[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*"
EMAIL: Final = rf"[{_LOCAL_PART_CHARS}]+@{_DOMAIN}"

URL: Final = r"\b(?:wss?|https?|ftp)://[^\s/$.?#].[^\s]*"

# Sentry's "top 100" TLDs, each in lower and in upper case (a mixed-case "Com" is not one).
TLDS: Final = (
    "com", "net", "org", "jp", "de", "uk", "fr", "br", "it", "ru", "es", "me", "gov", "pl",
    "ca", "au", "cn", "co", "in", "nl", "edu", "info", "eu", "ch", "id", "at", "kr", "cz", "mx",
    "be", "tv", "se", "tr", "tw", "al", "ua", "ir", "vn", "cl", "sk", "ly", "cc", "to", "no",
    "fi", "us", "pt", "dk", "ar", "hu", "tk", "gr", "il", "news", "ro", "my", "biz", "ie", "za",
    "nz", "sg", "ee", "th", "io", "xyz", "pe", "bg", "hk", "rs", "lt", "link", "ph", "club",
    "si", "site", "mobi", "by", "cat", "wiki", "la", "ga", "xxx", "cf", "hr", "ng", "jobs",
    "online", "kz", "ug", "gq", "ae", "is", "lv", "pro", "fm", "tips", "ms", "sa", "app",
)
_TLD_SET: Final = frozenset(TLDS) | frozenset(t.upper() for t in TLDS)
_MAX_LABEL_CHARS: Final = 63
HOSTNAME: Final = (
    rf"\b(?:[a-zA-Z0-9-]{{1,{_MAX_LABEL_CHARS}}}\.)+?"
    rf"(?:{'|'.join(t.upper() for t in TLDS)}|{'|'.join(TLDS)})\b"
)

_OCTET: Final = r"(?:25[0-5]|(?:2[0-4]|1?[0-9])?[0-9])"
_IPV4: Final = rf"(?:{_OCTET}\.){{3}}{_OCTET}"
_H16: Final = r"[0-9a-fA-F]{1,4}"
_IPV6_FORMS: Final = (
    rf"(?:{_H16}:){{7}}{_H16}",
    rf"(?:{_H16}:){{1,7}}:",
    rf"(?:{_H16}:){{1,6}}:{_H16}",
    rf"(?:{_H16}:){{1,5}}(?::{_H16}){{1,2}}",
    rf"(?:{_H16}:){{1,4}}(?::{_H16}){{1,3}}",
    rf"(?:{_H16}:){{1,3}}(?::{_H16}){{1,4}}",
    rf"(?:{_H16}:){{1,2}}(?::{_H16}){{1,5}}",
    rf"{_H16}:(?::{_H16}){{1,6}}",
    rf":(?:(?::{_H16}){{1,7}}|:)",
    r"fe80:(?::[0-9a-fA-F]{0,4}){0,4}%[0-9a-zA-Z]+",
    rf"::(?:ffff(?::0{{1,4}})?:)?{_IPV4}",
    rf"(?:{_H16}:){{1,4}}:{_IPV4}\b",
)
# IPv6 must not start inside a word nor end before an alphanumeric (so ``Option::unwrap`` and
# ``Bee::buzz`` stay untouched); IPv4 is word-bounded.
IP: Final = (
    rf"(?<![0-9a-zA-Z_])(?:{'|'.join(_IPV6_FORMS)})(?![0-9a-zA-Z])"
    rf"|\b{_IPV4}\b"
)

# W3C trace context ``traceparent`` and AWS X-Ray trace ids.
TRACEPARENT: Final = r"\b00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]\b|\b1-[0-9a-f]{8}-[0-9a-f]{24}\b"
UUID: Final = r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
SHA1: Final = r"\b[0-9a-fA-F]{40}\b"
MD5: Final = r"\b[0-9a-fA-F]{32}\b"

_WEEKDAY: Final = r"(?:Sun|Mon|Tue|Wed|Thu|Fri|Sat)"
_LONG_WEEKDAY: Final = (
    r"(?:Sun|Sunday|Mon|Monday|Tue|Tuesday|Wed|Wednesday|Thu|Thursday|Fri|Friday|Sat|Saturday)"
)
_MONTH: Final = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_ZONE_NAME: Final = r"(?:UT|GMT|(?:E|C|M|P)(?:ST|DT)|[A-IK-Z])"
_DATETIME_HEAD: Final = r"\d{4}-?[01]\d-?[0-3]\d[\sT][0-2]\d:?[0-5]\d"
_OFFSET: Final = r"(?:[+-][0-2]\d:?[0-5]\d|Z)"
# The JavaScript ``Date.toString()`` form; its optional ``(zone name)`` tail is DATE_JS_TAIL.
DATE_JS: Final = (
    rf"{_WEEKDAY}\s{_MONTH}\s\d{{2}}\s\d{{4}}\s\d{{2}}:\d{{2}}:\d{{2}}\sGMT[+-]\d{{4}}"
)
DATE_JS_TAIL: Final = r"(?:\s\([^)]+\))?"
# Python's ``repr`` of a datetime; Sentry's dots are "any character" and ``.*?`` stops at the
# first ``)`` (it cannot cross a line break).
DATE_PY_REPR: Final = r"datetime.datetime\(.*?\)"
# Sentry's date forms in its order: the ones before the JavaScript form, then after it.
_DATES_BEFORE_JS: Final = (
    # RFC 822 / 1123 (and with numeric zone)
    rf"{_WEEKDAY},\s\d{{1,2}}\s{_MONTH}\s\d{{2,4}}\s\d{{1,2}}:\d{{1,2}}(?::\d{{1,2}})?"
    rf"\s(?:[-+]\d{{2}}[0-5]\d|{_ZONE_NAME})",
    # "Mon Jan 02, 1999", "Jan 02, 1999"
    rf"(?:{_WEEKDAY}\s)?{_MONTH}\s[0-3]\d,\s\d{{2,4}}",
    # RFC 850
    rf"{_LONG_WEEKDAY},\s\d{{2}}-{_MONTH}-\d{{2}}\s\d{{2}}:\d{{2}}:\d{{2}}\s{_ZONE_NAME}",
    # RFC 3339 (with nanoseconds)
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z?(?:[+-]?\d{2}:\d{2})?",
)
_DATES_AFTER_JS: Final = (
    # date-times with a zone offset: fraction, seconds, minutes only
    rf"{_DATETIME_HEAD}:?[0-5]\d\.\d+{_OFFSET}",
    rf"{_DATETIME_HEAD}:?[0-5]\d{_OFFSET}",
    rf"{_DATETIME_HEAD}{_OFFSET}",
    # the same without offset
    rf"{_DATETIME_HEAD}:?[0-5]\d\.\d+",
    rf"{_DATETIME_HEAD}:?[0-5]\d",
    _DATETIME_HEAD,
    # "kitchen" clock times, 12-hour (optional AM/PM) and 24-hour
    r"(?<!\d)(?:[1-9]|1[0-2]):[0-5]\d(?::[0-5]\d)?(?![\d:])(?:\s?[aApP][Mm])?",
    r"(?<!\d)(?:0?\d|1\d|2[0-3]):[0-5]\d(?::[0-5]\d)?(?![\d:])",
    # date, time
    r"\d{4}-[01]\d-[0-3]\d",
    r"[0-2]\d:[0-5]\d:[0-5]\d",
    # older forms: "Mon Jan 2 15:04:05 2006", "Mon, 02 Jan 2006 15:04[:05] -0700"
    rf"\b(?:{_WEEKDAY}\s+)?{_MONTH}\s+\d{{1,2}}\s+\d{{2}}:\d{{2}}:\d{{2}}\s+\d{{4}}",
    rf"\b(?:{_WEEKDAY},\s+)?(?:0[1-9]|[1-2]?\d|3[01])\s+{_MONTH}\s+(?:19\d{{2}}|[2-9]\d{{3}})"
    rf"\s+(?:2[0-3]|[0-1]\d):[0-5]\d(?::(?:60|[0-5]\d))?\s+(?:[-+]\d{{2}}[0-5]\d|{_ZONE_NAME})",
)


def _date_pattern(js_form: str, *, with_py_repr: bool) -> str:
    forms = [*_DATES_BEFORE_JS, js_form, *_DATES_AFTER_JS]
    if with_py_repr:
        forms.append(DATE_PY_REPR)
    return "|".join(forms)


DATE: Final = _date_pattern(DATE_JS + DATE_JS_TAIL, with_py_repr=True)

# Milliseconds need a boundary before (not after); the seconds form after (not before).
DURATION_MS: Final = r"\b\d+ms"
DURATION_S: Final = r"\d+(?:\.\d+)?s\b"
DURATION: Final = f"{DURATION_MS}|{DURATION_S}"

# OpenStack Swift transaction ids: "tx", 21 hex, "-", 10 hex, any suffix.
SWIFT_TXN_ID: Final = r"\btx[0-9a-f]{21}-[0-9a-f]{10}\S*"
# 0x-prefixed hex of any length; else 4-6 digits mixing letters and digits, or 8-128 digits,
# all lower or all upper case, optionally negative (a dash not joining two words).
HEX: Final = (
    r"\b0[xX][0-9a-fA-F]+\b"
    r"|(?:\b|(?<!\w)-)(?:(?=[a-f]*[0-9])(?=[0-9]*[a-f])[0-9a-f]{4,6}"
    r"|(?=[A-F]*[0-9])(?=[0-9]*[A-F])[0-9A-F]{4,6}|[0-9a-f]{8,128}|[0-9A-F]{8,128})\b"
)
# Seven lower-case hex digits with at least one letter and one digit.
GIT_SHA: Final = r"\b(?=[a-f]*[0-9])(?=[0-9]*[a-f])[0-9a-f]{7}\b"
FLOAT: Final = r"-\d+\.\d+\b|\b\d+\.\d+\b"
# Up to 7 digits (8 and more are hex); the minus only when the dash does not join two words.
INT: Final = r"(?:\b|(?<!\w)-)\d{1,7}\b"
# Only the value of a ``key=value`` pair.
QUOTED_STR: Final = r"(?<==)(?:'[^']+'|\"[^\"]+\")"
BOOL: Final = r"(?<==)(?:True|true|False|false)"

#: Sentry's default parameterization table, in its order (the first match at a position wins).
SENTRY_PATTERNS: Final[tuple[tuple[str, str], ...]] = (
    ("email", EMAIL),
    ("url", URL),
    ("hostname", HOSTNAME),
    ("ip", IP),
    ("traceparent", TRACEPARENT),
    ("uuid", UUID),
    ("sha1", SHA1),
    ("md5", MD5),
    ("date", DATE),
    ("duration", DURATION),
    ("swift_txn_id", SWIFT_TXN_ID),
    ("hex", HEX),
    ("git_sha", GIT_SHA),
    ("float", FLOAT),
    ("int", INT),
    ("quoted_str", QUOTED_STR),
    ("bool", BOOL),
)
_PRIORITY: Final = {name: index for index, (name, _) in enumerate(SENTRY_PATTERNS)}

# --- the cheap alternation: every pattern whose work per position is bounded -------------------

_CHEAP_PATTERNS: Final = {
    **dict(SENTRY_PATTERNS),
    # The JavaScript date form is named so that its tail can be added; the repr form is found
    # by _expensive_sources; so are email, hostname and the seconds form of a duration.
    "date": _date_pattern(f"(?P<date_js>{DATE_JS})", with_py_repr=False),
    "duration": DURATION_MS,
}
_EXPENSIVE: Final = ("email", "hostname")
# Necessary conditions for a cheap pattern to start at a position, checked first so that the
# engine rejects most positions after one or two character tests instead of trying ~50
# alternatives: (1) the character is one a cheap pattern can start with: a digit, a hex
# letter, "h"/"t"/"w" (URL schemes, "tx", "true"), the capitals starting weekday and month
# names, ":" (IPv6), "-" (negative numbers), a quote (quoted_str); (2) the position starts a
# word or is no word character, unless the character can start a date form inside a word (a
# digit, a weekday/month capital) or an IPv6 address after a non-ASCII word character.
_CAN_START: Final = (
    r"(?=[\da-fA-FhtwSMTWJONDF:'\"-])"
    r"(?=\b|\W|[\dSMTWFJAOND]|(?<=[^\W0-9a-zA-Z_]))"
)
_CHEAP_RE: Final = re.compile(_CAN_START + "(?:" + "|".join(
    f"(?P<{name}>{pattern})" for name, pattern in _CHEAP_PATTERNS.items()
    if name not in _EXPENSIVE) + ")")

# --- precomputed matches of the expensive patterns ---------------------------------------------

# Whole runs (the look-behind: each run is tried from its first character only, so a run that
# fails is given up once) that are followed by what the pattern needs after them.
_LOCAL_PART_BEFORE_AT: Final = re.compile(
    f"(?<![{_LOCAL_PART_CHARS}])[{_LOCAL_PART_CHARS}]+(?=@[a-zA-Z0-9-])")
_AT_DOMAIN: Final = re.compile(f"@{_DOMAIN}")
_LABEL_RUN: Final = re.compile(r"[a-zA-Z0-9-]+")
# Whole labels followed by a dot (the look-behind makes each run start at its beginning, so a
# run without a dot is given up once, not retried from each of its characters).
_LABEL_BEFORE_DOT: Final = re.compile(r"(?<![a-zA-Z0-9-])[a-zA-Z0-9-]+(?=\.)")
_WORD_RUN: Final = re.compile(r"\w+")
_WORD_CHAR: Final = re.compile(r"\w")
_SPACE_CHAR: Final = re.compile(r"\s")
_DIGITS_BEFORE_S: Final = re.compile(r"(?<!\d)\d+(?=(?:\.\d+)?s\b)")
_DURATION_S_END: Final = re.compile(r"(?:\.\d+)?s\b")
_PY_REPR_START: Final = re.compile(r"(?=datetime.datetime\()")
_PY_REPR_HEAD_CHARS: Final = len("datetime.datetime(")


def _is_word(text: str, index: int) -> bool:
    return 0 <= index < len(text) and _WORD_CHAR.match(text, index) is not None


@dataclass
class _Spans:
    """Where one expensive pattern matches: ``ends[i]`` for every start in
    ``[firsts[i], lasts[i])`` (a run, or a single start), sorted; queried at rising positions."""

    firsts: list[int] = field(default_factory=list)
    lasts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    _next: int = 0

    def add(self, first: int, last: int, end: int) -> None:
        self.firsts.append(first)
        self.lasts.append(last)
        self.ends.append(end)

    def at_or_after(self, pos: int) -> tuple[int, int] | None:
        """(start, end) of the leftmost match starting at or after ``pos``."""
        while self._next < len(self.lasts) and self.lasts[self._next] <= pos:
            self._next += 1
        if self._next == len(self.lasts):
            return None
        return max(pos, self.firsts[self._next]), self.ends[self._next]


def _email_spans(text: str) -> _Spans:
    """From any position of a local-part run, email matches iff ``@`` and a domain follow the
    run (the local part cannot stop early: ``@`` is not a local-part character)."""
    spans = _Spans()
    if "@" not in text:
        return spans
    for run in _LOCAL_PART_BEFORE_AT.finditer(text):
        domain = _AT_DOMAIN.match(text, run.end())
        if domain is not None:
            spans.add(run.start(), run.end(), domain.end())
    return spans


def _chain_end(text: str, at: int, memo: dict[int, int | None]) -> int | None:
    """End of the hostname whose labels so far end just before ``at``: a TLD there (the whole
    word, so that ``\\b`` follows), else one more label of at most 63 characters and its dot."""
    walked: list[int] = []
    end: int | None = None
    while True:
        if at in memo:
            end = memo[at]
            break
        word = _WORD_RUN.match(text, at)
        if word is not None and word.group() in _TLD_SET:
            end = word.end()
            break
        label = _LABEL_RUN.match(text, at)
        if (label is None or label.end() - at > _MAX_LABEL_CHARS
                or not text.startswith(".", label.end())):
            break
        walked.append(at)
        at = label.end() + 1
    for position in walked:
        memo[position] = end
    return end


def _hostname_starts(text: str, first: int, last: int) -> Iterator[int]:
    """Positions in the label ``text[first:last]`` (ASCII letters, digits, ``-``) with a word
    boundary before them: inside the label only next to a ``-``."""
    if _is_word(text, first - 1) != (text[first] != "-"):
        yield first
    if "-" in text[first:last]:
        for start in range(first + 1, last):
            if (text[start - 1] == "-") != (text[start] == "-"):
                yield start


def _hostname_spans(text: str) -> _Spans:
    """A hostname starts at a word boundary in a label (of at most 63 characters up to its
    dot); where it ends depends only on the chain after that dot."""
    spans = _Spans()
    if "." not in text:
        return spans
    memo: dict[int, int | None] = {}
    for label in _LABEL_BEFORE_DOT.finditer(text):
        end = _chain_end(text, label.end() + 1, memo)
        if end is not None:
            first = max(label.start(), label.end() - _MAX_LABEL_CHARS)
            for start in _hostname_starts(text, first, label.end()):
                spans.add(start, start + 1, end)
    return spans


def _duration_s_spans(text: str) -> _Spans:
    """``\\d+(\\.\\d+)?s\\b`` from any digit of a run: decided by what follows the run."""
    spans = _Spans()
    if "s" not in text:
        return spans
    for run in _DIGITS_BEFORE_S.finditer(text):
        tail = _DURATION_S_END.match(text, run.end())
        if tail is not None:
            spans.add(run.start(), run.end(), tail.end())
    return spans


class _NextChar:
    """``text.find(char, at)`` for rising ``at``, each character of ``text`` read once."""

    def __init__(self, text: str, char: str) -> None:
        self._text = text
        self._char = char
        self._found = -2

    def at_or_after(self, at: int) -> int:
        if self._found != -1 and self._found < at:
            self._found = self._text.find(self._char, at)
        return self._found


def _py_repr_spans(text: str, close: _NextChar) -> _Spans:
    spans = _Spans()
    if "datetime" not in text:
        return spans
    newline = _NextChar(text, "\n")
    for head in _PY_REPR_START.finditer(text):
        after = head.start() + _PY_REPR_HEAD_CHARS
        end = close.at_or_after(after)
        line_end = newline.at_or_after(after)
        if end != -1 and (line_end == -1 or end < line_end):
            spans.add(head.start(), head.start() + 1, end + 1)
    return spans


# A match found at the current position or after: (start, rank, end, name); rank is (Sentry's
# pattern order, order of the alternative inside that pattern).
_Candidate = tuple[int, tuple[int, int], int, str]


def _expensive_sources(text: str) -> list[tuple[_Spans, tuple[int, int], str]]:
    sources = (
        (_email_spans(text), (_PRIORITY["email"], 0), "email"),
        (_hostname_spans(text), (_PRIORITY["hostname"], 0), "hostname"),
        # After every other date form, and after the milliseconds duration form.
        (_py_repr_spans(text, _NextChar(text, ")")), (_PRIORITY["date"], 1), "date"),
        (_duration_s_spans(text), (_PRIORITY["duration"], 1), "duration"),
    )
    return [source for source in sources if source[0].ends]


class _JsDateEnd:
    """Where the JavaScript date form ends with its optional ``(zone name)`` tail."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._close = _NextChar(text, ")")

    def __call__(self, end: int) -> int:
        text = self._text
        if _SPACE_CHAR.match(text, end) is None or not text.startswith("(", end + 1):
            return end
        close = self._close.at_or_after(end + 2)
        return close + 1 if close > end + 2 else end


def _cheap_candidate(text: str, pos: int, js_date_end: _JsDateEnd) -> _Candidate | None:
    match = _CHEAP_RE.search(text, pos)
    if match is None:
        return None
    name = match.lastgroup or ""
    end = match.end()
    if name == "date" and match.group("date_js") is not None:
        end = js_date_end(end)
    return match.start(), (_PRIORITY[name], 0), end, name


def parameterize(text: str) -> str:
    """Replace variable-looking tokens by ``<name>`` placeholders, as Sentry's table does."""
    js_date_end = _JsDateEnd(text)
    cheap = _cheap_candidate(text, 0, js_date_end)
    sources = _expensive_sources(text)
    pending = [spans.at_or_after(0) for spans, _, _ in sources]
    pieces: list[str] = []
    pos = done = 0
    while True:
        if cheap is not None and cheap[0] < pos:
            cheap = _cheap_candidate(text, pos, js_date_end)
        best = cheap
        for index, (spans, rank, name) in enumerate(sources):
            found = pending[index]
            if found is not None and found[0] < pos:
                found = pending[index] = spans.at_or_after(pos)
            if found is not None and (best is None or (found[0], rank) < best[:2]):
                best = (found[0], rank, found[1], name)
        if best is None:
            break
        pieces += (text[done:best[0]], f"<{best[3]}>")
        pos = done = best[2]
    pieces.append(text[done:])
    return "".join(pieces)


def normalize_message_for_grouping(message: str) -> str:
    """Both steps: trim to two non-blank lines, then parameterize."""
    return parameterize(trim_message_lines(message))
