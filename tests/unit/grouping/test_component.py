"""Component tree and hash function (spec §6.3)."""

from __future__ import annotations

import hashlib

from events.grouping.component import Variant, component, hash_from_values


def test_hash_is_md5_of_concatenation_without_separators() -> None:
    assert hash_from_values(["ab", "c"]) == hash_from_values(["a", "bc"])
    assert hash_from_values(["ab", "c"]) == hashlib.md5(b"abc").hexdigest()


def test_md5_of_nothing_is_the_fallback_hash() -> None:
    assert hash_from_values([]) == "d41d8cd98f00b204e9800998ecf8427e"


def test_only_contributing_components_are_hashed_depth_first() -> None:
    tree = component("root", [
        component("a", ["1", component("b", ["2"])]),
        component("c", ["3"], contributes=False, hint="ignored"),
        component("d", ["4"]),
    ])
    assert list(tree.iter_values()) == ["1", "2", "4"]
    assert tree.hash() == hashlib.md5(b"124").hexdigest()


def test_contributes_defaults_to_having_a_value_or_contributing_child() -> None:
    assert component("empty").contributes is False
    assert component("leaf", ["x"]).contributes is True
    assert component("parent", [component("empty")]).contributes is False


def test_non_contributing_component_has_no_hash_and_keeps_hint() -> None:
    tree = component("x", ["v"]).excluded("first reason").excluded("second reason")
    assert tree.hash() is None
    assert tree.hint == "first reason"


def test_to_dict_shape() -> None:
    tree = component("frame", [component("function", ["f"])])
    assert tree.to_dict() == {
        "id": "frame", "contributes": True, "hint": None,
        "values": [{"id": "function", "contributes": True, "hint": None, "values": ["f"]}],
    }


def test_lone_surrogate_is_hashed_not_raised() -> None:
    assert len(hash_from_values(["\ud800"])) == 32


def test_variant_from_component() -> None:
    variant = Variant.from_component("app", component("app", ["x"]))
    assert variant.contributes
    assert variant.to_json_dict()["hash"] == hashlib.md5(b"x").hexdigest()
