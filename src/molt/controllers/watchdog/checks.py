"""The Watchdog checks that touch the cluster or the network; each returns a ``Verdict``.

- ``probePod``: create a small pod (a name unique to the round, labelled with the
  watchdog's name) and wait until it is Running, up to ``timeout``; the time it took is the
  result. The pod is deleted afterwards, and a probe pod left by an earlier round (a crash,
  a restart) is deleted before the next one is created.
- ``apiLatency``: time cheap LIST calls; the p99 of the samples taken over the last
  ``interval`` is judged against ``threshold``.
- ``http``: GET a URL, expect a status code.

The node checks are judged by ``molt.policy.watchdog`` from the node cache.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from molt.api.durations import format_duration, parse_duration
from molt.api.watchdog import ApiLatencyCheck, HttpCheck, ProbePodCheck
from molt.policy.watchdog import Verdict
from molt.ports import ClusterWrites, ObjectRef

PROBE_LABEL = "molt.dev/watchdog-probe"
"""On every probe pod: the name of the Watchdog that created it."""
PROBE_POLL_SECONDS = 0.5
LATENCY_SAMPLES = 10
"""Cheap calls per apiLatency round."""
LATENCY_SELECTOR = "molt.dev/latency-probe=none"
"""A label no namespace carries: the LIST is answered from the API server's storage with
an empty page."""


@dataclass(frozen=True)
class Timed:
    """A verdict, and how long the check took."""

    verdict: Verdict
    seconds: float


def probe_pod_body(watchdog: str, check: ProbePodCheck, name: str) -> dict[str, Any]:
    """The probe pod: a pause container with tiny requests, no token, no grace period."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": check.namespace,
            "labels": {PROBE_LABEL: probe_label_value(watchdog)},
        },
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "containers": [
                {
                    "name": "probe",
                    "image": check.image,
                    "resources": {"requests": {"cpu": "1m", "memory": "8Mi"}},
                }
            ],
        },
    }


def probe_label_value(watchdog: str) -> str:
    """The label value naming the watchdog (a label value is at most 63 characters)."""
    return watchdog[:63].rstrip("-.")


def probe_pod_name(watchdog: str) -> str:
    """A name unique to one round (a pod name is at most 253 characters)."""
    return f"molt-probe-{watchdog[:200]}-{uuid.uuid4().hex[:8]}"


def _pending_reason(pod: dict[str, Any] | None) -> str:
    """What holds a pod that is not Running, in a few words."""
    if pod is None:
        return "the pod was not seen"
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") != "True":
            detail = condition.get("reason") or "not scheduled"
            return f"{phase}, {detail}: {condition.get('message') or ''}".rstrip(": ")
    if not (pod.get("spec") or {}).get("nodeName"):
        return f"{phase}, not scheduled"
    return f"{phase} on {pod['spec']['nodeName']}"


async def clean_probe_pods(
    cluster: ClusterWrites, watchdog: str, namespace: str, keep: str | None = None
) -> int:
    """Delete the watchdog's probe pods (but ``keep``); how many were deleted."""
    found = await cluster.list_objects(
        "v1", "Pod", namespace, label_selector=f"{PROBE_LABEL}={probe_label_value(watchdog)}"
    )
    deleted = 0
    for pod in found:
        name = (pod.get("metadata") or {}).get("name")
        gone = ObjectRef("v1", "Pod", str(name), namespace)
        if isinstance(name, str) and name != keep and await cluster.delete_object(gone):
            deleted += 1
    return deleted


async def _find_probe_pod(
    cluster: ClusterWrites, watchdog: str, namespace: str, name: str
) -> dict[str, Any] | None:
    """The round's pod, by a LIST narrowed to the watchdog's label (pods are listed, never
    read one by one: the controller's account may list pods, not get them)."""
    found = await cluster.list_objects(
        "v1", "Pod", namespace, label_selector=f"{PROBE_LABEL}={probe_label_value(watchdog)}"
    )
    return next((p for p in found if (p.get("metadata") or {}).get("name") == name), None)


async def probe_pod(cluster: ClusterWrites, watchdog: str, check: ProbePodCheck) -> Timed:
    """Create a probe pod and wait for it to be Running within ``timeout``."""
    await clean_probe_pods(cluster, watchdog, check.namespace)
    timeout = parse_duration(check.timeout).total_seconds()
    name = probe_pod_name(watchdog)
    ref = ObjectRef("v1", "Pod", name, check.namespace)
    started = time.monotonic()
    await cluster.create_object(probe_pod_body(watchdog, check, name))
    pod: dict[str, Any] | None = None
    try:
        while True:
            pod = await _find_probe_pod(cluster, watchdog, check.namespace, name)
            elapsed = time.monotonic() - started
            if pod is not None and (pod.get("status") or {}).get("phase") == "Running":
                node = (pod.get("spec") or {}).get("nodeName") or "?"
                return Timed(
                    Verdict(True, f"probe pod Running on {node} in {elapsed:.1f}s"), elapsed
                )
            if elapsed >= timeout:
                return Timed(
                    Verdict(
                        False,
                        f"probe pod {name} not Running within {check.timeout}: "
                        f"{_pending_reason(pod)}",
                    ),
                    elapsed,
                )
            await asyncio.sleep(min(PROBE_POLL_SECONDS, max(0.0, timeout - elapsed)))
    finally:
        await cluster.delete_object(ref)


@dataclass
class LatencyWindow:
    """API call durations (seconds) with when they were taken (monotonic)."""

    samples: deque[tuple[float, float]] = field(default_factory=deque)

    def add(self, at: float, seconds: float) -> None:
        self.samples.append((at, seconds))

    def p99(self, since: float) -> float | None:
        while self.samples and self.samples[0][0] < since:
            self.samples.popleft()
        values = sorted(seconds for _, seconds in self.samples)
        if not values:
            return None
        return values[min(len(values) - 1, math.ceil(0.99 * len(values)) - 1)]


async def api_latency(
    cluster: ClusterWrites, check: ApiLatencyCheck, window: LatencyWindow, interval: float
) -> Timed:
    """Time ``LATENCY_SAMPLES`` cheap LISTs; judge the p99 over the last ``interval``."""
    started = time.monotonic()
    for _ in range(LATENCY_SAMPLES):
        before = time.monotonic()
        await cluster.list_objects("v1", "Namespace", None, label_selector=LATENCY_SELECTOR)
        after = time.monotonic()
        window.add(after, after - before)
    p99 = window.p99(time.monotonic() - max(interval, 1.0)) or 0.0
    threshold = parse_duration(check.threshold).total_seconds()
    count = len(window.samples)
    ok = p99 <= threshold
    word = "within" if ok else "above"
    message = f"p99 of {count} API calls {p99 * 1000:.0f}ms, {word} {check.threshold}"
    return Timed(Verdict(ok, message), time.monotonic() - started)


async def http_check(session: aiohttp.ClientSession, check: HttpCheck) -> Timed:
    """GET the URL within ``timeout``; passes on the expected status."""
    timeout = parse_duration(check.timeout).total_seconds()
    started = time.monotonic()
    try:
        async with session.get(
            check.url, timeout=aiohttp.ClientTimeout(total=timeout), allow_redirects=False
        ) as response:
            elapsed = time.monotonic() - started
            ok = response.status == check.expect_status
            message = f"HTTP {response.status} from {check.url} in {elapsed:.2f}s"
            if not ok:
                message += f" (expected {check.expect_status})"
            return Timed(Verdict(ok, message), elapsed)
    except (aiohttp.ClientError, TimeoutError, ValueError) as error:
        elapsed = time.monotonic() - started
        detail = str(error) or type(error).__name__
        if isinstance(error, TimeoutError):
            detail = f"no answer within {format_duration(parse_duration(check.timeout))}"
        return Timed(Verdict(False, f"GET {check.url} failed: {detail}"), elapsed)
