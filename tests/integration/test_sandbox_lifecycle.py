"""`molt sandbox up|down|stop|start`: a second `up` on a running directory is refused,
one component is stopped and started again from the command line, `down` stops every
process it started and removes nothing, and the next `up` reuses the directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from molt.cli.main import app
from molt.sandbox.binaries import ensure_binaries
from molt.sandbox.cluster import Sandbox, SandboxError
from molt.sandbox.processes import is_alive


def test_up_down_up_on_one_directory(tmp_path: Path) -> None:
    binaries = ensure_binaries()
    box = Sandbox(tmp_path / "box")
    box.up(report=lambda _: None, binaries=binaries)
    try:
        started = box.recorded_processes()
        assert {p.name for p in started} == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        }
        assert box.kubeconfig.is_file()

        with pytest.raises(SandboxError, match="already running"):
            Sandbox(tmp_path / "box").up(report=lambda _: None, binaries=binaries)
        assert all(is_alive(p) for p in started), "a refused `up` must not disturb the sandbox"

        where = ["--dir", str(tmp_path / "box")]
        stopped = CliRunner().invoke(app, ["sandbox", "stop", "kube-scheduler", *where])
        assert stopped.exit_code == 0, stopped.output
        [scheduler] = [p for p in started if p.name == "kube-scheduler"]
        assert not is_alive(scheduler)
        assert {p.name for p in box.running()} == {p.name for p in started} - {"kube-scheduler"}
        restarted = CliRunner().invoke(app, ["sandbox", "start", "kube-scheduler", *where])
        assert restarted.exit_code == 0, restarted.output
        assert {p.name for p in box.running()} == {p.name for p in started}
        unknown = CliRunner().invoke(app, ["sandbox", "stop", "kubelet", *where])
        assert unknown.exit_code == 2
        assert "unknown component 'kubelet'" in unknown.output
        started = box.recorded_processes()
    finally:
        stopped = box.down(report=lambda _: None)

    assert sorted(stopped) == sorted(p.name for p in started)
    assert not any(is_alive(p) for p in started)
    assert (tmp_path / "box" / "etcd").is_dir(), "down removes nothing"
    assert (tmp_path / "box" / "pki" / "ca.crt").is_file()

    certificate = (tmp_path / "box" / "pki" / "ca.crt").read_bytes()
    box.up(report=lambda _: None, binaries=binaries)
    try:
        assert (tmp_path / "box" / "pki" / "ca.crt").read_bytes() == certificate
    finally:
        box.down(report=lambda _: None)
