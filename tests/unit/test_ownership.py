"""Ownership rules (events/ownership.py): Sentry's ``type:pattern owner…`` lines parsed,
and matched against what a normalized event carries. Pure."""

from __future__ import annotations

import pytest

from events.ownership import (
    EventFacts,
    Owner,
    OwnershipSyntaxError,
    Rule,
    event_facts,
    issue_owner,
    parse_ownership,
)

RULES = parse_ownership("""
path:*  #everyone
# frontend code
path:src/app/*.tsx   #frontend
module:shop.payments.*  ada@example.com #payments
url:https://shop.example.com/checkout/*  bob
tags.sku_class:enterprise #enterprise
""")


def event(frames: list[dict[str, str]], **extra: object) -> dict[str, object]:
    return {"exception": {"values": [{"type": "E", "stacktrace": {"frames": frames}}]},
            **extra}


def test_rules_parse_to_types_patterns_and_owners_skipping_comments() -> None:
    assert RULES.rules[1:3] == (
        Rule("path", "src/app/*.tsx", (Owner("team", "frontend"),)),
        Rule("module", "shop.payments.*", (Owner("user", "ada@example.com"),
                                           Owner("team", "payments"))))
    assert RULES.rules[4] == Rule("tag", "enterprise", (Owner("team", "enterprise"),),
                                  "sku_class")
    assert Owner("user", "bob") in RULES.owners


@pytest.mark.parametrize(("facts", "owner"), [
    (event_facts(event([{"abs_path": "/srv/www/SRC/app/Cart.tsx"}])), "#frontend"),
    (event_facts(event([{"filename": "x.py", "module": "shop.payments.card"}])),
     "ada@example.com"),
    (event_facts(event([], request={"url": "https://shop.example.com/checkout/42"})), "bob"),
    (event_facts(event([], tags=[["sku_class", "enterprise"]])), "#enterprise"),
    (event_facts(event([{"filename": "lib/other.py"}])), "#everyone"),
])
def test_the_last_matching_rule_names_the_owner(facts: EventFacts, owner: str) -> None:
    found = issue_owner(RULES, facts)
    assert found is not None and found.text == owner


def test_an_event_no_rule_matches_has_no_owner() -> None:
    rules = parse_ownership("path:src/* #frontend\ntags.browser:Chrome* #web")
    assert issue_owner(rules, event_facts(event([{"filename": "lib/x.py"}],
                                                tags=[["browser", "Firefox 120"]]))) is None
    assert issue_owner(rules, event_facts({})) is None
    # Globs, not regexes: a dot is a dot.
    assert issue_owner(parse_ownership("module:a.b #t"),
                       event_facts(event([{"module": "axb"}]))) is None


@pytest.mark.parametrize(("raw", "says"), [
    ("path:src/* ", "line 1: the rule 'path:src/*' names no owner"),
    ("\n\nsrc/app #frontend", "line 3: expected type:pattern owner"),
    ("file:src/* #x", "line 1: unknown rule type 'file'"),
    ("path:src/* #", "line 1: '#' must be followed by a team slug"),
    ("x" * 100_001, "raw: at most 100000 characters"),
])
def test_a_bad_rule_is_refused_naming_its_line(raw: str, says: str) -> None:
    with pytest.raises(OwnershipSyntaxError) as caught:
        parse_ownership(raw)
    assert says in str(caught.value)
