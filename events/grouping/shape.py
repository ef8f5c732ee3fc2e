"""Tolerant readers for normalised event JSON.

Grouping must never raise on odd shapes (a field missing, ``None`` or of the wrong type is
simply skipped), so every strategy reads the event through these helpers instead of indexing.
v1 hashes depend on them: change behaviour only together with a new grouping version.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_PATH_SEPARATORS = re.compile(r"[/\\]")


def as_mapping(value: object) -> Mapping[str, Any] | None:
    """``value`` if it is a JSON object, else ``None``."""
    return value if isinstance(value, Mapping) else None


def as_str(value: object) -> str | None:
    """``value`` if it is a non-empty string, else ``None``."""
    return value if isinstance(value, str) and value else None


def mappings(value: object) -> list[Mapping[str, Any]]:
    """The JSON objects of a list, dropping any other entries; ``[]`` for a non-list."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def interface_values(value: object) -> list[Mapping[str, Any]]:
    """Entries of ``{"values": [...]}`` (Relay's shape) or of a bare list (§4.6)."""
    container = as_mapping(value)
    if container is not None:
        return mappings(container.get("values"))
    return mappings(value)


def get_path(value: object, *keys: str) -> object:
    """``value[k1][k2]...`` through JSON objects, ``None`` as soon as a step is missing."""
    for key in keys:
        container = as_mapping(value)
        if container is None:
            return None
        value = container.get(key)
    return value


def basename(path: str) -> str:
    """Last path segment, splitting on both ``/`` and ``\\`` (spec §6.5 filename rule)."""
    return _PATH_SEPARATORS.split(path)[-1]


def tag_value(tags: object, key: str) -> str | None:
    """Value of tag ``key`` from Relay's list of pairs (a dict is accepted too, §4.5)."""
    if isinstance(tags, Mapping):
        return as_str(tags.get(key))
    if not isinstance(tags, list):
        return None
    for pair in tags:
        if isinstance(pair, list | tuple) and len(pair) == 2 and pair[0] == key:
            return as_str(pair[1])
    return None
