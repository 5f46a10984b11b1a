"""Where any kind of object lives on the API server: REST paths found by discovery.

A lifecycle action's Job, a Watchdog's probe Pod or a post-launch manifest's HostEndpoint
is named by ``apiVersion`` and ``kind``; the API server serves it under a resource name
(``jobs``, ``hostendpoints``) that only discovery tells. One discovery GET per group
version, kept for the process's life (a kind that is missing is looked up again, since a
CRD may be installed later). Written here rather than with kubernetes_asyncio's dynamic
client so every request goes through the counted, fenced raw transport.
"""

from __future__ import annotations

from dataclasses import dataclass

from molt.kube.transport import ApiError, RawApi
from molt.ports import ObjectRef


class UnknownKindError(Exception):
    """The API server serves no such kind in that group version."""


@dataclass(frozen=True)
class Resource:
    """A kind's resource name, and whether its objects live in namespaces."""

    name: str
    namespaced: bool


def group_version_path(api_version: str) -> str:
    """``/api/v1`` for the core group, ``/apis/<group>/<version>`` for any other."""
    return f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"


class ResourcePaths:
    """Builds an object's REST path from its apiVersion and kind."""

    def __init__(self, raw: RawApi) -> None:
        self.raw = raw
        self._known: dict[tuple[str, str], Resource] = {}

    async def resource(self, api_version: str, kind: str) -> Resource:
        found = self._known.get((api_version, kind))
        if found is not None:
            return found
        try:
            listing = await self.raw.get(group_version_path(api_version))
        except ApiError as error:
            if error.status == 404:
                raise UnknownKindError(
                    f"the API server serves no {kind} in {api_version} (no such group version;"
                    " is its CRD installed?)"
                ) from None
            raise
        for entry in listing.get("resources") or []:
            if "/" in str(entry.get("name", "")):
                continue  # a subresource (status, eviction, scale)
            resource = Resource(str(entry["name"]), bool(entry.get("namespaced")))
            self._known[(api_version, str(entry.get("kind")))] = resource
        found = self._known.get((api_version, kind))
        if found is None:
            raise UnknownKindError(f"the API server serves no {kind} in {api_version}")
        return found

    async def collection(self, api_version: str, kind: str, namespace: str | None) -> str:
        """The collection's path: namespaced kinds under ``namespace`` (all namespaces
        when it is None), cluster-scoped kinds ignore it."""
        resource = await self.resource(api_version, kind)
        base = group_version_path(api_version)
        if resource.namespaced and namespace:
            return f"{base}/namespaces/{namespace}/{resource.name}"
        return f"{base}/{resource.name}"

    async def path(self, ref: ObjectRef) -> str:
        resource = await self.resource(ref.api_version, ref.kind)
        if resource.namespaced and not ref.namespace:
            raise ValueError(f"{ref} needs a namespace: {ref.kind} objects live in one")
        return f"{await self.collection(ref.api_version, ref.kind, ref.namespace)}/{ref.name}"
