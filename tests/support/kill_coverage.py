"""Where the kills of a chaos run landed: the pipeline steps and group phases in progress.

``steps_of`` reads, from a group's Nodes as the API server holds them, which step of the
per-node pipeline each node in it is at (the step the pipeline records on the node:
``replace`` until its replacement stands, ``cordon``, ``drain`` from the first eviction
to the last pod, ``terminate`` from drained to the Node's deletion) and which phase of
the group controller is under way (``launch``: a node of the group not yet Ready;
``serving``: a Ready node outside the pipeline). A kill lands in every step and phase in
progress at its moment.

``KillCoverage`` counts kills per step, prints the table and draws kill moments
stratified over the steps: after the seed's random pause, while a step in ``targets`` has
no kill yet, it waits for a moment when one is in progress (at most ``wait_cap`` per
kill and ``total_wait_cap`` per run, so a step a run never shows costs little), so the
kills cover the steps the run passes through rather than wherever the pauses fell.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kubernetes_asyncio import client

from molt.api.labels import (
    DRAIN_STARTED_ANNOTATION,
    DRAINED_AT_ANNOTATION,
    REPLACEMENT_ANNOTATION,
    STATE_LABEL,
    TERMINATING,
)

PIPELINE_STEPS = ("replace", "cordon", "drain", "terminate")
"""The pipeline steps a node is seen at without lifecycle actions or load balancers (the
deregistration and action steps are then no-ops within the same reconcile)."""
WAITING_STEPS = ("replace", "drain", "terminate")
"""The steps where a node waits between reconciles, so a kill from outside can land in
them; a cordon is one write between them, hit only by chance."""
GROUP_PHASES = ("launch", "serving")
"""``launch``: a group node not Ready yet, or (on moto) an instance without its Node."""


def step_of(node: client.V1Node) -> str:
    """The node's pipeline step, or its group phase outside the pipeline."""
    labels = node.metadata.labels or {}
    annotations = node.metadata.annotations or {}
    state = labels.get(STATE_LABEL)
    if state is None:
        ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        return "serving" if ready else "launch"
    if state == TERMINATING or DRAINED_AT_ANNOTATION in annotations:
        return "terminate"
    if DRAIN_STARTED_ANNOTATION in annotations:
        return "drain"
    if REPLACEMENT_ANNOTATION in annotations or node.spec.unschedulable:
        return "cordon"
    return "replace"


async def steps_of(kube: client.ApiClient, group: str) -> Counter[str]:
    """How many of the group's nodes are at each step or phase now."""
    nodes = await client.CoreV1Api(kube).list_node(
        label_selector=f"molt.dev/instance-group={group}"
    )
    return Counter(step_of(n) for n in nodes.items)


@dataclass
class KillCoverage:
    """Kills per step and phase over one run."""

    targets: tuple[str, ...] = WAITING_STEPS
    wait_cap: float = 30.0
    """How long one kill may wait for an unhit step before it lands anyway (seconds): a
    restarted ``molt run`` on a loaded machine takes seconds to select again and more to
    reach a drain, and with the seed's pauses alone every kill can land before it does."""
    total_wait_cap: float = 60.0
    """How long all the kills of a run may wait in all; then they land where they fall."""
    kills: int = 0
    hits: Counter[str] = field(default_factory=Counter)
    waited: float = 0.0

    def unhit(self) -> list[str]:
        return [s for s in self.targets if self.hits[s] == 0]

    async def moment(
        self, rng: random.Random, observe: Callable[[], Awaitable[Counter[str]]]
    ) -> Counter[str]:
        """Pause as the seed says, then (while a target step has no kill) until one is in
        progress or ``wait_cap`` runs out; what is in progress then is where the kill
        lands, and is counted."""
        await asyncio.sleep(rng.uniform(0.3, 2.5))
        seen = await observe()
        started = time.monotonic()
        while self.unhit() and not set(self.unhit()) & set(seen):
            waited = time.monotonic() - started
            if waited >= self.wait_cap or self.waited + waited >= self.total_wait_cap:
                break
            await asyncio.sleep(0.2)
            seen = await observe()
        self.waited += time.monotonic() - started
        self.kills += 1
        self.hits.update(set(seen))
        return seen

    def table(self, title: str) -> str:
        rows = [f"{title}: {self.kills} kills; kills that landed in each step or phase"]
        for step in (*PIPELINE_STEPS, *GROUP_PHASES):
            rows.append(f"  {step:10} {self.hits[step]:4}")
        rows.append(f"  (steps waited for: {', '.join(self.targets)})")
        rows.append(f"  waited {self.waited:.1f}s in all for steps not yet hit")
        return "\n".join(rows)
