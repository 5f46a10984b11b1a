"""The controller's footprint at steady state: RSS and API requests per minute.

Starts a sandbox, registers 500 kwok nodes (young, so no policy selects them) with an
InstanceGroup and a TerminationPolicy, runs ``molt run`` as a process with its metrics on
loopback, lets it settle, then measures for a minute: resident memory from
``/proc/<pid>/status`` and the request counters it exports, by verb.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kubernetes_asyncio import client

from bench.support import (
    api_requests,
    controller,
    create_molt_object,
    free_port,
    rss_mib,
    sandbox,
)
from molt.api.instancegroup import Template
from molt.cloud.kwok_nodes import kwok_node
from molt.kube.reader import connect
from molt.policy.cells import template_revision

NODES = 500
MEASURE_SECONDS = 60


async def _install(kubeconfig: Path) -> None:
    async with await connect(str(kubeconfig)) as api:
        core = client.CoreV1Api(api)
        custom = client.CustomObjectsApi(api)
        launched = datetime.now(UTC) - timedelta(hours=1)
        revision = template_revision(Template.model_validate({"instanceTypes": ["m5.large"]}))
        labels = {
            "molt.dev/instance-group": "steady",
            "molt.dev/revision": revision,  # current: nothing to roll
            "topology.kubernetes.io/zone": "zone-a",
        }
        semaphore = asyncio.Semaphore(16)

        async def create(index: int) -> None:
            async with semaphore:
                await core.create_node(
                    kwok_node(f"steady-{index:04d}", labels=labels, launched_at=launched)
                )

        await asyncio.gather(*(create(i) for i in range(NODES)))
        await create_molt_object(
            custom,
            "InstanceGroup",
            "steady",
            {
                "provider": "kwok",
                "minSize": NODES,
                "maxSize": NODES + 10,
                "zones": ["zone-a"],
                "template": {"instanceTypes": ["m5.large"]},
            },
        )
        await create_molt_object(
            custom,
            "TerminationPolicy",
            "steady-48h",
            {
                "nodeSelector": {"matchLabels": {"molt.dev/instance-group": "steady"}},
                "rules": {"maxAge": "48h"},
            },
        )


def run() -> None:
    with sandbox() as box:
        started = time.monotonic()
        asyncio.run(_install(box.kubeconfig))
        print(f"registered {NODES} kwok nodes in {time.monotonic() - started:.1f}s")
        port = free_port()
        with controller(
            box.kubeconfig, f"--metrics-port={port}", "--metrics-address=127.0.0.1"
        ) as molt:
            time.sleep(20)  # sync the caches, write the policy status, settle
            before = api_requests(port)
            rss_samples = []
            for _ in range(MEASURE_SECONDS // 5):
                time.sleep(5)
                rss_samples.append(rss_mib(molt.pid))
            after = api_requests(port)
        delta = {verb: after.get(verb, 0) - before.get(verb, 0) for verb in after}
        per_minute = sum(delta.values()) * 60 / MEASURE_SECONDS
        detail = ", ".join(f"{verb} {count:.0f}" for verb, count in sorted(delta.items()))
        startup = ", ".join(f"{verb} {count:.0f}" for verb, count in sorted(before.items()))
        print(
            f"controller at steady state with {NODES} kwok nodes: "
            f"RSS {max(rss_samples):.0f} MiB (max of {len(rss_samples)} samples), "
            f"{per_minute:.1f} API requests/min ({detail or 'none'}); "
            f"start-up sent {startup} (watches reconnect every 5-10 min)"
        )


if __name__ == "__main__":
    run()
