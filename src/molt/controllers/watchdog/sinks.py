"""A Watchdog's sinks: where each one posts, with what, and how the posting went.

Credentials (PagerDuty's routing key, Slack's webhook URL) are read from their Secrets
at each alert, so a rotated Secret is used at once and a value is never kept or logged.
A sink whose Secret or key is missing is *misconfigured*: it is reported, the others
still get the alert, and the controller carries on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

from molt.actions.objects import read_secret_key
from molt.api.types import SecretKeyRef
from molt.api.watchdog import Sink
from molt.observe.alerts import (
    Delivery,
    Event,
    deliver,
    pagerduty_payload,
    slack_payload,
    webhook_payload,
)
from molt.ports import ClusterWrites


@dataclass(frozen=True)
class Alert:
    """One alert: what happened to which watchdog, and the failure episode's key."""

    watchdog: str
    event: Event
    state: str
    message: str
    time: datetime
    dedup_key: str


@dataclass(frozen=True)
class Outcome:
    """How one sink fared with one alert."""

    sink: str
    delivery: Delivery


def sink_name(sink: Sink, index: int) -> str:
    """``webhook[0]``, ``pagerDuty[1]``, ``slack[2]``: how a sink is named in status."""
    kind = "webhook" if sink.webhook else "pagerDuty" if sink.pager_duty else "slack"
    return f"{kind}[{index}]"


def _secret_text(ref: SecretKeyRef) -> str:
    return f"key {ref.key} of Secret {ref.namespace}/{ref.name}"


async def missing_secret(cluster: ClusterWrites, sink: Sink) -> str | None:
    """Why the sink cannot post (its Secret or key is missing), or None."""
    ref = (
        sink.pager_duty.routing_key
        if sink.pager_duty
        else sink.slack.webhook_url
        if sink.slack
        else None
    )
    if ref is None:
        return None
    value = await read_secret_key(cluster, ref.namespace, ref.name, ref.key)
    if not value:
        return f"{_secret_text(ref)} is missing or empty"
    return None


async def _target(cluster: ClusterWrites, sink: Sink, alert: Alert) -> tuple[str, dict[str, Any]]:
    """The URL and body for one sink; ValueError when its Secret is missing."""
    if sink.webhook is not None:
        body = webhook_payload(alert.watchdog, alert.state, alert.message, alert.time, alert.event)
        return sink.webhook.url, body
    if sink.pager_duty is not None:
        ref = sink.pager_duty.routing_key
        key = await read_secret_key(cluster, ref.namespace, ref.name, ref.key)
        if not key:
            raise ValueError(f"{_secret_text(ref)} is missing or empty")
        body = pagerduty_payload(
            key.strip(),
            alert.event,
            alert.dedup_key,
            alert.watchdog,
            alert.message,
            sink.pager_duty.severity,
        )
        return sink.pager_duty.url, body
    assert sink.slack is not None
    ref = sink.slack.webhook_url
    url = await read_secret_key(cluster, ref.namespace, ref.name, ref.key)
    if not url or not url.strip().startswith(("http://", "https://")):
        raise ValueError(f"{_secret_text(ref)} is missing or not a URL")
    return url.strip(), slack_payload(alert.watchdog, alert.state, alert.message, alert.event)


async def send(
    cluster: ClusterWrites,
    session: aiohttp.ClientSession,
    sinks: list[Sink],
    alert: Alert,
    *,
    attempts: int = 3,
    backoff: float = 0.5,
) -> list[Outcome]:
    """Send ``alert`` to every sink, one after another; never raises."""
    outcomes: list[Outcome] = []
    for index, sink in enumerate(sinks):
        name = sink_name(sink, index)
        try:
            url, body = await _target(cluster, sink, alert)
        except ValueError as error:
            outcomes.append(Outcome(name, Delivery(False, 0, str(error))))
            continue
        delivery = await deliver(session, url, body, attempts=attempts, backoff=backoff)
        if sink.slack is not None and delivery.error:
            # The webhook URL is the credential: it never reaches a status or an Event.
            hidden = delivery.error.replace(
                url, f"the URL in {_secret_text(sink.slack.webhook_url)}"
            )
            delivery = Delivery(delivery.ok, delivery.attempts, hidden)
        outcomes.append(Outcome(name, delivery))
    return outcomes
