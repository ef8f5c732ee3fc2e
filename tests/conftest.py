"""Fixtures shared by every test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Test data the repository carries (nothing is read from outside it).
FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"


def locate_corpus_dir() -> Path:
    """The SDK capture corpus: ``$CRASHRAY_CORPUS_DIR``, else ``tests/fixtures/sdk`` (the
    captures the repository carries, with their provenance in its README)."""
    override = os.environ.get("CRASHRAY_CORPUS_DIR")
    if override:
        return Path(override)
    return FIXTURES_DIR / "sdk"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """Directory of ``*.envelope`` (decoded body) + ``*.request.json`` SDK captures."""
    path = locate_corpus_dir()
    if not any(path.glob("*.envelope")):
        pytest.fail(f"no SDK corpus (*.envelope) in {path}; set CRASHRAY_CORPUS_DIR")
    return path


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking ``corpus_name`` runs once per SDK capture, its id the file name stem
    (e.g. ``python-sdk-2.75.0-exception``); use it with the ``corpus_dir`` fixture."""
    if "corpus_name" in metafunc.fixturenames:
        names = sorted(path.stem for path in locate_corpus_dir().glob("*.envelope"))
        if not names:
            raise pytest.UsageError(f"no SDK corpus in {locate_corpus_dir()}")
        metafunc.parametrize("corpus_name", names)
