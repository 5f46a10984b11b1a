"""Raw JSON over the API client's connection: GET, LIST pages, WATCH streams and writes.

Hot paths (caches of thousands of nodes, evictions) skip kubernetes_asyncio's generated
models: the wire JSON goes straight into Molt's slim projections. Every request is counted
so the controller's API load can be measured.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

Json = dict[str, Any]

DEFAULT_TIMEOUT = 30.0


@dataclass
class ApiError(Exception):
    """A non-2xx answer from the API server, with its Status body when there is one."""

    status: int
    body: Json
    method: str
    path: str

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", ""))

    @property
    def message(self) -> str:
        return str(self.body.get("message", "")) or f"HTTP {self.status}"

    @property
    def causes(self) -> list[str]:
        details = self.body.get("details") or {}
        return [str(c.get("reason", "")) for c in details.get("causes") or []]

    @property
    def cause_messages(self) -> list[str]:
        details = self.body.get("details") or {}
        return [str(c["message"]) for c in details.get("causes") or [] if c.get("message")]

    def __str__(self) -> str:
        return f"{self.method} {self.path}: {self.status} {self.message}"


class RawApi:
    """Thin JSON transport on top of a kubernetes_asyncio ``ApiClient``."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.requests: dict[str, int] = {}
        """Requests sent, by verb (get, list, watch, create, patch, delete)."""

    def _count(self, verb: str) -> None:
        self.requests[verb] = self.requests.get(verb, 0) + 1

    async def _send(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        request_timeout: Any = DEFAULT_TIMEOUT,
    ) -> Any:
        return await self.api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=request_timeout,
        )

    async def request(
        self,
        verb: str,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        request_timeout: float = DEFAULT_TIMEOUT,
    ) -> Json:
        """Send one request and return its JSON body; a non-2xx answer raises ApiError."""
        self._count(verb)
        response = await self._send(
            method,
            path,
            query=query,
            body=body,
            content_type=content_type,
            request_timeout=request_timeout,
        )
        async with response:
            raw = await response.read()
            status = int(response.status)
        try:
            decoded: Json = json.loads(raw) if raw else {}
        except ValueError:
            decoded = {"message": raw.decode("utf-8", "replace")[:500]}
        if not 200 <= status <= 299:
            raise ApiError(status, decoded, method, path)
        return decoded

    async def get(self, path: str, query: list[tuple[str, str]] | None = None) -> Json:
        return await self.request("get", "GET", path, query=query)

    async def list_page(self, path: str, query: list[tuple[str, str]]) -> Json:
        return await self.request("list", "GET", path, query=query)

    async def list_all(
        self, path: str, query: list[tuple[str, str]] | None = None, page_size: int = 500
    ) -> tuple[list[Json], str]:
        """Every item of a collection, page by page; and the list's resourceVersion."""
        items: list[Json] = []
        version = ""
        async for page_items, page_version in self.list_pages(path, query, page_size):
            items.extend(page_items)
            version = page_version
        return items, version

    async def list_pages(
        self, path: str, query: list[tuple[str, str]] | None = None, page_size: int = 500
    ) -> AsyncIterator[tuple[list[Json], str]]:
        """A collection one page at a time, each with the list's resourceVersion so far:
        a caller that keeps only a projection of each item never holds the whole
        collection's JSON at once (20,000 pods are hundreds of MB as Python dicts)."""
        token = ""
        version = ""
        while True:
            page_query = [*(query or []), ("limit", str(page_size))]
            if token:
                page_query.append(("continue", token))
            page = await self.list_page(path, page_query)
            meta = page.get("metadata") or {}
            token = meta.get("continue") or ""
            version = meta.get("resourceVersion") or version
            yield page.get("items") or [], version
            if not token:
                return

    async def create(self, path: str, body: Json) -> Json:
        return await self.request("create", "POST", path, body=body)

    async def merge_patch(self, path: str, body: Json) -> Json:
        return await self.request(
            "patch", "PATCH", path, body=body, content_type="application/merge-patch+json"
        )

    async def apply(self, path: str, body: Json, field_manager: str) -> Json:
        """Server-side apply (JSON is YAML), taking over fields other managers hold."""
        return await self.request(
            "patch",
            "PATCH",
            path,
            query=[("fieldManager", field_manager), ("force", "true")],
            body=body,
            content_type="application/apply-patch+yaml",
        )

    async def delete(self, path: str, body: Json | None = None) -> Json:
        return await self.request("delete", "DELETE", path, body=body)

    async def watch(
        self, path: str, query: list[tuple[str, str]], timeout_seconds: int
    ) -> AsyncIterator[Json]:
        """Yield watch events (``{"type": ..., "object": ...}``) until the server ends it."""
        self._count("watch")
        full_query = [*query, ("watch", "true"), ("timeoutSeconds", str(timeout_seconds))]
        # Connect quickly, but let the stream sit idle as long as the server keeps it.
        response = await self._send(
            "GET", path, query=full_query, request_timeout=(10.0, timeout_seconds + 30.0)
        )
        async with response:
            if response.status != 200:
                raw = await response.read()
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"message": raw.decode("utf-8", "replace")[:500]}
                raise ApiError(int(response.status), body, "WATCH", path)
            while True:
                line = await response.content.readline()
                if not line:
                    return
                if line.strip():
                    yield json.loads(line)
