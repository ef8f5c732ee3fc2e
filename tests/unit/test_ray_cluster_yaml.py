"""ray-cluster.yaml and its on-premise variant, read as ``ray up`` reads them.

Ray's own preparation (``prepare_config``: the provider's defaults, merged setup commands,
per-type worker bounds; for the local provider its node type and worker count) and schema
validation (``validate_config``: ray-schema.json plus the head-type and worker-count
rules). Neither needs a cloud account: the AWS-specific steps (IAM role, key pair, AMI,
security group, instance resources) run in ``ray up``'s bootstrap, which is not run here.
The commands are checked by bash and, up to ``ray start``, run as a node runs them.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from ray.autoscaler._private.util import prepare_config, validate_config

from cluster.node_env import HEAD_NODE_RESOURCE, node_environment
from cluster.runtime import RAY_SERVE_ENV, haproxy_dir
from cluster.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CLOUD = ROOT / "ray-cluster.yaml"
LOCAL = ROOT / "cluster" / "ray-cluster-local.yaml"
SETTINGS_DIR = ROOT / "cluster" / "node-settings"
SETTINGS_FILE = SETTINGS_DIR / "crashray.env"
COMMAND_KEYS = ("setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands")


def load(path: Path) -> dict[str, Any]:
    config = yaml.safe_load(path.read_text())
    assert isinstance(config, dict), f"{path} is not a mapping"
    return config


def prepared(config: dict[str, Any]) -> dict[str, Any]:
    """What ``ray up`` makes of ``config`` before it bootstraps the provider."""
    config = prepare_config(copy.deepcopy(config))
    validate_config(config)
    return config


def commands(config: dict[str, Any]) -> list[str]:
    return [command for key in COMMAND_KEYS for command in config.get(key, [])]


def start_command(config: dict[str, Any], key: str) -> str:
    """The start command that runs ``ray start`` (the other one is ``ray stop``)."""
    [command] = [c for c in config[key] if "ray start" in c]
    return str(command)


def resources_flag(command: str) -> dict[str, float] | None:
    for word in shlex.split(command):
        if word.startswith("--resources="):
            parsed: dict[str, float] = json.loads(word.removeprefix("--resources="))
            return parsed
    return None


# --- Ray's preparation and schema --------------------------------------------------------

def test_cloud_config_passes_rays_preparation_and_schema() -> None:
    raw = load(CLOUD)
    config = prepared(raw)
    assert config["provider"]["type"] == "aws"
    types = config["available_node_types"]
    assert set(types) == {"crashray.head", "crashray.worker"}
    assert config["head_node_type"] == "crashray.head"
    assert types["crashray.head"]["max_workers"] == 0
    assert 1 <= types["crashray.worker"]["min_workers"] <= types["crashray.worker"]["max_workers"]
    assert types["crashray.worker"]["max_workers"] <= config["max_workers"]
    # Ours, not the provider defaults' (which install a Ray nightly into Python 3.10).
    assert config["head_setup_commands"] == raw["setup_commands"] + raw["head_setup_commands"]
    assert config["worker_setup_commands"] == raw["setup_commands"]
    assert not any("ray-wheels" in c for c in commands(config))


def test_local_variant_passes_rays_preparation_and_schema() -> None:
    raw = load(LOCAL)
    config = prepared(raw)
    assert config["provider"]["type"] == "local"
    # Ray's single on-premise node type, with one worker per listed machine.
    [node_type] = config["available_node_types"].values()
    assert node_type["max_workers"] == len(raw["provider"]["worker_ips"])
    assert config["max_workers"] == len(raw["provider"]["worker_ips"])


def test_root_file_shows_the_local_variants_provider() -> None:
    """The commented ``provider: type: local`` block in ray-cluster.yaml is the one the
    variant file uses, so what a reader copies from the root works."""
    text = CLOUD.read_text()
    match = re.search(r"^# BEGIN local provider\n(.*?)^# END local provider$", text,
                      re.S | re.M)
    assert match is not None, "ray-cluster.yaml lost its local-provider block"
    lines = match.group(1).splitlines()
    assert all(line.startswith("# ") for line in lines), lines
    shown = yaml.safe_load("\n".join(line.removeprefix("# ") for line in lines))
    local = load(LOCAL)
    assert shown == {"provider": local["provider"], "auth": local["auth"]}


def test_local_variant_runs_the_clouds_commands() -> None:
    cloud, local = load(CLOUD), load(LOCAL)
    for key in ("cluster_name", "file_mounts", "setup_commands", "head_start_ray_commands",
                "worker_start_ray_commands"):
        assert local[key] == cloud[key], key
    # boto3 is for the AWS autoscaler only.
    assert local["head_setup_commands"] == []


# --- what the files name, against what the code reads -------------------------------------

def test_only_the_head_carries_the_head_resource() -> None:
    for path in (CLOUD, LOCAL):
        config = load(path)
        head = start_command(config, "head_start_ray_commands")
        worker = start_command(config, "worker_start_ray_commands")
        assert resources_flag(head) == {HEAD_NODE_RESOURCE: 1}, path
        assert resources_flag(worker) is None and HEAD_NODE_RESOURCE not in worker, path
    types = load(CLOUD)["available_node_types"]
    assert types["crashray.head"]["resources"] == {HEAD_NODE_RESOURCE: 1}
    assert HEAD_NODE_RESOURCE not in types["crashray.worker"]["resources"]


def test_every_crashray_variable_named_is_a_setting() -> None:
    known = {f"CRASHRAY_{name.upper()}" for name in Settings.model_fields}
    for path in (CLOUD, LOCAL, SETTINGS_FILE):
        named = set(re.findall(r"\bCRASHRAY_[A-Z0-9_]+", path.read_text()))
        assert named, path
        assert named <= known, f"{path} names unknown settings: {sorted(named - known)}"


def test_node_settings_file_reads_as_valid_settings() -> None:
    exported = _bash_env(f"set -a; . {shlex.quote(str(SETTINGS_FILE))}; set +a",
                         {"HOME": "/nonexistent"})
    # As keyword arguments, which win over this test process's own environment.
    values: dict[str, Any] = {name.removeprefix("CRASHRAY_").lower(): value
                              for name, value in exported.items()
                              if name.startswith("CRASHRAY_")}
    settings = Settings(**values)
    assert exported["CRASHRAY_POSTGRES_URL"] == exported["CRASHRAY_CLICKHOUSE_URL"] == ""
    assert not settings.postgres_url and not settings.clickhouse_url  # the embedded defaults
    assert settings.ray_address == "auto"
    # The port SDKs reach is the one the AWS security group opens.
    [rule] = load(CLOUD)["provider"]["security_group"]["IpPermissions"]
    assert rule["FromPort"] == rule["ToPort"] == settings.port


def test_commands_are_valid_bash() -> None:
    for path in (CLOUD, LOCAL):
        for command in commands(load(path)):
            checked = subprocess.run(["bash", "-n", "-c", command], capture_output=True,
                                     text=True)
            assert checked.returncode == 0, f"{path}: {command!r}: {checked.stderr}"


def test_head_start_command_names_the_autoscaler_config() -> None:
    # Without it ``ray start --head`` runs no autoscaler (Ray warns on ``ray up``).
    for path in (CLOUD, LOCAL):
        head = shlex.split(start_command(load(path), "head_start_ray_commands"))
        assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
        assert "--head" in head


# --- a node's start, up to ``ray start`` -------------------------------------------------

@pytest.fixture
def node_home(tmp_path: Path) -> Iterator[Path]:
    """A node's home after ``file_mounts`` and the setup's ~/.bashrc lines; the HAProxy
    directory the start command makes is removed afterwards."""
    home = tmp_path / "home"
    shutil.copytree(SETTINGS_DIR, home / ".crashray" / "settings")
    yield home
    shutil.rmtree(haproxy_dir((home / ".crashray").resolve()), ignore_errors=True)


def test_node_start_exports_what_serve_needs(node_home: Path) -> None:
    config = load(CLOUD)
    settings_file = node_home / ".crashray" / "settings" / "crashray.env"
    # An operator's setting reaches HAProxy through the settings file.
    settings_file.write_text(settings_file.read_text() + "CRASHRAY_HAPROXY_CLIENT_TIMEOUT_S=17\n")
    bashrc_lines = [c for c in config["setup_commands"] if ">> ~/.bashrc" in c]
    assert len(bashrc_lines) == 2
    for _ in range(2):  # every ``ray up`` runs them again: each line is added once
        _bash_env("; ".join(bashrc_lines), {"HOME": str(node_home)})
    assert len((node_home / ".bashrc").read_text().splitlines()) == 2

    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        before_ray = start_command(config, key).split("ray start")[0]
        # As Ray's command runner: a shell that read ~/.bashrc, then the command.
        env = _bash_env(f"source ~/.bashrc; {before_ray} true", {"HOME": str(node_home)})
        for name, value in RAY_SERVE_ENV.items():
            assert env[name] == value, name
        assert env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert env["FORWARDED_ALLOW_IPS"] == ""
        assert env["RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S"] == "17"
        assert int(env["RAY_SERVE_HAPROXY_MAXCONN"]) >= 1024
        # Serve's fixed statistics and metrics ports on a node (settings left at 0).
        assert "RAY_SERVE_HAPROXY_STATS_PORT" not in env
        assert "RAY_SERVE_HAPROXY_METRICS_PORT" not in env
        launcher = Path(env["RAY_SERVE_HAPROXY_BINARY_PATH"])
        assert os.access(launcher, os.X_OK) and "cluster.haproxy" in launcher.read_text()
        assert env["CRASHRAY_RAY_ADDRESS"] == "auto"


def test_node_environment_keeps_chosen_side_ports(tmp_path: Path) -> None:
    node_dir = tmp_path / "node"
    try:
        env = node_environment(Settings(haproxy_stats_port=8405, haproxy_metrics_port=9105),
                               node_dir)
    finally:
        shutil.rmtree(haproxy_dir(node_dir), ignore_errors=True)
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == "8405"
    assert env["RAY_SERVE_HAPROXY_METRICS_PORT"] == "9105"


def _bash_env(script: str, extra: dict[str, str]) -> dict[str, str]:
    """The environment a bash running ``script`` ends with; ``python`` is this test's."""
    path = f"{Path(sys.executable).parent}{os.pathsep}/usr/bin{os.pathsep}/bin"
    dump = (f"{shlex.quote(sys.executable)} -c"
            " 'import json, os; print(json.dumps(dict(os.environ)))'")
    done = subprocess.run(["bash", "-c", f"{script} && {dump}"], cwd=ROOT, text=True,
                          capture_output=True, env={"PATH": path, **extra}, timeout=60)
    assert done.returncode == 0, done.stderr
    env: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return env


# --- a broken file fails ---------------------------------------------------------------

def _drop_head_node_type(c: dict[str, Any]) -> None:
    del c["head_node_type"]


def _unknown_head_node_type(c: dict[str, Any]) -> None:
    c["head_node_type"] = "crashray.headnode"


def _misspelled_key(c: dict[str, Any]) -> None:
    c["max_worker"] = c.pop("max_workers")


def _fewer_workers_than_minimum(c: dict[str, Any]) -> None:
    c["max_workers"] = 0


def _resources_not_a_mapping(c: dict[str, Any]) -> None:
    c["available_node_types"]["crashray.head"]["resources"] = HEAD_NODE_RESOURCE


def _commands_not_a_list(c: dict[str, Any]) -> None:
    c["head_start_ray_commands"] = "ray start --head"


@pytest.mark.parametrize(("break_it", "error", "says"), [
    (_drop_head_node_type, ValueError, "head_node_type"),
    (_unknown_head_node_type, ValueError, "head_node_type"),
    (_misspelled_key, jsonschema.ValidationError, "max_worker"),
    (_fewer_workers_than_minimum, ValueError, "min_workers"),
    (_resources_not_a_mapping, jsonschema.ValidationError, "not of type 'object'"),
    (_commands_not_a_list, jsonschema.ValidationError, "not of type 'array'"),
])
def test_broken_cloud_config_fails(break_it: Callable[[dict[str, Any]], None],
                                   error: type[Exception], says: str) -> None:
    config = load(CLOUD)
    break_it(config)
    with pytest.raises(error, match=re.escape(says)):
        prepared(config)


def test_local_variant_without_head_ip_fails() -> None:
    import click

    config = load(LOCAL)
    del config["provider"]["head_ip"]
    with pytest.raises(click.ClickException, match="head_ip"):
        prepared(config)
