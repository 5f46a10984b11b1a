"""Alert payloads match each service's documented shape (checked by the fake receiver's rules)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from molt.observe.alerts import pagerduty_payload, slack_payload, webhook_payload
from molt.policy.watchdog import dedup_key
from tests.support.fake_alert_receiver import (
    pagerduty_shape_errors,
    slack_shape_errors,
    webhook_shape_errors,
)

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_pagerduty_trigger_and_resolve_share_the_episode_dedup_key() -> None:
    key = dedup_key("probe", T0)
    trigger = pagerduty_payload("rk", "trigger", key, "probe", "pod not Running", "error")
    resolve = pagerduty_payload("rk", "resolve", key, "probe", "", "error")
    assert pagerduty_shape_errors(trigger) == []
    assert pagerduty_shape_errors(resolve) == []
    assert trigger["dedup_key"] == resolve["dedup_key"] == key
    assert trigger["event_action"] == "trigger"
    assert resolve["event_action"] == "resolve"
    assert "probe" in trigger["payload"]["summary"]
    assert trigger["payload"]["severity"] == "error"


def test_the_shape_rules_can_fail() -> None:
    assert pagerduty_shape_errors({"event_action": "trigger"})
    assert slack_shape_errors({"text": "x"})
    assert webhook_shape_errors({"watchdog": "x", "event": "page"})


def test_slack_message_has_text_and_blocks() -> None:
    body = slack_payload("probe", "Failing", "pod not Running after 60s", "trigger")
    assert slack_shape_errors(body) == []
    assert "probe" in body["text"]
    assert "pod not Running after 60s" in body["text"]
    assert body["blocks"][0]["type"] == "section"


def test_webhook_body() -> None:
    body = webhook_payload("probe", "Failing", "boom", T0, "trigger")
    assert webhook_shape_errors(body) == []
    assert body == {
        "watchdog": "probe",
        "state": "Failing",
        "message": "boom",
        "time": "2026-01-01T00:00:00+00:00",
        "event": "trigger",
    }
