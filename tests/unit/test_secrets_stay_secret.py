"""Credentials a watchdog sink reads from a Secret never reach an outcome, a log or the
console: a Slack webhook URL and a PagerDuty routing key, sent to a port nothing
listens on, fail with messages that name the Secret and not its value. A BMC password
never shows in a repr, and a history store's password is masked in every CLI message."""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from typer.testing import CliRunner

from molt.api.watchdog import Sink
from molt.cli.main import app
from molt.cloud.baremetal.redfish import Credentials
from molt.controllers.watchdog.sinks import Alert, send
from tests.support.fake_ports import FakeCluster
from tests.support.sim_fleets import random_scenario

SLACK_SECRET = "https://hooks.example/services/T0/B0/slack-s3cret-token"
ROUTING_KEY = "pd-routing-key-s3cret"
BMC_PASSWORD = "bmc-pa55word-s3cret"
DB_PASSWORD = "db-pa55word-s3cret"


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


def test_bmc_credentials_never_show_their_password() -> None:
    """A BMC login that reaches a log line or an error through its repr hides the password."""
    credentials = Credentials("admin", BMC_PASSWORD)
    assert BMC_PASSWORD not in repr(credentials)
    assert BMC_PASSWORD not in str(credentials)
    assert BMC_PASSWORD not in f"{[credentials]}"


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--kubeconfig", "{kubeconfig}", "--history", "postgresql+nodriver://{login}/db"],
        ["history", "--history", "postgresql://{login}:9/db"],
        ["simulate", "{scenario}", "--history", "postgresql+nodriver://{login}/db"],
    ],
    ids=["run", "history", "simulate"],
)
def test_a_history_url_password_is_masked_in_every_message(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    scenario = tmp_path / "s.yaml"
    scenario.write_text(random_scenario(1))
    login = f"molt:{DB_PASSWORD}@127.0.0.1"
    args = [a.format(kubeconfig=kubeconfig, login=login, scenario=scenario) for a in command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0, result.output
    assert "molt:***@127.0.0.1" in result.output, result.output  # the URL is named, masked
    assert DB_PASSWORD not in result.output
