"""Sentry's built-in rule bases that grouping v2 applies (spec §6.1: config
``newstyle:2023-01-11`` uses stack-trace rule base ``all-platforms:2023-01-11`` and
fingerprinting base ``javascript@2024-02-02``).

The rules are written out below in Crashray's own rule files, in Sentry's rule languages, and
parsed once at import by Crashray's parsers (``builtin=True``: Sentry's matcher readings, see
``events.grouping.fingerprint_rules``). They are part of grouping v2 and FROZEN with it: a
change here is a new grouping version, never an edit.

Stack-trace base, ``ALL_PLATFORMS_2023_01_11``: the rules of Sentry's
``src/sentry/grouping/enhancer/enhancement-configs/all-platforms@2023-01-11.txt`` that are not
restricted to ``family:native``, in Sentry's order. Left out, because native symbolication is
out of Crashray's scope: every ``family:native`` rule (iOS/macOS/Android paths, Rust/C++/
Objective-C borders, crash reporters, and the native frame categories system, std, ui,
malloc, gl, driver, threadbase ...). What remains keeps the non-native categories (Java and
Android modules) and every category rule without a family, so a category that the project's
own rules assign is handled as in Sentry. Where Crashray's reading may differ from Sentry's:

* the webpack/``app:`` in-app rules (Sentry moved them there from its JavaScript processing)
  use ``stack.filename``, a matcher newer than the Sentry parser source we could read;
  Crashray reads it as a path glob on the frame's ``filename``. Crashray's ``**`` matches
  anything, so ``webpack:**`` is "starts with webpack:" as the rules' comment says (the glob
  library of Sentry's Rust enhancer treats a ``**`` not next to ``/`` like ``*``, which would
  not cross the ``/`` of ``webpack:///``);
* module and function globs fold ASCII case only (Sentry's regex folds Unicode case too).

Fingerprinting base, ``JAVASCRIPT_2024_02_02``: the rules of Sentry's
``src/sentry/grouping/fingerprinting/configs/javascript@2024-02-02/`` (``001_chunkload_errors``
then ``002_hydration_errors``). They run after the project's fingerprint rules and never
replace a custom fingerprint the client sent (see ``events.grouping.v2``).
"""

from __future__ import annotations

from typing import Final

from events.grouping.fingerprint_rules import FingerprintRules, parse_fingerprint_rules
from events.grouping.stacktrace_rules import StacktraceRules, parse_stacktrace_rules

__all__ = [
    "ALL_PLATFORMS_2023_01_11",
    "BASE_STACKTRACE_RULES",
    "BUILTIN_FINGERPRINT_RULES",
    "JAVASCRIPT_2024_02_02",
]

ALL_PLATFORMS_2023_01_11: Final = r"""
# Crashray: Sentry's stack-trace rule base all-platforms:2023-01-11 without its family:native
# rules (see events/grouping/builtin_rules.py). Order matters: as in Sentry's file.

## Unreal Engine assertion helpers (no family restriction in Sentry's file)
stack.function:*::Impl::ExecCheckImplInternal | [ stack.function:FDebug::CheckVerifyFailedImpl ] -app
stack.function:FDebug::CheckVerifyFailedImpl2 | [ stack.function:FDebug::CheckVerifyFailedImpl2V ] -app
category:indirection | [ stack.function:FDebug::OptionallyLogFormattedEnsureMessageReturningFalse ] -app

## Dart / Flutter
family:javascript stack.abs_path:org-dartlang-sdk:///** -app -group
family:javascript module:**/packages/flutter/** -app
stack.abs_path:package:sentry/** -app -group
stack.abs_path:package:sentry_flutter/** -app -group
stack.abs_path:package:sentry_logging/** -app -group
stack.abs_path:package:sentry_dio/** -app -group
stack.abs_path:package:sentry_file/** -app -group
stack.abs_path:package:sentry_hive/** -app -group
stack.abs_path:package:sentry_isar/** -app -group
stack.abs_path:package:sentry_sqflite/** -app -group
stack.abs_path:package:sentry_drift/** -app -group
stack.abs_path:package:sentry_isar/** -app
stack.abs_path:package:sentry_link/** -app
stack.abs_path:package:sentry_firebase_remote_config/** -app

## Frame categories of JVM / Android code
module:dalvik.system.* category=system
module:com.android.* category=system
package:/apex/com.android.*/lib*/** category=system
module:com.lenovo.lsf.* category=system
module:com.lenovo.payplus.* category=system
module:java.* category=std
module:com.google.crypto.* category=std
module:com.google.android.* category=std
module:javax.crypto.* category=std
module:android.database.* category=std
module:androidx.* category=std
module:android.* category=std
module:android.os.* category=system
module:android.view.* category=ui
module:android.text.* category=ui
module:android.widget.* category=ui
module:android.app.Dialog category=ui
module:androidx.*.widget.* category=ui
module:com.google.android.material.* category=ui
category:ui function:handleMessage category=indirection
category:ui function:run category=indirection
module:android.os.AsyncTask* function:call category=threadbase
module:java.util.concurrent.ThreadPoolExecutor* function:runWorker category=threadbase
module:android.os.* function:call category=threadbase
module:android.app.ActivityThread function:main category=threadbase
module:android.view.View function:layout category=threadbase
module:android.os.Looper function:loop category=threadbase
module:android.os.Handler function:dispatchMessage category=threadbase
module:android.os.Handler function:handleCallback category=threadbase
module:android.app.ActivityThread* function:handleMessage category=threadbase
module:java.lang.reflect.* category=indirection
module:java.lang.Class function:getMethod category=indirection
module:androidx.work.impl.utils.ForceStopRunnable category=indirection
module:cn.gundam.sdk.* category=telemetry
module:com.lenovo.payplus.analytics.* category=telemetry
package:"**/libBugly.so" category=telemetry
module:java.lang.System function:loadLibrary category=load
module:java.lang.Runtime function:loadLibrary* category=load

## What each category means for grouping
category:driver | [ category:driver ] category=internals
[ category:gl ] | category:gl category=internals
[ category:av ] | category:av category=internals
[ category:malloc ] | category:malloc category=internals
category:throw ^-group
[ function:_purecall ] | category:throw category=internals
[ category:throw ] | category:throw category=internals
category:system -app
category:threadbase -group v-group
category:handler ^-group -group
category:telemetry -group
category:indirection -group
category:internals -group
category:threadbase v-group -group
[ !category:system ] | category:system | [ !category:system ] category=indirection
[ category:free ] | category:system category=internals
[ category:system ] | category:system category=internals
[ category:std ] | category:system category=internals
[ category:std ] | category:std category=internals
[ category:ui ] | category:ui category=internals
[ category:ui ] | category:system category=internals
[ category:internals ] | category:system category=internals
[ category:internals ] | category:ui category=internals
[ category:load ] | category:system category=internals
[ category:load ] | category:load category=internals
[ category:throw ] | category:system category=internals
[ category:runtime ] | category:system category=internals
[ category:runtime ] | category:runtime category=internals
[ category:dtor ] | category:dtor category=internals

## SDK specific: vendored code
path:**/vendor/** -app

## Python
path:**/site-packages/** -app
path:**/dist-packages/** -app

## JavaScript: dependencies and CDNs
path:**/node_modules/** -app
module:unpkg/** -app
path:**https://unpkg.com/** -app
path:**https://cdnjs.cloudflare.com/** -app
path:**https://cdn.jsdelivr.net/** -app
path:**https://esm.run/** -app
family:javascript function:reportError ^-app -app

## JavaScript: webpack and app: sources are in-app unless they come from node_modules (or ~/)
family:javascript stack.abs_path:webpack:** +app
family:javascript stack.abs_path:webpack:** stack.filename:~/*** -app
family:javascript stack.abs_path:webpack:** stack.filename:**/node_modules/** -app
family:javascript stack.abs_path:app:** +app
family:javascript stack.abs_path:app:** stack.filename:**/node_modules/** -app

## JavaScript: transpiler helpers and polyfills never group
module:@babel/** -app -group
module:core-js/** -app -group
module:regenerator-runtime/** -app -group
module:tslib/** -app -group
family:javascript function:_callSuper -app -group

## Node.js task queue internals
function:runMicrotasks -app -group
function:queueMicrotask -app -group
function:processTicksAndRejections -app -group
function:runNextTicks -app -group
function:nextTick -app -group

## Go module cache
path:**/go/pkg/mod/** -app

## Java frameworks are not in-app (the Sentry SDK itself never groups)
module:akka.* category=framework
module:com.fasterxml.* category=framework
module:com.microsoft.* category=framework
module:com.sun.* category=framework
module:feign.* category=framework
module:io.opentelemetry.* category=framework
module:io.sentry.* category=framework -group
module:jdk.* category=framework
module:oauth.* category=framework
module:org.apache.* category=framework
module:org.glassfish.* category=framework
module:org.jboss.* category=framework
module:org.jdesktop.* category=framework
module:org.postgresql.* category=framework
module:org.springframework.* category=framework
module:org.web3j.* category=framework
module:reactor.core.* category=framework
module:scala.* category=framework
module:sun.* category=framework
category:framework -app

## Kotlin
module:kotlin.* -app
module:kotlinx.* -app
module:io.ktor.* -app
module:io.netty.* -app

## Other telemetry SDKs
module:newrelic -app -group
path:**/*newrelic*/** -app -group
path:**/*LogRocket*/** -app -group
"""

JAVASCRIPT_2024_02_02: Final = r"""
# Crashray: Sentry's fingerprinting base javascript@2024-02-02 (see builtin_rules.py).

## 001: chunk load errors group together, whatever chunk failed
family:javascript error.type:"ChunkLoadError" -> chunkloaderror
family:javascript error.value:"ChunkLoadError*" -> chunkloaderror

## 002: React hydration errors group per transaction
family:javascript tags.transaction:"*" message:"Hydration failed because the initial UI does not match what was rendered on the server." -> hydrationerror, {{tags.transaction}}
family:javascript tags.transaction:"*" message:"The server could not finish this Suspense boundary, likely due to an error during server rendering. Switched to client rendering." -> hydrationerror, {{tags.transaction}}
family:javascript tags.transaction:"*" message:"There was an error while hydrating this Suspense boundary. Switched to client rendering." -> hydrationerror, {{tags.transaction}}
family:javascript tags.transaction:"*" message:"There was an error while hydrating. Because the error happened outside of a Suspense boundary, the entire root will switch to client rendering." -> hydrationerror, {{tags.transaction}}
family:javascript tags.transaction:"*" message:"Text content does not match server-rendered HTML." -> hydrationerror, {{tags.transaction}}
"""

#: Parsed once; its two passes (classifier, contributes) are compiled here too, not per event.
BASE_STACKTRACE_RULES: Final[StacktraceRules] = parse_stacktrace_rules(
    ALL_PLATFORMS_2023_01_11, builtin=True)
_ = (BASE_STACKTRACE_RULES.classifier_pass, BASE_STACKTRACE_RULES.contributes_pass)

BUILTIN_FINGERPRINT_RULES: Final[FingerprintRules] = parse_fingerprint_rules(
    JAVASCRIPT_2024_02_02, builtin=True)
