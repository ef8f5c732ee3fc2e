"""Message / exception-value normalisation (spec §6.6)."""

from __future__ import annotations

import pytest

from events.grouping.parameterize import (
    normalize_message_for_grouping,
    parameterize,
    trim_message_lines,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The §6.6 examples table.
        ("User 42 failed to log in from 10.0.0.1", "User <int> failed to log in from <ip>"),
        ("Timeout after 30s connecting to 10.0.0.5", "Timeout after <duration> connecting to <ip>"),
        (
            "Order 3f2504e0-4f89-11d3-9a0c-0305e82c3301 not found (id=17, retry=true, name='bob')",
            "Order <uuid> not found (id=<int>, retry=<bool>, name=<quoted_str>)",
        ),
        (
            "Request to https://api.example.com/v1/x?id=9 failed at 2024-05-01T10:00:00Z",
            "Request to <url> failed at <date>",
        ),
        ("ptr 0xdeadbeef", "ptr <hex>"),
    ],
)
def test_spec_examples(text: str, expected: str) -> None:
    assert normalize_message_for_grouping(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail bob.smith+x@example.co.uk now", "mail <email> now"),
        ("open wss://feed.example.com/live", "open <url>"),
        ("resolve db.internal.example.com failed", "resolve <hostname> failed"),
        ("resolve API.EXAMPLE.COM failed", "resolve <hostname> failed"),
        ("peer 2001:db8::8a2e:370:7334 gone", "peer <ip> gone"),
        ("peer fe80::1ff:fe23:4567:890a%eth2 gone", "peer <ip> gone"),
        ("peer ::ffff:192.0.2.128 gone", "peer <ip> gone"),
        ("peer ::1 gone", "peer <ip> gone"),
        ("commit da39a3ee5e6b4b0d3255bfef95601890afd80709", "commit <sha1>"),
        ("etag d41d8cd98f00b204e9800998ecf8427e", "etag <md5>"),
        ("at Mon, 02 Jan 2006 15:04:05 MST", "at <date>"),
        ("at Monday, 02-Jan-06 15:04:05 MST", "at <date>"),
        ("at Mon Jan 02, 1999", "at <date>"),
        ("at 2024-05-01 10:00:00", "at <date>"),
        ("at 2024-05-01T10:00:00.123+02:00", "at <date>"),
        ("on 2024-05-01", "on <date>"),
        ("at 23:59:59", "at <date>"),
        ("at 3:04 PM", "at <date>"),
        ("at datetime.datetime(2024, 5, 1, 10, 0)", "at <date>"),
        ("took 250ms", "took <duration>"),
        ("ratio -1.5 and 2.75", "ratio <float> and <float>"),
        ("delta -7", "delta <int>"),
        ("flag=False other=True", "flag=<bool> other=<bool>"),
        ('key="quoted value"', "key=<quoted_str>"),
    ],
)
def test_each_placeholder(text: str, expected: str) -> None:
    assert parameterize(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "user_42 not found",  # word-bounded ints only (§6.6)
        "logger.info user.id self.app script.py",  # code tokens are not hostnames
        "ActiveRecord::RecordNotFound std::vector",  # scope operators are not IPv6
        "true and 'quoted' without equals",  # quoted_str / bool only after "="
        "v2 handler",
    ],
)
def test_untouched(text: str) -> None:
    assert parameterize(text) == text


def test_first_alternative_wins_email_before_hostname() -> None:
    assert parameterize("ops@example.com") == "<email>"


def test_two_non_blank_lines_kept_and_ellipsis_appended() -> None:
    assert trim_message_lines("first\n\n   \nsecond\nthird") == "first\nsecond..."


def test_short_message_unchanged() -> None:
    assert trim_message_lines("one\ntwo") == "one\ntwo"
