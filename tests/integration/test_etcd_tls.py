"""The etcd action's TLS: a one-member etcd on loopback that requires client certificates
(``--client-cert-auth``), the action's Secret holding ``ca.crt``, ``tls.crt``, ``tls.key``.

The cluster here is a fake (the Secret and the Node are all the action reads of it); etcd
is real. With one member there is nothing to hand leadership to, so a complete attempt
ends *held* with the member table: that table, with the member healthy and leading, is
what shows the mutual-TLS calls worked. Without the client certificate no call gets
through, and the attempt fails saying so. The client key's PEM body is in no message and
no log line (tests/support/secret_surfaces.py).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from molt.actions.base import ActionContext, ActionFailedError, ActionHeldError
from molt.actions.etcd import EtcdActionKind
from molt.api.lifecycle import LifecycleAction
from molt.policy.snapshot import NodeView
from molt.sandbox import pki
from molt.sandbox.binaries import locate
from tests.support.etcd_bridge import free_port
from tests.support.fake_ports import FakeCluster
from tests.support.secret_surfaces import (
    assert_no_secret,
    captured_logs,
    fake_cluster_surfaces,
)
from tests.support.waiting import eventually

NODE = NodeView(name="solo", created=datetime(2026, 1, 1, tzinfo=UTC), addresses=("10.0.0.9",))


@pytest.fixture
def tls_etcd(tmp_path: Path) -> Iterator[tuple[str, pki.Pki]]:
    binary = locate()["etcd"]
    if binary is None:
        pytest.skip("no etcd binary (make binaries)")
    certs = pki.generate(tmp_path / "pki")
    client_url = f"https://127.0.0.1:{free_port()}"
    peer_url = f"http://127.0.0.1:{free_port()}"
    with (tmp_path / "etcd.log").open("wb") as log:
        process = subprocess.Popen(
            [
                str(binary),
                "--name=solo",
                f"--data-dir={tmp_path / 'data'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=solo={peer_url}",
                "--client-cert-auth",
                f"--trusted-ca-file={certs.ca_cert}",
                f"--cert-file={certs.server_cert}",
                f"--key-file={certs.server_key}",
                "--log-level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield client_url, certs
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def action(url: str) -> LifecycleAction:
    return LifecycleAction.model_validate(
        {
            "name": "etcd",
            "timeout": "20s",
            "etcd": {
                "endpoints": [url],
                "clientSecret": {"namespace": "kube-system", "name": "etcd-client"},
                "members": 1,
            },
        }
    )


def cluster_with(certs: pki.Pki, *, client_cert: bool) -> FakeCluster:
    cluster = FakeCluster()
    data = {"ca.crt": certs.ca_cert.read_text()}
    if client_cert:
        data["tls.crt"] = certs.admin_cert.read_text()
        data["tls.key"] = certs.admin_key.read_text()
    cluster.put_secret("kube-system", "etcd-client", data)
    return cluster


async def held_message(kind: EtcdActionKind, url: str) -> str:
    context = ActionContext(NODE, "preTerminate", "max-age", "rotate")
    with pytest.raises(ActionHeldError) as held:
        await kind.attempt(action(url), context)
    return str(held.value)


async def test_the_action_speaks_mutual_tls_with_the_secrets_certificates(
    tls_etcd: tuple[str, pki.Pki],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    url, certs = tls_etcd
    cluster = cluster_with(certs, client_cert=True)
    kind = EtcdActionKind(cluster)

    async def answered() -> str:
        try:
            message = await held_message(kind, url)
        except Exception:
            return ""
        return message if "healthy leader" in message else ""

    message = await eventually(answered, within=20, interval=0.3, what="etcd over mTLS")
    assert "no other member is healthy to take over" in message, message
    (line,) = message.splitlines()[1:]
    assert line.startswith("solo "), line
    assert "healthy leader" in line, line
    surfaces = {
        "held message": message,
        **fake_cluster_surfaces(cluster, captured_logs(caplog, capsys)),
    }
    assert_no_secret(surfaces, {"etcd client key": certs.admin_key.read_text()})


async def test_without_the_client_certificate_the_member_is_not_reached(
    tls_etcd: tuple[str, pki.Pki],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    url, certs = tls_etcd
    trusted = EtcdActionKind(cluster_with(certs, client_cert=True))
    await eventually(
        lambda: _reachable(trusted, url), within=20, interval=0.3, what="etcd up over mTLS"
    )
    anonymous = EtcdActionKind(cluster_with(certs, client_cert=False))
    context = ActionContext(NODE, "preTerminate", "max-age", "rotate")
    with pytest.raises(ActionFailedError, match="no etcd endpoint answered") as refused:
        await anonymous.attempt(action(url), context)
    print(f"\nrefused: {refused.value}")
    assert "UNAVAILABLE" in str(refused.value) or "certificate" in str(refused.value)
    surfaces = {"refusal": str(refused.value), "log": captured_logs(caplog, capsys)}
    assert_no_secret(surfaces, {"etcd client key": certs.admin_key.read_text()})


async def _reachable(kind: EtcdActionKind, url: str) -> bool:
    try:
        return "healthy leader" in await held_message(kind, url)
    except Exception:
        return False
