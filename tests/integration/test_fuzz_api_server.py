"""Generated specs of every Molt kind sent to the real API server.

Each case is a valid spec with one to three random mutations drawn from the kind's CRD
schema (``tests/support/spec_fuzz.py``). The API server judges it with a server-side
dry run; what it refuses must name the field at fault, what it accepts must parse into
the model the controller reads it with, unless only a check the schema cannot make
refuses it (a cron expression, a time zone): then the object is "unusable", and Molt
must say so on it. A sample of the accepted and of the unusable ones is then created
for real while ``molt run`` watches: no reconcile may raise, every accepted object gets
its status, every unusable one a ``Valid=False`` condition naming the field at fault.
``MOLT_FUZZ_SPECS`` sets the cases per kind (default 40; ``make chaos`` runs 400) and
``MOLT_FUZZ_SEED`` replays a run; the seed and the counts are printed.
"""

from __future__ import annotations

import os
import random
import re
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes_asyncio import client
from pydantic import BaseModel, ValidationError

from molt.api import GROUP, VERSION, InstanceGroup, Reaper, TerminationPolicy, Watchdog
from molt.kube.projections import group_view
from molt.kube.transport import ApiError, RawApi
from tests.support.builders import instance_group, termination_policy
from tests.support.controller import MoltProcess
from tests.support.spec_fuzz import PLURALS, Case, mutate
from tests.support.waiting import eventually

CASES = int(os.environ.get("MOLT_FUZZ_SPECS", "40"))
SEED = int(os.environ.get("MOLT_FUZZ_SEED", str(random.SystemRandom().randrange(10**9))))
CREATED_PER_KIND = 3

MODELS: dict[str, type[BaseModel]] = {
    "InstanceGroup": InstanceGroup,
    "TerminationPolicy": TerminationPolicy,
    "Watchdog": Watchdog,
    "Reaper": Reaper,
}
NOT_CHECKED = "some validation rules were not checked because the object was invalid"
UNKNOWN_FIELD = re.compile(r'unknown field "spec\.')
QUOTED_PATH = re.compile(r'"spec\.[^"]+"')
LOOPBACK_HOOK = "http://127.0.0.1:9/hook"
PYTHON_ONLY_CHECKS = ("is not a cron expression", "is not an IANA time zone")
"""What Molt checks that no OpenAPI schema or CEL rule can: the only reasons an object
the API server accepted may be unreadable to Molt."""


WINDOW = {"maxInFlight": 1, "schedule": "0 2 * * *", "duration": "2h", "timeZone": "UTC"}
CRON_FIELDS = ("0", "2", "*", "*/5", "1-5", "mon-fri", "61", "32", "13", "x", "L", "?", "-1")
ZONES = ("UTC", "Europe/Berlin", "Mars/Olympus_Mons", "UTC+25", "Europe/Atlantis", "../etc")


def _python_only_case(rng: random.Random) -> Case:
    """A windowed policy whose schedule or time zone is drawn from parts that may or may
    not make a real one: only Molt can tell, so these reach the controller."""
    budget = dict(WINDOW)
    if rng.random() < 0.5:
        fields = [rng.choice(CRON_FIELDS) for _ in range(rng.choice((4, 5, 5, 6, 7)))]
        budget["schedule"] = " ".join(fields).ljust(9)
        mutation = f"budgets[0].schedule={budget['schedule']!r}"
    else:
        budget["timeZone"] = rng.choice(ZONES)
        mutation = f"budgets[0].timeZone={budget['timeZone']!r}"
    spec = termination_policy("x", budgets=[budget])["spec"]
    return Case("TerminationPolicy", spec, (mutation,))


def _bases() -> dict[str, list[dict[str, Any]]]:
    """Valid specs to mutate: every provider, every check, the lifecycle hooks."""
    kwok = instance_group("x")["spec"]
    aws = instance_group(
        "x",
        provider="aws",
        template={"instanceTypes": ["m5.large"], "image": "ami-1", "aws": {"subnets": {}}},
    )["spec"]
    metal = {
        "provider": "baremetal",
        "zones": ["rack-1"],
        "minSize": 0,
        "maxSize": 1,
        "replicas": 1,
        "template": {
            "instanceTypes": ["metal"],
            "image": "https://127.0.0.1:9/os.iso",
            "baremetal": {
                "credentialsSecret": "bmc",
                "hosts": [
                    {
                        "name": "h1",
                        "zone": "rack-1",
                        "redfish": {"address": "https://127.0.0.1:9", "systemId": "1"},
                    }
                ],
            },
        },
    }
    policy = termination_policy("x")["spec"]
    hooks = termination_policy(
        "x",
        lifecycle={"preDrain": [{"name": "notify", "http": {"url": LOOPBACK_HOOK}}]},
        remediation={"steps": [{"reboot": {}}, {"replace": {}}]},
    )["spec"]
    windowed = termination_policy("x", budgets=[WINDOW])["spec"]
    sink = [{"webhook": {"url": LOOPBACK_HOOK}}]
    watchdogs = [
        {"check": {"probePod": {"namespace": "default"}}, "sinks": sink},
        {"check": {"nodeReadyRatio": {"minReady": "90%"}}, "interval": "1m"},
        {"check": {"http": {"url": LOOPBACK_HOOK}}, "warmup": "5m"},
        {"check": {"nodeCondition": {"type": "KernelDeadlock"}}},
    ]
    reapers = [{"ghostNodes": {}}, {"stuckPods": {"after": "10m"}, "dryRun": True}]
    return {
        "InstanceGroup": [kwok, aws, metal],
        "TerminationPolicy": [policy, hooks, windowed],
        "Watchdog": watchdogs,
        "Reaper": reapers,
    }


def _names_a_field(error: ApiError) -> list[str]:
    """The refusal's problems that name no field (empty when every one does)."""
    details = error.body.get("details") or {}
    causes = [
        cause
        for cause in details.get("causes") or []
        # The API server adds this note beside the errors it did find; it is no problem.
        if NOT_CHECKED not in str(cause.get("message", ""))
    ]
    if not causes:
        # A strict decoding error (400) names each unknown field in its message.
        return [] if UNKNOWN_FIELD.search(error.message) else [f"no field: {error.message}"]
    nameless = []
    for cause in causes:
        field = str(cause.get("field", "")).lstrip(".")  # a scale subresource check: .spec.x
        message = str(cause.get("message", ""))
        # An int-or-string (anyOf) refusal puts the path in its message, not in ``field``.
        if not field.startswith("spec") and not QUOTED_PATH.search(message):
            nameless.append(f"{field or '(no field)'}: {message}")
        elif field.startswith("spec") and field not in error.message.replace(".spec", "spec"):
            nameless.append(f"{field} not in the message: {error.message}")
    return nameless


def _parses(kind: str, accepted: dict[str, Any]) -> tuple[str, str | None]:
    """("accepted", None), ("unusable", None) when only a check the schema cannot make
    refuses it, else ("accepted", why the controller could not read it)."""
    try:
        MODELS[kind].model_validate(accepted)
        if kind == "InstanceGroup":
            group_view(accepted)
    except ValidationError as error:
        if all(any(c in e["msg"] for c in PYTHON_ONLY_CHECKS) for e in error.errors()):
            return "unusable", None
        return "accepted", str(error)
    except (ValueError, KeyError, TypeError) as error:
        return "accepted", str(error)
    return "accepted", None


async def _judge(raw: RawApi, case: Case, name: str) -> tuple[str, str | None]:
    """("accepted", None | why unreadable), ("unusable", None) or ("refused", None | what
    names no field)."""
    path = f"/apis/{GROUP}/{VERSION}/{PLURALS[case.kind]}"
    query = [("dryRun", "All"), ("fieldValidation", "Strict")]
    try:
        accepted = await raw.request("create", "POST", path, query=query, body=case.manifest(name))
    except ApiError as error:
        if error.status not in (400, 422):
            return "refused", f"not a validation error: {error}"
        nameless = _names_a_field(error)
        return "refused", "; ".join(nameless) if nameless else None
    return _parses(case.kind, accepted)


async def test_every_generated_spec_is_refused_by_field_or_handled_by_the_controller(
    kube: client.ApiClient,
    empty_cluster: None,
    run_molt: Callable[..., MoltProcess],
) -> None:
    print(f"\nspec fuzz: MOLT_FUZZ_SEED={SEED} MOLT_FUZZ_SPECS={CASES}")
    rng = random.Random(SEED)
    raw = RawApi(kube)
    counts: Counter[tuple[str, str]] = Counter()
    problems: list[str] = []
    accepted: dict[str, list[Case]] = {kind: [] for kind in MODELS}
    unusable: list[Case] = []
    for kind, bases in _bases().items():
        for index in range(CASES):
            case = mutate(kind, bases[index % len(bases)], rng)
            verdict, problem = await _judge(raw, case, f"fuzz-{index}")
            counts[(kind, verdict)] += 1
            if problem is not None:
                problems.append(f"{kind} {case.mutations} {verdict}: {problem}")
            elif verdict == "accepted":
                accepted[kind].append(case)
            elif verdict == "unusable":
                unusable.append(case)
    for index in range(max(4, CASES // 10)):
        case = _python_only_case(rng)
        verdict, problem = await _judge(raw, case, f"fuzz-window-{index}")
        counts[("window", verdict)] += 1
        if problem is not None:
            problems.append(f"{case.kind} {case.mutations} {verdict}: {problem}")
        elif verdict == "accepted":
            accepted[case.kind].append(case)
        elif verdict == "unusable":
            unusable.append(case)
    print(
        f"  windows: {counts[('window', 'accepted')]} accepted, "
        f"{counts[('window', 'unusable')]} accepted but unusable, "
        f"{counts[('window', 'refused')]} refused"
    )
    for kind in MODELS:
        print(
            f"  {kind}: {counts[(kind, 'accepted')]} accepted, {counts[(kind, 'refused')]} "
            f"refused, {counts[(kind, 'unusable')]} accepted but unusable (Python-only checks)"
        )
    assert not problems, "\n".join(problems)
    # The generator reaches both sides of the schema for every kind.
    for kind in MODELS:
        assert counts[(kind, "accepted")], counts
        assert counts[(kind, "refused")], counts

    await _created_for_real(kube, accepted, unusable, run_molt)


async def _created_for_real(
    kube: client.ApiClient,
    accepted: dict[str, list[Case]],
    unusable: list[Case],
    run_molt: Callable[..., MoltProcess],
) -> None:
    """A sample of accepted specs created while the controller runs: nothing raises; and
    of the unusable ones: each is told what is wrong with it."""
    custom = client.CustomObjectsApi(kube)
    molt = run_molt("--provider=kwok")
    await eventually(lambda: molt.logged("controller.leading"), what="molt run started")
    created: list[tuple[str, str]] = []
    try:
        for kind, cases in accepted.items():
            # Only kwok groups: the other providers would reach for a cloud or a BMC.
            usable = [c for c in cases if c.spec.get("provider", "kwok") == "kwok"]
            for case in usable[:CREATED_PER_KIND]:
                name = f"fuzz-{uuid.uuid4().hex[:6]}"
                await custom.create_cluster_custom_object(
                    GROUP, VERSION, PLURALS[kind], case.manifest(name)
                )
                created.append((PLURALS[kind], name))
        told: list[tuple[str, str]] = []
        for case in [c for c in unusable if c.spec.get("provider", "kwok") == "kwok"][
            :CREATED_PER_KIND
        ]:
            name = f"fuzz-{uuid.uuid4().hex[:6]}"
            await custom.create_cluster_custom_object(
                GROUP, VERSION, PLURALS[case.kind], case.manifest(name)
            )
            told.append((PLURALS[case.kind], name))
        print(f"  created for real: {len(created)} accepted, {len(told)} unusable")
        for plural, name in created:
            await eventually(
                lambda p=plural, n=name: _reconciled(custom, p, n), what=f"{plural}/{name} seen"
            )
        created.extend(told)
        for plural, name in told:
            await eventually(
                lambda p=plural, n=name: _told_invalid(custom, p, n),
                what=f"{plural}/{name} told which field is wrong",
            )
        log = molt.log()
        assert molt.alive(), log[-3000:]
        assert "Traceback" not in log, log[-6000:]
        assert "reconcile.failed" not in log, log[-6000:]
    finally:
        for plural, name in created:
            await custom.delete_cluster_custom_object(GROUP, VERSION, plural, name)


async def _told_invalid(custom: client.CustomObjectsApi, plural: str, name: str) -> bool:
    """The object carries ``Valid=False`` naming a field of its spec."""
    found = await custom.get_cluster_custom_object(GROUP, VERSION, plural, name)
    conditions = (found.get("status") or {}).get("conditions") or []
    return any(
        c["type"] == "Valid" and c["status"] == "False" and "spec." in c["message"]
        for c in conditions
    )


async def _reconciled(custom: client.CustomObjectsApi, plural: str, name: str) -> bool:
    """The controller has written the object's status (so it read and reconciled it)."""
    found = await custom.get_cluster_custom_object(GROUP, VERSION, plural, name)
    return bool(found.get("status"))


@pytest.mark.parametrize("kind", list(MODELS))
async def test_the_fuzz_oracle_can_fail(kube: client.ApiClient, kind: str) -> None:
    """A spec with an unknown field is refused, and the refusal names it."""
    case = Case(kind, {"surprise": 1}, ("surprise=1",))
    verdict, problem = await _judge(RawApi(kube), case, "oracle")
    assert (verdict, problem) == ("refused", None)
