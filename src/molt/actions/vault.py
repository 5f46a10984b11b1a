"""The Vault action: step the node's Vault server down from active before the node goes.

One attempt asks the server (``GET /v1/sys/seal-status``, ``GET /v1/sys/leader``). A sealed
server, a standby, or a server without HA needs nothing. The active one is told to
``PUT /v1/sys/step-down`` (with the token from the action's Secret), then asked again until
another server is active, all within the action's timeout.

The token is read from its Secret at each attempt, sent only in the ``X-Vault-Token``
header, and never put in an error, a log line, an Event or an annotation: every message
this module builds is scrubbed of it, and no exception carrying the request (whose
``repr`` would show its headers) leaves here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from molt.actions.base import ActionContext, ActionFailedError
from molt.actions.objects import read_secret_key
from molt.api.durations import parse_duration
from molt.api.lifecycle import LifecycleAction, VaultAction
from molt.policy.node_template import TemplateError, render_text
from molt.policy.snapshot import NodeView
from molt.ports import ClusterWrites

log = structlog.get_logger(__name__)

TOKEN_HEADER = "X-Vault-Token"
POLL_SECONDS = 0.5
"""How often the leader is asked again after a step-down."""


def vault_address(template: str, node: NodeView) -> str:
    """The node's Vault address: ``{{ .Node.InternalIP }}``, ``{{ .Node.Name }}`` (and
    the shorter ``{node.address}``, ``{node.name}``) replaced, no trailing slash (a path is
    kept as a prefix of the ``/v1`` endpoints)."""
    try:
        address = render_text(template, node)
    except TemplateError as error:
        raise ActionFailedError(str(error)) from None
    address = address.replace("{node.name}", node.name)
    if "{node.address}" in address:
        if not node.addresses:
            raise ActionFailedError(f"node {node.name} has no address for {template}")
        address = address.replace("{node.address}", node.addresses[0])
    return address.rstrip("/")


@dataclass(frozen=True)
class LeaderAnswer:
    """What ``/v1/sys/leader`` said."""

    is_self: bool
    ha_enabled: bool
    leader_address: str

    @classmethod
    def of(cls, body: dict[str, Any]) -> LeaderAnswer:
        return cls(
            is_self=bool(body.get("is_self")),
            ha_enabled=bool(body.get("ha_enabled")),
            leader_address=str(body.get("leader_address") or ""),
        )


def scrub(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced."""
    return text.replace(secret, "<redacted>") if secret else text


class VaultActionKind:
    """Steps an active Vault server down, once per attempt."""

    def __init__(self, cluster: ClusterWrites, *, poll_seconds: float = POLL_SECONDS) -> None:
        self.cluster = cluster
        self.poll_seconds = poll_seconds

    async def attempt(self, action: LifecycleAction, context: ActionContext) -> None:
        assert action.vault is not None
        vault = action.vault
        seconds = parse_duration(action.timeout).total_seconds()
        base = vault_address(vault.address, context.node)
        token = ""
        try:
            async with asyncio.timeout(seconds):
                token = await self._token(vault)
                async with aiohttp.ClientSession() as session:
                    await self._step_down(session, base, token, context)
        except TimeoutError:
            raise ActionFailedError(
                f"Vault at {base} still active after {action.timeout}"
            ) from None
        except ActionFailedError as error:
            raise ActionFailedError(scrub(str(error), token)) from None
        except aiohttp.ClientError as error:
            # str() only: the repr of a response error carries the request's headers.
            message = scrub(f"{type(error).__name__}: {error}", token)
            raise ActionFailedError(f"Vault at {base}: {message}") from None

    async def _token(self, vault: VaultAction) -> str:
        ref = vault.token_secret
        token = await read_secret_key(self.cluster, ref.namespace, ref.name, ref.key)
        if not token:
            raise ActionFailedError(f"secret {ref.namespace}/{ref.name} has no key {ref.key}")
        return token.strip()

    async def _step_down(
        self, session: aiohttp.ClientSession, base: str, token: str, context: ActionContext
    ) -> None:
        seal = await _get_json(session, f"{base}/v1/sys/seal-status")
        if seal.get("sealed"):
            log.info("vault.sealed", node=context.node.name, address=base)
            return
        before = LeaderAnswer.of(await _get_json(session, f"{base}/v1/sys/leader"))
        if not before.is_self:
            log.info(
                "vault.not_active",
                node=context.node.name,
                address=base,
                ha_enabled=before.ha_enabled,
            )
            return
        async with session.put(
            f"{base}/v1/sys/step-down", headers={TOKEN_HEADER: token}
        ) as response:
            if response.status == 403:
                raise ActionFailedError(
                    f"Vault at {base} refused the step-down: 403 permission denied "
                    "(check the token in the action's tokenSecret)"
                )
            if not 200 <= response.status <= 299:
                text = scrub((await response.text())[:200], token)
                raise ActionFailedError(
                    f"Vault at {base} step-down answered {response.status}: {text}"
                )
        log.info("vault.stepped_down", node=context.node.name, address=base)
        while True:
            try:
                now = LeaderAnswer.of(await _get_json(session, f"{base}/v1/sys/leader"))
            except (aiohttp.ClientError, ActionFailedError):
                now = None  # the server may be briefly unavailable while it steps down
            if (
                now is not None
                and not now.is_self
                and now.leader_address
                and now.leader_address != before.leader_address
            ):
                log.info("vault.new_active", node=context.node.name, leader=now.leader_address)
                return
            await asyncio.sleep(self.poll_seconds)


async def _get_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """A GET that needs no token, answered with a JSON object."""
    async with session.get(url) as response:
        if not 200 <= response.status <= 299:
            text = (await response.text())[:200]
            raise ActionFailedError(f"{url} answered {response.status}: {text}")
        body = await response.json(content_type=None)
    if not isinstance(body, dict):
        raise ActionFailedError(f"{url} answered {type(body).__name__}, not an object")
    return body
