"""Random argv for the commands that need no running process of their own: each exits 0,
1 or 2 with its message, and no exception escapes (Typer's runner would hold it in
``result.exception``). No cluster is reachable: KUBECONFIG names a file that does not
exist. ``run``, ``demo`` and ``sandbox`` start processes or long runs and are left out.
``MOLT_FUZZ_EXAMPLES`` raises the example count (default 60)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from molt.cli.main import app

EXAMPLES = int(os.environ.get("MOLT_FUZZ_EXAMPLES", "60"))
COMMANDS = ["plan", "why", "status", "drain", "snapshot", "simulate", "history"]
WORDS = [
    "--kubeconfig",
    "--out",
    "--help",
    "-o",
    "--json",
    "--since",
    "node-1",
    "missing.yaml",
    "/nonexistent/dir/x",
    "1h",
    "-5m",
    "abc",
    "",
    "--",
    "%",
]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    command=st.sampled_from(COMMANDS),
    args=st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=8)), max_size=4),
)
def test_random_arguments_exit_cleanly_without_a_traceback(
    command: str, args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [command, *args])
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    assert escaped is None, f"{[command, *args]}: {type(escaped).__name__}: {escaped}"
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
