"""Crashray grouping "v1" = Sentry's ``newstyle:2023-01-11`` as far as the spec describes it.

FROZEN once shipped (STYLE.md): a behaviour change is a new ``v2.py`` plus a registry entry,
never an edit here, because stored group hashes would silently stop matching.

Pipeline (spec §6.2), all pure functions over the Relay-normalised event:

    checksum?  ── yes ─▶ checksum variants (§6.2)
       │ no
    strategies, highest priority first (§6.2): exception (chained, 2000) ▸ threads (1900)
       ▸ stacktrace (1800) ▸ message (0). The first strategy producing a contributing
       component wins; components of later strategies are marked non-contributing.
       Stack-based strategies produce variants ``app`` and ``system`` (§6.4), the message
       strategy ``default``.
    fingerprint (§6.7): custom ▸ ``custom-fingerprint``; mixed with ``{{ default }}`` ▸ salted
    nothing contributes ▸ ``fallback`` (md5 of nothing)

Not implemented: stack-trace rules (server-side fingerprint rules are applied before v1 runs by
``group_hashes_for_event``; any other ``rules`` must be ``None``), the template/CSP/HPKP/Expect-* strategies, native function-signature trimming.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Final

from events.grouping.component import Component, Variant, component
from events.grouping.parameterize import normalize_message_for_grouping
from events.grouping.rules import GroupingRules, require_no_rules
from events.grouping.shape import (
    as_mapping,
    as_str,
    basename,
    get_path,
    interface_values,
    mappings,
    tag_value,
)

SENTRY_CONFIG_ID: Final = "newstyle:2023-01-11"

APP: Final = "app"
SYSTEM: Final = "system"
DEFAULT: Final = "default"
CUSTOM_FINGERPRINT: Final = "custom-fingerprint"
FALLBACK: Final = "fallback"
CHECKSUM: Final = "checksum"
HASHED_CHECKSUM: Final = "hashed-checksum"
STACK_VARIANTS: Final = (APP, SYSTEM)

# §6.1: context lines are hashed for these platforms only.
CONTEXT_LINE_PLATFORMS: Final = frozenset({"javascript", "node", "python", "php", "ruby"})
# Sentry's "javascript" behaviour family (function trimming, junk functions, ...).
JAVASCRIPT_PLATFORMS: Final = frozenset({"javascript", "node"})
# §6.5: a context line longer than this (before whitespace collapsing) does not contribute.
MAX_CONTEXT_LINE_CHARS: Final = 120

_URL_SCHEMES: Final = ("http:", "https:", "applewebdata:", "blob:")
_ANONYMOUS_FILENAMES: Final = frozenset({"<anonymous>", "[native code]"})
_JS_NATIVE_PATHS: Final = frozenset({"[native code]", "native code", "eval code", "<anonymous>"})
_JS_JUNK_FUNCTIONS: Final = frozenset(
    {"", "?", "<anonymous function>", "<anonymous>", "Anonymous function"}
)
# §6.5 lists these for native frames; they are placeholders on any platform, so v1 ignores
# them everywhere.
_UNKNOWN_FUNCTIONS: Final = frozenset({"<redacted>", "<unknown>"})
_RECURSION_KEYS: Final = ("abs_path", "package", "module", "filename", "function", "lineno", "colno")

# §6.5 module column: Java code-generation markers collapse to a stable form. The spec names
# the markers but not Sentry's exact patterns; these are Crashray's (applied on any platform,
# the markers being Java/Clojure-specific).
_JAVA_CODEGEN: Final = (
    (re.compile(r"\$\$(EnhancerByGuice|EnhancerByCGLIB|FastClassByCGLIB)\$\$[0-9a-fA-F]+"),
     r"$$\1$$<auto>"),
    (re.compile(r"\$HibernateProxy\$[0-9a-zA-Z]+"), "$HibernateProxy$<auto>"),
    (re.compile(r"(Generated(?:Serialization)?(?:Method|Constructor)Accessor)\d+"), r"\1"),
    (re.compile(r"\$fn__\d+"), "$fn__<auto>"),
)
_JAVASSIST: Final = (
    (re.compile(r"_\$\$_javassist(_seam)?_\d+"), r"_$$_javassist\1<auto>"),
    (re.compile(r"_\$\$_jvst[0-9a-fA-F]+_[0-9a-fA-F]+"), "_$$_jvst<auto>"),
)
_RUBY_ERB_SUFFIX: Final = re.compile(r"__\d+_\d+$")


# --- small predicates --------------------------------------------------------------------


def _platform(event: Mapping[str, Any]) -> str:
    return as_str(event.get("platform")) or "other"


def _frame_platform(frame: Mapping[str, Any], event_platform: str) -> str:
    """A frame's own ``platform`` overrides the event's (§4.2)."""
    return as_str(frame.get("platform")) or event_platform


def _has_url_origin(path: str | None) -> bool:
    """Sentry ``has_url_origin`` without ``file:`` (§6.5: file counts only in some contexts)."""
    return path is not None and path.lower().startswith(_URL_SCHEMES)


def _frame_path(frame: Mapping[str, Any]) -> str | None:
    """``abs_path``; ``filename`` only when Relay did not fill ``abs_path`` in."""
    return as_str(frame.get("abs_path")) or as_str(frame.get("filename"))


def _is_in_app(frame: Mapping[str, Any]) -> bool:
    """§4.2/§6.4: only ``in_app: true`` counts; null or missing is not in-app."""
    return frame.get("in_app") is True


def _substitute_all(value: str, rules: Sequence[tuple[re.Pattern[str], str]]) -> str:
    # Every codegen pattern above needs a "$" or "Generated"; most names have neither, and
    # skipping the regexes for them is the cheapest part of hashing a frame.
    if "$" not in value and "Generated" not in value:
        return value
    for pattern, replacement in rules:
        value = pattern.sub(replacement, value)
    return value


# --- frame (§6.5) ------------------------------------------------------------------------


def _module_component(frame: Mapping[str, Any], platform: str) -> Component:
    module = as_str(frame.get("module"))
    if module is None:
        return component("module")
    bad_js_module = "/" in module and (_frame_path(frame) or "").endswith(module)
    if platform in JAVASCRIPT_PLATFORMS and bad_js_module:
        return component("module", (module,), contributes=False,
                         hint="ignored bad javascript module")
    if "$$Lambda$" in module:
        return component("module", (module,), contributes=False, hint="ignored java lambda")
    return component("module", (_substitute_all(module, _JAVA_CODEGEN),))


def _filename_component(frame: Mapping[str, Any], module: Component) -> Component:
    filename = as_str(frame.get("filename"))
    if filename is None:
        return component("filename")
    name = _substitute_all(basename(filename), _JAVASSIST).lower()
    if not name:
        return component("filename")
    if module.contributes:
        hint = "ignored because module takes precedence"
    elif _has_url_origin(_frame_path(frame)):
        hint = "ignored because frame points to a URL"
    elif name in _ANONYMOUS_FILENAMES:
        hint = "ignored because filename is anonymous or native code"
    else:
        return component("filename", (name,))
    return component("filename", (name,), contributes=False, hint=hint)


def _has_function(frame: Mapping[str, Any]) -> bool:
    return as_str(frame.get("function")) is not None or as_str(frame.get("raw_function")) is not None


def _context_line_component(frame: Mapping[str, Any], platform: str) -> Component | None:
    """Only for §6.1 context-line platforms and only when a context line was sent."""
    if platform not in CONTEXT_LINE_PLATFORMS:
        return None
    line = as_str(frame.get("context_line"))
    if line is None:
        return None
    if len(line) > MAX_CONTEXT_LINE_CHARS:
        return component("context-line", contributes=False,
                         hint="ignored because line exceeds maximum length")
    collapsed = " ".join(line.split())
    if not collapsed:
        return None
    if (platform in JAVASCRIPT_PLATFORMS and not _has_function(frame)
            and _has_url_origin(_frame_path(frame))):
        return component("context-line", (collapsed,), contributes=False,
                         hint="ignored because frame has no function and points to a URL")
    return component("context-line", (collapsed,))


def _function_name(frame: Mapping[str, Any], platform: str) -> str | None:
    """``function`` else ``raw_function``, with the per-platform trimming of §6.5."""
    name = as_str(frame.get("function")) or as_str(frame.get("raw_function"))
    if name is None:
        return None
    if platform in JAVASCRIPT_PLATFORMS:
        return name.rsplit(".", 1)[-1]
    if platform == "ruby":
        if name.startswith("block "):
            return "block"
        return _RUBY_ERB_SUFFIX.sub("", name)
    if platform == "php" and name.startswith("class@anonymous") and "::" in name:
        return name.rsplit("::", 1)[-1]
    return name


def _ignored_function_hint(
    name: str, frame: Mapping[str, Any], platform: str, context_line: Component | None
) -> str | None:
    if name in _UNKNOWN_FUNCTIONS:
        return "ignored unknown function name"
    if platform == "php" and name.startswith("[Anonymous"):
        return "ignored anonymous function"
    if name.startswith("lambda$"):
        return "ignored java lambda"
    if platform not in JAVASCRIPT_PLATFORMS:
        return None
    if name in _JS_JUNK_FUNCTIONS or name.endswith("/<"):
        return "ignored unknown function name"
    sourcemapped = get_path(frame, "data", "sourcemap") is not None
    if sourcemapped and context_line is not None and context_line.contributes:
        return "ignored because sourcemap used and context line available"
    return None


def _function_component(
    frame: Mapping[str, Any], platform: str, context_line: Component | None
) -> Component:
    name = _function_name(frame, platform)
    if name is None:
        return component("function")
    hint = _ignored_function_hint(name, frame, platform, context_line)
    if hint is not None:
        return component("function", (name,), contributes=False, hint=hint)
    return component("function", (name,))


def _frame_exclusion_hint(
    frame: Mapping[str, Any], platform: str, previous: Mapping[str, Any] | None
) -> str | None:
    """Whole-frame exclusions of §6.5: JS eval/native-code frames and recursion; and frames
    excluded by a stack-trace rule (§6.8, private key ``"_group": False``)."""
    if frame.get("_group") is False:
        return "ignored by stack trace rule"
    js_eval_or_native = (
        _function_name(frame, platform) == "eval"
        or as_str(frame.get("abs_path")) in _JS_NATIVE_PATHS
    )
    if platform in JAVASCRIPT_PLATFORMS and js_eval_or_native:
        return "ignored because it is a JavaScript eval or native-code frame"
    if previous is not None and all(frame.get(k) == previous.get(k) for k in _RECURSION_KEYS):
        return "ignored due to recursion"
    return None


def frame_component(
    frame: Mapping[str, Any],
    event_platform: str,
    variant: str,
    previous: Mapping[str, Any] | None = None,
) -> Component:
    """``frame:v1``: module, filename, function, [context-line] (§6.5), per variant (§6.4)."""
    memo = _FRAME_MEMO.get()
    key = (id(frame), id(previous), event_platform)
    result = memo.get(key) if memo is not None else None
    if result is None:
        result = _frame_component_any_variant(frame, event_platform, previous)
        if memo is not None:
            memo[key] = result
    if variant == APP and not _is_in_app(frame):
        result = result.excluded("non app frame")
    return result


#: Frame components of the event being grouped, shared by its app and system variants
#: (they differ only in which frames are excluded). Set by ``variants_for_event`` for the
#: duration of one call, keyed by object ids that are stable while the event is alive.
_FRAME_MEMO: ContextVar[dict[tuple[int, int, str], Component] | None] = ContextVar(
    "_FRAME_MEMO", default=None)


def _frame_component_any_variant(
    frame: Mapping[str, Any], event_platform: str, previous: Mapping[str, Any] | None
) -> Component:
    platform = _frame_platform(frame, event_platform)
    module = _module_component(frame, platform)
    context_line = _context_line_component(frame, platform)
    values = [
        module,
        _filename_component(frame, module),
        _function_component(frame, platform, context_line),
    ]
    if context_line is not None:
        values.append(context_line)
    result = component("frame", values)
    hint = _frame_exclusion_hint(frame, platform, previous)
    if hint is not None:
        result = result.excluded(hint)
    return result


# --- stack trace (§6.4, §6.5) ------------------------------------------------------------


def _single_js_frame_hint(frames: Sequence[Mapping[str, Any]], event_platform: str) -> str | None:
    """§6.5 bug compatibility of the 2023 config: a lone JS frame without a function whose
    path *is* a URL does not contribute (the Fall 2025 config inverts the URL check)."""
    if len(frames) != 1:
        return None
    frame = frames[0]
    if _frame_platform(frame, event_platform) not in JAVASCRIPT_PLATFORMS or _has_function(frame):
        return None
    if not _has_url_origin(_frame_path(frame)):
        return None
    return "ignored single frame without function from a URL"


def _frame_components(
    frames: Sequence[Mapping[str, Any]], event_platform: str, variant: str
) -> list[Component]:
    children: list[Component] = []
    previous: Mapping[str, Any] | None = None
    for frame in frames:
        children.append(frame_component(frame, event_platform, variant, previous))
        previous = frame
    single_hint = _single_js_frame_hint(frames, event_platform)
    if single_hint is not None:
        children = [child.excluded(single_hint) for child in children]
    return children


def stacktrace_component(
    stacktrace: Mapping[str, Any], event_platform: str, variant: str
) -> Component:
    """Frames in payload order (oldest first); contribution rules of §6.4 per variant."""
    frames = mappings(stacktrace.get("frames"))
    if not frames:
        return component("stacktrace", contributes=False,
                         hint="ignored because it contains no frames")
    children = _frame_components(frames, event_platform, variant)
    if variant == APP and not any(_is_in_app(frame) for frame in frames):
        return component("stacktrace", children, contributes=False,
                         hint="ignored because it contains no in-app frames")
    if not any(child.contributes for child in children):
        which = "in-app frames" if variant == APP else "frames"
        return component("stacktrace", children, contributes=False,
                         hint=f"ignored because it contains no contributing {which}")
    return component("stacktrace", children)


# --- single exception (§6.5) -------------------------------------------------------------


def _type_component(exception: Mapping[str, Any]) -> Component:
    exception_type = as_str(exception.get("type"))
    if exception_type is None:
        return component("type")
    if get_path(exception, "mechanism", "synthetic") is True:
        return component("type", (exception_type,), contributes=False,
                         hint="ignored because exception is synthetic")
    return component("type", (exception_type,))


def _ns_error_component(exception: Mapping[str, Any]) -> Component | None:
    """Apple ``mechanism.meta.ns_error`` domain + code, when sent."""
    ns_error = as_mapping(get_path(exception, "mechanism", "meta", "ns_error"))
    if ns_error is None:
        return None
    domain = as_str(ns_error.get("domain"))
    code = ns_error.get("code")
    values = [domain] if domain is not None else []
    if isinstance(code, int) and not isinstance(code, bool):
        values.append(str(code))
    return component("ns-error", values)


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
    """``exception``: stacktrace, type, [ns-error], value: the 2023 "legacy order" (§6.5)."""
    raw_stacktrace = as_mapping(exception.get("stacktrace"))
    stacktrace = (
        stacktrace_component(raw_stacktrace, event_platform, variant)
        if raw_stacktrace is not None
        else None
    )
    ns_error = _ns_error_component(exception)
    values = [c for c in (stacktrace, _type_component(exception), ns_error) if c is not None]
    values.append(_value_component(exception, stacktrace, ns_error))
    return component("exception", values)


# --- exception groups (§6.5) -------------------------------------------------------------


def _exception_ids(exceptions: Sequence[Mapping[str, Any]]) -> list[int] | None:
    """``mechanism.exception_id`` of every exception, or ``None`` if any is missing/duplicate."""
    ids: list[int] = []
    for exception in exceptions:
        exception_id = get_path(exception, "mechanism", "exception_id")
        if not isinstance(exception_id, int) or isinstance(exception_id, bool):
            return None
        ids.append(exception_id)
    return ids if len(set(ids)) == len(ids) else None


def _exception_children(
    exceptions: Sequence[Mapping[str, Any]],
) -> tuple[int, dict[int, list[int]]] | None:
    """(root index, children by index in payload order), or ``None`` if the ids of §6.5
    (``exception_id``/``parent_id``) do not form one consistent tree."""
    ids = _exception_ids(exceptions)
    if ids is None:
        return None
    index_of = {exception_id: index for index, exception_id in enumerate(ids)}
    children: dict[int, list[int]] = {index: [] for index in range(len(exceptions))}
    roots: list[int] = []
    for index, exception in enumerate(exceptions):
        parent = get_path(exception, "mechanism", "parent_id")
        if parent is None:
            roots.append(index)
        elif isinstance(parent, int) and parent != ids[index] and parent in index_of:
            children[index_of[parent]].append(index)
        else:
            return None
    if len(roots) != 1 or not _reaches_all(roots[0], children):
        return None
    return roots[0], children


def _reaches_all(root: int, children: Mapping[int, list[int]]) -> bool:
    """Every exception is reachable from the root exactly once (no cycles, no orphans)."""
    seen: set[int] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if node in seen:
            return False
        seen.add(node)
        pending.extend(children[node])
    return len(seen) == len(children)


def _is_exception_group(exception: Mapping[str, Any]) -> bool:
    return get_path(exception, "mechanism", "is_exception_group") is True


def _top_level_exceptions(
    exceptions: Sequence[Mapping[str, Any]], root: int, children: Mapping[int, list[int]]
) -> list[int]:
    """The first non-group exceptions met walking down from the root through groups."""
    found: list[int] = []
    pending = [root]
    while pending:
        node = pending.pop()
        if _is_exception_group(exceptions[node]):
            pending.extend(reversed(children[node]))
        else:
            found.append(node)
    return found


def _skips_exception_groups(event: Mapping[str, Any]) -> bool:
    """§6.5: sentry-python 3.x events keep their list unchanged (hash stability)."""
    name = as_str(get_path(event, "sdk", "name")) or ""
    version = as_str(get_path(event, "sdk", "version")) or ""
    return name.startswith("sentry.python") and version.split(".", 1)[0] == "3"


def _select_for_exception_groups(
    event: Mapping[str, Any],
    exceptions: Sequence[Mapping[str, Any]],
    components: list[Component],
) -> list[Component]:
    """§6.5 exception-group filtering; the list is returned unchanged when not applicable."""
    if not any(_is_exception_group(e) for e in exceptions) or _skips_exception_groups(event):
        return components
    tree = _exception_children(exceptions)
    if tree is None:
        return components
    root, children = tree
    top_level = _top_level_exceptions(exceptions, root, children)
    if not top_level:
        return components
    top_level.sort(key=lambda index: as_str(exceptions[index].get("type")) or "", reverse=True)
    distinct: dict[str | None, int] = {}
    for index in top_level:
        distinct.setdefault(components[index].hash(), index)
    if len(distinct) > 1:
        # One of each distinct top-level exception, then the root group (most recent last).
        return [components[index] for index in distinct.values()] + [components[root]]
    chain = [top_level[0]]
    while children[chain[-1]]:
        chain.append(children[chain[-1]][0])
    # Payload convention (§4.2): causes first, the exception itself last.
    return [components[index] for index in reversed(chain)]


# --- strategies (§6.2, §6.5) -------------------------------------------------------------


def remove_non_stacktrace_variants(produced: Mapping[str, Component]) -> dict[str, Component]:
    """§6.4: once any variant has a contributing stack trace, variants without one stop
    contributing (a Python error with only library frames groups by the system stack)."""
    with_stacktrace = {name for name, tree in produced.items() if tree.has_contributing("stacktrace")}
    if not with_stacktrace:
        return dict(produced)
    return {
        name: tree if name in with_stacktrace else tree.excluded(
            "ignored because it contains no contributing stacktrace but another variant does"
        )
        for name, tree in produced.items()
    }


def _chained_exception_component(
    event: Mapping[str, Any], exceptions: Sequence[Mapping[str, Any]], variant: str
) -> Component:
    platform = _platform(event)
    components = [exception_component(e, platform, variant) for e in exceptions]
    selected = _select_for_exception_groups(event, exceptions, components)
    if len(selected) == 1:
        return selected[0]  # §6.5: a single exception is not nested
    return component("chained-exception", selected)


def chained_exception_strategy(event: Mapping[str, Any]) -> dict[str, Component]:
    """One child per exception in payload order (oldest first, §4.2 / §6.5)."""
    exceptions = interface_values(event.get("exception"))
    if not exceptions:
        return {}
    has_frames = any(mappings(get_path(e, "stacktrace", "frames")) for e in exceptions)
    # §6.5: an exception without a stack trace produces only the app variant.
    variants = STACK_VARIANTS if has_frames else (APP,)
    produced = {v: _chained_exception_component(event, exceptions, v) for v in variants}
    return remove_non_stacktrace_variants(produced)


def grouping_thread(threads: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """§6.5: the single crashed thread, else the single current one, else the only thread."""
    for flag in ("crashed", "current"):
        flagged = [thread for thread in threads if thread.get(flag) is True]
        if len(flagged) == 1:
            return flagged[0]
    return threads[0] if len(threads) == 1 else None


def _threads_component(thread: Mapping[str, Any] | None, platform: str, variant: str) -> Component:
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
    thread = grouping_thread(threads)
    return {v: _threads_component(thread, _platform(event), v) for v in STACK_VARIANTS}


def stacktrace_strategy(event: Mapping[str, Any]) -> dict[str, Component]:
    """Top-level ``event.stacktrace`` (e.g. ``attach_stacktrace=True`` on messages)."""
    stacktrace = as_mapping(event.get("stacktrace"))
    if stacktrace is None:
        return {}
    return {v: stacktrace_component(stacktrace, _platform(event), v) for v in STACK_VARIANTS}


def message_text(event: Mapping[str, Any]) -> str | None:
    """§4.3: ``logentry.message`` (the template) if present, else ``logentry.formatted``."""
    logentry = as_mapping(event.get("logentry"))
    if logentry is None:
        return None
    return as_str(logentry.get("message")) or as_str(logentry.get("formatted"))


def message_strategy(event: Mapping[str, Any]) -> dict[str, Component]:
    text = message_text(event)
    if text is None:
        return {}
    return {DEFAULT: component("message", (normalize_message_for_grouping(text),))}


Strategy = Callable[[Mapping[str, Any]], dict[str, Component]]

# §6.2 priority order (scores 2000, 1900, 1800, 0).
STRATEGIES: Final[tuple[tuple[str, Strategy], ...]] = (
    ("exception", chained_exception_strategy),
    ("threads", threads_strategy),
    ("stacktrace", stacktrace_strategy),
    ("message", message_strategy),
)


def strategy_trees(event: Mapping[str, Any]) -> dict[str, Component]:
    """Root component per variant; only the first strategy that contributes keeps doing so."""
    winner: str | None = None
    per_variant: dict[str, list[Component]] = {}
    for name, strategy in STRATEGIES:
        produced = strategy(event)
        if winner is not None:
            produced = {
                variant: tree.excluded(f"ignored because {winner} takes precedence")
                for variant, tree in produced.items()
            }
        elif any(tree.contributes for tree in produced.values()):
            winner = name
        for variant, tree in produced.items():
            per_variant.setdefault(variant, []).append(tree)
    return {variant: component(variant, trees) for variant, trees in per_variant.items()}


# --- fingerprints (§6.7) -----------------------------------------------------------------

_FINGERPRINT_VARIABLE: Final = re.compile(r"\{\{\s*(\S+?)\s*\}\}")


def _variable_name(entry: str) -> str | None:
    """``name`` of a ``{{ name }}`` entry (whitespace inside the braces optional)."""
    match = _FINGERPRINT_VARIABLE.fullmatch(entry)
    return match.group(1) if match else None


def is_default_entry(entry: str) -> bool:
    name = _variable_name(entry)
    return name is not None and name.lower() == "default"


def custom_fingerprint(event: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The event's fingerprint, or ``None`` for normal grouping (missing, empty, or exactly
    ``["{{ default }}"]``). Relay already turned numbers into strings; other entries are
    dropped."""
    raw = event.get("fingerprint")
    if not isinstance(raw, list):
        return None
    entries = tuple(entry for entry in raw if isinstance(entry, str))
    if not entries or (len(entries) == 1 and is_default_entry(entries[0])):
        return None
    return entries


def _last_exception_field(event: Mapping[str, Any], key: str) -> str | None:
    exceptions = interface_values(event.get("exception"))
    return as_str(exceptions[-1].get(key)) if exceptions else None


def crash_frame(event: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The top-most in-app frame (last in payload order), else the top-most frame, of the
    most recent exception with frames, else the grouping thread, else ``event.stacktrace``."""
    stacktraces = [e.get("stacktrace") for e in reversed(interface_values(event.get("exception")))]
    thread = grouping_thread(interface_values(event.get("threads")))
    if thread is not None:
        stacktraces.append(thread.get("stacktrace"))
    stacktraces.append(event.get("stacktrace"))
    for stacktrace in stacktraces:
        frames = mappings(get_path(stacktrace, "frames"))
        if frames:
            in_app = [frame for frame in frames if _is_in_app(frame)]
            return in_app[-1] if in_app else frames[-1]
    return None


def _crash_frame_field(event: Mapping[str, Any], key: str) -> str | None:
    frame = crash_frame(event)
    return as_str(frame.get(key)) if frame is not None else None


def _crash_frame_package(event: Mapping[str, Any]) -> str | None:
    package = _crash_frame_field(event, "package")
    return (basename(package) or None) if package is not None else None


_VariableGetter = Callable[[Mapping[str, Any]], str | None]

# §6.7 variables: (names, getter, placeholder when the event has no value).
_FINGERPRINT_VARIABLES: Final[tuple[tuple[tuple[str, ...], _VariableGetter, str], ...]] = (
    (("transaction",), lambda e: as_str(e.get("transaction")), "<no-transaction>"),
    (("type", "error.type"), lambda e: _last_exception_field(e, "type"), "<no-type>"),
    (("value", "error.value"), lambda e: _last_exception_field(e, "value"), "<no-value>"),
    (("function", "stack.function"), lambda e: _crash_frame_field(e, "function"),
     "<no-function>"),
    (("module", "stack.module"), lambda e: _crash_frame_field(e, "module"), "<no-module>"),
    (("package", "stack.package"), _crash_frame_package, "<no-package>"),
    (("path", "stack.abs_path"), lambda e: _crash_frame_field(e, "abs_path"), "<no-abs-path>"),
    (("stack.filename",), lambda e: _crash_frame_field(e, "filename"), "<no-filename>"),
    (("level",), lambda e: as_str(e.get("level")), "<no-level>"),
    (("logger",), lambda e: as_str(e.get("logger")), "<no-logger>"),
    (("message",), lambda e: as_str(get_path(e, "logentry", "formatted")) or message_text(e),
     "<no-message>"),
)
_VARIABLE_LOOKUP: Final = {
    name: (getter, placeholder)
    for names, getter, placeholder in _FINGERPRINT_VARIABLES
    for name in names
}


def resolve_fingerprint_entry(entry: str, event: Mapping[str, Any]) -> str:
    """A literal stays itself; a known variable resolves; an unknown variable keeps its
    literal text (the 2023 behaviour, §6.7)."""
    name = _variable_name(entry)
    if name is None:
        return entry
    if name.lower().startswith("tags."):
        tag = name[len("tags."):]
        return tag_value(event.get("tags"), tag) or f"<no-value-for-tag-{tag}>"
    known = _VARIABLE_LOOKUP.get(name.lower())
    if known is None:
        return entry
    getter, placeholder = known
    return getter(event) or placeholder


def _salted_tree(name: str, tree: Component, fingerprint: Sequence[str],
                 resolved: Sequence[str]) -> Component:
    """The variant's tree spliced in at each ``{{ default }}``, resolved entries around it."""
    if not tree.contributes:
        return tree
    values: list[Component] = []
    for entry, value in zip(fingerprint, resolved, strict=True):
        if is_default_entry(entry):
            values.extend(tree.children())
        else:
            values.append(component("fingerprint", (value,)))
    return component(name, values, hint="salted with the fingerprint")


def fingerprinted_variants(
    event: Mapping[str, Any], trees: Mapping[str, Component], fingerprint: Sequence[str]
) -> dict[str, Variant]:
    """§6.7: custom fingerprint (no ``{{ default }}``) or salted variants (mixed)."""
    resolved = [resolve_fingerprint_entry(entry, event) for entry in fingerprint]
    if any(is_default_entry(entry) for entry in fingerprint):
        return {
            name: Variant.from_component(name, _salted_tree(name, tree, fingerprint, resolved))
            for name, tree in trees.items()
        }
    variants = {
        name: Variant.from_component(
            name, tree.excluded("ignored because custom fingerprint takes precedence"))
        for name, tree in trees.items()
    }
    custom = component(CUSTOM_FINGERPRINT, resolved)
    variants[CUSTOM_FINGERPRINT] = Variant.from_component(CUSTOM_FINGERPRINT, custom)
    return variants


# --- checksum, fallback, entry point (§6.2) ----------------------------------------------

_HEX_CHECKSUM: Final = re.compile(r"[0-9a-fA-F]{32}")


def checksum_variants(checksum: str) -> dict[str, Variant]:
    """§6.2 legacy client hash: 32 hex chars are used as-is; anything else is md5-ed, and the
    raw value is kept as a second hash when it is at most 32 characters long."""
    raw = component(CHECKSUM, (checksum,))
    if _HEX_CHECKSUM.fullmatch(checksum):
        return {CHECKSUM: Variant(name=CHECKSUM, component=raw, hash=checksum)}
    hashed = component(HASHED_CHECKSUM, (checksum,))
    variants = {HASHED_CHECKSUM: Variant.from_component(HASHED_CHECKSUM, hashed)}
    if len(checksum) <= 32:
        variants[CHECKSUM] = Variant(name=CHECKSUM, component=raw, hash=checksum)
    return variants


def _with_fallback(variants: dict[str, Variant]) -> dict[str, Variant]:
    """§6.2: nothing contributes ⇒ ``fallback`` = md5 of nothing (d41d8cd98f00b204e9800998ecf8427e)."""
    if any(variant.contributes for variant in variants.values()):
        return variants
    fallback = component(FALLBACK, contributes=True,
                         hint="no grouping information: every such event shares this hash")
    return {**variants, FALLBACK: Variant.from_component(FALLBACK, fallback)}


def variants_for_event(
    event: Mapping[str, Any], rules: GroupingRules | None = None
) -> dict[str, Variant]:
    """All grouping variants of a Relay-normalised event under v1 (see module docstring)."""
    require_no_rules(rules)
    checksum = as_str(event.get("checksum"))
    if checksum is not None:
        return checksum_variants(checksum)
    token = _FRAME_MEMO.set({})
    try:
        trees = strategy_trees(event)
    finally:
        _FRAME_MEMO.reset(token)
    fingerprint = custom_fingerprint(event)
    if fingerprint is None:
        variants = {name: Variant.from_component(name, tree) for name, tree in trees.items()}
    else:
        variants = fingerprinted_variants(event, trees, fingerprint)
    return _with_fallback(variants)
