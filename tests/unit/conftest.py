"""Unit tests never start Ray (STYLE.md "Tests", as in Ray Serve's own unit tests)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import NoReturn

import pytest


def _refuse_ray_init(*args: object, **kwargs: object) -> NoReturn:
    raise RuntimeError("tests/unit must not start Ray; move this test to tests/integration")


@pytest.fixture(autouse=True)
def _forbid_ray_init(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Patch only when some module under test already imported ray (imports happen at
    # collection, before this runs): importing ray here would slow every pure test down.
    ray = sys.modules.get("ray")
    if ray is not None:
        monkeypatch.setattr(ray, "init", _refuse_ray_init)
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        pytest.fail("a unit test started Ray; move it to tests/integration")
