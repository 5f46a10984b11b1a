"""The reflector's list/watch/relist logic over a scripted transport.

``ScriptedApi`` is a fake of the raw transport (named as such): the sandbox's API server
replays any old resourceVersion from its watch cache, so a real 410 Gone cannot be
provoked there on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from molt.api import TerminationPolicy
from molt.kube.transport import RawApi
from molt.kube.watch import Reflector


def _node(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}}


class ScriptedApi(RawApi):
    """A fake transport: LISTs answer from ``lists`` in turn, WATCHes from ``watches``.

    Only the two calls that reach the network are replaced; paging is RawApi's own.
    """

    def __init__(self, lists: list[list[dict[str, Any]]], watches: list[list[dict[str, Any]]]):
        super().__init__(None)  # type: ignore[arg-type]
        self.lists = lists
        self.watches = watches
        self.watch_versions: list[str] = []
        self.list_calls = 0

    async def list_page(self, path: str, query: list[tuple[str, str]]) -> dict[str, Any]:
        items = self.lists[min(self.list_calls, len(self.lists) - 1)]
        self.list_calls += 1
        return {"items": items, "metadata": {"resourceVersion": str(10 * self.list_calls)}}

    async def watch(
        self, path: str, query: list[tuple[str, str]], timeout_seconds: int
    ) -> AsyncIterator[dict[str, Any]]:
        self.watch_versions.append(dict(query)["resourceVersion"])
        events = self.watches.pop(0) if self.watches else []
        for event in events:
            yield event
        if not self.watches:
            await asyncio.sleep(3600)  # an idle stream


async def _run_until(reflector: Reflector[str], check: Any) -> None:
    task = asyncio.create_task(reflector.run())
    try:
        for _ in range(200):
            if check():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition not reached")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_410_from_the_watch_is_answered_by_a_fresh_list() -> None:
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}}
    api = ScriptedApi(
        lists=[[_node("a", "5")], [_node("b", "25")]],
        watches=[[gone]],
    )
    reflector: Reflector[str] = Reflector(
        api,
        "/api/v1/nodes",
        lambda raw: raw["metadata"]["name"],
        name="nodes",
    )
    await _run_until(reflector, lambda: reflector.relists == 1 and reflector.get("b"))
    assert reflector.get("a") is None  # gone from the second list, so gone from the store
    assert api.list_calls == 2


async def test_the_watch_resumes_from_the_last_bookmark() -> None:
    bookmark = {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "42"}}}
    added = {"type": "ADDED", "object": _node("c", "43")}
    api = ScriptedApi(lists=[[_node("a", "5")]], watches=[[bookmark], [added]])
    reflector: Reflector[str] = Reflector(
        api,
        "/api/v1/nodes",
        lambda raw: raw["metadata"]["name"],
        name="nodes",
    )
    await _run_until(reflector, lambda: reflector.get("c") is not None)
    assert api.watch_versions[:2] == ["10", "42"]
    assert api.list_calls == 1


async def test_an_older_event_does_not_undo_our_own_newer_write() -> None:
    api = ScriptedApi(lists=[[]], watches=[])
    reflector: Reflector[dict[str, Any]] = Reflector(
        api,
        "/api/v1/nodes",
        lambda raw: raw,
        name="nodes",
    )
    reflector.observe_write(_node("a", "100") | {"spec": {"unschedulable": True}})
    reflector._set(_node("a", "99"))  # a late watch event from before our write
    found = reflector.get("a")
    assert found is not None
    assert found["metadata"]["resourceVersion"] == "100"


def _grouped(name: str, version: str, group: str | None) -> dict[str, Any]:
    labels = {"molt.dev/instance-group": group} if group else {}
    return {"metadata": {"name": name, "resourceVersion": version, "labels": labels}}


async def test_the_index_and_its_counts_follow_objects_between_buckets() -> None:
    api = ScriptedApi(lists=[[]], watches=[])
    reflector: Reflector[dict[str, Any]] = Reflector(
        api,
        "/api/v1/nodes",
        lambda raw: raw,
        name="nodes",
        index=lambda raw: raw["metadata"]["labels"].get("molt.dev/instance-group"),
        counted=lambda raw: raw["metadata"]["name"] != "b",
    )
    reflector.observe_write(_grouped("a", "1", "workers"))
    reflector.observe_write(_grouped("b", "2", "workers"))
    reflector.observe_write(_grouped("c", "3", None))
    workers = reflector.by_index("workers")
    assert [n["metadata"]["name"] for n in workers] == ["a", "b"]
    assert reflector.by_index("workers") is workers  # unchanged: the same tuple

    reflector.observe_write(_grouped("b", "4", "batch"))  # relabelled into another group
    assert [n["metadata"]["name"] for n in reflector.by_index("workers")] == ["a"]
    assert [n["metadata"]["name"] for n in reflector.by_index("batch")] == ["b"]
    assert (reflector.count("workers"), reflector.count("batch")) == (1, 0)

    before = reflector.by_index("workers")
    reflector.observe_write(_grouped("a", "5", "workers"))  # changed, same group
    after = reflector.by_index("workers")
    assert after is not before
    assert after[0]["metadata"]["resourceVersion"] == "5"

    assert reflector.count("workers") == 1
    reflector.observe_delete("a")
    assert reflector.by_index("workers") == ()
    assert reflector.count("workers") == 0
    assert "workers" not in reflector.indexed


def _policy(name: str, version: str, schedule: str) -> dict[str, Any]:
    return {
        "apiVersion": "molt.dev/v1alpha1",
        "kind": "TerminationPolicy",
        "metadata": {"name": name, "resourceVersion": version},
        "spec": {
            "nodeSelector": {},
            "rules": {"maxAge": "48h"},
            "budgets": [{"maxInFlight": 1, "schedule": schedule, "duration": "2h"}],
        },
    }


async def test_an_unusable_object_is_skipped_with_its_field_named_and_forgotten_when_gone() -> None:
    bad = _policy("nightly", "1", "every night at two")
    api = ScriptedApi(lists=[[bad], []], watches=[[{"type": "DELETED", "object": bad}]])
    told: list[str] = []
    reflector: Reflector[TerminationPolicy] = Reflector(
        api,
        "/apis/molt.dev/v1alpha1/terminationpolicies",
        TerminationPolicy.model_validate,
        name="terminationpolicies",
        on_skip=told.append,
    )
    reflector._set(bad)
    assert reflector.get("nightly") is None
    why = reflector.skipped["nightly"]
    assert why.startswith("spec.budgets[0].schedule: 'every night at two' is not a cron"), why
    assert "errors.pydantic.dev" not in why
    reflector._set(_policy("nightly", "2", "every night at two"))  # the same problem
    assert told == ["nightly"], "told once per problem"

    reflector._set(_policy("nightly", "3", "0 2 * * *"))  # fixed
    assert reflector.get("nightly") is not None
    assert reflector.skipped == {}
    assert told == ["nightly", "nightly"]

    reflector._set(_policy("nightly", "4", "every night at two"))
    await _run_until(reflector, lambda: "nightly" not in reflector.skipped)  # DELETED
    assert told == ["nightly"] * 4
