"""Grep everything a user can see after a run for the secrets the run used.

A secret is a BMC password, a Vault token, a PagerDuty routing key, a Slack webhook URL,
a history store's password or an etcd client key. After a test that really used one,
``cluster_surfaces`` gathers every text a user can read: the ``molt run`` logs, every
Event in every namespace, the metadata and status of every molt.dev resource and of
every Node, every ConfigMap (Molt keeps its claims in one), the history rows when the
run kept a history, and the output of ``molt snapshot`` and ``molt status``.
``assert_no_secret`` then fails naming the secret and the surface it leaked into, with the
secret masked.

A value is looked for as it is and base64-encoded (as a Secret holds it); a multi-line
value such as a PEM key is looked for line by line (each line of its body), so a key
logged with its newlines escaped is still found.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from sqlalchemy import select
from typer.testing import CliRunner

from molt.api import GROUP
from molt.cli.main import app
from molt.kube.transport import RawApi
from molt.observe.history import make_engine
from molt.observe.history_schema import events
from tests.support.controller import MoltProcess
from tests.support.fake_ports import FakeCluster

MIN_LINE = 16
"""A line of a multi-line secret shorter than this is not looked for on its own (a PEM's
last line may be a few characters, which would match by chance)."""

CONTEXT = 40
"""Characters shown either side of a leak."""


def needles(value: str) -> list[str]:
    """The strings whose presence anywhere means ``value`` leaked."""
    lines = [line.strip() for line in value.strip().splitlines()]
    if len(lines) > 1:
        body = [line for line in lines if not line.startswith("-----")]
        return [line for line in body if len(line) >= MIN_LINE]
    return [value, base64.b64encode(value.encode()).decode()]


def masked(value: str) -> str:
    """Enough of a secret to tell which it is, never the whole of it."""
    shown = value.strip()[:4]
    return f"{shown}... ({len(value)} characters)"


def leaks(surfaces: Mapping[str, str], secrets: Mapping[str, str]) -> list[str]:
    """One line per secret found in a surface: which secret, where, and around what."""
    found = []
    for label, value in secrets.items():
        assert value, f"the secret {label} is empty: nothing could be found"
        for where, text in surfaces.items():
            for needle in needles(value):
                at = text.find(needle)
                if at < 0:
                    continue
                before = text[max(0, at - CONTEXT) : at]
                after = text[at + len(needle) : at + len(needle) + CONTEXT]
                found.append(
                    f"{label} ({masked(value)}) is in {where}: "
                    f"...{before}<{label}>{after}...".replace("\n", " ")
                )
                break
    return found


def assert_no_secret(surfaces: Mapping[str, str], secrets: Mapping[str, str]) -> None:
    """Fail listing every leak; ``secrets`` maps a label (e.g. "BMC password") to its value."""
    assert surfaces, "no surface was gathered"
    found = leaks(surfaces, secrets)
    assert not found, "secrets leaked:\n" + "\n".join(found)


def _text(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


def _seen(obj: Mapping[str, Any]) -> dict[str, Any]:
    """What a user reads of an object Molt writes: its metadata and status."""
    return {"metadata": obj.get("metadata"), "status": obj.get("status")}


async def _molt_resources(raw: RawApi, kube: client.ApiClient) -> dict[str, str]:
    """Every molt.dev kind (found from its CRDs), one surface per kind."""
    crds = await client.ApiextensionsV1Api(kube).list_custom_resource_definition()
    surfaces = {}
    for crd in crds.items:
        if crd.spec.group != GROUP:
            continue
        version = next(v.name for v in crd.spec.versions if v.served)
        items, _ = await raw.list_all(f"/apis/{GROUP}/{version}/{crd.spec.names.plural}")
        surfaces[f"{crd.spec.names.kind} objects"] = _text([_seen(o) for o in items])
    return surfaces


def history_rows(url: str) -> str:
    """Every row of the history table, every column."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(events)).mappings().all()
    finally:
        engine.dispose()
    return _text([dict(row) for row in rows])


def cli_output(*args: str) -> str:
    """What a read-only ``molt`` command prints (and says on stderr)."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output[-2000:]
    return result.output


def captured_logs(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> str:
    """Everything an in-process run logged so far: structlog prints to stdout (or stderr,
    once the CLI configured it), the standard library logs to ``caplog``."""
    out, err = capsys.readouterr()
    return "\n".join([out, err, caplog.text])


def fake_cluster_surfaces(cluster: FakeCluster, log: str) -> dict[str, str]:
    """What a run over the fake ports showed: its log, and everything it wrote that a
    user would read (Events, status patches, node patches)."""
    return {
        "log": log,
        "Events": _text(cluster.events),
        "node patches": _text(cluster.node_patches),
        "status patches": _text(
            [
                cluster.policy_status_patches,
                cluster.group_status_patches,
                cluster.watchdog_status_patches,
                cluster.reaper_status_patches,
            ]
        ),
    }


async def cluster_surfaces(
    kube: client.ApiClient,
    kubeconfig: Path,
    *,
    molts: Iterable[MoltProcess] = (),
    history: str | None = None,
) -> dict[str, str]:
    """Every text a user sees of a run against the sandbox: surface name -> text."""
    raw = RawApi(kube)
    surfaces = {f"molt log {p.log_path.name}": p.log() for p in molts}
    every_event, _ = await raw.list_all("/api/v1/events")
    surfaces["Events"] = _text(every_event)
    nodes, _ = await raw.list_all("/api/v1/nodes")
    surfaces["Nodes"] = _text([_seen(n) for n in nodes])
    config_maps, _ = await raw.list_all("/api/v1/configmaps")
    surfaces["ConfigMaps"] = _text(config_maps)
    surfaces.update(await _molt_resources(raw, kube))
    if history is not None:
        surfaces["history rows"] = await asyncio.to_thread(history_rows, history)
    for command in (["snapshot"], ["status", "-o", "json"]):
        args = [*command, f"--kubeconfig={kubeconfig}"]
        surfaces[f"molt {command[0]}"] = await asyncio.to_thread(cli_output, *args)
    return surfaces
