"""The commands that need a cluster say so plainly, and exit 2, when there is none."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from molt.cli.main import app


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
