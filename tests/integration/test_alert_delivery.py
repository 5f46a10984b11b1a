"""Delivery to the fake alert services on loopback: retries with backoff, never raises."""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
import pytest

from molt.observe.alerts import deliver, pagerduty_payload, slack_payload, webhook_payload
from molt.policy.watchdog import dedup_key
from tests.support.fake_alert_receiver import (
    PAGERDUTY_PATH,
    SLACK_PATH,
    WEBHOOK_PATH,
    FakeAlertReceiver,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_each_sink_is_received_in_its_documented_shape_after_retries() -> None:
    receiver = FakeAlertReceiver(fail_first={PAGERDUTY_PATH: 2})
    await receiver.start()
    try:
        key = dedup_key("probe", T0)
        async with aiohttp.ClientSession() as session:
            sent = [
                await deliver(
                    session,
                    receiver.url(PAGERDUTY_PATH),
                    pagerduty_payload("rk", event, key, "probe", "down", "error"),
                    backoff=0.01,
                )
                for event in ("trigger", "resolve")
            ]
            slack = await deliver(
                session,
                receiver.url(SLACK_PATH),
                slack_payload("probe", "Failing", "down", "trigger"),
            )
            hook = await deliver(
                session,
                receiver.url(WEBHOOK_PATH),
                webhook_payload("probe", "Failing", "down", T0, "trigger"),
            )
    finally:
        await receiver.stop()

    assert sent[0].ok
    assert sent[0].attempts == 3
    assert sent[1].ok
    assert sent[1].attempts == 1
    events = receiver.received[PAGERDUTY_PATH]
    assert [e["event_action"] for e in events] == ["trigger", "resolve"]
    assert events[0]["dedup_key"] == events[1]["dedup_key"]
    assert slack.ok
    assert receiver.received[SLACK_PATH][0]["blocks"]
    assert hook.ok
    assert receiver.received[WEBHOOK_PATH][0]["event"] == "trigger"


async def test_a_failing_sink_is_reported_not_raised() -> None:
    receiver = FakeAlertReceiver()
    await receiver.start()
    try:
        async with aiohttp.ClientSession() as session:
            bad_shape = await deliver(
                session, receiver.url(PAGERDUTY_PATH), {"event_action": "trigger"}, backoff=0.01
            )
            refused = await deliver(
                session,
                "http://127.0.0.1:1/",
                {"x": 1},
                attempts=2,
                backoff=0.01,
                attempt_seconds=1,
            )
    finally:
        await receiver.stop()
    assert not bad_shape.ok
    assert bad_shape.attempts == 1
    assert "HTTP 400" in bad_shape.error
    assert not refused.ok
    assert refused.attempts == 2
    assert refused.error
