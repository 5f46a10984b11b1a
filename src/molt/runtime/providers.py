"""The one registry of providers ``molt run`` can launch into and terminate in.

Each entry builds its provider from the API client and the leadership fence; the CLI
validates ``--provider`` against the same names, and a unit test holds them equal to the
``InstanceGroup.spec.provider`` values the API accepts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kubernetes_asyncio import client

from molt.cloud.aws import aws_provider_from_environment
from molt.cloud.baremetal import baremetal_provider_from_environment
from molt.cloud.kwok import KwokProvider
from molt.cloud.provider import Provider


@dataclass
class Built:
    """A provider, and what to call when the controller stops."""

    provider: Provider
    close: Callable[[], Awaitable[None]] | None = None


def _kwok(api: client.ApiClient, check_fence: Callable[[], None]) -> Built:
    provider = KwokProvider(api, check_fence=check_fence)
    return Built(provider, provider.close)


def _aws(api: client.ApiClient, check_fence: Callable[[], None]) -> Built:
    # Credentials, region and endpoint (AWS_ENDPOINT_URL) from boto3's usual chain.
    return Built(aws_provider_from_environment(check_fence))


def _baremetal(api: client.ApiClient, check_fence: Callable[[], None]) -> Built:
    # Claims and BMC credentials live in the controller's namespace (MOLT_NAMESPACE).
    provider = baremetal_provider_from_environment(api, check_fence)
    return Built(provider, provider.close)


PROVIDERS: dict[str, Callable[[client.ApiClient, Callable[[], None]], Built]] = {
    "kwok": _kwok,
    "aws": _aws,
    "baremetal": _baremetal,
}
"""Provider name (``InstanceGroup.spec.provider``) -> how to build it."""


def unknown_providers(names: tuple[str, ...]) -> list[str]:
    return [name for name in names if name not in PROVIDERS]
