"""The official ``verda`` SDK (1.25.0) against the Verda simulator: an on-demand and a spot
VM, each checked for availability, created, read until it runs with an IP, reached on
port 22, deleted with its OS volume and confirmed gone.

Runs in the SDK's own venv. The SDK is pointed at the simulator only as its users point
it: ``VerdaClient(client_id, client_secret, base_url=…)`` (``verda/_verda.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from verda import VerdaClient
from verda.exceptions import APIException
from verda.instances import OSVolume

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sdkcheck import report, ssh_banner, wait_for  # noqa: E402

verda = VerdaClient(
    os.environ["VERDA_CLIENT_ID"], os.environ["VERDA_CLIENT_SECRET"],
    base_url=os.environ["VERDA_BASE_URL"],
)  # fmt: skip
TYPE = "1A100.22V"


def running_ip(instance_id: str) -> str | None:
    instance = verda.instances.get_by_id(instance_id)
    return instance.ip if instance.status == "running" and instance.ip else None


def gone(instance_id: str) -> str | None:
    try:
        verda.instances.get_by_id(instance_id)
    except APIException as exc:
        return exc.code
    return None


def scenario(spot: bool, key_id: str, script_id: str) -> dict:
    kind = next(t for t in verda.instance_types.get() if t.instance_type == TYPE)
    where = verda.instances.get_availabilities(is_spot=spot)
    location = next(a["location_code"] for a in where if TYPE in a["availabilities"])
    available = verda.instances.is_available(TYPE, is_spot=spot, location_code=location)
    instance = verda.instances.create(
        instance_type=TYPE, image="ubuntu-22.04-cuda-12.4-docker",
        hostname=f"sdk-{'spot' if spot else 'on-demand'}", description="official SDK",
        ssh_key_ids=[key_id], location=location, startup_script_id=script_id, is_spot=spot,
        os_volume=OSVolume(name="sdk-os", size=50, on_spot_discontinue="delete_permanently"),
    )  # fmt: skip
    ip = wait_for(lambda: running_ip(instance.id), f"instance {instance.id} running")
    banner = ssh_banner(ip, 22)
    listed = [i.id for i in verda.instances.get()]
    verda.instances.action(
        instance.id, verda.constants.instance_actions.DELETE,
        volume_ids=[instance.os_volume_id], delete_permanently=True,
    )  # fmt: skip
    return {
        "id": instance.id, "is_spot": instance.is_spot, "location": location,
        "available": available, "price": kind.price_per_hour, "currency": kind.currency,
        "spot_price": kind.spot_price_per_hour, "model": kind.model, "name": kind.name,
        "best_for": kind.best_for, "ssh": [ip, 22], "banner": banner,
        "listed": instance.id in listed, "gone": wait_for(lambda: gone(instance.id), "gone"),
    }  # fmt: skip


key = verda.ssh_keys.create("sdk-key", os.environ["SKYWARD_TEST_PUBLIC_KEY"])
script = verda.startup_scripts.create("sdk-script", "#!/bin/sh\necho hello\n")
result = {kind: scenario(kind == "spot", key.id, script.id) for kind in ("on-demand", "spot")}
verda.startup_scripts.delete_by_id(script.id)
verda.ssh_keys.delete_by_id(key.id)
result["left"] = len(verda.ssh_keys.get()) + len(verda.startup_scripts.get())
report(result)
