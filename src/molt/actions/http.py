"""The HTTP webhook pre-termination action: tell a service a node is about to go.

POSTs (or PUTs) a small JSON document about the node and waits for a 2xx within the
action's timeout. Anything else is a failure the pipeline retries.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from molt.api.durations import parse_duration
from molt.api.terminationpolicy import LifecycleAction
from molt.policy.snapshot import NodeView


class ActionFailedError(Exception):
    """A lifecycle action did not succeed; the message says what happened."""


def payload(node: NodeView, reason: str, policy: str) -> dict[str, Any]:
    """What the webhook receives."""
    return {
        "node": node.name,
        "uid": node.uid,
        "group": node.group,
        "zone": node.zone,
        "revision": node.revision,
        "policy": policy,
        "reason": reason,
        "event": "pre-termination",
    }


async def run_http_action(
    action: LifecycleAction, node: NodeView, reason: str, policy: str
) -> None:
    """Call the webhook once; raise ActionFailedError unless it answers 2xx in time."""
    assert action.http is not None
    timeout = aiohttp.ClientTimeout(total=parse_duration(action.timeout).total_seconds())
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(
                action.http.method, action.http.url, json=payload(node, reason, policy)
            ) as response,
        ):
            if not 200 <= response.status <= 299:
                text = (await response.text())[:200]
                raise ActionFailedError(f"{action.http.url} answered {response.status}: {text}")
    except (aiohttp.ClientError, TimeoutError) as error:
        raise ActionFailedError(f"{action.http.url}: {error!r}") from error


class ActionRunner:
    """Runs pre-termination actions of the kinds this build supports."""

    async def run(self, action: LifecycleAction, node: NodeView, reason: str, policy: str) -> None:
        if action.http is not None:
            await run_http_action(action, node, reason, policy)
            return
        kind = next(k for k in ("job", "etcd", "vault") if getattr(action, k) is not None)
        raise ActionFailedError(f"{kind} actions are not supported yet; only http is")
