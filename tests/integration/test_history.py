"""``molt run --history URL`` against the real control plane, on SQLite and on a real
PostgreSQL: a rotation leaves each old node's whole story in the store, in order; a store
that goes down mid-rotation holds nothing up and loses nothing once it is back; and
``molt history -o json --node X`` tells that story. The PostgreSQL password in the URL is
nowhere a user can see afterwards, the outage's log lines included
(tests/support/secret_surfaces.py)."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from sqlalchemy.exc import OperationalError

from molt.observe.history import HistoryQuery, read_history
from tests.conftest import RunningSandbox
from tests.support.builders import deployment, pdb
from tests.support.controller import MoltProcess
from tests.support.kube_fleet import (
    KWOK_REVISION,
    has_ready_nodes,
    has_ready_replicas,
    install_old_fleet,
    install_policy,
    node_gone,
    ready_nodes,
)
from tests.support.postgres import LocalPostgres
from tests.support.secret_surfaces import assert_no_secret, cluster_surfaces
from tests.support.waiting import eventually

STORY = ["Selected", "Cordoned", "Drained", "InstanceTerminated", "NodeDeleted"]


async def _fleet(kube: client.ApiClient, namespace: str, group: str) -> list[str]:
    """Three nodes past their max age under a policy, with a PDB-guarded Deployment."""
    old = await install_old_fleet(kube, group, nodes=3, age=timedelta(hours=60))
    await eventually(lambda: has_ready_nodes(kube, group, 3), what="three Ready nodes")
    await client.AppsV1Api(kube).create_namespaced_deployment(
        namespace,
        deployment("web", namespace, 3, node_selector={"molt.dev/instance-group": group}),
    )
    await client.PolicyV1Api(kube).create_namespaced_pod_disruption_budget(
        namespace, pdb("web", namespace, "web", max_unavailable=1)
    )
    await eventually(lambda: has_ready_replicas(kube, namespace, 3), what="3 ready replicas")
    await install_policy(
        kube,
        f"{group}-48h",
        group,
        rules={"maxAge": "48h"},
        budgets=[{"maxInFlight": 1}],
        drain={"timeout": "5m"},
    )
    return old


async def _rows(url: str, cluster: str, node: str | None = None) -> list[dict[str, Any]]:
    return await asyncio.to_thread(read_history, url, HistoryQuery(cluster=cluster, node=node))


def _reasons(rows: list[dict[str, Any]], node: str) -> list[str]:
    return [r["reason"] for r in rows if r["kind"] == "Node" and r["name"] == node]


async def _stories_complete(url: str, cluster: str, nodes: list[str]) -> bool:
    try:
        rows = await _rows(url, cluster)
    except Exception:  # the store is still coming back
        return False
    return all("NodeDeleted" in _reasons(rows, node) for node in nodes)


def _assert_story(rows: list[dict[str, Any]], node: str, group: str) -> None:
    """The pipeline's steps, each once, in order, with the node's group, revision, zone."""
    mine = [r for r in rows if r["kind"] == "Node" and r["name"] == node]
    steps = [r["reason"] for r in mine if r["reason"] in STORY]
    assert steps == STORY, f"{node}: {[r['reason'] for r in mine]}"
    times = [r["time"] for r in mine]
    assert times == sorted(times)
    for row in mine:
        assert (row["group_name"], row["revision"], row["zone"]) == (
            group,
            KWOK_REVISION,
            "zone-a",
        ), row
    cordoned = next(r for r in mine if r["reason"] == "Cordoned")
    assert cordoned["policy"] == f"{group}-48h"
    selected = next(r for r in mine if r["reason"] == "Selected")
    assert selected["details"]["deadline"], selected
    assert "max-age" in selected["details"]["rule_reason"], selected


def _molt_history_json(url: str, cluster: str, node: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "molt.cli.main", "history", "-o", "json"),
            *("--node", node, "--cluster", cluster, "--history", url),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
async def test_a_rotation_writes_each_old_nodes_story_in_order(
    store: str,
    request: pytest.FixtureRequest,
    sandbox: RunningSandbox,
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
    tmp_path: Path,
) -> None:
    password = None
    if store == "sqlite":
        url = f"sqlite:///{tmp_path}/history.db"
    else:
        server: LocalPostgres = request.getfixturevalue("postgres")
        url, password = server.url, server.password
    group = f"hist-{uuid.uuid4().hex[:5]}"
    cluster = f"cluster-{group}"
    old = await _fleet(kube, namespace, group)
    molt = run_molt("--history", url, "--cluster-name", cluster)

    async def rotated() -> bool:
        ready = await ready_nodes(kube, group)
        return len(ready) == 3 and not set(ready) & set(old)

    await eventually(rotated, within=150, interval=1, what="every old node replaced")
    await eventually(
        lambda: _stories_complete(url, cluster, old), within=20, what="every story in the store"
    )
    assert molt.alive(), molt.log()
    rows = await _rows(url, cluster)
    for node in old:
        _assert_story(rows, node, group)
    # One node at a time: the next selection comes after the last termination (the node
    # leaves the pipeline only once its instance is gone).
    spans = sorted(
        (
            next(r["time"] for r in rows if r["name"] == n and r["reason"] == "Selected"),
            next(r["time"] for r in rows if r["name"] == n and r["reason"] == "InstanceTerminated"),
        )
        for n in old
    )
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans

    # The replacements' lifetimes start in the history too, and so does the group's
    # revision, from its first status.
    for node in await ready_nodes(kube, group):
        assert _reasons(rows, node)[:2] == ["NodeJoined", "NodeReady"], _reasons(rows, node)
    group_rows = [
        (r["reason"], r["revision"], r["change"]) for r in rows if r["kind"] == "InstanceGroup"
    ]
    assert group_rows[:2] == [
        ("RevisionCreated", KWOK_REVISION, "initial"),
        ("RevisionCurrent", KWOK_REVISION, None),
    ], group_rows

    story = _molt_history_json(url, cluster, old[0])
    assert [r["reason"] for r in story] == _reasons(rows, old[0])
    assert {r["name"] for r in story} == {old[0]}
    assert all(r["cluster"] == cluster for r in story)
    if password is not None:
        # The password is really checked, so the run above really used it.
        refused = url.replace(f":{password}@", "@")
        with pytest.raises(OperationalError, match="password"):
            await _rows(refused, cluster)
        surfaces = await cluster_surfaces(kube, sandbox.kubeconfig, molts=[molt], history=url)
        surfaces["molt history"] = json.dumps(story, default=str)
        assert_no_secret(surfaces, {"PostgreSQL password": password})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


async def test_postgres_down_mid_rotation_holds_nothing_up_and_loses_nothing(
    postgres: LocalPostgres,
    sandbox: RunningSandbox,
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    url = postgres.url
    group = f"hist-{uuid.uuid4().hex[:5]}"
    cluster = f"cluster-{group}"
    old = await _fleet(kube, namespace, group)
    port = _free_port()
    molt = run_molt("--history", url, "--cluster-name", cluster, f"--metrics-port={port}")

    async def first_story_stored() -> str | None:
        rows = await _rows(url, cluster)
        done = [n for n in old if "NodeDeleted" in _reasons(rows, n)]
        return done[0] if done else None

    first = await eventually(
        first_story_stored, within=90, interval=0.5, what="the first old node's story stored"
    )
    outage_start = datetime.now(UTC)
    await asyncio.to_thread(postgres.stop)
    try:
        # The controller goes on without its store: another old node is replaced meanwhile.
        async def another_gone() -> list[str]:
            return [n for n in old if n != first and await node_gone(kube, n)]

        during = await eventually(
            another_gone, within=120, interval=1, what="a node terminated during the outage"
        )
        await eventually(
            lambda: molt.logged("history.store_down"), within=30, what="the outage noticed"
        )
        assert molt.alive(), molt.log()
        assert _metric(port, "molt_history_rows_buffered") > 0
    finally:
        outage_end = datetime.now(UTC)
        await asyncio.to_thread(postgres.start)

    async def rotated() -> bool:
        ready = await ready_nodes(kube, group)
        return len(ready) == 3 and not set(ready) & set(old)

    await eventually(rotated, within=150, interval=1, what="every old node replaced")
    await eventually(
        lambda: _stories_complete(url, cluster, old),
        within=60,
        interval=1,
        what="the buffered rows flushed once the store is back",
    )
    await eventually(lambda: molt.logged("history.store_back"), within=10, what="store back")
    rows = await _rows(url, cluster)
    for node in old:
        _assert_story(rows, node, group)
    # The rows of the node that went during the outage were kept in memory, and written
    # with the times they happened at.
    gone_during = during[0]
    deleted = next(r for r in rows if r["name"] == gone_during and r["reason"] == "NodeDeleted")
    assert outage_start <= deleted["time"] <= outage_end, (outage_start, deleted, outage_end)

    # Loosely, the node that went during the outage took no longer than the one before it.
    def took(node: str) -> float:
        mine = {r["reason"]: r["time"] for r in rows if r["name"] == node}
        return float((mine["NodeDeleted"] - mine["Selected"]).total_seconds())

    before, during_outage = took(first), took(gone_during)
    print(f"selected to deleted: {before:.1f}s before the outage, {during_outage:.1f}s during")
    assert during_outage <= 2 * before + 20, (before, during_outage)
    assert _metric(port, "molt_history_rows_dropped_total") == 0
    assert _metric(port, "molt_history_rows_buffered") == 0
    assert molt.alive(), molt.log()
    # The outage's log lines quote the store's errors: none of them carries the password.
    surfaces = await cluster_surfaces(kube, sandbox.kubeconfig, molts=[molt], history=url)
    assert_no_secret(surfaces, {"PostgreSQL password": postgres.password})
