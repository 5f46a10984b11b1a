"""Start, watch and stop the sandbox's processes.

Each process runs in its own session with its output in ``DIR/logs/<name>.log``; what was
started is recorded in ``DIR/sandbox.json`` so ``down`` (from any shell) can stop it.
A PID is only signalled while ``/proc/<pid>/exe`` is still our binary, so a
recycled PID is never killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class ProcessFailedError(RuntimeError):
    """A component exited; the message carries the tail of its log."""


@dataclass(frozen=True)
class Running:
    """A started component."""

    name: str
    pid: int
    binary: str
    log: Path


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def start(name: str, argv: list[str], log_dir: Path) -> Running:
    """Start ``argv`` in the background, logging to ``log_dir/name.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Running(name=name, pid=proc.pid, binary=argv[0], log=log)


def is_alive(process: Running) -> bool:
    """True while the PID runs our binary (not a zombie, not a recycled PID)."""
    try:
        # Reap it if it is our child and has exited.
        done, _ = os.waitpid(process.pid, os.WNOHANG)
        if done == process.pid:
            return False
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{process.pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return _runs_binary(process.pid, process.binary)


def _runs_binary(pid: int, binary: str) -> bool:
    # /proc/<pid>/exe is set by exec itself; cmdline can read empty for a moment after it.
    try:
        exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
        return exe == os.path.realpath(binary)
    except OSError:
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return cmdline.split(b"\0", 1)[0].decode(errors="replace") == binary


def check_alive(processes: list[Running]) -> None:
    """Raise ProcessFailedError naming the first component that has exited."""
    for process in processes:
        if not is_alive(process):
            raise ProcessFailedError(
                f"{process.name} exited unexpectedly; last lines of {process.log}:\n"
                f"{log_tail(process.log)}"
            )


def stop(processes: list[Running], timeout: float = 15.0) -> list[str]:
    """Stop processes in reverse start order: SIGTERM, then SIGKILL after ``timeout``."""
    stopped = []
    for process in reversed(processes):
        if not is_alive(process):
            continue
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + timeout
        while is_alive(process) and time.monotonic() < deadline:
            time.sleep(0.1)
        if is_alive(process):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            while is_alive(process):
                time.sleep(0.05)
        stopped.append(process.name)
    return stopped
