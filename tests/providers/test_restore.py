"""On each cloud simulator, without a kernel: ``prepare`` (and ``launch``) note every
shared resource before creating it; ``restore`` rebuilds the context from those notes
calling nothing that creates; ``destroy`` and ``teardown`` on it remove everything, on a
sold-out cloud, with no key material."""

from __future__ import annotations

import json

import pytest
from skyward.model import ClusterSpec
from skyward.providers import provider_for
from skyward.transport.keys import make_cluster_keys

from .clouds import CLOUDS, open_cloud
from .cloudtests import launch_request

SHOWN_AS = {
    "key-pair": "key pairs",
    "security-group": "security groups",
    "firewall": "firewall rules",
    "ssh-key": "ssh keys",
    "startup-script": "startup scripts",
    "volume": "volumes",
}
"""A note's kind -> where ``Cloud.resources`` shows such a resource."""


@pytest.fixture(scope="module", params=CLOUDS)
def cloud(request):
    opened = open_cloud(request.param)
    yield opened
    opened.close()


@pytest.fixture
def provider(cloud, monkeypatch):
    for key, value in cloud.env.items():
        monkeypatch.setenv(key, value)
    spec = _spec(cloud)
    yield provider_for(cloud.name, spec), spec
    cloud.sell_out(False)


def _spec(cloud) -> ClusterSpec:
    if "--gpus" in cloud.up_args:
        return ClusterSpec(cloud.name, accelerator="A100", accelerator_count=1, spot="never")
    return ClusterSpec(cloud.name, spot="never")


async def test_noted_before_created_and_torn_down_from_the_notes_alone(cloud, provider):
    provider, spec = provider
    cluster_id = f"sky-rst{CLOUDS.index(cloud.name):04d}"
    notes: list[tuple[str, str, str]] = []  # (kind, id, that kind's resources then)

    def note(kind: str, resource_id: str) -> None:
        then = cloud.resources().get(SHOWN_AS.get(kind, ""), {})
        notes.append((kind, resource_id, json.dumps(then, default=str)))

    keys = await make_cluster_keys(cluster_id)
    context = await provider.prepare(cluster_id, spec, keys, note)
    request, _ = launch_request(cluster_id, 0, spec, keys)
    instance_id = await provider.launch(context, request)
    await provider.wait_running(context, instance_id, 60)
    made = cloud.resources()
    for kind, resource_id, then in notes:
        if kind in SHOWN_AS:  # a resource's name, noted before the resource existed
            assert resource_id not in then, (kind, resource_id)
    for kind, items in made.items():
        for item in items if isinstance(items, list) else items.items():
            shown = json.dumps(item, default=str)
            assert any(rid in shown for _, rid, _ in notes), f"{kind} {shown[:80]} not noted"
    resources: dict[str, list[str]] = {}
    for kind, resource_id, _ in notes:
        resources.setdefault(kind, []).append(resource_id)

    cloud.sell_out()
    restored = await provider.restore(cluster_id, spec, resources)
    assert cloud.resources() == made, "restore changed something"
    await provider.destroy(restored, instance_id)
    await provider.teardown(restored)
    assert cloud.live() == [] and cloud.resources() == {}
    await provider.teardown(restored)  # what is already gone is done


async def test_a_restored_context_launches_a_replacement_node(cloud, provider):
    provider, spec = provider
    cluster_id = f"sky-rpl{CLOUDS.index(cloud.name):04d}"
    notes: dict[str, list[str]] = {}
    keys = await make_cluster_keys(cluster_id)
    context = await provider.prepare(
        cluster_id, spec, keys, lambda kind, rid: notes.setdefault(kind, []).append(rid)
    )
    first = await provider.launch(context, launch_request(cluster_id, 0, spec, keys)[0])
    await provider.wait_running(context, first, 60)
    made = cloud.resources()
    # As after %skyward attach: a lost node's replacement finds its offers only now.
    restored = await provider.restore(cluster_id, spec, notes)
    replacement = await provider.launch(restored, launch_request(cluster_id, 1, spec, keys)[0])
    instance = await provider.wait_running(restored, replacement, 60)
    assert instance.ip and sorted(cloud.live()) == sorted([first, replacement])
    now = cloud.resources()
    for kind, items in made.items():  # as they were (a new node may add its own)
        kept = now[kind].items() if isinstance(items, dict) else now[kind]
        assert all(item in kept for item in (items.items() if isinstance(items, dict) else items))
    for iid in (first, replacement):
        await provider.destroy(restored, iid)
    await provider.teardown(restored)
    assert cloud.live() == [] and cloud.resources() == {}
