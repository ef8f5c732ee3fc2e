"""What every Ray worker of a Crashray instance, and ``crashray up`` itself, runs first.

Ray's ``worker_process_setup_hook`` (``setup_worker``, in the job's runtime environment that
``cluster/runtime.py`` gives ``ray.init``) runs in each worker process before it runs a
task or builds an actor:

1. **Leave pandas out.** Ray Serve imports it if it is there (``ray/serve/_private/utils.py``:
   JSON encoders for DataFrames in responses), and so does pyarrow when it unpickles an
   Arrow table (the consumers' rows reaching the embedded ClickHouse's owner). Crashray never
   uses a DataFrame, and pandas costs each process ~35 MiB of private memory (measured
   importing ``ray.serve``: RSS 186 -> 119 MiB, private dirty 107 -> 74 MiB without it),
   in the processes of a one-node instance (the driver, Serve's controller, proxy and
   HAProxy manager, the ingest replica, the shared process). Both libraries import it inside
   ``try``/``except ImportError`` and go on without it; ``_LeftOut`` makes ``import
   pandas`` raise that ImportError. A detector plugin is user code that may want
   pandas: ``allow_left_out_modules`` runs before one is imported (actors/detectors.py).
2. **Self-reporting** (cluster/self_report.py), when ``CRASHRAY_SELF_DSN`` is set.

Only the instance's own job (``crashray up``, ``crashray deploy``) gets the hook: Ray Data
imports pandas unconditionally, and the jobs that run it (``crashray import``, ``export``,
``reprocess``; a test suite that runs them beside an instance in one process) are other jobs,
with workers of their own. ``prestart_worker_first_driver`` is off then (cluster/runtime.py):
the workers Ray starts ahead for the first driver have no runtime environment, so they could
never serve a job that has one.
"""

from __future__ import annotations

import importlib.abc
import sys
from typing import Any, Final

from cluster import self_report

#: The hook's import path, as Ray's runtime environment names it.
SETUP_HOOK: Final = "cluster.worker_setup.setup_worker"

#: Modules that libraries in Crashray's processes import only when installed, and that no
#: Crashray code uses.
LEFT_OUT_MODULES: Final = ("pandas",)


class _LeftOut(importlib.abc.MetaPathFinder):
    """Refuses to find the ``LEFT_OUT_MODULES`` (and their submodules): ``import`` raises
    ModuleNotFoundError, as if they were not installed. (A ``None`` in ``sys.modules`` would
    do that for Python's ``import``, but Cython's reads ``sys.modules`` itself and takes the
    None for the module: pyarrow's pandas shim then fails on ``pa.array([...])``.)"""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.partition(".")[0] in LEFT_OUT_MODULES:
            raise ModuleNotFoundError(f"{fullname} is left out of this Crashray process"
                                      " (cluster/worker_setup.py)", name=fullname)
        return None


_left_out = _LeftOut()


def leave_out_optional_modules() -> None:
    """From now on ``import`` of a ``LEFT_OUT_MODULES`` module raises ModuleNotFoundError in
    this process; one already imported stays as it is."""
    if any(name in sys.modules for name in LEFT_OUT_MODULES):
        return
    if _left_out not in sys.meta_path:
        sys.meta_path.insert(0, _left_out)


def allow_left_out_modules() -> None:
    """Undo ``leave_out_optional_modules``: before user code that may import them."""
    if _left_out in sys.meta_path:
        sys.meta_path.remove(_left_out)


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook`` for every worker of the instance's job."""
    leave_out_optional_modules()
    self_report.setup_worker()


def runtime_env(settings: Any, leave_out_modules: bool) -> dict[str, Any]:
    """The job's runtime environment for ``ray.init``: self-reporting's when it is on, and
    with ``leave_out_modules`` (the instance's own job) this module's hook, which also starts
    self-reporting; empty when neither."""
    env = self_report.runtime_env(self_report.config_for(settings))
    return {**env, "worker_process_setup_hook": SETUP_HOOK} if leave_out_modules else env
