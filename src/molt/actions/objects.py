"""What lifecycle actions read of the cluster, over the generic object port: a key of a
Secret or a ConfigMap, and how a Job ended."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from molt.ports import ClusterWrites, ObjectRef


@dataclass(frozen=True)
class JobView:
    """A lifecycle action's Job, as far as the action needs it."""

    name: str
    state: str
    """``running``, ``complete`` or ``failed`` (from the Job's conditions)."""
    message: str = ""
    """Why it failed: its pods' termination messages, else the Failed condition's."""


async def read_secret_key(
    cluster: ClusterWrites, namespace: str, name: str, key: str
) -> str | None:
    """One key of a Secret, decoded (a credential: never cached, never logged); None
    when the Secret or the key is absent, or the value is not base64 UTF-8 text."""
    found = await cluster.read_object(ObjectRef("v1", "Secret", name, namespace))
    value = ((found or {}).get("data") or {}).get(key)
    if value is None:
        return None
    try:
        return base64.b64decode(str(value), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


async def read_config_map_key(
    cluster: ClusterWrites, namespace: str, name: str, key: str
) -> str | None:
    """One key of a ConfigMap; None when the ConfigMap or the key is absent."""
    found = await cluster.read_object(ObjectRef("v1", "ConfigMap", name, namespace))
    value = ((found or {}).get("data") or {}).get(key)
    return str(value) if value is not None else None


async def read_job(cluster: ClusterWrites, namespace: str, name: str) -> JobView | None:
    """A Job's state; for a failed one, its pods' termination messages. None: gone."""
    found = await cluster.read_object(ObjectRef("batch/v1", "Job", name, namespace))
    if found is None:
        return None
    return await job_view(cluster, namespace, name, found)


async def job_view(
    cluster: ClusterWrites, namespace: str, name: str, found: dict[str, Any]
) -> JobView:
    """The state of a Job as read or watched; for a failed one, its pods' termination
    messages (one pod LIST, only then)."""
    state, reason = job_state(found)
    if state != "failed":
        return JobView(name, state)
    pods = await cluster.list_objects(
        "v1", "Pod", namespace, label_selector=f"batch.kubernetes.io/job-name={name}"
    )
    messages = termination_messages(pods)
    return JobView(name, state, "; ".join(messages) if messages else reason)


def job_state(job: dict[str, Any]) -> tuple[str, str]:
    """``running``, ``complete`` or ``failed`` from a Job's conditions, and the reason."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "complete", ""
        if condition.get("type") == "Failed":
            reason = condition.get("reason") or ""
            detail = condition.get("message") or ""
            return "failed", f"{reason}: {detail}" if detail else reason or "failed"
    return "running", ""


def termination_messages(pods: list[dict[str, Any]]) -> list[str]:
    """The termination messages of a Job's failed pods' containers, each once."""
    found: list[str] = []
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (status.get("state") or {}).get("terminated") or {}
            message = str(terminated.get("message") or "").strip()
            if message and terminated.get("exitCode", 1) != 0 and message not in found:
                found.append(message)
    return found
