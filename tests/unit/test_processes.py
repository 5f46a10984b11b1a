"""Process supervision reports a crashed component with the tail of its log and never
signals a process it did not start."""

import sys
import time
from pathlib import Path

import pytest

from molt.sandbox.processes import ProcessFailedError, Running, check_alive, is_alive, start, stop


def test_a_crashed_component_is_reported_with_its_log_tail(tmp_path: Path) -> None:
    crashing = start(
        "fake-apiserver",
        [
            sys.executable,
            "-c",
            "print('listening'); print('fatal: port in use'); raise SystemExit(3)",
        ],
        tmp_path,
    )
    deadline = time.monotonic() + 10
    while is_alive(crashing) and time.monotonic() < deadline:
        time.sleep(0.05)

    with pytest.raises(ProcessFailedError, match="fake-apiserver exited") as failure:
        check_alive([crashing])
    assert "fatal: port in use" in str(failure.value)


def test_stop_terminates_what_was_started(tmp_path: Path) -> None:
    sleeper = start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path)
    assert is_alive(sleeper)

    assert stop([sleeper], timeout=5) == ["sleeper"]
    assert not is_alive(sleeper)


def test_a_recycled_pid_running_another_binary_is_not_ours(tmp_path: Path) -> None:
    sleeper = start("sleeper", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path)
    impostor = Running(name="etcd", pid=sleeper.pid, binary="/opt/etcd", log=tmp_path / "x")
    try:
        assert not is_alive(impostor)
        assert stop([impostor]) == []
        assert is_alive(sleeper)
    finally:
        stop([sleeper])
