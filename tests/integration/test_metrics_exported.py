"""Every metric a dashboard panel or an alert uses is exported by ``molt run``: the names
are taken from ``charts/molt/files/dashboard.json`` and ``alerts.yaml``, and compared
with a scrape of a controller running an instance group and a policy in the sandbox.

A name must have samples, except those with series only per remediation policy and per
Watchdog (the scraped fleet has neither), whose ``# TYPE`` line is all there is then.
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from tests.support.builders import instance_group, termination_policy
from tests.support.controller import MoltProcess
from tests.support.kube_fleet import KWOK_TEMPLATE
from tests.support.promql import (
    alert_expressions,
    dashboard_expressions,
    exposition_names,
    metric_names,
)

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "charts" / "molt" / "files"
WITHOUT_SERIES_HERE = {"molt_remediation_paused", "molt_watchdog_state"}
"""Series only for policies with a remediation chain and for Watchdogs: none here."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return str(answer.read().decode())
    except OSError:
        return None


def referenced_names() -> dict[str, set[str]]:
    """Each metric name the dashboard and the alerts use, with where it is used."""
    where: dict[str, set[str]] = {}
    sources = {
        **{f"alert {k}": v for k, v in alert_expressions(FILES / "alerts.yaml").items()},
        **dashboard_expressions(FILES / "dashboard.json"),
    }
    for place, expr in sources.items():
        for name in metric_names(expr):
            where.setdefault(name, set()).add(place)
    return where


async def test_every_metric_the_dashboard_and_alerts_use_is_exported(
    kube: client.ApiClient, empty_cluster: None, run_molt: Callable[..., MoltProcess]
) -> None:
    referenced = referenced_names()
    # The extraction found the dashboard's and the alerts' metrics, not a handful.
    assert {"molt_group_nodes", "molt_host_init_seconds_bucket", "workqueue_depth"} <= set(
        referenced
    )
    assert {"molt_nodes_past_max_age", "molt_history_rows_dropped_total"} <= set(referenced)
    assert len(referenced) >= 25, sorted(referenced)

    group = f"ig-{uuid.uuid4().hex[:5]}"
    custom = client.CustomObjectsApi(kube)
    await custom.create_cluster_custom_object(
        GROUP,
        VERSION,
        "instancegroups",
        instance_group(
            group,
            minSize=0,
            maxSize=6,
            replicas=2,
            zones=["zone-a", "zone-b"],
            template=KWOK_TEMPLATE,
        ),
    )
    await custom.create_cluster_custom_object(
        GROUP,
        VERSION,
        "terminationpolicies",
        termination_policy(
            "rotate", nodeSelector={"matchLabels": {"molt.dev/instance-group": group}}
        ),
    )
    port = _free_port()
    process = run_molt(f"--metrics-port={port}", "--metrics-address=127.0.0.1")

    wanted = set(referenced) - WITHOUT_SERIES_HERE
    missing: set[str] = set(wanted)
    text = None
    deadline = time.monotonic() + 90
    while missing and time.monotonic() < deadline:
        assert process.alive(), process.log_path.read_text()[-3000:]
        text = _scrape(port)
        if text is not None:
            sampled, _ = exposition_names(text)
            missing = wanted - sampled
        await asyncio.sleep(1)
    assert text is not None, f"nothing answered on port {port}"
    group_lines = [line for line in text.splitlines() if line.startswith("molt_group_nodes")]
    assert not missing, (
        {name: sorted(referenced[name]) for name in sorted(missing)},
        group_lines,
        process.log_path.read_text()[-3000:],
    )

    sampled, declared = exposition_names(text)
    type_only = {name for name in referenced if name not in sampled}
    print(f"matched only by # TYPE: {sorted(type_only)}")
    assert type_only <= WITHOUT_SERIES_HERE
    assert declared >= WITHOUT_SERIES_HERE, "the not-yet-built metrics must still be declared"
    # The group's series are labelled by the cell keys the group controller uses.
    assert any(
        line.startswith("molt_group_nodes{")
        and f'group="{group}"' in line
        and 'cell="zone-a/on-demand"' in line
        for line in text.splitlines()
    )
