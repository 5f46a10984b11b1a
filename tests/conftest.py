"""Shared fixtures: a real control plane (sandbox) per session, moto in server mode,
API clients, and a namespace per test.

Tests under tests/unit are marked ``unit``; tests under tests/integration are marked
``integration`` (and may use the sandbox and moto fixtures).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes_asyncio import client, config

from molt.sandbox.binaries import Binaries, ensure_binaries, tool_path
from molt.sandbox.cluster import Sandbox


def pytest_configure(config: pytest.Config) -> None:
    """A test run stopped with SIGTERM (a CI timeout, ``kill``) still tears its fixtures
    down, so no sandbox, PostgreSQL or ``molt run`` outlives it: pytest runs teardown on
    KeyboardInterrupt, not on a bare SIGTERM."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "unit" in parts:
            item.add_marker(pytest.mark.unit)
        elif "integration" in parts:
            item.add_marker(pytest.mark.integration)


@dataclass(frozen=True)
class RunningSandbox:
    """A started sandbox and the binaries it runs."""

    sandbox: Sandbox
    binaries: Binaries

    @property
    def kubeconfig(self) -> Path:
        return self.sandbox.kubeconfig

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run kubectl against the sandbox; the caller checks the result."""
        return subprocess.run(
            [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    """One real control plane for the whole session, stopped at the end."""
    binaries = ensure_binaries()
    box = Sandbox(tmp_path_factory.mktemp("sandbox"))
    box.up(binaries=binaries)
    try:
        yield RunningSandbox(box, binaries)
    finally:
        box.down()


@pytest.fixture(scope="session")
def helm() -> Path:
    """The pinned helm, built from its Go module on first use."""
    return tool_path("helm")


@pytest.fixture(scope="session")
async def kube(sandbox: RunningSandbox) -> AsyncIterator[client.ApiClient]:
    """An async API client authenticated as the sandbox admin."""
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(sandbox.kubeconfig), client_configuration=configuration
    )
    async with client.ApiClient(configuration) as api:
        yield api


@pytest.fixture
async def namespace(kube: client.ApiClient) -> AsyncIterator[str]:
    """A fresh namespace, deleted after the test."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube)
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Pods need the namespace's default ServiceAccount, which the controller-manager makes.
    for _ in range(100):
        accounts = await core.list_namespaced_service_account(name)
        if any(a.metadata.name == "default" for a in accounts.items):
            break
        await asyncio.sleep(0.1)
    yield name
    await core.delete_namespace(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto in server mode on a free loopback port: a real HTTP endpoint for boto3."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    # moto accepts any credentials; these keep boto3 from looking for real ones.
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
