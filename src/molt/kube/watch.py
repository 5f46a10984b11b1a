"""List-and-watch caches (reflectors): the controller's only way of reading the cluster.

A ``Reflector`` keeps an in-memory store of one resource (optionally narrowed by a field
selector) current: a paginated LIST, then a WATCH from the list's resourceVersion with
bookmarks, resumed from the last seen version when the stream ends, and a fresh LIST when
the server answers 410 Gone. ``synced`` is set after the first complete LIST; nothing may
act on the store before it.

Written by hand because kubernetes_asyncio's ``Watch`` returns generated models (too slow
and heavy for thousands of nodes) and has no store, bookmarks or relist; this is the
client-go reflector in about a hundred lines.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp
import structlog
from pydantic import ValidationError

from molt.api.problems import describe_invalid
from molt.kube.transport import ApiError, Json, RawApi

T = TypeVar("T")

log = structlog.get_logger(__name__)

ChangeHandler = Callable[[str, Any, Any], None]
"""Called with (key, old object or None, new object or None) after each store change."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One cached object: its projection and the resourceVersion it came from."""

    resource_version: str
    value: T


def object_key(raw: Json) -> str:
    """``namespace/name`` for namespaced objects, ``name`` for cluster-scoped ones."""
    meta = raw.get("metadata", {})
    namespace = meta.get("namespace")
    return f"{namespace}/{meta['name']}" if namespace else str(meta["name"])


def _newer(candidate: str, current: str) -> bool:
    """Whether ``candidate`` is at least as new as ``current``.

    resourceVersions are opaque in the API, but etcd-backed ones are integers; comparing
    them lets the cache take a write's own response at once without a late watch event
    undoing it. Anything that does not parse is taken as newer.
    """
    try:
        return int(candidate) >= int(current)
    except ValueError:
        return True


class Reflector(Generic[T]):
    """Keeps ``store`` equal to the server's view of one collection."""

    def __init__(
        self,
        raw: RawApi,
        path: str,
        project: Callable[[Json], T],
        *,
        name: str,
        field_selector: str | None = None,
        label_selector: str | None = None,
        page_size: int = 500,
        on_change: ChangeHandler | None = None,
        watch_timeout: tuple[int, int] = (300, 600),
        index: Callable[[T], str | None] | None = None,
        counted: Callable[[T], bool] | None = None,
        on_skip: Callable[[str], None] | None = None,
    ) -> None:
        """``on_skip(key)``: the object became unusable, changed why, became usable
        again, or went while unusable (``skipped`` says which)."""
        self.raw = raw
        self.path = path
        self.project = project
        self.name = name
        self.field_selector = field_selector
        self.label_selector = label_selector
        self.page_size = page_size
        self.on_change = on_change
        self.on_skip = on_skip
        self.watch_timeout = watch_timeout
        self.store: dict[str, Entry[T]] = {}
        self.index = index
        self.indexed: dict[str, dict[str, T]] = {}
        """Objects by ``index(object)`` (client-go's Indexer): e.g. nodes by group, so a
        group's reconcile reads its own members, not every node of the cluster."""
        self._indexed_tuples: dict[str, tuple[T, ...]] = {}
        self.counted = counted
        self.counts: dict[str, int] = {}
        """Per index value, how many of its objects satisfy ``counted`` (kept up to date
        with the index, so asking costs nothing however large the bucket)."""
        """Each bucket as handed out, kept until the bucket changes (see ``by_index``)."""
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.relists = 0
        self.skipped: dict[str, str] = {}
        """Objects that could not be projected, with the error: reported, never cached."""

    def _selectors(self) -> list[tuple[str, str]]:
        query: list[tuple[str, str]] = []
        if self.field_selector:
            query.append(("fieldSelector", self.field_selector))
        if self.label_selector:
            query.append(("labelSelector", self.label_selector))
        return query

    def values(self) -> list[T]:
        return [entry.value for entry in self.store.values()]

    def by_index(self, value: str) -> tuple[T, ...]:
        """The objects whose index is ``value``: the same tuple until one of them changes."""
        found = self._indexed_tuples.get(value)
        if found is None:
            found = self._indexed_tuples[value] = tuple(self.indexed.get(value, {}).values())
        return found

    def count(self, value: str) -> int:
        """How many objects with index ``value`` satisfy ``counted``."""
        return self.counts.get(value, 0)

    def versions(self) -> dict[str, str]:
        """Each cached object's resourceVersion by key: what a fresh LIST must match."""
        return {key: entry.resource_version for key, entry in self.store.items()}

    def get(self, key: str) -> T | None:
        entry = self.store.get(key)
        return entry.value if entry else None

    def _project(self, raw: Json) -> T | None:
        key = object_key(raw)
        try:
            value = self.project(raw)
        except (ValueError, KeyError, TypeError) as error:
            why = describe_invalid(error) if isinstance(error, ValidationError) else str(error)
            if self.skipped.get(key) != why:
                log.warning("cache.unusable_object", cache=self.name, key=key, error=why)
                self.skipped[key] = why
                if self.on_skip:
                    self.on_skip(key)
            return None
        self._unskip(key)
        return value

    def _unskip(self, key: str) -> None:
        """The object is usable again, or gone: it is no longer reported."""
        if self.skipped.pop(key, None) is not None and self.on_skip:
            self.on_skip(key)

    def _set(self, raw: Json) -> None:
        key = object_key(raw)
        version = str(raw.get("metadata", {}).get("resourceVersion", ""))
        old = self.store.get(key)
        if old is not None and not _newer(version, old.resource_version):
            return
        value = self._project(raw)
        if value is None:
            self._remove(key)
            return
        self.store[key] = Entry(version, value)
        self._reindex(key, old.value if old else None, value)
        if self.on_change:
            self.on_change(key, old.value if old else None, value)

    def _remove(self, key: str) -> None:
        old = self.store.pop(key, None)
        if old is not None:
            self._reindex(key, old.value, None)
        if old is not None and self.on_change:
            self.on_change(key, old.value, None)

    def _reindex(self, key: str, old: T | None, new: T | None) -> None:
        if self.index is None:
            return
        before = self.index(old) if old is not None else None
        after = self.index(new) if new is not None else None
        for bucket in (before, after):
            if bucket is not None:
                self._indexed_tuples.pop(bucket, None)
        if self.counted is not None:
            if before is not None and old is not None and self.counted(old):
                self.counts[before] -= 1
            if after is not None and new is not None and self.counted(new):
                self.counts[after] = self.counts.get(after, 0) + 1
        if before is not None and before != after:
            members = self.indexed.get(before, {})
            members.pop(key, None)
            if not members:
                self.indexed.pop(before, None)
        if after is not None and new is not None:
            self.indexed.setdefault(after, {})[key] = new

    def observe_write(self, raw: Json) -> None:
        """Take an object returned by our own write, so the next read already sees it."""
        self._set(raw)

    def observe_delete(self, key: str) -> None:
        """Drop an object our own write deleted."""
        self._remove(key)

    async def _list(self) -> None:
        # Page by page into the store: only one page's JSON is alive at a time.
        seen = set()
        version = ""
        async for items, page_version in self.raw.list_pages(
            self.path, self._selectors(), self.page_size
        ):
            version = page_version
            for item in items:
                seen.add(object_key(item))
                self._set(item)
        for key in [k for k in self.store if k not in seen]:
            self._remove(key)
        for key in [k for k in self.skipped if k not in seen]:
            self._unskip(key)
        self.resource_version = version
        self.synced.set()

    async def _watch(self) -> None:
        query = [
            *self._selectors(),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", self.resource_version),
        ]
        # Spread reconnects like client-go does, so replicas do not reconnect in step.
        timeout = random.randint(*self.watch_timeout)
        async for event in self.raw.watch(self.path, query, timeout):
            kind = event.get("type")
            obj = event.get("object") or {}
            if kind == "ERROR":
                raise ApiError(int(obj.get("code", 500)), obj, "WATCH", self.path)
            version = obj.get("metadata", {}).get("resourceVersion")
            if kind == "BOOKMARK":
                self.resource_version = version or self.resource_version
                continue
            if kind in ("ADDED", "MODIFIED"):
                self._set(obj)
            elif kind == "DELETED":
                self._remove(object_key(obj))
                self._unskip(object_key(obj))
            if version:
                self.resource_version = version

    async def run(self) -> None:
        """LIST then WATCH forever; cancel the task to stop."""
        backoff = 0.5
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
                backoff = 0.5
            except ApiError as error:
                if error.status == 410:
                    # Our resourceVersion is older than etcd's compaction: start over.
                    log.info("cache.relist", cache=self.name, reason="410 Gone")
                    self.relists += 1
                    need_list = True
                    continue
                log.warning("cache.error", cache=self.name, error=str(error), retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
            except (OSError, TimeoutError, ValueError, aiohttp.ClientError) as error:
                log.warning("cache.disconnected", cache=self.name, error=repr(error))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
