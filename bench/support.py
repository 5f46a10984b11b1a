"""What the cluster benchmarks share: a sandbox, a ``molt run`` process against it, Molt's
own objects created in it, and readings of that process (its memory, its API requests by
verb)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
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


def free_port() -> int:
    """A loopback port nothing listens on now (for ``molt run``'s metrics)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mib(pid: int) -> float:
    """The process's resident memory (VmRSS), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else float("nan")


def api_requests(port: int) -> dict[str, float]:
    """The controller's API requests so far by verb, from its ``molt_api_requests``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        verb: float(value)
        for verb, value in re.findall(r'molt_api_requests\{verb="(\w+)"\} ([0-9.e+]+)', text)
    }


PLURALS = {"InstanceGroup": "instancegroups", "TerminationPolicy": "terminationpolicies"}


async def create_molt_object(
    custom: client.CustomObjectsApi, kind: str, name: str, spec: dict[str, Any]
) -> None:
    """Create one of Molt's cluster-scoped objects (an InstanceGroup, a TerminationPolicy)."""
    await custom.create_cluster_custom_object(
        GROUP,
        VERSION,
        PLURALS[kind],
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        },
    )
