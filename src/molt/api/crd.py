"""Render Molt's pydantic models as CustomResourceDefinitions.

Kubernetes wants *structural* OpenAPI v3 schemas: no ``$ref``, no ``anyOf`` for optional
fields, ``x-kubernetes-*`` extensions for lists and int-or-string, CEL rules under
``x-kubernetes-validations``. Pydantic emits JSON Schema 2020-12, so this module inlines
references, folds ``Optional`` away and turns Molt's hint keys into those extensions.

Run ``python -m molt.api.crd DIR`` (``make crds``) to rewrite the committed YAML.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from molt.api.instancegroup import InstanceGroup
from molt.api.reaper import Reaper
from molt.api.resource import Resource, ResourceNames
from molt.api.terminationpolicy import TerminationPolicy
from molt.api.types import CEL_RULES, INT_OR_STRING
from molt.api.watchdog import Watchdog

GROUP = "molt.dev"
VERSION = "v1alpha1"
RESOURCES: tuple[type[Resource], ...] = (InstanceGroup, TerminationPolicy, Watchdog, Reaper)

Schema = dict[str, Any]


def _resolve(schema: Schema, defs: dict[str, Schema]) -> Schema:
    """Inline ``$ref`` and merge its siblings (pydantic puts field extras beside it)."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        merged = dict(_resolve(target, defs))
        rules = list(merged.get(CEL_RULES, [])) + list(siblings.pop(CEL_RULES, []))
        merged.update(siblings)
        if rules:
            merged[CEL_RULES] = rules
        return merged
    return schema


def _drop_null_branch(schema: Schema) -> Schema:
    """``anyOf: [X, {type: null}]`` (an Optional field) becomes X with the outer extras."""
    branches = schema.get("anyOf")
    if not branches:
        return schema
    non_null = [b for b in branches if b.get("type") != "null"]
    if len(non_null) == len(branches):
        return schema
    outer = {k: v for k, v in schema.items() if k != "anyOf"}
    if outer.get("default", "absent") is None:
        outer.pop("default")
    if len(non_null) == 1:
        inner = dict(non_null[0])
        rules = list(inner.get(CEL_RULES, [])) + list(outer.pop(CEL_RULES, []))
        inner.update(outer)
        if rules:
            inner[CEL_RULES] = rules
        return inner
    return {**outer, "anyOf": non_null}


def to_structural(schema: Schema, defs: dict[str, Schema]) -> Schema:
    """Convert one pydantic JSON schema node (recursively) into a structural one."""
    while True:
        simpler = _drop_null_branch(_resolve(schema, defs))
        if simpler == schema:
            break
        schema = simpler
    out: Schema = {}
    rules = schema.get(CEL_RULES, [])

    if schema.get(INT_OR_STRING):
        out["x-kubernetes-int-or-string"] = True
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        # Bounds the string form, which keeps CEL's estimated rule cost small.
        if "maxLength" in schema:
            out["maxLength"] = schema["maxLength"]
    elif "anyOf" in schema:
        raise ValueError(f"cannot express a union in a structural schema: {schema}")
    elif "const" in schema:
        out["type"] = "string"
        out["enum"] = [schema["const"]]
    else:
        kind = schema.get("type")
        if kind is None:
            raise ValueError(f"schema without a type: {schema}")
        out["type"] = kind
        if "enum" in schema:
            out["enum"] = list(schema["enum"])
        if kind == "object":
            properties = schema.get("properties", {})
            if properties:
                out["properties"] = {
                    name: to_structural(prop, defs) for name, prop in properties.items()
                }
                required = schema.get("required", [])
                if required:
                    out["required"] = list(required)
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                out["additionalProperties"] = to_structural(extra, defs)
        elif kind == "array":
            out["items"] = to_structural(schema["items"], defs)
        for key in (
            "minimum",
            "maximum",
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
            "pattern",
            "format",
        ):
            if key in schema:
                out[key] = schema[key]
        if "exclusiveMinimum" in schema:
            out["minimum"] = schema["exclusiveMinimum"]
            out["exclusiveMinimum"] = True
        if "exclusiveMaximum" in schema:
            out["maximum"] = schema["exclusiveMaximum"]
            out["exclusiveMaximum"] = True

    if "description" in schema:
        out["description"] = schema["description"]
    if (
        "default" in schema
        and schema["default"] is not None
        and schema["default"] != []
        and schema["default"] != {}
    ):
        out["default"] = schema["default"]
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") and key != INT_OR_STRING:
            out[key] = value
    if rules:
        out["x-kubernetes-validations"] = rules
    return out


def openapi_schema(resource: type[Resource]) -> Schema:
    """The ``openAPIV3Schema`` of a resource: envelope, strict spec, status."""
    full = resource.model_json_schema(by_alias=True, mode="validation")
    defs = full.get("$defs", {})
    props = full["properties"]
    return {
        "type": "object",
        "description": (resource.__doc__ or "").strip(),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": to_structural(props["spec"], defs),
            "status": to_structural(props["status"], defs),
        },
    }


def subresources(names: ResourceNames) -> Schema:
    """``status`` always; ``scale`` where the resource says where its replicas live."""
    found: Schema = {"status": {}}
    if names.scale is not None:
        found["scale"] = {
            "specReplicasPath": names.scale.spec_replicas_path,
            "statusReplicasPath": names.scale.status_replicas_path,
            **(
                {"labelSelectorPath": names.scale.label_selector_path}
                if names.scale.label_selector_path
                else {}
            ),
        }
    return found


def crd_manifest(resource: type[Resource]) -> Schema:
    """The whole CustomResourceDefinition of a resource."""
    names = resource.names
    columns = [
        {
            "name": c.name,
            "type": c.type,
            "jsonPath": c.json_path,
            **({"description": c.description} if c.description else {}),
            **({"priority": c.priority} if c.priority else {}),
        }
        for c in names.columns
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{names.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": names.kind,
                "listKind": f"{names.kind}List",
                "plural": names.plural,
                "singular": names.kind.lower(),
                "shortNames": list(names.short_names),
                "categories": ["molt"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": subresources(names),
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": openapi_schema(resource)},
                }
            ],
        },
    }


class _PlainDumper(yaml.SafeDumper):
    """Writes a schema shared by two fields out twice: CRD YAML must not hold anchors."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def render(resource: type[Resource]) -> str:
    """The YAML text committed for one resource."""
    header = "# Generated by `make crds` from molt.api; do not edit by hand.\n"
    return header + yaml.dump(
        crd_manifest(resource), Dumper=_PlainDumper, sort_keys=False, width=100
    )


def file_name(resource: type[Resource]) -> str:
    return f"{GROUP}_{resource.names.plural}.yaml"


def committed_crds() -> list[str]:
    """The CRD YAML documents shipped inside the package, in a stable order."""
    folder = resources.files("molt.api") / "crds"
    return [(folder / file_name(r)).read_text() for r in RESOURCES]


def write_all(directory: Path) -> list[Path]:
    """Regenerate every CRD file in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for resource in RESOURCES:
        path = directory / file_name(resource)
        path.write_text(render(resource))
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    target = Path(argv[1]) if len(argv) > 1 else Path(str(resources.files("molt.api") / "crds"))
    for path in write_all(target):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
