"""The head processes a one-node instance leaves out of its Ray (cluster/ray_head.py),
without starting Ray: which ``Node`` methods are replaced, and that they come back."""

from __future__ import annotations

import pytest
from ray._private import node

from cluster.ray_head import LEFT_OUT, lean_head
from cluster.settings import Settings


def test_ray_still_has_the_methods_that_are_left_out() -> None:
    """A Ray upgrade that renames one would start its process again, unnoticed."""
    for name in LEFT_OUT:
        assert callable(node.Node.__dict__.get(name)), name


def test_inside_the_block_they_start_nothing_and_after_it_ray_has_its_own_back() -> None:
    originals = {name: node.Node.__dict__[name] for name in LEFT_OUT}
    with lean_head(True):
        for name in LEFT_OUT:
            replaced = node.Node.__dict__[name]
            assert replaced is not originals[name]
            assert replaced(object(), include_dashboard=False, raise_on_failure=True) is None
    assert {name: node.Node.__dict__[name] for name in LEFT_OUT} == originals


def test_they_come_back_when_the_start_fails() -> None:
    originals = {name: node.Node.__dict__[name] for name in LEFT_OUT}
    with pytest.raises(RuntimeError), lean_head(True):
        raise RuntimeError("ray.init failed")
    assert {name: node.Node.__dict__[name] for name in LEFT_OUT} == originals


def test_with_the_tools_asked_for_nothing_is_replaced() -> None:
    originals = {name: node.Node.__dict__[name] for name in LEFT_OUT}
    with lean_head(False):
        assert {name: node.Node.__dict__[name] for name in LEFT_OUT} == originals


def test_the_tools_are_off_unless_the_operator_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRASHRAY_RAY_HEAD_TOOLS", raising=False)
    assert Settings().ray_head_tools is False
    monkeypatch.setenv("CRASHRAY_RAY_HEAD_TOOLS", "true")
    assert Settings().ray_head_tools is True
