"""Alert payloads for a Watchdog's sinks, and their delivery with retries.

The builders are pure and follow each service's documented shape:

- ``webhook``: ``{watchdog, state, message, time, event}`` with ``event`` trigger|resolve;
- ``pagerDuty``: Events API v2, ``{routing_key, event_action, dedup_key, payload: {summary,
  source, severity}}``; the ``dedup_key`` is the same on a failure's trigger and resolve;
- ``slack``: an incoming-webhook message, ``{text, blocks}``.

:func:`deliver` POSTs one payload with retries and backoff and never raises: a sink that
fails is reported to the caller, which records it on the Watchdog.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import aiohttp

Event = Literal["trigger", "resolve"]


def webhook_payload(
    watchdog: str, state: str, message: str, time: datetime, event: Event
) -> dict[str, Any]:
    """The generic webhook's JSON body."""
    return {
        "watchdog": watchdog,
        "state": state,
        "message": message,
        "time": time.isoformat(),
        "event": event,
    }


def pagerduty_payload(
    routing_key: str,
    event: Event,
    dedup_key: str,
    watchdog: str,
    message: str,
    severity: str,
    source: str = "molt",
) -> dict[str, Any]:
    """A PagerDuty Events API v2 event (trigger or resolve, one dedup key per failure)."""
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": event,
        "dedup_key": dedup_key,
    }
    # A resolve needs only the key; a trigger carries the summary.
    if event == "trigger":
        body["payload"] = {
            "summary": f"Watchdog {watchdog} is failing: {message}"[:1024],
            "source": source,
            "severity": severity,
        }
    return body


def slack_payload(watchdog: str, state: str, message: str, event: Event) -> dict[str, Any]:
    """A Slack incoming-webhook message: ``text`` as the fallback, ``blocks`` to show."""
    headline = (
        f":rotating_light: Watchdog *{watchdog}* is {state}"
        if event == "trigger"
        else f":white_check_mark: Watchdog *{watchdog}* recovered"
    )
    text = f"{headline}: {message}" if message else headline
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": headline}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": message or "-"}]},
        ],
    }


@dataclass(frozen=True)
class Delivery:
    """How one delivery went."""

    ok: bool
    attempts: int
    error: str = ""


async def deliver(
    session: aiohttp.ClientSession,
    url: str,
    body: dict[str, Any],
    *,
    attempts: int = 3,
    backoff: float = 0.5,
    attempt_seconds: float = 10.0,
) -> Delivery:
    """POST ``body`` as JSON to ``url``: retried with doubling backoff; never raises."""
    error = ""
    for attempt in range(1, attempts + 1):
        try:
            async with session.post(
                url, json=body, timeout=aiohttp.ClientTimeout(total=attempt_seconds)
            ) as response:
                if response.status < 300:
                    return Delivery(True, attempt)
                error = f"HTTP {response.status} from {url}"
                if 400 <= response.status < 500 and response.status != 429:
                    return Delivery(False, attempt, error)  # a bad request stays bad
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__} posting to {url}: {exc}"
        if attempt < attempts:
            await asyncio.sleep(backoff * 2 ** (attempt - 1))
    return Delivery(False, attempts, error)
