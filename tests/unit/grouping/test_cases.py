"""Data-driven grouping cases: one JSON event per rule in ``cases/`` (ids from file names).

Each file holds the event plus ``_expected_values`` (the contributing strings of each variant,
worked out by hand from the rule in ``_rule``) and ``_expected`` (md5 of those strings per
variant, ``null`` for a non-contributing variant, and the ordered hash list), both for the
grouping config ``_config`` (default ``"v1"``). ``_other_configs`` maps another config to its
own ``_expected_values``/``_expected`` where it groups the event differently; every config not
listed there must give the ``_config`` result. The test checks that the hand-listed strings
really hash to the expected value and that the code produces both the same strings and the same
hashes, so a reviewer can see why each hash is what it is.

``_added_after_relay`` holds interfaces set on the event after Relay's store normalization:
sentry-relay's ``StoreNormalizer`` drops the ``hpkp``, ``expectct`` and ``expectstaple``
interfaces of an event sent to the store endpoint (``invalid_attribute``); Relay's security
endpoint sets them itself, after that step.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from events.grouping import GROUPING_CONFIGS, group_hashes_for_event
from tests.unit.grouping.helpers import CASES_DIR, normalize

CASES = sorted(CASES_DIR.glob("*.json"))
CONFIGS = sorted(GROUPING_CONFIGS)


def _load(path: Path) -> dict[str, Any]:
    case: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return case


def _expectation(case: dict[str, Any], config: str) -> dict[str, Any]:
    """``{"_expected_values": ..., "_expected": ...}`` of ``case`` under ``config``."""
    expectation: dict[str, Any] = case.get("_other_configs", {}).get(config, case)
    return expectation


def test_cases_folder_is_not_empty() -> None:
    assert len(CASES) >= 30


def test_case_configs_are_known() -> None:
    for path in CASES:
        case = _load(path)
        assert case.get("_config", "v1") in GROUPING_CONFIGS, path.name
        assert set(case.get("_other_configs", {})) <= set(GROUPING_CONFIGS), path.name


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_grouping_case(path: Path, config: str) -> None:
    case = _load(path)
    event = normalize({k: v for k, v in case.items() if not k.startswith("_")})
    event.update(case.get("_added_after_relay", {}))
    result = group_hashes_for_event(event, config)
    expectation = _expectation(case, config)
    expected = expectation["_expected"]

    for name, values in expectation["_expected_values"].items():
        by_hand = hashlib.md5("".join(values).encode("utf-8")).hexdigest()
        assert by_hand == expected["variants"][name], f"{name}: _expected_values vs _expected"
        assert list(result.variants[name].component.iter_values()) == values, name

    assert {name: v.hash for name, v in result.variants.items()} == expected["variants"]
    assert list(result.hashes) == expected["hashes"]
    assert result.primary_hash == expected["hashes"][0]


@pytest.mark.parametrize(
    ("case", "variant", "expected_hash"),
    [
        ("spec_ex1_python_exception_in_app_frames", "app", "621465eb0e3ab393eecfe5ac899b9683"),
        ("spec_ex1_python_exception_in_app_frames", "system", "738d4fe3906c58d71b48b029777077ba"),
        ("spec_ex2_browser_typeerror_url_frames", "app", "799a1101ec51e0207cb39ce9f8fd3b08"),
        ("spec_ex3_message_groups_by_template", "default", "5f79fc4f14f750d958d996c487e1878f"),
        (
            "spec_ex3_formatted_message_is_parameterized",
            "default",
            "8b8168e10d8371ecf05b4a5a0d5a4103",
        ),
        ("spec_ex4_exception_without_stacktrace", "app", "e8c6732c939093c9021b9ccf854c5cef"),
        (
            "spec_ex5_custom_fingerprint_replaces_variants",
            "custom-fingerprint",
            "d4172cc6330b1096a8296a23c9a88e5d",
        ),
        ("spec_ex5_default_fingerprint_salts_variants", "app", "5966a3591e2a66ff59c5a21cfea0d923"),
    ],
)
@pytest.mark.parametrize("config", CONFIGS)
def test_spec_worked_example_hashes(case: str, variant: str, expected_hash: str,
                                    config: str) -> None:
    """The §6.9 hashes, pinned literally (independent of the generated case files); no
    built-in rule applies to these events, so every config gives them."""
    event = normalize(
        {k: v for k, v in _load(CASES_DIR / f"{case}.json").items() if not k.startswith("_")}
    )
    assert group_hashes_for_event(event, config).variants[variant].hash == expected_hash
