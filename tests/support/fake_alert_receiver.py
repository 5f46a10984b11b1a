"""A fake of the alert services (a generic webhook, PagerDuty Events v2, Slack) on loopback.

It records each POST by path and answers like the real service would: 202 for a
PagerDuty event of the documented shape, 200 ``ok`` for Slack, 200 for the webhook, and
400 for a body of the wrong shape (so a sender's bug shows as a failed delivery). A
path listed in ``fail_first`` answers 503 that many times first, to exercise retries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PAGERDUTY_PATH = "/v2/enqueue"
SLACK_PATH = "/slack/hook"
WEBHOOK_PATH = "/webhook"


def pagerduty_shape_errors(body: dict[str, Any]) -> list[str]:
    """What is wrong with an Events API v2 body (empty when it is right)."""
    errors = []
    for key in ("routing_key", "event_action", "dedup_key"):
        if not isinstance(body.get(key), str) or not body[key]:
            errors.append(f"{key} missing")
    if body.get("event_action") not in ("trigger", "resolve", "acknowledge"):
        errors.append("event_action must be trigger, resolve or acknowledge")
    if body.get("event_action") == "trigger":
        payload = body.get("payload") or {}
        for key in ("summary", "source", "severity"):
            if not payload.get(key):
                errors.append(f"payload.{key} missing")
        if payload.get("severity") not in ("critical", "error", "warning", "info"):
            errors.append("payload.severity invalid")
    return errors


def slack_shape_errors(body: dict[str, Any]) -> list[str]:
    """What is wrong with an incoming-webhook message."""
    errors = []
    if not isinstance(body.get("text"), str) or not body["text"]:
        errors.append("text missing")
    blocks = body.get("blocks")
    if not isinstance(blocks, list) or not all(isinstance(b, dict) and "type" in b for b in blocks):
        errors.append("blocks must be a list of typed blocks")
    return errors


def webhook_shape_errors(body: dict[str, Any]) -> list[str]:
    """What is wrong with Molt's generic webhook body."""
    errors = [f"{k} missing" for k in ("watchdog", "state", "message", "time") if k not in body]
    if body.get("event") not in ("trigger", "resolve"):
        errors.append("event must be trigger or resolve")
    return errors


_CHECKS = {
    PAGERDUTY_PATH: pagerduty_shape_errors,
    SLACK_PATH: slack_shape_errors,
    WEBHOOK_PATH: webhook_shape_errors,
}


@dataclass
class FakeAlertReceiver:
    """Records what each fake service received."""

    received: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    fail_first: dict[str, int] = field(default_factory=dict)
    port: int = 0
    _runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        if self.fail_first.get(request.path, 0) > 0:
            self.fail_first[request.path] -= 1
            return web.Response(status=503)
        body = await request.json()
        check = _CHECKS.get(request.path)
        if check is None:
            return web.Response(status=404)
        errors = check(body)
        if errors:
            return web.json_response({"status": "invalid event", "errors": errors}, status=400)
        self.received.setdefault(request.path, []).append(body)
        if request.path == PAGERDUTY_PATH:
            return web.json_response(
                {"status": "success", "dedup_key": body["dedup_key"]}, status=202
            )
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
