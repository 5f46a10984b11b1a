"""Random specs for Molt's kinds, generated from their CRD schemas.

A case starts from a valid spec of its kind and applies a few mutations, each picked
by walking the kind's OpenAPI schema: set a property (present or not) to a value that
fits its schema or to one that does not, drop a property, or add an unknown one. The
values stay on loopback (no URL or address names another host), so a sample of the
accepted specs can be created for real with a controller running.
"""

from __future__ import annotations

import copy
import itertools
import random
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from molt.api import GROUP, VERSION

Schema = dict[str, Any]
Path = tuple[str | int, ...]

PLURALS = {
    "InstanceGroup": "instancegroups",
    "TerminationPolicy": "terminationpolicies",
    "Watchdog": "watchdogs",
    "Reaper": "reapers",
}

# Strings that fit many of the schemas' formats, and some that fit none of them.
STRINGS = (
    "5m",
    "1h30m",
    "0s",
    "90000000h",
    "1.5s",
    "-5m",
    "2days",
    "50%",
    "0%",
    "100%",
    "101%",
    "3",
    "",
    "zone-a",
    "zone-z",
    "rack-1",
    "spot",
    "on-demand",
    "Ready",
    "True",
    "NoSchedule",
    "molt.dev/instance-group",
    "http://127.0.0.1:9/hook",
    "https://127.0.0.1:9",
    "ftp://127.0.0.1",
    "* * * * *",
    "61 25 * * *",
    "Europe/Berlin",
    "Mars/Olympus",
    "x" * 70,
    "ünïcode",
    "{{ .Node.Name }}",
    "{{ .Nope",
    "arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/web/1",
)
INTEGERS = (0, 1, 2, 3, -1, 7, 100, 599, 10**6, 2**31, -(2**40))


def crd_schema(kind: str) -> Schema:
    """The ``spec`` schema of a Molt kind, from the generated CRD."""
    return _crd(PLURALS[kind])["properties"]["spec"]  # type: ignore[no-any-return]


@cache
def _crd(plural: str) -> Schema:
    text = resources.files("molt.api").joinpath(f"crds/{GROUP}_{plural}.yaml").read_text()
    document = yaml.safe_load(text)
    return document["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def _branches(schema: Schema) -> Schema:
    """A schema with its anyOf/oneOf alternatives folded in (the first with properties)."""
    for key in ("anyOf", "oneOf", "allOf"):
        for option in schema.get(key, []):
            if "properties" in option or "items" in option:
                return {**schema, **option}
    return schema


def schema_paths(schema: Schema, prefix: Path = (), depth: int = 0) -> list[tuple[Path, Schema]]:
    """Every property path the schema declares (array items as index 0), to depth 7."""
    found: list[tuple[Path, Schema]] = []
    schema = _branches(schema)
    if depth > 7:
        return found
    for name, child in schema.get("properties", {}).items():
        found.append(((*prefix, name), child))
        found.extend(schema_paths(child, (*prefix, name), depth + 1))
    items = schema.get("items")
    if isinstance(items, dict):
        found.extend(schema_paths(items, (*prefix, 0), depth + 1))
    return found


def wrong_value(rng: random.Random) -> Any:
    """A value of any shape, most likely not the one the schema wants."""
    choice = rng.randrange(6)
    if choice == 0:
        return rng.choice(STRINGS)
    if choice == 1:
        return rng.choice(INTEGERS)
    if choice == 2:
        return rng.choice([True, False, None, 0.5, -2.5])
    if choice == 3:
        return [rng.choice(STRINGS) for _ in range(rng.randrange(3))]
    if choice == 4:
        return {rng.choice(["a", "zone-a", "url", "name"]): rng.choice(STRINGS)}
    return {}


def fitting_value(schema: Schema, rng: random.Random, depth: int = 0) -> Any:
    """A value shaped like the schema wants (its content may still be refused)."""
    schema = _branches(schema)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        kind = rng.choice(["integer", "string"])
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        value: dict[str, Any] = {}
        if depth < 4:
            for name in schema.get("required", []):
                if name in properties:
                    value[name] = fitting_value(properties[name], rng, depth + 1)
            optional = [name for name in properties if name not in value]
            for name in rng.sample(optional, min(len(optional), rng.randrange(3))):
                value[name] = fitting_value(properties[name], rng, depth + 1)
        extra = schema.get("additionalProperties")
        if not properties and isinstance(extra, dict) and rng.random() < 0.7:
            key = rng.choice(["team", "zone-a", "molt.dev/x"])
            value[key] = fitting_value(extra, rng, depth + 1)
        return value
    if kind == "array":
        items = schema.get("items", {})
        low = int(schema.get("minItems", 0))
        return [fitting_value(items, rng, depth + 1) for _ in range(low + rng.randrange(3))]
    if kind == "integer":
        low = schema.get("minimum", -3)
        high = schema.get("maximum", low + 20)
        return rng.choice([low, high, rng.randint(int(low), int(high)), low - 1, high + 1])
    if kind == "number":
        return rng.choice([0.0, 0.5, 1.5, -1.0])
    if kind == "boolean":
        return rng.random() < 0.5
    return rng.choice(STRINGS)


def _set(spec: dict[str, Any], path: Path, value: Any) -> None:
    target: Any = spec
    for part, following in itertools.pairwise(path):
        if isinstance(part, int):
            if not isinstance(target, list):
                return
            if not target:
                target.append({} if isinstance(following, str) else [])
            target = target[0]
            continue
        if not isinstance(target, dict):
            return
        child = target.get(part)
        if not isinstance(child, dict | list):
            child = {} if isinstance(following, str) else []
            target[part] = child
        target = child
    last = path[-1]
    if isinstance(last, int):
        if isinstance(target, list):
            if target:
                target[0] = value
            else:
                target.append(value)
    elif isinstance(target, dict):
        target[last] = value


def _drop(spec: dict[str, Any], path: Path) -> None:
    target: Any = spec
    for part in path[:-1]:
        if isinstance(part, int):
            target = target[0] if isinstance(target, list) and target else None
        else:
            target = target.get(part) if isinstance(target, dict) else None
        if target is None:
            return
    if isinstance(target, dict):
        target.pop(path[-1], None)


@dataclass(frozen=True)
class Case:
    """One generated spec and what was done to the valid one to get it."""

    kind: str
    spec: dict[str, Any]
    mutations: tuple[str, ...]

    def manifest(self, name: str) -> dict[str, Any]:
        return {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": self.kind,
            "metadata": {"name": name},
            "spec": self.spec,
        }


def mutate(kind: str, base: dict[str, Any], rng: random.Random) -> Case:
    """``base`` with one to three random mutations from the kind's schema."""
    spec = copy.deepcopy(base)
    paths = schema_paths(crd_schema(kind))
    done: list[str] = []
    for _ in range(rng.randint(1, 3)):
        path, schema = rng.choice(paths)
        shown = ".".join(f"[{p}]" if isinstance(p, int) else p for p in path)
        action = rng.random()
        if action < 0.6:
            value = fitting_value(schema, rng)
            _set(spec, path, value)
            done.append(f"{shown}={value!r}")
        elif action < 0.8:
            value = wrong_value(rng)
            _set(spec, path, value)
            done.append(f"{shown}={value!r}")
        elif action < 0.95:
            _drop(spec, path)
            done.append(f"drop {shown}")
        else:
            _set(spec, (*path[:-1], "surprise"), 1)
            done.append(f"{shown[: -len(str(path[-1]))]}surprise=1")
    return Case(kind, spec, tuple(done))
