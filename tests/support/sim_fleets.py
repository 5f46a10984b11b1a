"""Random simulator scenarios drawn from a seed: fleets, budgets, PDBs, faults.

``random_scenario(seed)`` returns the YAML text of one scenario, so a failing seed can be
replayed with ``molt simulate`` as well as by the test. Every draw comes from
``random.Random(seed)``: the same seed gives the same text. The fleets are small (a few
to a few dozen nodes) and the runs short (hours), so dozens of them fit in a unit run.

What varies: groups (1-2, kwok, 1-3 zones, spot or not, rolling or blue-green with
random surge and unavailability), the nodes' ages around the max age, an optional
control-plane group (which the policy may or may not opt into), workloads with
``minAvailable``/``maxUnavailable`` PDBs (counts, percentages, sometimes a deadlocked
one or two PDBs over the same pods, sometimes ``do-not-disrupt``), the policy's budgets
(count or percentage, per cluster, group or zone, sometimes with a maintenance window),
a lifecycle action with a failure rate, launch failures, and a timeline of template
changes (sometimes to a bad image, sometimes followed by an outage that takes one zone's
nodes NotReady, so the new revision fails in one zone only), zone outages, spot
interruptions, NotReady blinks and kubelet deaths.
"""

from __future__ import annotations

import random
from typing import Any

import yaml

CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
BAD_IMAGE = "ami-broken"
ZONES = ("zone-a", "zone-b", "zone-c")


def _count_or_percent(rng: random.Random, low: int, high: int) -> int | str:
    if rng.random() < 0.5:
        return rng.randint(low, high)
    return f"{rng.choice((10, 20, 25, 34, 50))}%"


def _group(rng: random.Random, name: str, max_age_hours: int) -> dict[str, Any]:
    zones = list(ZONES[: rng.randint(1, 3)])
    replicas = rng.randint(2, 12)
    spec: dict[str, Any] = {
        "provider": "kwok",
        "minSize": replicas,
        "maxSize": replicas + rng.randint(0, 4),
        "replicas": replicas,
        "zones": zones,
        "template": {"instanceTypes": [rng.choice(("m5.large", "m5.xlarge"))], "image": "ami-v1"},
        "strategy": {
            "type": "BlueGreen" if rng.random() < 0.15 else "RollingReplace",
            "maxSurge": _count_or_percent(rng, 0, 3),
            "maxUnavailable": _count_or_percent(rng, 0, 2),
        },
        "health": {"readyTimeout": "10m", "notReadyFor": "2m"},
    }
    if rng.random() < 0.3:
        spec["capacity"] = {
            "types": ["on-demand", "spot"],
            "onDemandBase": rng.randint(0, 2),
            "spotPercent": rng.choice((25, 50, 100)),
        }
    oldest = rng.uniform(0.5, 2.5) * max_age_hours
    youngest = rng.uniform(0, min(oldest, max_age_hours))
    return {
        "name": name,
        "spec": spec,
        "ages": {"youngest": f"{int(youngest * 60)}m", "oldest": f"{int(oldest * 60)}m"},
    }


def _control_plane_group(rng: random.Random) -> dict[str, Any]:
    replicas = rng.choice((1, 3))
    return {
        "name": "control-plane",
        "spec": {
            "provider": "kwok",
            "minSize": replicas,
            "maxSize": replicas + 1,
            "replicas": replicas,
            "zones": list(ZONES[:replicas]),
            "template": {
                "instanceTypes": ["m5.large"],
                "image": "ami-v1",
                "labels": {CONTROL_PLANE_LABEL: ""},
                "taints": [{"key": CONTROL_PLANE_LABEL, "effect": "NoSchedule"}],
            },
            # Old enough to be due under any policy that opts in, but never by the group's
            # own maxNodeAge within a run: only a policy may touch these nodes.
            "maxNodeAge": "10000h",
        },
        "ages": {"youngest": "100h", "oldest": "200h"},
    }


def _budget(rng: random.Random) -> dict[str, Any]:
    budget: dict[str, Any] = {
        "maxInFlight": _count_or_percent(rng, 1, 3),
        "scope": rng.choice(("Cluster", "Cluster", "InstanceGroup", "Zone")),
    }
    if rng.random() < 0.15:
        budget["schedule"] = rng.choice(("0 */6 * * *", "30 2 * * *", "*/20 * * * *"))
        budget["duration"] = rng.choice(("10m", "1h", "3h"))
    return budget


def _pdb(rng: random.Random, replicas: int) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.08:
        return {"minAvailable": replicas}  # can never allow a disruption: a deadlock
    if roll < 0.5:
        value: int | str = (
            rng.randint(0, max(0, replicas - 1))
            if rng.random() < 0.6
            else f"{rng.choice((50, 60, 80, 90))}%"
        )
        return {"minAvailable": value}
    value = rng.randint(1, 2) if rng.random() < 0.6 else f"{rng.choice((10, 25, 50))}%"
    return {"maxUnavailable": value}


def _workloads(rng: random.Random, groups: list[str]) -> list[dict[str, Any]]:
    found = []
    for index in range(rng.randint(0, 4)):
        replicas = rng.randint(1, 12)
        workload: dict[str, Any] = {
            "name": f"app{index}",
            "replicas": replicas,
            "requests": {"cpu": f"{rng.choice((50, 100, 200, 400))}m", "memory": "128Mi"},
            "startup": f"{rng.randint(1, 60)}s",
            "grace": f"{rng.randint(1, 30)}s",
        }
        if rng.random() < 0.4:
            workload["nodeSelector"] = {"molt.dev/instance-group": rng.choice(groups)}
        if rng.random() < 0.7:
            workload["pdb"] = _pdb(rng, replicas)
        if rng.random() < 0.08:
            workload["doNotDisrupt"] = True
        found.append(workload)
    return found


def _timeline(
    rng: random.Random, groups: list[dict[str, Any]], hours: float, spot: bool
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    zones = sorted({z for g in groups for z in g["spec"]["zones"]})
    for _ in range(rng.randint(1, 8)):
        at = rng.uniform(0, hours * 0.9)
        kind = rng.choice(("template", "outage", "blink", "death", "spot"))
        event: dict[str, Any] = {"at": f"{int(at * 60)}m"}
        if kind == "template":
            group = rng.choice(groups)
            image = BAD_IMAGE if rng.random() < 0.3 else f"ami-v{rng.randint(2, 9)}"
            event["templateChange"] = {"group": group["name"], "template": {"image": image}}
            if image != BAD_IMAGE and len(group["spec"]["zones"]) > 1 and rng.random() < 0.4:
                # The new revision's nodes in one zone never turn Ready: a failure in one
                # cell, which must not roll the template back.
                start = at + rng.uniform(0, 0.2)
                events.append(
                    {
                        "at": f"{int(start * 60)}m",
                        "zoneOutage": {
                            "zone": rng.choice(group["spec"]["zones"]),
                            "until": f"{int((start + rng.uniform(0.5, 3)) * 60)}m",
                            "nodesNotReady": True,
                        },
                    }
                )
        elif kind == "outage":
            outage: dict[str, Any] = {
                "zone": rng.choice(zones),
                "until": f"{int((at + rng.uniform(0.2, 6)) * 60)}m",
            }
            if rng.random() < 0.3:
                outage["nodesNotReady"] = True
            if spot and rng.random() < 0.3:
                outage["capacityType"] = "spot"
            event["zoneOutage"] = outage
        elif kind == "blink":
            event["notReadyBlink"] = {"duration": f"{rng.randint(1, 90)}s"}
        elif kind == "death":
            event["kubeletDeath"] = {"nodes": rng.randint(1, 2)}
        elif spot:
            event["spotInterruptions"] = {
                "perHour": rng.choice((0.2, 0.5, 2.0)),
                "until": f"{int((at + rng.uniform(2, 24)) * 60)}m",
            }
        else:
            continue
        events.append(event)
    events.sort(key=lambda e: int(e["at"][:-1]))
    return events


def random_scenario_data(seed: int) -> dict[str, Any]:
    """One random scenario, as the mapping its YAML holds."""
    rng = random.Random(seed)
    max_age = rng.choice((12, 24, 36, 48))
    hours = rng.uniform(48, 96)
    groups = [_group(rng, f"pool{i}", max_age) for i in range(rng.randint(1, 2))]
    fleet = list(groups)
    control_plane = rng.random() < 0.25
    if control_plane:
        fleet.append(_control_plane_group(rng))
    rules: dict[str, Any] = {"maxAge": f"{max_age}h"}
    if rng.random() < 0.4:
        rules["conditions"] = [{"type": "Ready", "status": "Unknown", "for": "1m"}]
    if rng.random() < 0.4:
        rules["drift"] = True
    policy: dict[str, Any] = {
        "rules": rules,
        "budgets": [_budget(rng) for _ in range(rng.choice((0, 1, 1, 2, 3)))],
        "drain": {"timeout": rng.choice(("10m", "30m", "1h"))},
        "includeControlPlane": control_plane and rng.random() < 0.5,
    }
    if policy["includeControlPlane"]:
        policy["controlPlane"] = {"bakeTime": rng.choice(("1m", "10m"))}
    actions: dict[str, Any] = {}
    if rng.random() < 0.3:
        policy["lifecycle"] = {
            "preDrain": [{"name": "notify", "http": {"url": "https://hooks.example/notify"}}]
        }
        actions["notify"] = {
            "duration": f"{rng.randint(1, 120)}s",
            "failureRate": rng.choice((0.0, 0.1, 0.5)),
        }
    spot = any("spot" in g["spec"].get("capacity", {}).get("types", []) for g in groups)
    names = [g["name"] for g in groups]
    data: dict[str, Any] = {
        "name": f"random-{seed}",
        "duration": f"{int(hours * 60)}m",
        "seed": seed,
        "sampleEvery": "30m",
        # Days of simulated time fit a unit run with coarser floors than production's
        # (a pass at least every few minutes, not every 30 s; every pass is still checked).
        "controller": {
            "resync": rng.choice(("2m", "5m")),
            "selectionInterval": rng.choice(("5s", "30s")),
            "groupInterval": rng.choice(("30s", "1m")),
        },
        "cloud": {
            "launchDelay": f"{rng.randint(5, 120)}s",
            "launchJitter": f"{rng.randint(0, 30)}s",
            "readyDelay": f"{rng.randint(1, 30)}s",
            "launchFailureRate": rng.choice((0.0, 0.0, 0.05, 0.3)),
            "badImages": [BAD_IMAGE],
        },
        "fleet": fleet,
        "workloads": _workloads(rng, names),
        "policies": [{"name": "rotate", "spec": policy}],
        "timeline": _timeline(rng, groups, hours, spot),
    }
    if actions:
        data["actions"] = actions
    if data["workloads"] and rng.random() < 0.1:
        first = data["workloads"][0]
        data["pdbs"] = [
            {"name": "overlap", "selector": {"app": first["name"]}, "maxUnavailable": 1}
        ]
    return data


def random_scenario(seed: int) -> str:
    """One random scenario's YAML text."""
    return yaml.safe_dump(random_scenario_data(seed), sort_keys=False)
