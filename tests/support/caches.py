"""Compare a running controller's watch caches with a fresh LIST.

``molt run --debug-port=0`` serves ``/debug/caches`` (``molt.runtime.debug``): per cache,
its path and selectors and ``key -> resourceVersion``. ``cache_differences`` LISTs each
collection the same way (same path, same selectors) straight from the API server and
names every key missing from the cache, extra in it, or at another resourceVersion.

Objects keep changing while the two are read (a node's heartbeat, a pod going Ready), so
one difference proves nothing; ``caches_agree`` reads both again until they match. A
cache that missed an event does not catch up by itself (a watch resumes from where it
was, and a LIST is made only on 410 Gone), so it keeps differing and the check fails.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from kubernetes_asyncio import client

from molt.kube.transport import RawApi
from molt.kube.watch import object_key
from tests.support.controller import MoltProcess
from tests.support.waiting import eventually

PORT = re.compile(r"debug\.serving\b.*?\bport=(\d+)")


async def debug_port(molt: MoltProcess) -> int:
    """The port ``molt run --debug-port=0`` logged it serves on."""

    async def logged() -> int | None:
        found = PORT.search(molt.log())
        return int(found.group(1)) if found else None

    return await eventually(logged, within=30, interval=0.2, what="the debug server's port")


async def read_digest(port: int) -> dict[str, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{port}/debug/caches", timeout=aiohttp.ClientTimeout(total=5)
        ) as response,
    ):
        response.raise_for_status()
        found: dict[str, dict[str, Any]] = await response.json()
        return found


async def cache_differences(kube: client.ApiClient, port: int) -> list[str]:
    """What each synced cache has that a fresh LIST does not, and the other way round."""
    raw = RawApi(kube)
    differences: list[str] = []
    for name, cache in (await read_digest(port)).items():
        if not cache["synced"]:
            differences.append(f"{name}: not synced")
            continue
        query = [
            (param, cache[field])
            for param, field in (
                ("fieldSelector", "fieldSelector"),
                ("labelSelector", "labelSelector"),
            )
            if cache[field]
        ]
        items, _ = await raw.list_all(cache["path"], query)
        listed = {object_key(item): str(item["metadata"]["resourceVersion"]) for item in items}
        cached: dict[str, str] = cache["objects"]
        skipped = set(cache["skipped"])
        for key in sorted(listed.keys() - cached.keys() - skipped):
            differences.append(f"{name}: {key} missing from the cache")
        for key in sorted(cached.keys() - listed.keys()):
            differences.append(f"{name}: {key} cached but gone")
        for key in sorted(cached.keys() & listed.keys()):
            if cached[key] != listed[key]:
                differences.append(f"{name}: {key} at {cached[key]}, listed at {listed[key]}")
    return differences


async def caches_agree(kube: client.ApiClient, port: int, *, within: float = 20) -> list[str]:
    """Wait until every cache matches a fresh LIST; the caches compared (fails with the
    differences of the last try)."""
    last: list[str] = []

    async def agree() -> list[str] | None:
        nonlocal last
        last = await cache_differences(kube, port)
        if last:
            return None
        return sorted((await read_digest(port)).keys())

    try:
        return await eventually(agree, within=within, interval=0.5, what="caches = LIST")
    except AssertionError:
        raise AssertionError(f"caches differ from a fresh LIST: {last[:20]}") from None
