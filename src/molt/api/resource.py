"""What every Molt custom resource shares: identity, printer columns, envelope."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from molt.api.types import ApiModel, ObjectMeta


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry (what ``kubectl get`` shows)."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class ScaleSubresource:
    """Where the ``scale`` subresource reads and writes the replica count, so
    ``kubectl scale`` and any autoscaler speaking the scale API can size the resource."""

    spec_replicas_path: str
    status_replicas_path: str
    label_selector_path: str | None = None


@dataclass(frozen=True)
class ResourceNames:
    """The names a CRD registers, and its columns."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    columns: tuple[PrinterColumn, ...] = field(default_factory=tuple)
    scale: ScaleSubresource | None = None


class Resource(ApiModel):
    """Envelope of a cluster-scoped Molt resource; subclasses set spec and status."""

    names: ClassVar[ResourceNames]

    api_version: str = "molt.dev/v1alpha1"
    kind: str
    metadata: ObjectMeta
