"""``crashray quota …`` and ``crashray key rate-limit`` against the machine's PostgreSQL (the
settings point them at a scratch database, as CRASHRAY_POSTGRES_URL would for a user)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cluster.cli import main
from storage import postgres
from storage.bootstrap import bootstrap
from tests.support import scratch_database


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    with scratch_database("crashray_cli") as url:
        postgres.migrate(url)
        with psycopg.connect(url) as conn:
            bootstrap(conn, grouping_config="v2")
        monkeypatch.setenv("CRASHRAY_POSTGRES_URL", url)
        monkeypatch.setenv("CRASHRAY_DATA_DIR", str(tmp_path))
        yield url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_quotas_are_added_listed_and_deleted_from_the_shell(
        database: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "quota", "add", "--scope", "project", "--project", "default",
                       "--category", "error", "--window", "60", "--limit", "5",
                       "--reason", "too_many")
    added = re.search(r"^Added quota (\d+)$", out, re.MULTILINE)
    assert code == 0 and added is not None
    quota_id = added[1]
    code, out, _ = run(capsys, "quota", "list")
    assert f"quota {quota_id}: project 1 error: 5 per 60 s (too_many)" in out
    code, _, err = run(capsys, "quota", "add", "--scope", "project", "--project", "nope",
                       "--window", "60", "--limit", "5")
    assert code == 2 and "no project 'nope'" in err
    code, _, err = run(capsys, "quota", "add", "--category", "attachment", "--category",
                       "error", "--window", "60", "--limit", "5")
    assert code == 2 and "mixes categories counted in bytes" in err
    assert run(capsys, "quota", "delete", quota_id)[0] == 0
    code, _, err = run(capsys, "quota", "delete", quota_id)
    assert code == 2 and f"no quota {quota_id}" in err


def test_key_rate_limits_and_spike_protection_are_set_from_the_shell(
        database: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "key", "rate-limit", "--project", "default", "--window", "60",
                       "--count", "100")
    assert code == 0 and "100 events per 60 s" in out
    assert "events per 60 s" in run(capsys, "quota", "list")[1]
    assert run(capsys, "key", "rate-limit", "--project", "default", "--clear")[0] == 0
    assert run(capsys, "quota", "list")[1].strip() == "no quotas and no key rate limits"
    code, _, err = run(capsys, "key", "rate-limit", "--project", "default", "--window", "60")
    assert code == 2 and "--count" in err
    assert run(capsys, "quota", "spike", "--project", "default", "--off")[0] == 0
    with psycopg.connect(database) as conn:
        row = conn.execute("SELECT spike_protection FROM projects WHERE id = 1").fetchone()
    assert row == (False,)
    assert run(capsys, "quota", "usage")[1].strip() == "nothing counted in the windows running now"
