"""What the cluster benchmarks share: a sandbox and a ``molt run`` process against it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from molt.sandbox.binaries import ensure_binaries
from molt.sandbox.cluster import Sandbox


@contextmanager
def sandbox() -> Iterator[Sandbox]:
    """A started sandbox in a temporary directory, stopped and removed afterwards."""
    binaries = ensure_binaries()
    with tempfile.TemporaryDirectory(prefix="molt-bench-") as directory:
        box = Sandbox(Path(directory))
        box.up(report=lambda _: None, binaries=binaries)
        try:
            yield box
        finally:
            box.down()


@contextmanager
def controller(kubeconfig: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``molt run`` against ``kubeconfig``, stopped afterwards. Its JSON log is discarded,
    or kept in the file ``MOLT_BENCH_LOG`` names (to see where a benchmark's time goes)."""
    keep = os.environ.get("MOLT_BENCH_LOG")
    sink = open(keep, "wb") if keep else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "molt.cli.main",
            "run",
            f"--kubeconfig={kubeconfig}",
            "--log-format=json",
            *args,
        ],
        stdout=sink,
        stderr=subprocess.STDOUT if keep else subprocess.DEVNULL,
        env={**os.environ},
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)
        if keep and not isinstance(sink, int):
            sink.close()
