"""Lifecycle actions: what runs around a node's drain, at two hook points.

``preDrain`` actions run after the node's replacement is Ready and before its first
eviction; ``preTerminate`` actions run after the drain, right before the instance goes.
A node runs its group's actions, then its policy's. Each action has a ``name``, and a
node's progress is recorded per hook and name, so editing a list while a node is in
flight neither skips nor repeats an action.

Only ``http`` is implemented; the schema already carries ``job``, ``etcd`` and ``vault``
so their shape is reviewable, but the API server refuses them until they work, rather
than accepting an action that would hold a node cordoned forever.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from molt.api.types import CEL_RULES, ApiModel, Duration, Name, Url, cel

ActionName = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]
IMPLEMENTED_KINDS = ("http",)


class HttpAction(ApiModel):
    """POST the node's details to a URL and wait for a 2xx."""

    url: Url
    method: Literal["POST", "PUT"] = "POST"


class JobAction(ApiModel):
    """Run a Kubernetes Job from a ConfigMap-held template and wait for it."""

    namespace: Name
    template_config_map: Name


class EtcdAction(ApiModel):
    """Move etcd leadership away from the node and remove its member."""

    endpoints: list[Url] = Field(min_length=1, max_length=5)
    client_secret: Name | None = None


class VaultAction(ApiModel):
    """Step a Vault server on the node down from active."""

    address: Url
    token_secret: Name | None = None


NOT_IMPLEMENTED = "job, etcd and vault actions are not implemented yet; only http is"


class LifecycleAction(ApiModel):
    """One action; exactly one kind is set."""

    name: ActionName = Field(
        description="Progress is recorded per name: keep it stable while nodes are in flight."
    )
    timeout: Duration = "5m"
    retries: Annotated[int, Field(ge=0, le=20)] = 3
    http: HttpAction | None = None
    job: JobAction | None = None
    etcd: EtcdAction | None = None
    vault: VaultAction | None = None

    @model_validator(mode="after")
    def _exactly_one_implemented_kind(self) -> LifecycleAction:
        kinds = [k for k in (self.http, self.job, self.etcd, self.vault) if k is not None]
        if len(kinds) != 1:
            raise ValueError("exactly one of http, job, etcd or vault must be set")
        if self.http is None:
            raise ValueError(NOT_IMPLEMENTED)
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("http", "job", "etcd", "vault") if getattr(self, k) is not None)


ACTION_RULES = [
    cel(
        "[has(self.http), has(self.job), has(self.etcd), has(self.vault)].filter(x, x).size() == 1",
        "exactly one of http, job, etcd or vault must be set",
    ),
    cel("!has(self.job) && !has(self.etcd) && !has(self.vault)", NOT_IMPLEMENTED),
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
