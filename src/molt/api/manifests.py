"""Post-launch manifests: objects a group applies for each of its nodes while it lives.

Each entry is an object template (a Calico ``HostEndpoint``, a monitoring target, a
per-node NetworkPolicy) in which ``{{ .Node.Name }}``, ``{{ .Node.InternalIP }}``,
``{{ .Node.Zone }}``, ``{{ .Node.Group }}`` and ``{{ index .Node.Labels "KEY" }}`` are
replaced by the node's values. Molt applies it (server-side apply) when the node joins and
has an address, owns it by the Node (so garbage collection removes it with the Node), and
deletes it itself when the node goes, for what garbage collection cannot reach.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic.config import JsonDict

from molt.api.types import ApiModel

ManifestName = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]

OBJECT_SCHEMA: JsonDict = {
    "required": ["apiVersion", "kind", "metadata"],
    "properties": {
        "apiVersion": {"type": "string", "minLength": 1},
        "kind": {"type": "string", "minLength": 1},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "namespace": {"type": "string"},
            },
            "x-kubernetes-preserve-unknown-fields": True,
        },
    },
    "x-kubernetes-preserve-unknown-fields": True,
}
"""What the API server checks of a manifest: it names an object; the rest is the kind's."""


class PostLaunchManifest(ApiModel):
    """One object applied for every node of the group."""

    name: ManifestName = Field(description="Names this entry; stable while nodes live.")
    manifest: dict[str, Any] = Field(
        description="The object, with {{ .Node.Name }}, {{ .Node.InternalIP }}, "
        '{{ .Node.Zone }}, {{ .Node.Group }} and {{ index .Node.Labels "KEY" }} in its '
        "strings replaced by the node's values.",
        json_schema_extra=OBJECT_SCHEMA,
    )

    @field_validator("manifest")
    @classmethod
    def _names_an_object(cls, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest.get("metadata")
        if not (
            isinstance(manifest.get("apiVersion"), str)
            and isinstance(manifest.get("kind"), str)
            and isinstance(meta, dict)
            and isinstance(meta.get("name"), str)
        ):
            raise ValueError("a post-launch manifest needs apiVersion, kind and metadata.name")
        return manifest


PostLaunchList = Annotated[
    list[PostLaunchManifest],
    Field(
        max_length=8,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    ),
]
