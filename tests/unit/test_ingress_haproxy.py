"""Serve's HAProxy configuration as Crashray amends it (``cluster/haproxy.py``): rendered
from the installed Ray's own template, amended, and checked by the real HAProxy."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cluster.haproxy import (
    MAX_MAXCONN,
    MIN_MAXCONN,
    ConfigTemplateChanged,
    IngressLimits,
    amend_config,
    machine_maxconn,
    real_binary,
    write_launcher,
)

LIMITS = IngressLimits(http_request_timeout_s=10, side_host="127.0.0.1")
GIB = 1 << 30


def serve_config(tmp_path: Path) -> Path:
    """The configuration the installed Ray Serve writes for one app on port 9000."""
    from ray.serve._private.haproxy import (
        BackendConfig,
        HAProxyApi,
        HAProxyConfig,
        ServerConfig,
    )
    from ray.serve.config import HTTPOptions

    config = HAProxyConfig(http_options=HTTPOptions(host="127.0.0.1", port=9000),
                           socket_path=str(tmp_path / "admin.sock"),
                           server_state_base=str(tmp_path),
                           server_state_file=str(tmp_path / "server-state"),
                           metrics_socket_path=str(tmp_path / "metrics.sock"),
                           stats_port=20001, metrics_port=20002)
    backend = BackendConfig(name="ingest", path_prefix="/api", app_name="ingest",
                            servers=[ServerConfig("replica", "127.0.0.1", 30000)])
    path = tmp_path / "haproxy.cfg"
    HAProxyApi(config, {"ingest": backend}, config_file_path=str(path)
               )._generate_config_file_internal()
    return path


def section(text: str, header: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(header) + 1
    end = next((i for i in range(start, len(lines))
                if lines[i] and not lines[i][0].isspace()), len(lines))
    return [line.strip() for line in lines[start:end]]


def test_serve_sets_no_request_timeout_and_binds_its_side_ports_everywhere(
        tmp_path: Path) -> None:
    """What the amendments are for (if Ray starts doing this itself, they can go)."""
    text = serve_config(tmp_path).read_text()
    assert not any(line.startswith("timeout http-request") for line in section(text, "defaults"))
    assert "option forwardfor" not in section(text, "defaults")
    assert "bind *:20001" in section(text, "listen stats")
    assert "bind :20002" in section(text, "frontend prometheus")
    assert any(" mode 666 " in line for line in section(text, "global"))


def test_amended_config_has_a_request_timeout_loopback_side_ports_and_a_private_socket(
        tmp_path: Path) -> None:
    text = amend_config(serve_config(tmp_path).read_text(), LIMITS)
    defaults = section(text, "defaults")
    assert "timeout http-request 10s" in defaults
    assert "option http-buffer-request" in defaults
    # The client's address reaches replicas (appended to X-Forwarded-For), once.
    assert defaults.count("option forwardfor") == 1
    assert "bind 127.0.0.1:20001" in section(text, "listen stats")
    assert "bind 127.0.0.1:20002" in section(text, "frontend prometheus")
    socket_line = next(line for line in section(text, "global")
                       if line.startswith("stats socket"))
    assert " mode 600 " in socket_line and " mode 666" not in socket_line
    assert "bind 127.0.0.1:9000" in section(text, "frontend http_frontend")  # untouched


def test_amending_an_amended_config_changes_nothing(tmp_path: Path) -> None:
    once = amend_config(serve_config(tmp_path).read_text(), LIMITS)
    assert amend_config(once, LIMITS) == once
    assert once.count("timeout http-request") == 1


def test_a_config_without_a_line_it_amends_is_refused(tmp_path: Path) -> None:
    text = serve_config(tmp_path).read_text().replace("listen stats", "listen statistics")
    with pytest.raises(ConfigTemplateChanged, match="statistics bind"):
        amend_config(text, LIMITS)


def test_the_launcher_amends_the_config_and_runs_the_real_haproxy(tmp_path: Path) -> None:
    config = serve_config(tmp_path)
    binary = real_binary()
    assert binary is not None
    launcher = write_launcher(tmp_path, binary, LIMITS)
    # HAProxy's check mode (-c): the real binary parses what the launcher wrote.
    result = subprocess.run([str(launcher), "-c", "-f", str(config)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "Configuration file is valid" in result.stdout
    assert "timeout http-request 10s" in config.read_text()


def test_the_launcher_refuses_a_config_it_cannot_secure(tmp_path: Path) -> None:
    config = serve_config(tmp_path)
    config.write_text(config.read_text().replace("\ndefaults\n", "\n"))  # no defaults
    binary = real_binary()
    assert binary is not None
    result = subprocess.run([str(write_launcher(tmp_path, binary, LIMITS)), "-c", "-f",
                             str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "crashray: Serve's HAProxy configuration has not exactly one defaults" \
        in result.stderr


@pytest.mark.parametrize(("descriptors", "memory", "expected"), [
    (20_000, 24 * GIB, (20_000 - 256) // 3),  # the open-files limit decides
    (1 << 20, 2 * GIB, 2 * GIB // 8 // (40 * 1024)),  # memory decides
    (1024, 24 * GIB, MIN_MAXCONN),  # a tiny limit still allows a burst of SDKs
    (1 << 20, 1024 * GIB, MAX_MAXCONN),
])
def test_maxconn_is_sized_for_the_machine(descriptors: int, memory: int,
                                          expected: int) -> None:
    assert machine_maxconn(descriptors, memory) == expected
