"""``molt run --debug-port``: the caches' digest and the read-only server that shows it."""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
import pytest

from molt.kube.state import KubeClusterState
from molt.runtime.debug import CACHES_PATH, DebugServer

pytestmark = pytest.mark.unit


def _node(name: str, version: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "resourceVersion": version,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        }
    }


def test_the_digest_names_every_cached_object_at_its_version_and_every_one_left_out() -> None:
    state = KubeClusterState(raw=None)  # type: ignore[arg-type]  # nothing is read
    state.nodes_cache.observe_write(_node("a", "10"))
    state.nodes_cache.observe_write(_node("b", "11"))
    state.nodes_cache.observe_write(_node("a", "12"))
    state.nodes_cache.observe_delete("b")
    state.nodes_cache.observe_write({"metadata": {"name": "c", "resourceVersion": "13"}})

    digest = state.digest()

    assert digest["nodes"]["objects"] == {"a": "12"}
    assert digest["nodes"]["path"] == "/api/v1/nodes"
    assert digest["nodes"]["synced"] is False
    assert digest["nodes"]["skipped"] == ["c"], "listed, but left out of the cache"
    assert set(digest) == {"nodes", "instancegroups", "terminationpolicies", "reapers", "watchdogs"}


async def test_the_server_answers_the_digest_on_loopback_and_nothing_else() -> None:
    server = DebugServer(lambda: {"nodes": {"objects": {"a": "12"}}}, "127.0.0.1", 0)
    port = await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}{CACHES_PATH}") as found:
                assert found.status == 200
                assert await found.json() == {"nodes": {"objects": {"a": "12"}}}
            async with session.post(f"http://127.0.0.1:{port}{CACHES_PATH}") as refused:
                assert refused.status == 405, "read-only"
            async with session.get(f"http://127.0.0.1:{port}/metrics") as other:
                assert other.status == 404
    finally:
        await server.stop()


async def test_a_taken_port_is_an_error_not_a_silent_second_server() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = DebugServer(dict, "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(OSError, match="in use"):
            await server.start()
