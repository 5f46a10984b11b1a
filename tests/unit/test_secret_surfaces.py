"""The grep the integration tests run for leaked secrets can fail: a secret planted in a
surface is found (as it is, base64-encoded, or a key's line with its newlines escaped),
named with the surface it is in, and never printed whole."""

from __future__ import annotations

import base64
import json

import pytest

from tests.support.fake_ports import FakeCluster, RecordedEvent
from tests.support.secret_surfaces import (
    assert_no_secret,
    fake_cluster_surfaces,
    leaks,
)

TOKEN = "hvs.planted-token-0123456789"
KEY = (
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oKsbCJd8iYzMoAoGCCqGSM49\n"
    "AwEHoUQDQgAE7wV5p3Sv0Zb8l2xgYq9dXb1Kc4xqz3M1k8y9VnF8mN2J0e8o5rW1\n"
    "kw==\n"
    "-----END EC PRIVATE KEY-----\n"
)
CLEAN = {"molt log": "node-1 selected (max-age)", "Events": "[]"}


def test_clean_surfaces_pass() -> None:
    assert_no_secret(CLEAN, {"Vault token": TOKEN, "etcd client key": KEY})


def test_a_planted_token_is_found_and_named_with_its_surface_but_masked() -> None:
    surfaces = {**CLEAN, "Nodes": json.dumps({"molt.dev/blocked": f"403 with {TOKEN}"})}
    with pytest.raises(AssertionError) as failed:
        assert_no_secret(surfaces, {"Vault token": TOKEN})
    message = str(failed.value)
    assert "Vault token" in message
    assert "is in Nodes" in message
    assert "403 with <Vault token>" in message
    assert TOKEN not in message


def test_a_base64_encoded_secret_is_found() -> None:
    encoded = base64.b64encode(TOKEN.encode()).decode()
    found = leaks({**CLEAN, "ConfigMaps": f'{{"data": "{encoded}"}}'}, {"Vault token": TOKEN})
    assert len(found) == 1
    assert "is in ConfigMaps" in found[0]


def test_a_key_logged_with_escaped_newlines_is_found_by_its_lines() -> None:
    logged = json.dumps({"event": "tls", "key": KEY})  # newlines become \\n
    assert KEY not in logged
    found = leaks({"molt log": logged}, {"etcd client key": KEY})
    assert len(found) == 1
    assert "MHcCAQEE" not in found[0]


def test_a_fake_clusters_event_is_a_surface() -> None:
    cluster = FakeCluster()
    cluster.events.append(RecordedEvent("n1", "ActionFailed", f"refused {TOKEN}", True))
    found = leaks(fake_cluster_surfaces(cluster, log=""), {"Vault token": TOKEN})
    assert len(found) == 1
    assert found[0].startswith("Vault token (hvs.... (28 characters)) is in Events:"), found
