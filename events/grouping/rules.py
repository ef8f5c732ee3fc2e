"""Project grouping rules: server-side fingerprint rules (§6.7) and stack-trace rules (§6.8).

Not implemented yet (a later issue). The type exists so every grouping entry point already takes
``rules: GroupingRules | None``; today only ``None`` or an empty ``GroupingRules()`` is
accepted, anything else raises instead of being silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GroupingRules:
    """Rule texts as configured on a project, one rule per entry (not parsed yet)."""

    fingerprint_rules: tuple[str, ...] = ()
    stacktrace_rules: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.fingerprint_rules and not self.stacktrace_rules


def require_no_rules(rules: GroupingRules | None) -> None:
    """Refuse rules until they are implemented, so none are silently dropped."""
    if rules is not None and not rules.is_empty:
        raise NotImplementedError(
            "grouping rules: fingerprint rules (spec §6.7) and stack-trace rules (§6.8) are "
            f"not implemented yet; got {len(rules.fingerprint_rules)} fingerprint and "
            f"{len(rules.stacktrace_rules)} stack-trace rules; pass rules=None"
        )
