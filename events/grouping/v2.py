"""Crashray grouping "v2" = v1 plus Sentry's built-in rule bases of ``newstyle:2023-01-11``.

FROZEN once shipped (STYLE.md): a behaviour change is a new ``v3.py`` plus a registry entry,
never an edit here (nor in ``builtin_rules.py``, whose rules are part of v2).

v1 shipped without the built-in bases that Sentry's ``newstyle:2023-01-11`` applies (spec
§6.1), so it is not hash-identical to Sentry for events with e.g. ``node_modules`` or
``site-packages`` frames or Java framework frames. v2 adds them; everything else is v1's code,
imported (v1 is frozen, so reusing it cannot change v2):

1. Stack-trace rules (§6.8): the base ``all-platforms:2023-01-11`` (its non-native part, see
   ``events.grouping.builtin_rules``) runs before the project's stack-trace rules, so the
   project's rules win. Both run in Sentry's enhancer order: every ``in_app``/``category``
   action of the base and then of the project, then every ``group``/``max-frames`` action
   (``stacktrace_rules.apply_in_sentry_order``; v1 applied each project rule's actions in
   turn).
2. Fingerprint rules (§6.7): the project's rules are tried first, then the built-in base
   ``javascript@2024-02-02`` (ChunkLoadError, React hydration errors). A built-in rule never
   replaces a custom fingerprint the client sent (any fingerprint but missing, empty or
   exactly ``["{{ default }}"]``). When a built-in rule decides a custom fingerprint, its
   variant is called ``built-in-fingerprint`` (Sentry ``BuiltInFingerprintVariant``); the hash
   is computed as for ``custom-fingerprint``.

``apply_rules`` does 1 and 2 and records the matched rule in the event under
``"_fingerprint_info"`` (Sentry's key; Relay drops a client-sent one); ``variants_for_event``
reads it to name the variant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from events.grouping import v1
from events.grouping.builtin_rules import BASE_STACKTRACE_RULES, BUILTIN_FINGERPRINT_RULES
from events.grouping.component import Variant
from events.grouping.fingerprint_rules import MatchedRule
from events.grouping.rules import GroupingRules
from events.grouping.shape import get_path
from events.grouping.stacktrace_rules import apply_in_sentry_order

SENTRY_CONFIG_ID: Final = v1.SENTRY_CONFIG_ID
BUILT_IN_FINGERPRINT: Final = "built-in-fingerprint"
#: Event key recording the fingerprint rule that matched (Sentry stores the same key).
FINGERPRINT_INFO: Final = "_fingerprint_info"

resolve_fingerprint_entry = v1.resolve_fingerprint_entry


def matched_fingerprint_rule(
    event: Mapping[str, Any], rules: GroupingRules | None
) -> MatchedRule | None:
    """The project's first matching fingerprint rule, else (unless the client sent a custom
    fingerprint) the first matching built-in rule."""
    project = rules.fingerprint if rules is not None else None
    matched = project.match(event) if project is not None else None
    if matched is None and v1.custom_fingerprint(event) is None:
        matched = BUILTIN_FINGERPRINT_RULES.match(event)
    return matched


def apply_rules(
    event: Mapping[str, Any], rules: GroupingRules | None
) -> tuple[Mapping[str, Any], MatchedRule | None]:
    """``event`` after the stack-trace and fingerprint rules (base and project), and the
    fingerprint rule that matched. The input is not mutated."""
    project_stacktrace = rules.stacktrace if rules is not None else None
    event = apply_in_sentry_order(event, BASE_STACKTRACE_RULES, project_stacktrace)
    matched = matched_fingerprint_rule(event, rules)
    info = None if matched is None else {"matched_rule": matched.text,
                                         "is_builtin": matched.builtin}
    if matched is None and event.get(FINGERPRINT_INFO) is None:
        return event, None
    prepared = {**event, FINGERPRINT_INFO: info}
    if matched is not None:
        prepared["fingerprint"] = list(matched.fingerprint)
    return prepared, matched


def _as_built_in(variants: dict[str, Variant]) -> dict[str, Variant]:
    """The ``custom-fingerprint`` variant renamed ``built-in-fingerprint`` (same hash)."""
    custom = variants.pop(v1.CUSTOM_FINGERPRINT, None)
    if custom is None:
        return variants
    tree = custom.component._replace(id=BUILT_IN_FINGERPRINT)
    variants[BUILT_IN_FINGERPRINT] = Variant(name=BUILT_IN_FINGERPRINT, component=tree,
                                             hash=custom.hash)
    return variants


def variants_for_event(
    event: Mapping[str, Any], rules: GroupingRules | None = None
) -> dict[str, Variant]:
    """All grouping variants of an event that ``apply_rules`` has prepared (module docstring)."""
    variants = v1.variants_for_event(event, rules)
    if get_path(event, FINGERPRINT_INFO, "is_builtin") is True:
        return _as_built_in(variants)
    return variants
