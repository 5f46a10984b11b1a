"""One-shot reads of the cluster for `molt plan`: paginated LISTs of nodes, instance
groups and termination policies, parsed into a policy snapshot.

The controller reads through watch caches instead; this path is for commands that run
once and exit.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
from kubernetes_asyncio import client
from pydantic import ValidationError

from molt.api import InstanceGroup, TerminationPolicy
from molt.api.problems import describe_invalid
from molt.kube.connections import reset_on_close
from molt.kube.projections import group_view, node_view
from molt.kube.state import GROUPS, NODES, POLICIES
from molt.kube.transport import ApiError, RawApi
from molt.policy.snapshot import Snapshot


@dataclass(frozen=True)
class ClusterRead:
    """A snapshot plus the policies, and any object that could not be used."""

    snapshot: Snapshot
    policies: list[TerminationPolicy]
    problems: list[str]
    instance_groups: dict[str, InstanceGroup] = field(default_factory=dict)
    """The groups that parse as InstanceGroups (status included), by name."""


async def read_cluster(api: client.ApiClient) -> ClusterRead:
    """List nodes, InstanceGroups and TerminationPolicies into a snapshot."""
    raw = RawApi(api)
    raw_nodes, _ = await raw.list_all(NODES)
    raw_groups, _ = await raw.list_all(GROUPS)
    raw_policies, _ = await raw.list_all(POLICIES)
    problems: list[str] = []
    policies: list[TerminationPolicy] = []
    for item in raw_policies:
        try:
            policies.append(TerminationPolicy.model_validate(item))
        except ValidationError as error:
            name = item.get("metadata", {}).get("name")
            problems.append(f"TerminationPolicy {name}: skipped, {describe_invalid(error)}")
    groups = {g.name: g for g in (group_view(item) for item in raw_groups)}
    parsed: dict[str, InstanceGroup] = {}
    for item in raw_groups:
        try:
            group = InstanceGroup.model_validate(item)
        except ValidationError as error:
            name = item.get("metadata", {}).get("name")
            problems.append(f"InstanceGroup {name}: skipped, {describe_invalid(error)}")
            continue
        parsed[group.metadata.name] = group
    nodes = tuple(node_view(item) for item in raw_nodes)
    return ClusterRead(Snapshot(nodes, groups), policies, problems, parsed)


async def connect(kubeconfig: str | None) -> client.ApiClient:
    """An API client from a kubeconfig file (or the default locations / in-cluster)."""
    from kubernetes_asyncio import config

    configuration = client.Configuration()
    try:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    except (config.ConfigException, FileNotFoundError, TypeError) as error:
        if kubeconfig:
            raise NoClusterError(f"cannot use kubeconfig {kubeconfig}: {error}") from error
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException as in_cluster:
            raise NoClusterError(
                "no cluster to talk to: pass --kubeconfig or set KUBECONFIG "
                "(or run inside a cluster)"
            ) from in_cluster
    api = client.ApiClient(configuration)
    await reset_on_close(api)
    return api


class NoClusterError(Exception):
    """No usable kubeconfig and not running in a cluster; the message says what to do."""


async def reach_cluster(api: client.ApiClient, within: float = 5.0) -> None:
    """Ask the API server for its version until it answers or ``within`` seconds pass.

    A command that starts against a cluster it cannot reach says so and exits, instead of
    retrying for ever behind a wall of warnings; once started, the caches ride out outages.
    """
    raw = RawApi(api)
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await raw.request("get", "GET", "/version", request_timeout=5.0)
            return
        except ApiError as error:
            if error.status == 401:
                host = api.configuration.host
                raise NoClusterError(
                    f"the cluster at {host} refused our credentials: {error.message}"
                ) from error
            return  # it answered: whatever else is wrong, the command reports it
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            if asyncio.get_running_loop().time() >= deadline:
                host = api.configuration.host
                detail = str(error) or type(error).__name__
                raise NoClusterError(f"cannot reach the cluster at {host}: {detail}") from error
            await asyncio.sleep(1.0)
