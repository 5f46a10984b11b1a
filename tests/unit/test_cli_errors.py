"""The commands fail plainly: with no cluster, an unreachable one, a taken metrics port,
an unwritable output directory or a wrong argument, each exits non-zero with one line
on stderr (Typer's usage box for a wrong argument), never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from molt.cli.main import app
from tests.support.sim_fleets import random_scenario


@pytest.mark.parametrize("command", [["run", "--metrics-port", "0"], ["drain", "node-1"]])
def test_without_a_cluster_the_command_says_what_to_do(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2
    assert "pass --kubeconfig or set KUBECONFIG" in " ".join(result.output.split())


def test_a_malformed_lease_duration_is_refused() -> None:
    result = CliRunner().invoke(app, ["run", "--lease-duration", "soon"])
    assert result.exit_code == 2
    assert "duration" in result.output


def _kubeconfig_to_a_closed_port(tmp_path: Path) -> Path:
    """A kubeconfig naming a loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


def _one_error_line(result: Result) -> str:
    """The command failed with exactly one line on stderr, and no exception escaped."""
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    assert escaped is None, f"{type(escaped).__name__}: {escaped}"
    assert result.exit_code != 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    "command",
    [
        ["plan"],
        ["why", "node-1"],
        ["status"],
        ["drain", "node-1"],
        ["snapshot"],
        ["run", "--metrics-port", "0"],
    ],
    ids=lambda c: c[0],
)
def test_an_unreachable_cluster_is_one_line_and_a_failure(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    kubeconfig = _kubeconfig_to_a_closed_port(tmp_path)
    result = CliRunner().invoke(app, [*command, "--kubeconfig", str(kubeconfig)])
    line = _one_error_line(result)
    assert "127.0.0.1" in line, line


def test_run_with_its_metrics_port_taken_is_one_line_and_a_failure(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig_to_a_closed_port(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        where = ["--metrics-address", "127.0.0.1", "--metrics-port", port]
        result = CliRunner().invoke(app, ["run", "--kubeconfig", str(kubeconfig), *where])
    line = _one_error_line(result)
    assert f"127.0.0.1:{port}" in line, line
    assert "--metrics-port" in line, line


@pytest.mark.parametrize(
    "command",
    [
        ["simulate", "{scenario}", "--out", "{blocked}/out"],
        ["simulate", "{scenario}", "--history", "sqlite:///{blocked}/h.db"],
        ["demo", "--out", "{blocked}/out"],
        ["history", "--history", "sqlite:///{scenario}", "--plot", "{blocked}/x.png"],
    ],
    ids=["simulate-out", "simulate-history", "demo-out", "history-plot"],
)
def test_an_unwritable_output_directory_is_one_line_before_any_work(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The output's parent is a file, which even root cannot write under."""
    monkeypatch.chdir(tmp_path)
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(random_scenario(1))
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    args = [a.format(scenario=scenario, blocked=blocked) for a in command]
    line = _one_error_line(CliRunner().invoke(app, args))
    assert "cannot write there" in line, line


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--surprise"],
        ["plan", "-o", "yaml"],
        ["why"],
        ["drain"],
        ["drain", "n", "--timeout", "soon"],
        ["simulate"],
        ["simulate", "no-such-scenario.yaml"],
        ["history", "--since", "later"],
        ["status", "--kubeconfig", "no-such-kubeconfig"],
        ["snapshot", "--kubeconfig", "no-such-kubeconfig"],
        ["sandbox", "stop", "kubelet", "--dir", "."],
    ],
    ids=lambda c: "-".join(c),
)
def test_a_missing_or_wrong_argument_exits_2_without_a_traceback(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    result = CliRunner().invoke(app, command)
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    assert escaped is None, f"{type(escaped).__name__}: {escaped}"
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip(), "nothing said on stderr"
