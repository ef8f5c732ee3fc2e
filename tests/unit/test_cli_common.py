"""The CLI's shared parts that need no database: exit codes from the error tree, where
management commands find a running instance, the usage lines, and the embedded
PostgreSQL's import staying silent without ``XDG_RUNTIME_DIR``."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.cli import build_parser, default_token_scopes
from cluster.cli_common import CliError, instance_base_url, run
from cluster.embedded_postgres import usable_runtime_dir
from cluster.quota_cli import usage_line
from cluster.runtime import (
    INSTANCE_FILE,
    InstanceAddress,
    StartError,
    forget_instance,
    record_instance,
    running_instance,
)
from events.access import ROLE_SCOPES
from events.errors import CrashrayError, NotFound, Throttled
from storage.errors import StorageError
from storage.tenancy import NameTaken

REPO = Path(__file__).resolve().parents[2]


def _failing(error: Exception) -> argparse.Namespace:
    def command(args: argparse.Namespace) -> None:
        raise error

    return argparse.Namespace(func=command, prog="crashray thing do")


@pytest.mark.parametrize(("error", "code"), [
    (CliError("--window must be ≥ 1 second"), 2),
    (NotFound("no organization 'nope'"), 2),
    (NameTaken("user 'bob' exists already"), 2),
    (Throttled("too many failed logins"), 2),
    (StartError("port 9000 on 127.0.0.1 is in use"), 2),
    (StorageError("cannot reach PostgreSQL"), 1),
    (CrashrayError("something broke"), 1),
])
def test_a_refusal_the_user_can_fix_exits_2_a_failure_1(
        error: CrashrayError, code: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(_failing(error)) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"crashray thing do: {error.detail}\n"


def test_errors_name_the_sub_command_as_typed(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["key", "rate-limit", "--project", "web", "--window",
                                      "60"])
    assert run(args) == 2
    assert capsys.readouterr().err == ("crashray key rate-limit: give --window SECONDS and"
                                       " --count EVENTS, or --clear\n")


def test_a_bug_keeps_its_traceback() -> None:
    with pytest.raises(ZeroDivisionError):
        run(_failing(ZeroDivisionError("division by zero")))


def test_token_create_defaults_to_an_owners_scopes() -> None:
    scopes = set(default_token_scopes())
    assert scopes == set(ROLE_SCOPES["owner"])
    assert {"team:admin", "member:admin", "org:admin"} <= scopes


def test_a_running_instance_is_found_by_its_record(tmp_path: Path) -> None:
    record_instance(tmp_path, InstanceAddress(os.getpid(), "http://127.0.0.1:9123"))
    assert running_instance(tmp_path) == InstanceAddress(os.getpid(), "http://127.0.0.1:9123")
    forget_instance(tmp_path)
    assert running_instance(tmp_path) is None


def test_the_record_keeps_the_ray_address_and_reads_an_older_record_without_it(
        tmp_path: Path) -> None:
    record_instance(tmp_path, InstanceAddress(os.getpid(), "http://127.0.0.1:9123",
                                              "127.0.0.1:6380"))
    assert running_instance(tmp_path) == InstanceAddress(
        os.getpid(), "http://127.0.0.1:9123", "127.0.0.1:6380")
    (tmp_path / INSTANCE_FILE).write_text(
        f'{{"pid": {os.getpid()}, "base_url": "http://127.0.0.1:9123"}}')
    assert running_instance(tmp_path) == InstanceAddress(os.getpid(), "http://127.0.0.1:9123")


def test_the_record_of_an_instance_that_died_is_ignored(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    record_instance(tmp_path, InstanceAddress(int(gone.stdout), "http://127.0.0.1:9123"))
    assert running_instance(tmp_path) is None
    (tmp_path / INSTANCE_FILE).write_text("{not json")
    assert running_instance(tmp_path) is None


def test_the_dsn_host_and_port_come_from_flags_then_the_instance_then_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CRASHRAY_PORT", "CRASHRAY_HOST", "CRASHRAY_PUBLIC_HOST"):
        monkeypatch.delenv(name, raising=False)
    parser = build_parser()

    def base_url(*flags: str) -> str:
        return instance_base_url(parser.parse_args(
            ["project", "create", "web", "--org", "acme", "--data-dir", str(tmp_path), *flags]))

    assert base_url() == "http://127.0.0.1:9000"
    record_instance(tmp_path, InstanceAddress(os.getpid(), "http://127.0.0.1:9123"))
    assert base_url() == "http://127.0.0.1:9123"
    assert base_url("--port", "9555") == "http://127.0.0.1:9555"
    assert base_url("--host", "errors.example.com") == "http://errors.example.com:9000"


def test_usage_lines_name_quota_scope_subject_count_and_window_end() -> None:
    ends = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
    assert usage_line("7:1:project:42", 12, ends) == \
        "7 project 42: 12 until 2026-05-01T12:00:00Z"
    assert usage_line("7:1:key:None", 3, ends) == "7 key -: 3 until 2026-05-01T12:00:00Z"


def test_a_runtime_dir_must_be_a_private_directory_of_this_user(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    link = tmp_path / "link"
    link.symlink_to(private)
    assert usable_runtime_dir(private)
    assert not usable_runtime_dir(shared)
    assert not usable_runtime_dir(link)
    assert not usable_runtime_dir(tmp_path / "missing")


def test_the_embedded_postgres_imports_without_a_warning_when_xdg_runtime_dir_is_unset(
        ) -> None:
    env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import os\n"
         "from cluster.embedded_postgres import import_pgserver\n"
         "import_pgserver()\n"
         "assert 'XDG_RUNTIME_DIR' not in os.environ"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
