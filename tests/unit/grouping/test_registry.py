"""The grouping registry and ``GroupingResult`` contract."""

from __future__ import annotations

import pytest

from events.grouping import (
    DEFAULT_GROUPING_CONFIG,
    GROUPING_CONFIGS,
    VARIANT_ORDER,
    GroupingRules,
    group_hashes_for_event,
)
from tests.unit.grouping.helpers import normalize

PYTHON_EVENT = {
    "platform": "python",
    "exception": {"values": [{"type": "KeyError", "value": "'x'", "stacktrace": {"frames": [
        {"module": "lib", "function": "get", "in_app": False},
        {"module": "app", "function": "main", "in_app": True},
    ]}}]},
}


def test_default_config_is_the_newest_all_matching_sentry_2023() -> None:
    assert DEFAULT_GROUPING_CONFIG == "v3" == list(GROUPING_CONFIGS)[-1]
    for config in GROUPING_CONFIGS.values():
        assert config.sentry_config == "newstyle:2023-01-11"
    assert group_hashes_for_event(normalize(PYTHON_EVENT)).config == "v3"


@pytest.mark.parametrize("config", ["v1", "v2"])
def test_older_versions_stay_registered_and_selectable(config: str) -> None:
    assert group_hashes_for_event(normalize(PYTHON_EVENT), config=config).config == config


def test_unknown_config_names_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'v9' is unknown; known configs: v1, v2, v3"):
        group_hashes_for_event({}, config="v9")


def test_variant_order_puts_built_in_fingerprint_next_to_custom() -> None:
    order = list(VARIANT_ORDER)
    assert order.index("built-in-fingerprint") == order.index("custom-fingerprint") + 1


@pytest.mark.parametrize("config", ["v1", "v2", "v3"])
def test_app_hash_is_primary_system_second(config: str) -> None:
    result = group_hashes_for_event(normalize(PYTHON_EVENT), config)
    assert result.config == config
    assert result.hashes == (result.variants["app"].hash, result.variants["system"].hash)
    assert result.primary_hash == result.variants["app"].hash


def test_to_json_dict_shape() -> None:
    data = group_hashes_for_event(normalize(PYTHON_EVENT), config="v1").to_json_dict()
    assert data["config"] == "v1"
    assert list(data["variants"]) == ["app", "system"]
    app = data["variants"]["app"]
    assert set(app) == {"hash", "contributes", "component"}
    assert app["contributes"] is True
    assert app["component"]["id"] == "app"
    assert data["hashes"] == [app["hash"], data["variants"]["system"]["hash"]]


def test_empty_rules_accepted_real_rules_refused() -> None:
    event = normalize(PYTHON_EVENT)
    assert (group_hashes_for_event(event, rules=GroupingRules()).hashes
            == group_hashes_for_event(event).hashes)
    with pytest.raises(NotImplementedError, match="not implemented yet"):
        group_hashes_for_event(event, rules=GroupingRules(fingerprint_rules=("type:X -> y",)))


def test_non_mapping_event_gets_fallback_hash() -> None:
    result = group_hashes_for_event([], config="v1")  # type: ignore[arg-type]
    assert result.hashes == ("d41d8cd98f00b204e9800998ecf8427e",)


def test_cli_grouping_hash_defaults_to_the_default_config() -> None:
    from cluster.cli import build_parser

    args = build_parser().parse_args(["grouping", "hash"])
    assert args.config == DEFAULT_GROUPING_CONFIG
