"""``KubeWrites.watch_object`` over a scripted transport: what it asks the API server for,
what it passes on, and which endings are quiet (the caller reads the object again) and
which raise.

``ScriptedApi`` is a fake of the raw transport (named as such): the sandbox's API server
replays any old resourceVersion from its watch cache, so a real 410 Gone cannot be
provoked there on demand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from molt.kube.transport import ApiError, RawApi
from molt.kube.writes import KubeWrites
from molt.ports import ObjectRef, WatchEvent

JOB = ObjectRef("batch/v1", "Job", "molt-backup-a-1", "ops")
PATH = "/apis/batch/v1/namespaces/ops/jobs"


def _job(version: str, condition: str | None = None) -> dict[str, Any]:
    status = {"conditions": [{"type": condition, "status": "True"}]} if condition else {}
    return {"metadata": {"name": JOB.name, "resourceVersion": version}, "status": status}


class ScriptedApi(RawApi):
    """A fake transport: discovery knows Jobs; the watch yields ``events`` and then
    raises ``ending`` when one is given."""

    def __init__(self, events: list[dict[str, Any]], ending: BaseException | None = None) -> None:
        super().__init__(None)  # type: ignore[arg-type]
        self.events = events
        self.ending = ending
        self.watched: list[tuple[str, dict[str, str], int]] = []

    async def get(self, path: str, query: list[tuple[str, str]] | None = None) -> dict[str, Any]:
        assert path == "/apis/batch/v1"
        return {"resources": [{"name": "jobs", "kind": "Job", "namespaced": True}]}

    async def watch(
        self, path: str, query: list[tuple[str, str]], timeout_seconds: int
    ) -> AsyncIterator[dict[str, Any]]:
        self.watched.append((path, dict(query), timeout_seconds))
        for event in self.events:
            yield event
        if self.ending is not None:
            raise self.ending


async def _events(api: ScriptedApi, version: str = "7") -> list[WatchEvent]:
    writes = KubeWrites(api, check_fence=lambda: None)
    return [event async for event in writes.watch_object(JOB, version, timeout_seconds=60)]


async def test_one_object_is_watched_from_the_version_read() -> None:
    api = ScriptedApi(
        [
            {"type": "MODIFIED", "object": _job("8")},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
            {"type": "MODIFIED", "object": _job("10", "Complete")},
        ]
    )
    events = await _events(api)
    assert api.watched == [
        (PATH, {"fieldSelector": f"metadata.name={JOB.name}", "resourceVersion": "7"}, 60)
    ]
    assert events == [
        WatchEvent("MODIFIED", _job("8")),
        WatchEvent("MODIFIED", _job("10", "Complete")),
    ]


@pytest.mark.parametrize(
    "ending",
    [
        {"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired"}},
        ApiError(410, {"reason": "Expired"}, "WATCH", PATH),
        aiohttp.ClientPayloadError("the stream broke"),
    ],
    ids=["410-event", "410-answer", "broken-stream"],
)
async def test_an_expired_or_broken_watch_just_ends(ending: Any) -> None:
    first = {"type": "MODIFIED", "object": _job("8")}
    in_stream = isinstance(ending, dict)
    api = ScriptedApi([first, ending] if in_stream else [first], None if in_stream else ending)
    assert await _events(api) == [WatchEvent("MODIFIED", _job("8"))]


async def test_a_refused_watch_raises() -> None:
    api = ScriptedApi([], ApiError(403, {"message": "forbidden"}, "WATCH", PATH))
    with pytest.raises(ApiError, match="403"):
        await _events(api)
