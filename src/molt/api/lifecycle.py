"""Lifecycle actions: what runs around a node's drain, at two hook points.

``preDrain`` actions run after the node's replacement is Ready and before its first
eviction; ``preTerminate`` actions run after the drain, right before the instance goes.
A node runs its group's actions, then its policy's. Each action has a ``name``, and a
node's progress is recorded per hook and name, so editing a list while a node is in
flight neither skips nor repeats an action.

The kinds are ``http``, ``vault``, ``job`` and ``etcd``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from molt.api.types import (
    CEL_RULES,
    ApiModel,
    DataKey,
    Duration,
    Name,
    NamespaceName,
    ObjectName,
    Url,
    cel,
)

ActionName = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]
IMPLEMENTED_KINDS = ("http", "vault", "job", "etcd")


class HttpAction(ApiModel):
    """POST the node's details to a URL and wait for a 2xx."""

    url: Url
    method: Literal["POST", "PUT"] = "POST"


class SecretKeyRef(ApiModel):
    """One key of a Secret."""

    namespace: NamespaceName
    name: ObjectName
    key: DataKey


class ConfigMapKeyRef(ApiModel):
    """One key of a ConfigMap, holding a YAML or JSON document."""

    name: ObjectName
    key: DataKey = "template"


JOB_TEMPLATE_RULES = [
    cel(
        "has(self.template) != has(self.templateConfigMap)",
        "exactly one of template or templateConfigMap must be set",
    ),
]


class JobAction(ApiModel):
    """Run a Kubernetes Job for the node (one per attempt) and wait for it to complete."""

    namespace: Name
    template: dict[str, Any] | None = Field(
        default=None,
        description=(
            "A JobSpec (template.spec.containers at least). Every container gets MOLT_NODE, "
            "MOLT_NODE_ADDRESSES, MOLT_GROUP, MOLT_REASON and MOLT_HOOK."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    template_config_map: ConfigMapKeyRef | None = Field(
        default=None,
        description="A ConfigMap in the namespace whose key holds a JobSpec or a whole Job.",
    )
    ttl_seconds_after_finished: Annotated[int, Field(ge=0, le=86400)] = 600

    @model_validator(mode="after")
    def _one_template(self) -> JobAction:
        if (self.template is None) == (self.template_config_map is None):
            raise ValueError("exactly one of template or templateConfigMap must be set")
        return self


class SecretRef(ApiModel):
    """A whole Secret."""

    namespace: NamespaceName
    name: ObjectName


class EtcdSnapshot(ApiModel):
    """Where a snapshot is saved before the member is removed."""

    dir: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^/")] = Field(
        description=(
            "An absolute directory on the controller's filesystem; the snapshot is "
            "written there as NODE-YYYYMMDDTHHMMSSZ.db."
        )
    )


class EtcdAction(ApiModel):
    """Move etcd leadership off the node's member, then remove the member once the
    cluster can spare it.

    The node's member is the one named like the node, or whose peer URL host is one of
    the node's addresses. It is removed only when every other member is healthy, quorum
    holds without it, and at least ``members`` healthy members (the group's size by
    default) on Ready nodes that are not leaving would remain; until then the node is
    held and the member table reported in ``molt.dev/blocked``.
    """

    endpoints: list[Url] = Field(
        min_length=1,
        max_length=5,
        description=(
            "Client URLs Molt reaches the cluster through (gRPC, http:// or https://); "
            "{{ .Node.InternalIP }} (the node's first InternalIP) and {{ .Node.Name }} are "
            "replaced (also written {node.address}, {node.name}). "
            "Each member is then also asked at its own advertised client URLs."
        ),
    )
    client_secret: SecretRef | None = Field(
        default=None,
        description=(
            "A Secret with ca.crt and, for client certificates, tls.crt and tls.key; "
            "https endpoints without it are verified against the system's CAs."
        ),
    )
    snapshot: EtcdSnapshot | None = None
    members: Annotated[int, Field(ge=1, le=9)] | None = Field(
        default=None,
        description=(
            "How many healthy members must remain after the removal; by default the size "
            "of the node's InstanceGroup."
        ),
    )


class VaultAction(ApiModel):
    """Step the node's Vault server down from active before the node goes."""

    address: Url = Field(
        description=(
            "The node's Vault: {{ .Node.InternalIP }} (its first InternalIP) and "
            "{{ .Node.Name }} are replaced (also written {node.address}, {node.name}), e.g. "
            "https://{{ .Node.InternalIP }}:8200; a path is kept as a prefix of /v1."
        )
    )
    token_secret: SecretKeyRef = Field(
        description="The token for sys/step-down (a policy with update on sys/step-down)."
    )


NOT_IMPLEMENTED = "this action kind is not implemented"


class LifecycleAction(ApiModel):
    """One action; exactly one kind is set."""

    name: ActionName = Field(
        description="Progress is recorded per name: keep it stable while nodes are in flight."
    )
    timeout: Duration = "5m"
    retries: Annotated[int, Field(ge=0, le=20)] = 3
    http: HttpAction | None = None
    job: Annotated[JobAction | None, Field(json_schema_extra={CEL_RULES: JOB_TEMPLATE_RULES})] = (
        None
    )
    etcd: EtcdAction | None = None
    vault: VaultAction | None = None

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> LifecycleAction:
        kinds = [k for k in (self.http, self.job, self.etcd, self.vault) if k is not None]
        if len(kinds) != 1:
            raise ValueError("exactly one of http, job, etcd or vault must be set")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("http", "job", "etcd", "vault") if getattr(self, k) is not None)


ACTION_RULES = [
    cel(
        "[has(self.http), has(self.job), has(self.etcd), has(self.vault)].filter(x, x).size() == 1",
        "exactly one of http, job, etcd or vault must be set",
    ),
]

ActionList = Annotated[
    list[Annotated[LifecycleAction, Field(json_schema_extra={CEL_RULES: ACTION_RULES})]],
    Field(
        max_length=8,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        },
    ),
]

Hook = Literal["preDrain", "preTerminate"]
HOOKS: tuple[Hook, ...] = ("preDrain", "preTerminate")


class Lifecycle(ApiModel):
    """Actions at the node's hook points."""

    pre_drain: ActionList = Field(
        default_factory=list,
        description="After the replacement is Ready, before the first eviction.",
    )
    pre_terminate: ActionList = Field(
        default_factory=list,
        description="After the drain, right before the instance is terminated.",
    )

    def at(self, hook: Hook) -> list[LifecycleAction]:
        return self.pre_drain if hook == "preDrain" else self.pre_terminate
