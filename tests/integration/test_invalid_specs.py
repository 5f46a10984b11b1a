"""A spec the API server's schema lets through but Molt cannot use (a cron expression or
a time zone, which only Molt can check) is told so on the object itself, and stops
nothing else: the policy beside it is still reconciled."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client

from molt.api import GROUP, VERSION
from tests.support.builders import termination_policy
from tests.support.controller import MoltProcess
from tests.support.waiting import eventually

PLURAL = "terminationpolicies"


def _window(schedule: str, time_zone: str | None = None) -> list[dict[str, Any]]:
    budget = {"maxInFlight": 1, "schedule": schedule, "duration": "2h"}
    return [{**budget, "timeZone": time_zone} if time_zone else budget]


async def _set_budgets(
    custom: client.CustomObjectsApi, name: str, budgets: list[dict[str, Any]]
) -> None:
    await custom.patch_cluster_custom_object(
        GROUP,
        VERSION,
        PLURAL,
        name,
        {"spec": {"budgets": budgets}},
        _content_type="application/merge-patch+json",
    )


async def _condition(
    custom: client.CustomObjectsApi, name: str, kind: str
) -> dict[str, Any] | None:
    found = await custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, name)
    conditions = (found.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), None)


async def test_a_policy_molt_cannot_read_says_why_on_itself_and_holds_up_no_other(
    kube: client.ApiClient,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    custom = client.CustomObjectsApi(kube)
    suffix = uuid.uuid4().hex[:5]
    bad, good = f"nightly-{suffix}", f"weekly-{suffix}"
    selector = {"matchLabels": {"molt.dev/instance-group": f"none-{suffix}"}}
    for name, budgets in ((bad, _window("every night at two")), (good, _window("0 3 * * sun"))):
        await custom.create_cluster_custom_object(
            GROUP,
            VERSION,
            PLURAL,
            termination_policy(name, nodeSelector=selector, budgets=budgets),
        )
    molt = run_molt()
    try:

        async def told() -> bool:
            found = await _condition(custom, bad, "Valid")
            return found is not None and found["status"] == "False"

        await eventually(told, what=f"{bad} told it is not valid")
        valid = await _condition(custom, bad, "Valid")
        assert valid is not None
        assert valid["reason"] == "InvalidSpec"
        assert "spec.budgets[0].schedule" in valid["message"], valid
        assert "'every night at two' is not a cron expression" in valid["message"], valid

        async def warned() -> list[Any]:
            events = await client.CoreV1Api(kube).list_event_for_all_namespaces(
                field_selector=f"involvedObject.name={bad}"
            )
            return [e for e in events.items if e.reason == "InvalidSpec" and e.type == "Warning"]

        await eventually(warned, what="a Warning Event on the policy")

        # The policy beside it is reconciled as ever: its status is written.
        await eventually(lambda: _condition(custom, good, "Progressing"), what=f"{good} reconciled")
        assert await _condition(custom, good, "Valid") is None

        # A time zone that does not exist is the next problem, named in its turn.
        await _set_budgets(custom, bad, _window("0 2 * * *", "Mars/Olympus_Mons"))

        async def zone_named() -> bool:
            found = await _condition(custom, bad, "Valid")
            return found is not None and "'Mars/Olympus_Mons'" in found["message"]

        await eventually(zone_named, what="the time zone named")

        # Fixed: the condition goes, and the policy is reconciled like any other.
        await _set_budgets(custom, bad, _window("0 2 * * *", "Europe/Berlin"))

        async def fixed() -> bool:
            return (
                await _condition(custom, bad, "Valid") is None
                and await _condition(custom, bad, "Progressing") is not None
            )

        await eventually(fixed, what=f"{bad} reconciled once fixed")
        log = molt.log()
        assert "Traceback" not in log, log[-6000:]
        assert "reconcile.failed" not in log, log[-6000:]
    finally:
        for name in (bad, good):
            await custom.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)
