"""Field types shared by Molt's resources: durations, counts-or-percents, conditions.

Each type carries both its Python validation and the hints ``molt.api.crd`` turns into
the OpenAPI schema and CEL rules the API server enforces, so a value refused here is
refused there with the same words. Two checks the schema cannot make (a cron
expression, a time zone) are Python's alone.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from molt.api.durations import DURATION_HINT, DURATION_PATTERN, parse_duration

# Extension keys read by molt.api.crd; they never reach the API server as such.
CEL_RULES = "x-molt-cel"
INT_OR_STRING = "x-kubernetes-int-or-string"


class ApiModel(BaseModel):
    """Base for every API object: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


Duration = Annotated[
    str,
    AfterValidator(_check_duration),
    Field(
        max_length=32,
        json_schema_extra={CEL_RULES: [cel(f"self.matches('{DURATION_PATTERN}')", DURATION_HINT)]},
    ),
]


def _check_cron(value: str) -> str:
    if not croniter.is_valid(value):
        raise ValueError(
            f"{value!r} is not a cron expression (minute hour day-of-month month "
            "day-of-week, such as '0 2 * * *' or '30 1 * * mon-fri')"
        )
    return value


CronSchedule = Annotated[str, AfterValidator(_check_cron), Field(min_length=9, max_length=128)]
"""A cron expression. The schema cannot parse cron, so a malformed one gets past the API
server; Molt then cannot read the object and says so in its status (``Valid``)."""


def _check_time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(
            f"{value!r} is not an IANA time zone (such as UTC, Europe/Berlin or America/New_York)"
        ) from error
    return value


TimeZone = Annotated[str, AfterValidator(_check_time_zone), Field(min_length=1, max_length=64)]
"""An IANA time zone name, checked against the tz database the way CronJob's is."""

_COUNT = re.compile(r"^[0-9]+$")
_PERCENT = re.compile(r"^(100|[1-9]?[0-9])%$")
COUNT_OR_PERCENT_HINT = "must be a count (such as 1) or a percentage from 0% to 100% (such as 20%)"


def _check_count_or_percent(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError(COUNT_OR_PERCENT_HINT)
        return value
    if not (_COUNT.match(value) or _PERCENT.match(value)):
        raise ValueError(COUNT_OR_PERCENT_HINT)
    return value


CountOrPercent = Annotated[
    int | str,
    AfterValidator(_check_count_or_percent),
    Field(
        json_schema_extra={
            INT_OR_STRING: True,
            "maxLength": 8,
            CEL_RULES: [
                cel(
                    "type(self) == int ? int(self) >= 0 : "
                    "(string(self).matches('^[0-9]+$') || "
                    "string(self).matches('^(100|[1-9]?[0-9])%$'))",
                    COUNT_OR_PERCENT_HINT,
                )
            ],
        }
    ),
]


def resolve_count_or_percent(value: int | str, total: int, *, round_up: bool = True) -> int:
    """Turn ``"20%"`` of ``total`` (or a plain count) into a number of nodes."""
    if isinstance(value, int):
        return value
    if value.endswith("%"):
        share = int(value[:-1]) * total
        return -(-share // 100) if round_up else share // 100
    return int(value)


Name = Annotated[str, Field(min_length=1, max_length=253)]
ObjectName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    ),
]
"""The name of a Kubernetes object such as a Secret (a DNS-1123 subdomain): a name the API
server would refuse to look up is refused here, where the field can be named."""
NamespaceName = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]
"""A namespace's name (a DNS-1123 label)."""
DataKey = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")]
"""A key of a Secret's or ConfigMap's data."""
LabelKey = Annotated[str, Field(min_length=1, max_length=317)]
LabelValue = Annotated[str, Field(max_length=63)]
Url = Annotated[
    str,
    Field(
        max_length=512,
        json_schema_extra={
            CEL_RULES: [
                cel(
                    "self.startsWith('http://') || self.startsWith('https://')",
                    "must be an http:// or https:// URL",
                )
            ]
        },
    ),
]

TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
ConditionStatus = Literal["True", "False", "Unknown"]


class Taint(ApiModel):
    """A Kubernetes taint placed on every node of a template."""

    key: LabelKey
    value: LabelValue | None = None
    effect: TaintEffect


class LabelSelectorRequirement(ApiModel):
    """One ``matchExpressions`` term of a label selector."""

    key: LabelKey
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[LabelValue] = Field(default_factory=list, max_length=64)


class LabelSelector(ApiModel):
    """A Kubernetes label selector; empty selects everything."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=32)


class SecretKeyRef(ApiModel):
    """A key of a Secret, so credentials never sit in a Molt resource."""

    namespace: NamespaceName
    name: ObjectName
    key: DataKey


class Condition(ApiModel):
    """A status condition in the shape of ``metav1.Condition``."""

    type: Annotated[str, Field(min_length=1, max_length=316)]
    status: ConditionStatus
    reason: Annotated[str, Field(max_length=1024)] = ""
    message: Annotated[str, Field(max_length=32768)] = ""
    last_transition_time: datetime
    observed_generation: Annotated[int, Field(ge=0)] | None = None


Conditions = Annotated[
    list[Condition],
    Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    ),
]


class ObjectMeta(ApiModel):
    """The slice of ``metadata`` Molt reads; the API server owns the rest."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True
    )

    name: Name
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


def dump_manifest(obj: BaseModel) -> dict[str, Any]:
    """Serialise a resource as the API server expects it (camelCase, no nulls)."""
    return obj.model_dump(by_alias=True, exclude_none=True, mode="json")
