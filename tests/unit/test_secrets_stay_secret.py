"""Credentials a watchdog sink reads from a Secret never reach an outcome, a log or the
console: a Slack webhook URL and a PagerDuty routing key, sent to a port nothing
listens on, fail with messages that name the Secret and not its value."""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, datetime

import aiohttp
import pytest

from molt.api.watchdog import Sink
from molt.controllers.watchdog.sinks import Alert, send
from tests.support.fake_ports import FakeCluster

SLACK_SECRET = "https://hooks.example/services/T0/B0/slack-s3cret-token"
ROUTING_KEY = "pd-routing-key-s3cret"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_sink_failures_name_the_secret_never_its_value(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    port = closed_port()
    cluster = FakeCluster()
    slack_url = SLACK_SECRET.replace("https://hooks.example", f"http://127.0.0.1:{port}")
    cluster.put_secret("molt", "alerts", {"slack": slack_url, "pd": ROUTING_KEY})
    sinks = [
        Sink.model_validate(
            {"slack": {"webhookUrl": {"namespace": "molt", "name": "alerts", "key": "slack"}}}
        ),
        Sink.model_validate(
            {
                "pagerDuty": {
                    "routingKey": {"namespace": "molt", "name": "alerts", "key": "pd"},
                    "url": f"http://127.0.0.1:{port}/v2/enqueue",
                }
            }
        ),
    ]
    alert = Alert("probe", "trigger", "Failing", "pod not Running", datetime.now(UTC), "k1")

    async def post() -> list[str]:
        async with aiohttp.ClientSession() as session:
            outcomes = await send(cluster, session, sinks, alert, attempts=1, backoff=0.0)
        return [repr(o) for o in outcomes]

    with caplog.at_level(logging.DEBUG):
        outcomes = asyncio.run(post())
    seen = "\n".join([*outcomes, caplog.text, *capsys.readouterr()])
    assert any("Secret molt/alerts" in o for o in outcomes), outcomes  # it did fail
    assert slack_url not in seen
    assert "slack-s3cret-token" not in seen
    assert ROUTING_KEY not in seen
