"""Webhooks verify TLS by default: a loopback HTTPS server whose certificate no trusted CA
signed is refused by the watchdog's webhook sink and by the http lifecycle action, and is
reached once its CA is configured (``SSL_CERT_FILE``, read when the process starts)."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from molt.actions.base import ActionContext, ActionFailedError
from molt.actions.http import HttpActionKind
from molt.api.lifecycle import LifecycleAction
from molt.api.watchdog import Sink
from molt.controllers.watchdog.sinks import Alert, send
from molt.policy.snapshot import NodeView
from molt.sandbox.pki import Pki, generate
from tests.support.fake_ports import FakeCluster

NODE = NodeView(name="node-a", created=datetime(2026, 1, 1, tzinfo=UTC), labels={}, uid="u")


@pytest.fixture
async def https_server(tmp_path: Path) -> AsyncIterator[tuple[str, Pki, list[str]]]:
    """A loopback HTTPS server with a certificate from a CA nobody trusts; the paths hit."""
    pki = generate(tmp_path / "pki")
    hits: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"https://127.0.0.1:{port}/hook", pki, hits
    await runner.cleanup()


def _action(url: str) -> LifecycleAction:
    return LifecycleAction.model_validate({"name": "notify", "timeout": "5s", "http": {"url": url}})


async def test_a_webhook_sink_refuses_a_certificate_no_trusted_ca_signed(
    https_server: tuple[str, Pki, list[str]],
) -> None:
    url, _, hits = https_server
    sink = Sink.model_validate({"webhook": {"url": url}})
    alert = Alert("probe", "trigger", "Failing", "pod not Running", datetime.now(UTC), "k1")
    async with aiohttp.ClientSession() as session:
        outcomes = await send(FakeCluster(), session, [sink], alert, attempts=1, backoff=0.0)
    assert not outcomes[0].delivery.ok
    assert "certificate" in outcomes[0].delivery.error.lower(), outcomes[0].delivery.error
    assert hits == []


async def test_an_http_action_refuses_a_certificate_no_trusted_ca_signed(
    https_server: tuple[str, Pki, list[str]],
) -> None:
    url, _, hits = https_server
    context = ActionContext(NODE, "preDrain", "maxAge", "p", key="preDrain/p/notify")
    with pytest.raises(ActionFailedError, match=r"(?i)certificate"):
        await HttpActionKind().attempt(_action(url), context)
    assert hits == []


async def test_with_its_ca_configured_the_same_webhook_is_reached(
    https_server: tuple[str, Pki, list[str]],
) -> None:
    """The oracle can pass: the only change is the trusted CA, given the standard way."""
    url, pki, hits = https_server
    script = textwrap.dedent(
        f"""
        import asyncio
        from datetime import UTC, datetime
        from molt.actions.base import ActionContext
        from molt.actions.http import HttpActionKind
        from molt.api.lifecycle import LifecycleAction
        from molt.policy.snapshot import NodeView

        node = NodeView(name="n", created=datetime(2026, 1, 1, tzinfo=UTC), labels={{}}, uid="u")
        action = LifecycleAction.model_validate(
            {{"name": "notify", "timeout": "5s", "http": {{"url": "{url}"}}}}
        )
        context = ActionContext(node, "preDrain", "maxAge", "p", key="preDrain/p/notify")
        asyncio.run(HttpActionKind().attempt(action, context))
        """
    )
    env = {**os.environ, "SSL_CERT_FILE": str(pki.ca_cert)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, env=env, stderr=subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert hits == ["/hook"]
