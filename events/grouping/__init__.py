"""Grouping: which issue an event belongs to (spec §6).

Registry of frozen grouping versions (STYLE.md: ``v1.py`` never changes once shipped; a new
behaviour is a new ``vN.py`` plus an entry here)::

    GROUPING_CONFIGS = {
        "v1": Sentry "newstyle:2023-01-11" as described by spec §6, without Sentry's built-in
              rule bases (only the project's rules),
        "v2": v1 plus Sentry's built-in stack-trace and fingerprinting bases (``v2.py``),
        "v3": v2 plus Sentry's Java code-generation markers (java frames only), Sentry's
              current message parameterization table and the CSP / HPKP / Expect-CT /
              Expect-Staple strategies (``v3.py``), the default,
    }

A version applies the project's rules (``GroupingConfig.apply_rules``) and then computes the
variants. v1's ``apply_rules`` is ``apply_project_rules`` below (stack-trace rules, each rule's
actions in turn, then the first matching fingerprint rule); v2's (and v3's) adds the built-in
bases.

``group_hashes_for_event(event)`` takes an event *after* Relay normalisation
(``sentry_relay.StoreNormalizer(project_id=...).normalize_event(...)``) and never raises on odd
shapes: a missing, ``None`` or wrongly typed field is skipped.

Hash ordering (spec §6.2 recommendation for a re-implementation): the contributing variant
hashes, de-duplicated, in the order ``app``, ``system``, ``default``, ``custom-fingerprint``,
``built-in-fingerprint``, ``hashed-checksum``, ``checksum``, ``fallback`` (any other name after
those, alphabetically).
``primary_hash`` is therefore app if it contributes, else system, else default/custom/fallback;
the remaining hashes are secondary lookup keys for finding an existing group.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final

from events.grouping import v1, v2, v3
from events.grouping.component import Component, Variant
from events.grouping.fingerprint_rules import MatchedRule, resolve_title
from events.grouping.rules import GroupingRules

__all__ = [
    "DEFAULT_GROUPING_CONFIG",
    "GROUPING_CONFIGS",
    "Component",
    "GroupingConfig",
    "GroupingResult",
    "GroupingRules",
    "Variant",
    "group_hashes_for_event",
]

VariantsForEvent = Callable[[Mapping[str, Any], GroupingRules | None], Mapping[str, Variant]]
ResolveFingerprintEntry = Callable[[str, Mapping[str, Any]], str]
ApplyRules = Callable[[Mapping[str, Any], GroupingRules | None],
                      tuple[Mapping[str, Any], MatchedRule | None]]


def apply_project_rules(
    event: Mapping[str, Any], rules: GroupingRules | None
) -> tuple[Mapping[str, Any], MatchedRule | None]:
    """v1 (frozen with it): the project's stack-trace rules (each rule's actions in turn),
    then its first matching fingerprint rule, whose fingerprint replaces the event's. The
    event is not mutated."""
    if rules is not None and rules.stacktrace is not None:
        event = rules.stacktrace.apply(event)
    fingerprint_rules = rules.fingerprint if rules is not None else None
    matched = fingerprint_rules.match(event) if fingerprint_rules is not None else None
    if matched is not None:
        event = {**event, "fingerprint": list(matched.fingerprint)}
    return event, matched


@dataclass(frozen=True)
class GroupingConfig:
    """One frozen grouping version."""

    id: str
    sentry_config: str
    variants_for_event: VariantsForEvent
    # §6.7 variable resolution, used for the ``title="... {{ var }} ..."`` of a fingerprint rule.
    resolve_fingerprint_entry: ResolveFingerprintEntry
    # Stack-trace rules (§6.8) and fingerprint rules (§6.7), applied before the variants.
    apply_rules: ApplyRules = apply_project_rules


GROUPING_CONFIGS: Final[Mapping[str, GroupingConfig]] = MappingProxyType({
    "v1": GroupingConfig(
        id="v1", sentry_config=v1.SENTRY_CONFIG_ID, variants_for_event=v1.variants_for_event,
        resolve_fingerprint_entry=v1.resolve_fingerprint_entry,
    ),
    "v2": GroupingConfig(
        id="v2", sentry_config=v2.SENTRY_CONFIG_ID, variants_for_event=v2.variants_for_event,
        resolve_fingerprint_entry=v2.resolve_fingerprint_entry, apply_rules=v2.apply_rules,
    ),
    "v3": GroupingConfig(
        id="v3", sentry_config=v3.SENTRY_CONFIG_ID, variants_for_event=v3.variants_for_event,
        resolve_fingerprint_entry=v3.resolve_fingerprint_entry, apply_rules=v3.apply_rules,
    ),
})
#: New projects group with it, and projects that keep auto-update move to it when an instance
#: starts, their previous version staying their secondary config for a transition so that no
#: issue splits (``storage/grouping.py``). Versions before it in ``GROUPING_CONFIGS`` (oldest
#: first) are the ones upgraded from.
DEFAULT_GROUPING_CONFIG: Final = "v3"

# Primary first (spec §6.2): app, then system, then the single-variant kinds.
VARIANT_ORDER: Final = (
    "app", "system", "default", "custom-fingerprint", "built-in-fingerprint",
    "hashed-checksum", "checksum", "fallback",
)


@dataclass(frozen=True)
class GroupingResult:
    """Hashes of one event under one grouping config; ``hashes[0]`` is the primary hash.

    ``fingerprint_rule`` is the text of the fingerprint rule that matched (§6.7), and
    ``title`` its ``title="..."`` with variables resolved; both ``None`` when no rule matched.
    ``fingerprint_rule_builtin``: that rule is one of Sentry's built-in rules (v2 on), not one
    of the project's.
    """

    config: str
    hashes: tuple[str, ...]
    variants: Mapping[str, Variant]
    fingerprint_rule: str | None = None
    title: str | None = None
    fingerprint_rule_builtin: bool = False

    @property
    def primary_hash(self) -> str:
        return self.hashes[0]

    def to_json_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "config": self.config,
            "hashes": list(self.hashes),
            "variants": {name: v.to_json_dict() for name, v in self.variants.items()},
        }
        if self.fingerprint_rule is not None:
            data["fingerprintRule"] = self.fingerprint_rule
            data["title"] = self.title
            data["fingerprintRuleBuiltin"] = self.fingerprint_rule_builtin
        return data


def _variant_rank(name: str) -> tuple[int, str]:
    if name in VARIANT_ORDER:
        return VARIANT_ORDER.index(name), ""
    return len(VARIANT_ORDER), name


def ordered_hashes(variants: Mapping[str, Variant]) -> tuple[str, ...]:
    """Contributing hashes, primary first, each once (app and system are often equal)."""
    hashes: list[str] = []
    for name in sorted(variants, key=_variant_rank):
        variant_hash = variants[name].hash
        if variant_hash is not None and variant_hash not in hashes:
            hashes.append(variant_hash)
    return tuple(hashes)


def group_hashes_for_event(
    event: Mapping[str, Any],
    config: str = DEFAULT_GROUPING_CONFIG,
    *,
    rules: GroupingRules | None = None,
) -> GroupingResult:
    """Group hashes of a Relay-normalised event.

    The config's ``apply_rules`` runs first (a new event; the input is not mutated):
    ``rules.stacktrace`` (parsed stack-trace rules, §6.8) may flip ``in_app`` and mark frames
    non-contributing; then the first matching ``rules.fingerprint`` rule's fingerprint (parsed
    project fingerprint rules, §6.7) replaces the event's. From v2 on, Sentry's built-in rule
    bases take part (``v2.py``); v3 adds Sentry's Java, message and security-report behaviours
    (``v3.py``). Anything else in ``rules`` (unparsed texts) raises
    ``NotImplementedError``. Raises ``ValueError`` for an unknown ``config``, naming the known
    ones.
    """
    grouping_config = GROUPING_CONFIGS.get(config)
    if grouping_config is None:
        known = ", ".join(sorted(GROUPING_CONFIGS))
        raise ValueError(f"grouping config {config!r} is unknown; known configs: {known}")
    if not isinstance(event, Mapping):
        event = {}
    event, matched = grouping_config.apply_rules(event, rules)
    if rules is not None:
        # Applied above; the version refuses the rest.
        rules = replace(rules, fingerprint=None, stacktrace=None)
    variants = grouping_config.variants_for_event(event, rules)
    ordered = {name: variants[name] for name in sorted(variants, key=_variant_rank)}
    title = None
    if matched is not None and matched.title is not None:
        title = resolve_title(
            matched.title, lambda entry: grouping_config.resolve_fingerprint_entry(entry, event))
    return GroupingResult(
        config=grouping_config.id,
        hashes=ordered_hashes(ordered),
        variants=MappingProxyType(ordered),
        fingerprint_rule=matched.text if matched is not None else None,
        title=title,
        fingerprint_rule_builtin=matched is not None and matched.builtin,
    )
