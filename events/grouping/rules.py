"""Project grouping rules: server-side fingerprint rules (§6.7) and stack-trace rules (§6.8).

Fingerprint rules are carried parsed (``fingerprint``, see ``events.grouping.fingerprint_rules``)
and applied by ``events.grouping.group_hashes_for_event`` before a grouping version runs: the
matched rule's fingerprint replaces the event's, so a version only ever sees the event.
Stack-trace rules are carried parsed (``stacktrace``, see ``events.grouping.stacktrace_rules``)
and applied by ``group_hashes_for_event`` before the fingerprint rules (they change ``in_app``,
which fingerprint ``app:`` matchers read). Unparsed rule texts are refused: a grouping version
calls ``require_no_rules`` so that they raise instead of being silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.grouping.fingerprint_rules import FingerprintRules
from events.grouping.stacktrace_rules import StacktraceRules


@dataclass(frozen=True)
class GroupingRules:
    """A project's rules. ``fingerprint`` (``parse_fingerprint_rules``) and ``stacktrace``
    (``parse_stacktrace_rules``) are parsed; the two text tuples (one rule per entry) are not
    parsed or applied and are refused."""

    fingerprint_rules: tuple[str, ...] = ()
    stacktrace_rules: tuple[str, ...] = ()
    fingerprint: FingerprintRules | None = None
    stacktrace: StacktraceRules | None = None

    @property
    def has_fingerprint_rules(self) -> bool:
        return self.fingerprint is not None and bool(self.fingerprint.rules)

    @property
    def has_stacktrace_rules(self) -> bool:
        return self.stacktrace is not None and bool(self.stacktrace.rules)

    @property
    def is_empty(self) -> bool:
        return (not self.fingerprint_rules and not self.stacktrace_rules
                and not self.has_fingerprint_rules and not self.has_stacktrace_rules)


def require_no_rules(rules: GroupingRules | None) -> None:
    """Refuse rules a grouping version cannot apply itself, so none are silently dropped.

    Parsed fingerprint and stack-trace rules are applied by ``group_hashes_for_event`` before
    the version runs and are removed from the ``rules`` it passes on; reaching a version here
    means the caller bypassed that.
    """
    if rules is None or rules.is_empty:
        return
    if rules.fingerprint_rules or rules.stacktrace_rules:
        raise NotImplementedError(
            "grouping rules: unparsed fingerprint and stack-trace rule texts are not "
            f"implemented yet (not parsed); got {len(rules.fingerprint_rules)} fingerprint and "
            f"{len(rules.stacktrace_rules)} stack-trace rule texts; parse fingerprint rules with "
            "parse_fingerprint_rules() and pass GroupingRules(fingerprint=...), and stack-trace "
            "rules with parse_stacktrace_rules() and pass GroupingRules(stacktrace=...)"
        )
    raise NotImplementedError(
        "grouping rules: fingerprint and stack-trace rules are applied by "
        "group_hashes_for_event, not by a grouping version; "
        "call group_hashes_for_event(event, rules=...)"
    )


def grouping_rules_from_text(fingerprint_text: str, stacktrace_text: str
                             ) -> GroupingRules | None:
    """A project's rules from its two settings (Sentry's "Fingerprint Rules" and "Stack Trace
    Rules"); None when both are empty. Raises ``RuleSyntaxError`` naming the line and column,
    also for a text over the limits the API applies on save (``fingerprint_rules.MAX_RULES``
    ...: the parsers apply them to a project's rules)."""
    from events.grouping.fingerprint_rules import parse_fingerprint_rules
    from events.grouping.stacktrace_rules import parse_stacktrace_rules

    if not fingerprint_text.strip() and not stacktrace_text.strip():
        return None
    return GroupingRules(
        fingerprint=parse_fingerprint_rules(fingerprint_text) if fingerprint_text.strip()
        else None,
        stacktrace=parse_stacktrace_rules(stacktrace_text) if stacktrace_text.strip() else None)
