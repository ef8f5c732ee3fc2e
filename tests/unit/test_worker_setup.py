"""What every worker of an instance runs first (cluster/worker_setup.py), without Ray: each
check runs in a fresh Python process, as a worker is, so pandas stays in this one."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cluster import self_report
from cluster.runtime import local_ray_system_config
from cluster.settings import Settings
from cluster.worker_setup import SETUP_HOOK, runtime_env


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_worker_imports_serve_and_unpickles_arrow_tables_without_pandas() -> None:
    out = run_python("""
        import pickle, sys
        from cluster.worker_setup import setup_worker
        setup_worker()
        import pyarrow as pa
        from ray.serve._private import utils
        table = pickle.loads(pickle.dumps(pa.table({"event_id": ["a", "b"]})))
        column = pa.array(["c"])  # pyarrow's pandas shim asks for pandas here
        try:
            import pandas
        except ImportError:
            refused = True
        else:
            refused = False
        print(table.num_rows, len(column), utils.pd is None, refused, "pandas" in sys.modules)
    """)
    assert out.split() == ["2", "1", "True", "True", "False"]


def test_a_detector_plugin_may_import_pandas(tmp_path: Path) -> None:
    out = run_python(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        open({str(tmp_path / "pandas_detector.py")!r}, "w").write(
            "import pandas\\n"
            "class PandasDetector:\\n"
            "    name = 'pandas-user'\\n"
            "    def observe(self, series): return []\\n"
            "    def checkpoint(self): return b''\\n"
            "    def restore(self, state): pass\\n")
        from cluster.worker_setup import setup_worker
        setup_worker()
        from actors.detectors import load_detector_class
        load_detector_class("events.anomaly:EscalatingDetector", "built-in")
        try:
            import pandas
        except ImportError:
            still_left_out = True
        else:
            still_left_out = False
        found = load_detector_class("pandas_detector:PandasDetector", "CRASHRAY_DETECTORS")
        print(still_left_out, found.name, type(sys.modules["pandas"]).__name__)
    """)
    assert out.split() == ["True", "pandas-user", "module"]


def test_a_module_already_imported_stays() -> None:
    out = run_python("""
        import sys
        import pandas
        from cluster.worker_setup import leave_out_optional_modules
        leave_out_optional_modules()
        print(sys.modules["pandas"] is pandas)
    """)
    assert out.split() == ["True"]


def test_the_instances_own_job_gets_the_hook_with_or_without_self_reporting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CRASHRAY_SELF_DSN", raising=False)
    assert runtime_env(Settings(), leave_out_modules=True) == {
        "worker_process_setup_hook": SETUP_HOOK}
    assert runtime_env(Settings(), leave_out_modules=False) == {}
    monkeypatch.setenv("CRASHRAY_SELF_DSN", "http://k@127.0.0.1:9999/1")
    env = runtime_env(Settings(), leave_out_modules=True)
    assert env["worker_process_setup_hook"] == SETUP_HOOK
    assert self_report.CONFIG_ENV in env["env_vars"]  # and setup_worker starts it
    other_job = runtime_env(Settings(), leave_out_modules=False)
    assert other_job["worker_process_setup_hook"] == self_report.SETUP_HOOK


def test_a_job_with_a_runtime_environment_gets_no_workers_started_ahead() -> None:
    assert local_ray_system_config({})["prestart_worker_first_driver"] is True
    assert local_ray_system_config(
        {"worker_process_setup_hook": SETUP_HOOK})["prestart_worker_first_driver"] is False
