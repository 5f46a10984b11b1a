"""Fixtures for tests that run the controller: a cluster emptied of earlier tests' fleets,
``molt run`` processes that are always stopped afterwards, and a real PostgreSQL server
for the history store (started once, always stopped)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from tests.conftest import RunningSandbox
from tests.support.controller import MoltProcess
from tests.support.postgres import LocalPostgres, find_bindir
from tests.support.waiting import eventually


@pytest.fixture
async def empty_cluster(kube: client.ApiClient) -> AsyncIterator[None]:
    """No TerminationPolicy, InstanceGroup or Node left over from another test."""
    custom = client.CustomObjectsApi(kube)
    core = client.CoreV1Api(kube)

    async def clear() -> None:
        for plural in ("terminationpolicies", "instancegroups"):
            await custom.delete_collection_cluster_custom_object(GROUP, VERSION, plural)
        await core.delete_collection_node()

    async def cleared() -> bool:
        nodes = await core.list_node()
        policies = await custom.list_cluster_custom_object(GROUP, VERSION, "terminationpolicies")
        return not nodes.items and not policies["items"]

    await clear()
    await eventually(cleared, what="an empty cluster")
    yield
    await clear()


@pytest.fixture
def run_molt(sandbox: RunningSandbox, tmp_path: Path) -> Iterator[Callable[..., MoltProcess]]:
    """Start ``molt run`` processes (as the sandbox admin, or with another kubeconfig);
    every one is stopped when the test ends."""
    started: list[MoltProcess] = []

    def start(*args: str, name: str = "molt", kubeconfig: Path | None = None) -> MoltProcess:
        """``kubeconfig`` defaults to the sandbox admin's."""
        process = MoltProcess(
            kubeconfig or sandbox.kubeconfig, tmp_path / f"{name}-{len(started)}.log", *args
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL server on 127.0.0.1 for the session; stopped and removed at the end."""
    bindir = find_bindir()
    if bindir is None:
        pytest.fail("PostgreSQL (initdb, pg_ctl) is not installed: apt-get install postgresql")
    server = LocalPostgres(bindir)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        server.remove()
