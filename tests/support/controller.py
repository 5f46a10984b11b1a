"""Run ``molt run`` as a real process against the sandbox, and watch what it does.

``MoltProcess`` starts the controller as a subprocess (so a test can ``kill -9`` it) and
keeps its log. ``FleetWatch`` is an independent observer built on Molt's own reflector:
it records, for the whole test, the fewest ready replicas a Deployment had and the most
nodes that were ever in the pipeline at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from molt.kube.transport import RawApi
from molt.kube.watch import Reflector


class MoltProcess:
    """One ``molt run`` subprocess with its log file."""

    def __init__(self, kubeconfig: Path, log: Path, *args: str) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "molt.cli.main",
                "run",
                f"--kubeconfig={kubeconfig}",
                "--metrics-port=0",
                "--resync=2s",
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.process.send_signal(sig)
        self.process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM and wait; the exit code."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return int(self.process.returncode)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def logged(self, text: str) -> bool:
        """Whether the log has ``text`` yet (an ``eventually`` probe)."""
        return text in self.log()


def _node_facts(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {
        "state": (meta.get("labels") or {}).get("molt.dev/state"),
        "reason": (meta.get("annotations") or {}).get("molt.dev/reason"),
        "unschedulable": bool((obj.get("spec") or {}).get("unschedulable")),
        "ready": any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (obj.get("status") or {}).get("conditions") or []
        ),
    }


BLINK_SETTLE = 5.0
"""Seconds after the group's nodes are Ready again before pod readiness counts again."""


def _pod_serving(obj: dict[str, Any]) -> bool:
    """Ready and not being deleted."""
    if obj["metadata"].get("deletionTimestamp"):
        return False
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


@dataclass
class FleetWatch:
    """Watches a Deployment's ready replicas and the nodes in Molt's pipeline."""

    min_ready: int | None = None
    max_in_pipeline: int = 0
    in_pipeline_now: set[str] = field(default_factory=set)
    ever_in_pipeline: set[str] = field(default_factory=set)
    pipeline_entries: Counter[str] = field(default_factory=Counter)
    """How many times each node entered the pipeline (more than once: put in flight twice)."""
    states: dict[str, str] = field(default_factory=dict)
    """Each node's last pipeline state and reason."""
    peak: dict[str, str] = field(default_factory=dict)
    """The nodes in the pipeline together when the most were, with their states."""
    cordoned_without_reason: set[str] = field(default_factory=set)
    armed: bool = False
    """Ready replicas count only once the Deployment first reached full strength."""
    min_ready_pods: int | None = None
    """The fewest Ready, undeleted pods of the Deployment seen at once (from the pods
    themselves: true even while the controller manager, which writes the Deployment's
    status, is down)."""
    ready_pods: set[str] = field(default_factory=set)
    pods_listed: bool = False
    """Counted only once the first LIST is in (it arrives one pod at a time)."""
    not_ready_nodes: set[str] = field(default_factory=set)
    nodes_back_at: float = 0.0
    node_blinks: int = 0
    """Times the group's nodes went NotReady (an outage of the control plane or of kwok
    makes every node blink): pod readiness is not counted from then until
    ``BLINK_SETTLE`` seconds after every node is Ready again, as those dips are the
    node-lifecycle controller's doing, not a disruption anybody asked for."""
    replicas: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def _deployment(self, key: str, old: Any, new: Any) -> None:
        if new is None:
            return
        ready = int(new.get("readyReplicas") or 0)
        if ready >= self.replicas:
            self.armed = True
        if self.armed:
            self.min_ready = ready if self.min_ready is None else min(self.min_ready, ready)

    def _pod(self, key: str, old: Any, new: Any) -> None:
        if new:
            self.ready_pods.add(key)
        else:
            self.ready_pods.discard(key)
        now = time.monotonic()
        settled = now - self.nodes_back_at > BLINK_SETTLE
        if self.pods_listed and self.armed and not self.not_ready_nodes and settled:
            count = len(self.ready_pods)
            self.min_ready_pods = (
                count if self.min_ready_pods is None else min(self.min_ready_pods, count)
            )

    def _node(self, key: str, old: Any, new: Any) -> None:
        if new is not None and not new["ready"]:
            if old is not None and old["ready"]:  # a Ready node lost it (a node joining is
                if not self.not_ready_nodes:  # NotReady for a moment: that is no blink)
                    self.node_blinks += 1
                self.not_ready_nodes.add(key)
        elif key in self.not_ready_nodes:
            self.not_ready_nodes.discard(key)
            if not self.not_ready_nodes:
                self.nodes_back_at = time.monotonic()
        if new is not None and new["unschedulable"] and not new["reason"]:
            self.cordoned_without_reason.add(key)
        if new is not None and new["state"]:
            self.states[key] = f"{new['state']} ({new['reason']})"
            if key not in self.in_pipeline_now:
                self.pipeline_entries[key] += 1
            self.in_pipeline_now.add(key)
            self.ever_in_pipeline.add(key)
        else:
            self.in_pipeline_now.discard(key)
        if len(self.in_pipeline_now) > self.max_in_pipeline:
            self.max_in_pipeline = len(self.in_pipeline_now)
            self.peak = {n: self.states.get(n, "") for n in self.in_pipeline_now}

    async def start(
        self,
        kube: client.ApiClient,
        namespace: str,
        deployment: str,
        replicas: int,
        group: str,
        *,
        node_selector: str | None = None,
    ) -> None:
        """Follow ``deployment`` and the nodes of ``group`` (or those ``node_selector``
        picks, e.g. several groups under one budget)."""
        raw = RawApi(kube)
        self.replicas = replicas
        deployments = Reflector(
            raw,
            f"/apis/apps/v1/namespaces/{namespace}/deployments",
            lambda obj: obj.get("status") or {},
            name="watch-deployments",
            field_selector=f"metadata.name={deployment}",
            on_change=self._deployment,
        )
        nodes = Reflector(
            raw,
            "/api/v1/nodes",
            _node_facts,
            name="watch-nodes",
            label_selector=node_selector or f"molt.dev/instance-group={group}",
            on_change=self._node,
        )
        pods = Reflector(
            raw,
            f"/api/v1/namespaces/{namespace}/pods",
            _pod_serving,
            name="watch-pods",
            label_selector=f"app={deployment}",
            on_change=self._pod,
        )
        for reflector in (deployments, nodes, pods):
            self.tasks.append(asyncio.create_task(reflector.run()))
        await asyncio.gather(deployments.synced.wait(), nodes.synced.wait(), pods.synced.wait())
        self.pods_listed = True

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
