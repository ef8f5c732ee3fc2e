"""Crashray grouping "v3" = v2 plus the parts of Sentry's ``newstyle:2023-01-11`` that v1 and
v2 did not match.

FROZEN once shipped (STYLE.md): a behaviour change is a new ``v4.py`` plus a registry entry,
never an edit here (nor in ``parameterize_v3.py`` or ``security.py``, whose behaviour is v3's).

The rules (stack-trace and fingerprint, with Sentry's built-in bases) are applied exactly as in
v2 (``v2.apply_rules``). The variants are v1's (``v1.py`` is reused wherever it is unchanged)
with three differences:

1. Java generated and proxy classes (Sentry ``strategies/newstyle.py``,
   ``get_module_component`` / ``get_filename_component``), for frames whose platform (the
   frame's, else the event's) is ``java`` only, as in Sentry (v1 applied its own patterns on
   every platform):

   * a module starting ``sun.reflect.GeneratedMethodAccessor`` or
     ``jdk.internal.reflect.GeneratedMethodAccessor`` becomes exactly that prefix;
   * otherwise, in this order, the counter or hash after these markers becomes ``<auto>``:
     ``sun.reflect.Generated[Serialization]ConstructorAccessor<N>``; CGLIB
     (``$$…CGLIB$$<hex>[_<n>]``, e.g. ``$$EnhancerByCGLIB$$``, ``$$FastClassByCGLIB$$``,
     Spring's ``$$EnhancerBySpringCGLIB$$``); javassist ``$$_javassist[_seam][_<n>]``;
     Clojure ``$fn__<n>``; ``$[$]EnhancerBy…$[$]<hex>[_<n>]`` (Guice);
     ``$[$]FastClassBy…$[$]<hex>[_<n>]``; Hibernate ``$[$]HibernateProxy$[$]<id>[_<n>]``;
   * a module containing ``$$Lambda$`` does not contribute, nor does a function starting
     ``lambda$`` (both java only now);
   * a filename (lowercased basename) has its javassist marker replaced the same way.

   Sentry has no rule for javassist's ``ProxyFactory`` names (``_$$_jvst<hex>_<n>``) nor for
   ``jdk.internal.reflect.Generated[Serialization]ConstructorAccessor<N>``; neither has v3.
2. Messages and exception values are parameterized with Sentry's current table
   (``parameterize_v3``) instead of v1's.
3. Security reports (``security.py``): CSP, HPKP, Expect-Staple and Expect-CT events group by
   their own strategies, between the stack-trace strategies and the message one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Final

from events.grouping import security, v1, v2
from events.grouping.component import Component, Variant, component
from events.grouping.parameterize_v3 import normalize_message_for_grouping
from events.grouping.rules import GroupingRules, require_no_rules
from events.grouping.shape import as_mapping, as_str, basename, get_path, interface_values, mappings

SENTRY_CONFIG_ID: Final = v1.SENTRY_CONFIG_ID
APP: Final = v1.APP
SYSTEM: Final = v1.SYSTEM
DEFAULT: Final = v1.DEFAULT

apply_rules = v2.apply_rules
resolve_fingerprint_entry = v1.resolve_fingerprint_entry

# --- Java generated classes (Sentry strategies/newstyle.py) ------------------------------------

_REFLECTION_METHOD_ACCESSORS: Final = (
    "sun.reflect.GeneratedMethodAccessor",
    "jdk.internal.reflect.GeneratedMethodAccessor",
)
_JAVASSIST: Final = re.compile(r"(\$\$_javassist)(?:_seam)?(?:_[0-9]+)?")
# Applied in this order, each keeping group 1 and putting "<auto>" after it.
_JAVA_CODEGEN_MARKERS: Final = (
    re.compile(r"(sun\.reflect\.Generated(?:Serialization)?ConstructorAccessor)\d+"),
    re.compile(r"(\$\$\w+?CGLIB\$\$)[a-fA-F0-9]+(?:_[0-9]+)?"),
    _JAVASSIST,
    re.compile(r"(\$fn__)\d+"),
    re.compile(r"(\$\$?EnhancerBy\w+?\$?\$)[a-fA-F0-9]+(?:_[0-9]+)?"),
    re.compile(r"(\$\$?FastClassBy\w+?\$?\$)[a-fA-F0-9]+(?:_[0-9]+)?"),
    re.compile(r"(\$\$?HibernateProxy\$?\$)\w+(?:_[0-9]+)?"),
)
_AUTO: Final = r"\1<auto>"


def java_module_for_grouping(module: str) -> str:
    """The module with Java code-generation markers replaced (module docstring, item 1)."""
    for prefix in _REFLECTION_METHOD_ACCESSORS:
        if module.startswith(prefix):
            return prefix
    if "$" not in module and "Generated" not in module:
        return module  # every marker needs one of them; most modules have neither
    for marker in _JAVA_CODEGEN_MARKERS:
        module = marker.sub(_AUTO, module)
    return module


def _module_component(frame: Mapping[str, Any], platform: str) -> Component:
    module = as_str(frame.get("module"))
    if module is None:
        return component("module")
    bad_js_module = "/" in module and (v1._frame_path(frame) or "").endswith(module)
    if platform in v1.JAVASCRIPT_PLATFORMS and bad_js_module:  # as v1
        return component("module", (module,), contributes=False,
                         hint="ignored bad javascript module")
    if platform != "java":
        return component("module", (module,))
    value = java_module_for_grouping(module)
    if "$$Lambda$" in module:
        return component("module", (value,), contributes=False, hint="ignored java lambda")
    return component("module", (value,), hint="removed codegen marker" if value != module else None)


def _filename_component(frame: Mapping[str, Any], platform: str, module: Component) -> Component:
    filename = as_str(frame.get("filename"))
    if filename is None:
        return component("filename")
    name = basename(filename).lower()
    if not name:
        return component("filename")
    if platform == "java":
        name = _JAVASSIST.sub(_AUTO, name)
    if module.contributes:
        hint = "ignored because module takes precedence"
    elif v1._has_url_origin(v1._frame_path(frame)):
        hint = "ignored because frame points to a URL"
    elif name in v1._ANONYMOUS_FILENAMES:
        hint = "ignored because filename is anonymous or native code"
    else:
        return component("filename", (name,))
    return component("filename", (name,), contributes=False, hint=hint)


def _ignored_function_hint(
    name: str, frame: Mapping[str, Any], platform: str, context_line: Component | None
) -> str | None:
    """v1's rules (``v1._ignored_function_hint``), with ``lambda$`` ignored on java only
    (Sentry ``get_function_component``)."""
    if name in v1._UNKNOWN_FUNCTIONS:
        return "ignored unknown function name"
    if platform == "php" and name.startswith("[Anonymous"):
        return "ignored anonymous function"
    if platform == "java" and name.startswith("lambda$"):
        return "ignored java lambda"
    if platform not in v1.JAVASCRIPT_PLATFORMS:
        return None
    if name in v1._JS_JUNK_FUNCTIONS or name.endswith("/<"):
        return "ignored unknown function name"
    sourcemapped = get_path(frame, "data", "sourcemap") is not None
    if sourcemapped and context_line is not None and context_line.contributes:
        return "ignored because sourcemap used and context line available"
    return None


def _function_component(
    frame: Mapping[str, Any], platform: str, context_line: Component | None
) -> Component:
    name = v1._function_name(frame, platform)
    if name is None:
        return component("function")
    hint = _ignored_function_hint(name, frame, platform, context_line)
    if hint is not None:
        return component("function", (name,), contributes=False, hint=hint)
    return component("function", (name,))


# --- frames and stack traces (v1's, with the frame parts above) ---------------------------------

#: Frame components of the event being grouped, shared by its app and system variants (as in
#: v1, a memo of its own so that versions never share entries).
_FRAME_MEMO: ContextVar[dict[tuple[int, int, str], Component] | None] = ContextVar(
    "_V3_FRAME_MEMO", default=None)


def _frame_component_any_variant(
    frame: Mapping[str, Any], event_platform: str, previous: Mapping[str, Any] | None
) -> Component:
    platform = v1._frame_platform(frame, event_platform)
    module = _module_component(frame, platform)
    context_line = v1._context_line_component(frame, platform)
    values = [
        module,
        _filename_component(frame, platform, module),
        _function_component(frame, platform, context_line),
    ]
    if context_line is not None:
        values.append(context_line)
    result = component("frame", values)
    hint = v1._frame_exclusion_hint(frame, platform, previous)
    return result if hint is None else result.excluded(hint)


def frame_component(
    frame: Mapping[str, Any], event_platform: str, variant: str,
    previous: Mapping[str, Any] | None = None,
) -> Component:
    memo = _FRAME_MEMO.get()
    key = (id(frame), id(previous), event_platform)
    result = memo.get(key) if memo is not None else None
    if result is None:
        result = _frame_component_any_variant(frame, event_platform, previous)
        if memo is not None:
            memo[key] = result
    if variant == APP and not v1._is_in_app(frame):
        result = result.excluded("non app frame")
    return result


def stacktrace_component(
    stacktrace: Mapping[str, Any], event_platform: str, variant: str
) -> Component:
    """v1's ``stacktrace_component`` over v3's frames."""
    frames = mappings(stacktrace.get("frames"))
    if not frames:
        return component("stacktrace", contributes=False,
                         hint="ignored because it contains no frames")
    children: list[Component] = []
    previous: Mapping[str, Any] | None = None
    for frame in frames:
        children.append(frame_component(frame, event_platform, variant, previous))
        previous = frame
    single_hint = v1._single_js_frame_hint(frames, event_platform)
    if single_hint is not None:
        children = [child.excluded(single_hint) for child in children]
    if variant == APP and not any(v1._is_in_app(frame) for frame in frames):
        return component("stacktrace", children, contributes=False,
                         hint="ignored because it contains no in-app frames")
    if not any(child.contributes for child in children):
        which = "in-app frames" if variant == APP else "frames"
        return component("stacktrace", children, contributes=False,
                         hint=f"ignored because it contains no contributing {which}")
    return component("stacktrace", children)


# --- exceptions, threads, messages (v1's, with v3's frames and parameterization) ----------------


def _value_component(
    exception: Mapping[str, Any], stacktrace: Component | None, ns_error: Component | None
) -> Component:
    value = as_str(exception.get("value"))
    if value is None:
        return component("value")
    normalized = normalize_message_for_grouping(value)
    if stacktrace is not None and stacktrace.contributes:
        return component("value", (normalized,), contributes=False,
                         hint="ignored because stacktrace takes precedence")
    if ns_error is not None and ns_error.contributes:
        return component("value", (normalized,), contributes=False,
                         hint="ignored because ns-error info takes precedence")
    return component("value", (normalized,))


def exception_component(
    exception: Mapping[str, Any], event_platform: str, variant: str
) -> Component:
    """``exception``: stacktrace, type, [ns-error], value (the 2023 "legacy order")."""
    raw_stacktrace = as_mapping(exception.get("stacktrace"))
    stacktrace = (stacktrace_component(raw_stacktrace, event_platform, variant)
                  if raw_stacktrace is not None else None)
    ns_error = v1._ns_error_component(exception)
    values = [c for c in (stacktrace, v1._type_component(exception), ns_error) if c is not None]
    values.append(_value_component(exception, stacktrace, ns_error))
    return component("exception", values)


def _chained_exception_component(
    event: Mapping[str, Any], exceptions: Sequence[Mapping[str, Any]], variant: str
) -> Component:
    platform = v1._platform(event)
    components = [exception_component(e, platform, variant) for e in exceptions]
    selected = v1._select_for_exception_groups(event, exceptions, components)
    if len(selected) == 1:
        return selected[0]
    return component("chained-exception", selected)


def chained_exception_strategy(event: Mapping[str, Any]) -> dict[str, Component]:
    exceptions = interface_values(event.get("exception"))
    if not exceptions:
        return {}
    has_frames = any(mappings(get_path(e, "stacktrace", "frames")) for e in exceptions)
    variants = v1.STACK_VARIANTS if has_frames else (APP,)
    produced = {v: _chained_exception_component(event, exceptions, v) for v in variants}
    return v1.remove_non_stacktrace_variants(produced)


def _threads_component(thread: Mapping[str, Any] | None, platform: str, variant: str
                       ) -> Component:
    if thread is None:
        return component("threads", contributes=False, hint=(
            "ignored because it does not contain exactly one crashed, one current or one thread"
        ))
    stacktrace = as_mapping(thread.get("stacktrace"))
    if stacktrace is None:
        return component("threads", contributes=False,
                         hint="ignored because the thread has no stack trace")
    return component("threads", (stacktrace_component(stacktrace, platform, variant),))


def threads_strategy(event: Mapping[str, Any]) -> dict[str, Component]:
    threads = interface_values(event.get("threads"))
    if not threads:
        return {}
    thread = v1.grouping_thread(threads)
    return {v: _threads_component(thread, v1._platform(event), v) for v in v1.STACK_VARIANTS}


def stacktrace_strategy(event: Mapping[str, Any]) -> dict[str, Component]:
    stacktrace = as_mapping(event.get("stacktrace"))
    if stacktrace is None:
        return {}
    return {v: stacktrace_component(stacktrace, v1._platform(event), v)
            for v in v1.STACK_VARIANTS}


def message_strategy(event: Mapping[str, Any]) -> dict[str, Component]:
    text = v1.message_text(event)
    if text is None:
        return {}
    return {DEFAULT: component("message", (normalize_message_for_grouping(text),))}


Strategy = Callable[[Mapping[str, Any]], dict[str, Component]]


def _hostname_report(key: str, salt: str) -> Strategy:
    return lambda event: security.hostname_report_strategy(key, salt, event)


# Sentry's scores: exception 2000, threads 1900, stacktrace 1800, csp 1003, hpkp 1002,
# expect-staple 1001, expect-ct 1000, message 0.
STRATEGIES: Final[tuple[tuple[str, Strategy], ...]] = (
    ("exception", chained_exception_strategy),
    ("threads", threads_strategy),
    ("stacktrace", stacktrace_strategy),
    ("csp", security.csp_strategy),
    *((salt, _hostname_report(key, salt)) for key, salt in security.HOSTNAME_REPORTS),
    ("message", message_strategy),
)


def strategy_trees(event: Mapping[str, Any]) -> dict[str, Component]:
    """Root component per variant; only the first strategy that contributes keeps doing so."""
    winner: str | None = None
    per_variant: dict[str, list[Component]] = {}
    for name, strategy in STRATEGIES:
        produced = strategy(event)
        if winner is not None:
            produced = {variant: tree.excluded(f"ignored because {winner} takes precedence")
                        for variant, tree in produced.items()}
        elif any(tree.contributes for tree in produced.values()):
            winner = name
        for variant, tree in produced.items():
            per_variant.setdefault(variant, []).append(tree)
    return {variant: component(variant, trees) for variant, trees in per_variant.items()}


def variants_for_event(
    event: Mapping[str, Any], rules: GroupingRules | None = None
) -> dict[str, Variant]:
    """All grouping variants of an event that ``apply_rules`` has prepared (module docstring)."""
    require_no_rules(rules)
    checksum = as_str(event.get("checksum"))
    if checksum is not None:
        return v1.checksum_variants(checksum)
    token = _FRAME_MEMO.set({})
    try:
        trees = strategy_trees(event)
    finally:
        _FRAME_MEMO.reset(token)
    fingerprint = v1.custom_fingerprint(event)
    if fingerprint is None:
        variants = {name: Variant.from_component(name, tree) for name, tree in trees.items()}
    else:
        variants = v1.fingerprinted_variants(event, trees, fingerprint)
    variants = v1._with_fallback(variants)
    if get_path(event, v2.FINGERPRINT_INFO, "is_builtin") is True:
        return v2._as_built_in(variants)
    return variants
