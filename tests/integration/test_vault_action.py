"""The vault preTerminate action against the real control plane and a fake Vault HA
cluster on loopback (tests/support/fake_vault.py: a fake, no Vault can be built here).

One rotation of two groups: in the first, the active server's node is stepped down before
it is terminated and the standby's node is left alone; in the second, the action's Secret
holds a wrong token, so the node is held and reported until the Secret is fixed. Neither
token is anywhere a user can see afterwards (tests/support/secret_surfaces.py).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from kubernetes_asyncio import client

from tests.conftest import RunningSandbox
from tests.support.controller import MoltProcess
from tests.support.fake_vault import FakeVault
from tests.support.kube_fleet import (
    has_ready_nodes,
    install_old_fleet,
    install_policy,
    node_annotation,
    node_events,
    node_gone,
)
from tests.support.secret_surfaces import assert_no_secret, cluster_surfaces
from tests.support.waiting import eventually

TOKEN = f"hvs.molt-test-{uuid.uuid4().hex}"
WRONG = f"hvs.wrong-{uuid.uuid4().hex}"


def vault_action(fake: FakeVault, namespace: str, secret: str) -> dict[str, object]:
    return {
        "name": "vault-step-down",
        "timeout": "20s",
        "retries": 1,
        "vault": {
            "address": fake.url(),
            "tokenSecret": {"namespace": namespace, "name": secret, "key": "token"},
        },
    }


async def put_secret(core: client.CoreV1Api, namespace: str, name: str, token: str) -> None:
    body = client.V1Secret(
        metadata=client.V1ObjectMeta(name=name),
        data={"token": base64.b64encode(token.encode()).decode()},
    )
    try:
        await core.replace_namespaced_secret(name, namespace, body)
    except client.ApiException as error:
        if error.status != 404:
            raise
        await core.create_namespaced_secret(namespace, body)


async def test_the_active_vault_steps_down_first_and_a_wrong_token_holds_the_node(
    sandbox: RunningSandbox,
    kube: client.ApiClient,
    namespace: str,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    core = client.CoreV1Api(kube)
    suffix = uuid.uuid4().hex[:5]
    good, bad = f"vault-{suffix}", f"vaultbad-{suffix}"
    await put_secret(core, namespace, "vault-token", TOKEN)
    await put_secret(core, namespace, "vault-token-bad", WRONG)
    first = FakeVault(token=TOKEN, takeover_seconds=0.5)
    second = FakeVault(token=TOKEN, takeover_seconds=0.5)
    await first.start()
    await second.start()
    try:
        active, standby = f"{good}-old-0", f"{good}-old-1"
        held = f"{bad}-old-0"
        first.add("spare")  # takes over; listed first so neither old node inherits
        first.add(active, "active")
        first.add(standby)
        second.add("spare")
        second.add(held, "active")
        age = timedelta(hours=60)
        await install_old_fleet(kube, good, nodes=2, age=age, surge=2)
        await install_old_fleet(kube, bad, nodes=1, age=age, surge=1)
        await eventually(lambda: has_ready_nodes(kube, good, 2), what="two Ready nodes")
        await install_policy(
            kube,
            f"{good}-48h",
            good,
            rules={"maxAge": "48h"},
            budgets=[{"maxInFlight": 2}],
            lifecycle={"preTerminate": [vault_action(first, namespace, "vault-token")]},
        )
        await install_policy(
            kube,
            f"{bad}-48h",
            bad,
            rules={"maxAge": "48h"},
            budgets=[{"maxInFlight": 1}],
            lifecycle={"preTerminate": [vault_action(second, namespace, "vault-token-bad")]},
        )
        molt = run_molt()

        gone_at: dict[str, float] = {}

        async def both_gone() -> bool:
            for name in (active, standby):
                if name not in gone_at and await node_gone(kube, name):
                    gone_at[name] = time.time()
            return len(gone_at) == 2

        await eventually(both_gone, within=90, interval=0.2, what="the good group's old nodes")
        assert [s.member for s in first.step_downs] == [active]
        assert first.step_downs[0].at < gone_at[active]
        assert first.active == "spare"
        assert not any(m == standby and verb == "PUT" for m, verb, _ in first.requests)

        async def blocked() -> bool:
            text = await node_annotation(kube, held, "molt.dev/blocked")
            return bool(text and "retries exhausted" in text)

        await eventually(blocked, within=60, interval=0.5, what="the held node reported")
        message = await node_annotation(kube, held, "molt.dev/blocked") or ""
        assert "403 permission denied" in message, message
        assert "failed (2x)" in message, message
        assert second.refused.count(held) >= 2
        assert second.active == held
        assert not await node_gone(kube, held)
        events = json.dumps(await node_events(kube, held))
        assert "ActionFailed" in events
        assert "403 permission denied" in events
        # The held node's annotation and Events are gone with it: grep them now too.
        while_held = await cluster_surfaces(kube, sandbox.kubeconfig, molts=[molt])

        await put_secret(core, namespace, "vault-token-bad", TOKEN)  # fixed: the next retry
        await eventually(lambda: node_gone(kube, held), within=60, interval=0.5, what="held gone")
        assert [s.member for s in second.step_downs] == [held]
        assert molt.alive(), molt.log()

        surfaces = {f"{where} (while held)": text for where, text in while_held.items()}
        surfaces.update(await cluster_surfaces(kube, sandbox.kubeconfig, molts=[molt]))
        assert "403 permission denied" in surfaces["Events (while held)"]  # the grep saw them
        assert_no_secret(surfaces, {"Vault token": TOKEN, "wrong Vault token": WRONG})
    finally:
        await first.stop()
        await second.stop()
