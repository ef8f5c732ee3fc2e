"""Shared helpers for the grouping tests: Relay normalisation and the SDK corpus."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sentry_relay import StoreNormalizer  # type: ignore[attr-defined]

CASES_DIR = Path(__file__).resolve().parent / "cases"
CORPUS_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "sdk"

_NORMALIZER = StoreNormalizer(project_id=1)


def normalize(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event as the grouping stage receives it: after Relay's store normalisation."""
    normalized: dict[str, Any] = _NORMALIZER.normalize_event(dict(event))
    return normalized


def corpus_event(name: str) -> dict[str, Any]:
    """The event payload of one corpus envelope (header line, item header line, payload)."""
    lines = (CORPUS_DIR / name).read_bytes().split(b"\n")
    payload: dict[str, Any] = json.loads(lines[2])
    return payload
