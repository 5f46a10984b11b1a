"""The Job action: run a Kubernetes Job for the node and wait until it completes.

Each attempt is one Job, named from the node, the action and the attempt number, so a
controller that restarts during an attempt finds its Job instead of creating a second
one, and each retry is a new Job. The Job's spec comes from the action (``template``) or
a ConfigMap (``templateConfigMap``); every container gets the node's details as
environment variables. The Job runs at most once (``backoffLimit: 0``): Molt's ``retries``
are the retries. ``ttlSecondsAfterFinished`` lets the Job controller remove it later.

The attempt waits for the Job the way client-go's ``watchtools.UntilWithSync`` does: it
reads the Job (its state and resourceVersion), then watches that one Job from that version
until a condition says ``Complete`` or ``Failed``; a watch that ends (closed by the
server, expired with 410 Gone, broken) is followed by another read and a new watch, at
most one read per ``poll_seconds``. So a running Job costs one open watch, not a read a
second, and its end is seen as the API server reports it. A failed Job fails the attempt
with its pods' termination messages; one still running when the action's timeout ends is
deleted, with its pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import re
from typing import Any

import structlog
import yaml

from molt.actions.base import ActionContext, ActionFailedError
from molt.actions.objects import job_view, read_config_map_key
from molt.api.durations import parse_duration
from molt.api.lifecycle import JobAction, LifecycleAction
from molt.ports import ClusterWrites, ObjectRef

log = structlog.get_logger(__name__)

POLL_SECONDS = 1.0
"""The least time between two reads of a Job (each watch of it starts with one)."""
WATCH_SECONDS = 300
"""How long one watch of a Job may stay open before the server ends it (then it is read
and watched again): the reflectors' lower bound."""
NAME_LABEL = "molt.dev/node"
ACTION_LABEL = "molt.dev/action"
MAX_NAME = 63
"""The Job controller copies the Job's name into a label: 63 characters at most."""


def job_name(context: ActionContext, action: str) -> str:
    """The attempt's Job name: readable, unique per node (by uid), action and attempt."""
    node = context.node
    digest = hashlib.sha256(f"{node.name}/{node.uid}/{context.key}".encode()).hexdigest()[:8]
    suffix = f"-{digest}-{context.attempt}"
    stem = re.sub(r"[^a-z0-9-]", "-", f"molt-{action}-{node.name}".lower())
    return (stem[: MAX_NAME - len(suffix)].rstrip("-") + suffix)[:MAX_NAME]


def environment(context: ActionContext) -> list[dict[str, str]]:
    """The variables every container of the Job gets."""
    node = context.node
    return [
        {"name": "MOLT_NODE", "value": node.name},
        {"name": "MOLT_NODE_ADDRESSES", "value": ",".join(node.addresses)},
        {"name": "MOLT_GROUP", "value": node.group or ""},
        {"name": "MOLT_REASON", "value": context.reason},
        {"name": "MOLT_HOOK", "value": context.hook},
    ]


def _label_value(text: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", text)[:63]
    return cleaned.strip("-_.")


def job_body(
    name: str, spec: dict[str, Any], job: JobAction, action: str, context: ActionContext
) -> dict[str, Any]:
    """The Job to create: the template's spec with the node's environment injected."""
    spec = copy.deepcopy(spec)
    template = spec.get("template")
    pod_spec = template.get("spec") if isinstance(template, dict) else None
    containers = pod_spec.get("containers") if isinstance(pod_spec, dict) else None
    if not isinstance(pod_spec, dict) or not isinstance(containers, list) or not containers:
        raise ActionFailedError("the Job template has no template.spec.containers")
    env = environment(context)
    names = {e["name"] for e in env}
    for container in containers + list(pod_spec.get("initContainers") or []):
        own = [e for e in container.get("env") or [] if e.get("name") not in names]
        container["env"] = own + env
    pod_spec.setdefault("restartPolicy", "Never")
    spec["backoffLimit"] = 0
    spec["ttlSecondsAfterFinished"] = job.ttl_seconds_after_finished
    labels = {
        NAME_LABEL: _label_value(context.node.name),
        ACTION_LABEL: _label_value(action),
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": job.namespace,
            "labels": labels,
            "annotations": {
                "molt.dev/hook": context.hook,
                "molt.dev/attempt": str(context.attempt),
            },
        },
        "spec": spec,
    }


def template_of(document: Any) -> dict[str, Any]:
    """A JobSpec from a ConfigMap's document: a JobSpec, or a whole Job's ``spec``."""
    if isinstance(document, dict) and document.get("kind") == "Job":
        document = document.get("spec")
    if not isinstance(document, dict):
        raise ActionFailedError("the Job template is not an object")
    return document


class JobActionKind:
    """Runs one Job per attempt and waits for it."""

    def __init__(
        self,
        cluster: ClusterWrites,
        *,
        poll_seconds: float = POLL_SECONDS,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self.cluster = cluster
        self.poll_seconds = poll_seconds
        self.watch_seconds = watch_seconds

    async def _spec(self, job: JobAction) -> dict[str, Any]:
        if job.template is not None:
            return template_of(job.template)
        ref = job.template_config_map
        assert ref is not None
        text = await read_config_map_key(self.cluster, job.namespace, ref.name, ref.key)
        if text is None:
            raise ActionFailedError(f"configmap {job.namespace}/{ref.name} has no key {ref.key}")
        try:
            return template_of(yaml.safe_load(text))
        except yaml.YAMLError as error:
            raise ActionFailedError(f"configmap {job.namespace}/{ref.name}: {error}") from None

    async def attempt(self, action: LifecycleAction, context: ActionContext) -> None:
        assert action.job is not None
        job = action.job
        name = job_name(context, action.name)
        seconds = parse_duration(action.timeout).total_seconds()
        where = f"job {job.namespace}/{name}"
        try:
            async with asyncio.timeout(seconds):
                body = job_body(name, await self._spec(job), job, action.name, context)
                created = await self.cluster.create_object(body)
                log.info(
                    "job.started" if created else "job.found", job=where, node=context.node.name
                )
                await self._wait(ObjectRef("batch/v1", "Job", name, job.namespace), where)
        except TimeoutError:
            await self.cluster.delete_object(ObjectRef("batch/v1", "Job", name, job.namespace))
            raise ActionFailedError(
                f"{where} did not finish within {action.timeout}; deleted"
            ) from None

    async def _wait(self, ref: ObjectRef, where: str) -> None:
        """Until the Job completes (return) or fails (ActionFailedError): read it, watch
        it from the version read, and after a watch that ended, read it again."""
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            found = await self.cluster.read_object(ref)
            if found is None:
                raise ActionFailedError(f"{where} is gone before it finished")
            if await self._ended(ref, found, where, "read"):
                return
            version = str((found.get("metadata") or {}).get("resourceVersion") or "")
            watch = self.cluster.watch_object(ref, version, timeout_seconds=self.watch_seconds)
            async with contextlib.aclosing(watch) as events:
                async for event in events:
                    if event.type == "DELETED":
                        raise ActionFailedError(f"{where} is gone before it finished")
                    if await self._ended(ref, event.object, where, "watch"):
                        return
            log.debug("job.watch_ended", job=where, resource_version=version)
            await asyncio.sleep(max(0.0, self.poll_seconds - (loop.time() - began)))

    async def _ended(self, ref: ObjectRef, found: dict[str, Any], where: str, seen: str) -> bool:
        """True for a complete Job, False for a running one; a failed one raises.
        ``seen``: how the Job's state came (``read`` or ``watch``), for the log."""
        view = await job_view(self.cluster, ref.namespace or "", ref.name, found)
        if view.state != "running":
            log.info("job.ended", job=where, state=view.state, seen=seen)
        if view.state == "failed":
            raise ActionFailedError(f"{where} failed: {view.message or 'no message'}")
        return view.state == "complete"
