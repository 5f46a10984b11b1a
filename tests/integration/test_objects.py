"""The generic object port against the real API server: any kind by apiVersion and kind,
its REST path found by discovery (a core kind, a namespaced one of another group and a
cluster-scoped CRD kind), server-side apply, and the errors a person can act on."""

from __future__ import annotations

import uuid

import pytest
from kubernetes_asyncio import client

from molt.actions.objects import read_config_map_key, read_secret_key
from molt.api import GROUP, VERSION
from molt.kube.objects import UnknownKindError
from molt.kube.transport import RawApi
from molt.kube.writes import KubeWrites
from molt.ports import ObjectRef
from tests.support.builders import termination_policy


async def test_objects_of_any_kind_are_created_applied_listed_read_and_deleted(
    kube: client.ApiClient, namespace: str
) -> None:
    writes = KubeWrites(RawApi(kube), check_fence=lambda: None)
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "hooks", "namespace": namespace, "labels": {"app": "x"}},
        "data": {"template": "one"},
    }
    assert await writes.create_object(config)
    assert not await writes.create_object(config), "a second create finds the first"
    assert await read_config_map_key(writes, namespace, "hooks", "template") == "one"

    # Server-side apply brings Molt's fields to the body and leaves others' fields alone.
    await client.CoreV1Api(kube).patch_namespaced_config_map(
        "hooks", namespace, {"data": {"theirs": "kept"}}
    )
    await writes.apply_object({**config, "data": {"template": "two"}})
    found = await writes.read_object(ObjectRef("v1", "ConfigMap", "hooks", namespace))
    assert found is not None
    assert found["data"] == {"template": "two", "theirs": "kept"}
    listed = await writes.list_objects("v1", "ConfigMap", namespace, label_selector="app=x")
    assert [item["metadata"]["name"] for item in listed] == ["hooks"]

    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "token", "namespace": namespace},
        "stringData": {"token": "s.abc"},
    }
    assert await writes.create_object(secret)
    assert await read_secret_key(writes, namespace, "token", "token") == "s.abc"
    assert await read_secret_key(writes, namespace, "token", "absent") is None
    assert await read_secret_key(writes, namespace, "absent", "token") is None

    # A cluster-scoped kind of Molt's own group: discovery says it lives in no namespace.
    name = f"obj-{uuid.uuid4().hex[:6]}"
    await writes.apply_object(termination_policy(name))
    ref = ObjectRef(f"{GROUP}/{VERSION}", "TerminationPolicy", name)
    applied = await writes.read_object(ref)
    assert applied is not None
    assert applied["spec"]["drain"]["timeout"] == "1h"
    assert await writes.delete_object(ref)
    assert not await writes.delete_object(ref), "deleting a gone object says so"
    assert await writes.delete_object(ObjectRef("v1", "ConfigMap", "hooks", namespace))
    assert await writes.read_object(ObjectRef("v1", "ConfigMap", "hooks", namespace)) is None


async def test_a_kind_the_api_server_does_not_serve_is_a_clear_error(
    kube: client.ApiClient, namespace: str
) -> None:
    writes = KubeWrites(RawApi(kube), check_fence=lambda: None)
    with pytest.raises(UnknownKindError, match=r"no HostEndpoint in crd\.projectcalico\.org/v1"):
        await writes.read_object(ObjectRef("crd.projectcalico.org/v1", "HostEndpoint", "h"))
    with pytest.raises(UnknownKindError, match="no Gadget in v1"):
        await writes.read_object(ObjectRef("v1", "Gadget", "g", namespace))
    with pytest.raises(ValueError, match="needs a namespace"):
        await writes.read_object(ObjectRef("v1", "ConfigMap", "hooks"))
