"""Grouping v3's message parameterization (events/grouping/parameterize_v3.py).

Three kinds of test: placeholders on messages written here; a property test that the
linear-time scan gives exactly what Sentry's table gives as ONE ``re.sub`` over its joined
alternation (the reference, quadratic on hostile input, fine on short strings); and hostile
10 KB messages that must finish (the reference needs seconds to minutes on them).
"""

from __future__ import annotations

import re
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.grouping.parameterize_v3 import (
    SENTRY_PATTERNS,
    normalize_message_for_grouping,
    parameterize,
)

REFERENCE = re.compile("|".join(f"(?P<{name}>{pattern})" for name, pattern in SENTRY_PATTERNS))


def reference_parameterize(text: str) -> str:
    """Sentry's way: one alternation, first alternative wins at each position."""
    return REFERENCE.sub(lambda match: f"<{match.lastgroup}>", text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail to ops.team+alerts@shop-example.co.uk bounced",
         "mail to <email> bounced"),
        ("GET wss://feed.example.org/live?since=5 closed", "GET <url> closed"),
        ("lookup of db2.west.example.com timed out", "lookup of <hostname> timed out"),
        # Sentry's lazy label repetition stops at the first TLD word ("eu" before "-west").
        ("lookup of db2.eu-west.example.com", "lookup of <hostname><hostname>"),
        ("peer 192.168.10.77 reset, then 2001:db8::8329 too", "peer <ip> reset, then <ip> too"),
        ("traceparent 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 lost",
         "traceparent <traceparent> lost"),
        ("x-ray 1-5759e988-bd862e3fe1be46a994272793 lost", "x-ray <traceparent> lost"),
        ("session 6f1c8a2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b expired", "session <uuid> expired"),
        ("blob 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12 missing", "blob <sha1> missing"),
        ("etag 9e107d9d372bb6826bd81d3542a419d6 stale", "etag <md5> stale"),
        ("deadline Tue, 07 May 2024 08:30:00 GMT passed", "deadline <date> passed"),
        ("since 2024-05-07 08:30:00.123+02:00", "since <date>"),
        ("since 20240507T083000Z", "since <date>"),
        ("at Tue May 07 2024 08:30:00 GMT+0200 (Central European Summer Time)!", "at <date>!"),
        ("at 8:30 pm and at 20:30", "at <date> and at <date>"),
        ("built datetime.datetime(2024, 5, 7, 8, 30) here", "built <date> here"),
        ("gc took 120ms, request 2.5s", "gc took <duration>, request <duration>"),
        ("swift tx8f2d9a4b1c6e3f7a0b5d2-0066f1e2a3-eu1 failed", "swift <swift_txn_id> failed"),
        ("fault at 0x7ffd5a3c and 7FFD5A3C", "fault at <hex> and <hex>"),
        ("chunk a1b2 and b0b0cafe", "chunk <hex> and <hex>"),
        ("deployed 3e4f1a9 to prod", "deployed <git_sha> to prod"),
        ("load 0.75 over -2.5", "load <float> over <float>"),
        ("retry 3 of 5, code -42", "retry <int> of <int>, code <int>"),
        ("user_42 and v2", "user_42 and v2"),
        ("state='locked' owner=\"bob\"", "state=<quoted_str> owner=<quoted_str>"),
        ("enabled=true debug=False", "enabled=<bool> debug=<bool>"),
        ("true and 'quoted' stay", "true and 'quoted' stay"),
        ("Option::unwrap() and std::vector", "Option::unwrap() and std::vector"),
        ("script.py and README.md", "script.py and README.md"),
        # Sentry's TLD list includes info and id, so these code tokens are hostnames.
        ("logger.info user.id", "<hostname> <hostname>"),
    ],
)
def test_each_placeholder(text: str, expected: str) -> None:
    assert parameterize(text) == expected
    assert reference_parameterize(text) == expected


def test_messages_differing_only_in_ids_ips_and_dates_normalize_alike() -> None:
    first = "Order 81723 of 2024-05-07T08:30:00Z from 10.1.2.3 rejected"
    second = "Order 99 of 2025-11-30T23:59:59Z from 172.16.0.9 rejected"
    assert normalize_message_for_grouping(first) == normalize_message_for_grouping(second)


def test_only_two_non_blank_lines_are_kept() -> None:
    assert normalize_message_for_grouping("job 7 failed\n\n  \ntraceback\nline 3") == (
        "job <int> failed\ntraceback...")


_TOKENS = st.sampled_from([
    "a", "f", "x", "s", "T", "Z", "0", "1", "9", "00", "12", "2024", "-", ".", ":", "::", "@",
    "=", "'", '"', " ", "\n", "(", ")", "_", "%", "/", "+", "ms", "s", "com", "co.uk", "example",
    "http://", "wss://", "ftp://", "www.", "datetime.datetime(", "GMT+0200", "Mon", "May", "Jan",
    "07", "08:30", "08:30:00", "PM", "fe80", "ffff", "0x", "dead", "beef", "b0", "tx",
    "e9\u0301", "\u0663", "\u00e9", "true", "False", "1.5", "-7",
])


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_TOKENS, max_size=25).map("".join))
def test_scan_equals_sentrys_single_alternation(text: str) -> None:
    assert parameterize(text) == reference_parameterize(text)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=60))
def test_scan_equals_sentrys_single_alternation_on_any_text(text: str) -> None:
    assert parameterize(text) == reference_parameterize(text)


MESSAGE_BYTES = 10_000

# Each defeats one of the patterns that rescan a run from every position of it (module
# docstring of parameterize_v3): local-part runs (email), dotted chains and hyphenated labels
# (hostname), digit runs (duration), unclosed reprs and JavaScript dates, plus inputs where
# every position starts some bounded pattern (IPv6-like, ints, quotes).
def _hostile(unit: str) -> str:
    return (unit * (MESSAGE_BYTES // len(unit) + 1))[:MESSAGE_BYTES]


HOSTILE = {
    "local_part_run": _hostile("a"),
    "local_part_run_of_ints": _hostile("1+"),
    "dotted_chain": _hostile("a."),
    "long_labels": _hostile("b" * 63 + "."),
    "hyphenated_labels": _hostile("a-")[:-2] + ".x",
    "digit_run": _hostile("1"),
    "decimal_runs": _hostile("1."),
    "unclosed_reprs": _hostile("datetime.datetime("),
    "unclosed_js_dates": _hostile("Tue May 07 2024 08:30:00 GMT+0200 ("),
    "ipv6_like": _hostile("1:1:1:1:1:1:1:1x "),
    "quotes": "='" + _hostile('="')[2:],
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_10kb_message_finishes(name: str) -> None:
    """Proves termination, measures nothing: the scan runs in a thread and the test only asks
    whether it ended within a bound far above its cost (tens of milliseconds; the reference
    takes seconds on several of these, e.g. ~7 s on the dotted chain)."""
    text = HOSTILE[name]
    assert len(text) == MESSAGE_BYTES
    results: list[str] = []
    worker = threading.Thread(target=lambda: results.append(parameterize(text)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), f"{name}: parameterize did not finish"
    assert results and results[0]
