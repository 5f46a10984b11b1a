"""The HTTP webhook action: tell a service a node is about to be drained or go.

POSTs (or PUTs) a small JSON document about the node and waits for a 2xx within the
action's timeout. Anything else is a failure the pipeline retries.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from molt.actions.base import ActionContext, ActionFailedError
from molt.api.durations import parse_duration
from molt.api.lifecycle import LifecycleAction


def payload(action: LifecycleAction, context: ActionContext) -> dict[str, Any]:
    """What the webhook receives."""
    node = context.node
    return {
        "action": action.name,
        "node": node.name,
        "uid": node.uid,
        "group": node.group,
        "zone": node.zone,
        "revision": node.revision,
        "policy": context.policy,
        "reason": context.reason,
        "event": context.hook,
    }


class HttpActionKind:
    """Calls the webhook once per attempt."""

    async def attempt(self, action: LifecycleAction, context: ActionContext) -> None:
        assert action.http is not None
        timeout = aiohttp.ClientTimeout(total=parse_duration(action.timeout).total_seconds())
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(
                    action.http.method, action.http.url, json=payload(action, context)
                ) as response,
            ):
                if not 200 <= response.status <= 299:
                    text = (await response.text())[:200]
                    raise ActionFailedError(f"{action.http.url} answered {response.status}: {text}")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise ActionFailedError(f"{action.http.url}: {error!r}") from error
