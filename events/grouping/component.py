"""Grouping component trees and the hash over them (spec §6.3).

A component is a node ``{id, contributes, hint, values}`` whose ``values`` are strings or child
components. A variant's hash is the md5 of the UTF-8 bytes of every leaf string reached
depth-first through *contributing* components only, with no separator between values
(Sentry ``hash_from_values``; so ``["ab", "c"]`` and ``["a", "bc"]`` hash the same).
Component ids are labels for display and are never hashed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

ComponentValue: TypeAlias = "str | Component"


def hash_from_values(values: Iterable[str]) -> str:
    """md5 over the concatenated UTF-8 bytes of ``values``, lowercase hex (spec §6.3).

    ``errors="replace"`` matches Sentry's ``force_bytes(value, errors="replace")`` for the
    lone surrogates that JSON can smuggle into a Python string.
    """
    # One encode of the joined string gives the same bytes as encoding each value: Python's
    # UTF-8 codec replaces every lone surrogate on its own, joined or not.
    joined = "".join(values).encode("utf-8", errors="replace")
    return hashlib.md5(joined, usedforsecurity=False).hexdigest()


class Component(NamedTuple):
    """One node of a grouping tree; build it with :func:`component`.

    A named tuple rather than a frozen dataclass: grouping builds one per value of every
    frame, and a tuple is created several times faster (still immutable)."""

    id: str
    values: tuple[ComponentValue, ...] = ()
    contributes: bool = False
    hint: str | None = None

    def iter_values(self) -> Iterator[str]:
        """Leaf strings of contributing components, depth-first (what the hash is made of)."""
        leaves: list[str] = []
        self._collect_values(leaves)
        return iter(leaves)

    def _collect_values(self, leaves: list[str]) -> None:
        if not self.contributes:
            return
        for value in self.values:
            if isinstance(value, str):
                leaves.append(value)
            else:
                value._collect_values(leaves)

    def hash(self) -> str | None:
        """md5 of :meth:`iter_values`, or ``None`` when this component does not contribute."""
        if not self.contributes:
            return None
        return hash_from_values(self.iter_values())

    def excluded(self, hint: str) -> Component:
        """A copy marked non-contributing; keeps an earlier hint that already explains why."""
        if not self.contributes and self.hint is not None:
            return self
        return self._replace(contributes=False, hint=hint)

    def children(self) -> Iterator[Component]:
        """Direct child components (plain string values skipped)."""
        for value in self.values:
            if isinstance(value, Component):
                yield value

    def has_contributing(self, component_id: str) -> bool:
        """Whether a contributing descendant (or self) with ``component_id`` exists."""
        if not self.contributes:
            return False
        if self.id == component_id:
            return True
        return any(child.has_contributing(component_id) for child in self.children())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready tree for display (the grouping-info view)."""
        return {
            "id": self.id,
            "contributes": self.contributes,
            "hint": self.hint,
            "values": [v if isinstance(v, str) else v.to_dict() for v in self.values],
        }


def component(
    component_id: str,
    values: Iterable[ComponentValue] = (),
    *,
    contributes: bool | None = None,
    hint: str | None = None,
) -> Component:
    """Build a component; ``contributes`` defaults to "any plain value or contributing child".

    This is the default of spec §6.3; passing ``contributes=False`` forces it off (with the
    ``hint`` saying why), ``contributes=True`` forces it on (only the fallback variant does).
    """
    value_tuple = tuple(values)
    if contributes is None:
        contributes = any(isinstance(v, str) or v.contributes for v in value_tuple)
    return Component(id=component_id, values=value_tuple, contributes=contributes, hint=hint)


@dataclass(frozen=True)
class Variant:
    """One grouping variant (``app``, ``system``, ``default``, ``custom-fingerprint`` ...).

    ``hash`` is ``None`` when the variant does not contribute. For ordinary variants it is
    ``component.hash()``; only checksum variants carry a hash not derived from the tree
    (spec §6.2: a 32-hex client checksum is used as-is).
    """

    name: str
    component: Component
    hash: str | None

    @classmethod
    def from_component(cls, name: str, tree: Component) -> Variant:
        return cls(name=name, component=tree, hash=tree.hash())

    @property
    def contributes(self) -> bool:
        return self.hash is not None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "contributes": self.contributes,
            "component": self.component.to_dict(),
        }
