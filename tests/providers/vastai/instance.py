"""An instance of the Vast.ai simulator, and its row in the shape Vast answers it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["HOURS_PER_MONTH", "VastInstance"]

HOURS_PER_MONTH = 30 * 24


@dataclass
class VastInstance:
    id: int
    label: str
    offer: dict[str, Any]
    is_bid: bool
    body: dict[str, Any]
    start_date: float
    actual: str | None = None
    intended: str = "running"
    status_msg: str = ""
    ip: str = ""
    port: int = 0

    def json(self) -> dict[str, Any]:
        """The instance row in the shape of show_instance's ``Instance`` schema."""
        o = self.offer
        env = self.body.get("env") or {}
        pairs = [[k, str(v)] for k, v in env.items()] if isinstance(env, dict) else []
        disk = float(self.body.get("disk") or 10)
        storage = round(o["storage_cost"] * disk / HOURS_PER_MONTH, 6)
        machine = float(self.body["price"]) if self.is_bid else o["dph_base"]
        return {
            "id": self.id,
            "actual_status": self.actual,
            "intended_status": self.intended,
            "cur_state": "running" if self.intended == "running" else "stopped",
            "next_state": self.intended,
            "label": self.label or None,
            "template_id": None,
            "template_hash_id": self.body.get("template_hash_id"),
            "template_name": None,
            "image_uuid": self.body.get("image"),
            "image_args": list(self.body.get("args") or []),
            "image_runtype": self.body.get("runtype") or "ssh",
            "extra_env": pairs,
            "onstart": self.body.get("onstart"),
            "jupyter_token": "0" * 64,
            "status_msg": self.status_msg or None,
            "local_ipaddrs": "10.0.0.5 172.17.0.2",
            "ssh_host": self.ip or None,
            "ssh_idx": "1",
            "ssh_port": self.port or None,
            "machine_dir_ssh_port": None,
            "machine_id": o["machine_id"],
            "bundle_id": o["bundle_id"],
            "start_date": self.start_date,
            "end_date": self.start_date + 30 * 86400,
            "uptime_mins": None,
            "duration": 30 * 86400.0,
            "cpu_arch": "amd64",
            "cpu_cores": o["cpu_cores"],
            "cpu_cores_effective": o["cpu_cores_effective"],
            "cpu_name": o["cpu_name"],
            "cpu_ram": o["cpu_ram"],
            "cpu_util": 0.0,
            "mem_limit": None,
            "mem_usage": None,
            "vmem_usage": None,
            "gpu_name": o["gpu_name"],
            "gpu_arch": "nvidia",
            "gpu_totalram": o["gpu_total_ram"],
            "gpu_ram": o["gpu_ram"],
            "gpu_util": None,
            "gpu_temp": None,
            "gpu_frac": 1.0,
            "disk_space": disk,
            "disk_bw": o["disk_bw"],
            "direct_port_count": o["direct_port_count"],
            "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(self.port)}]}
            if self.port
            else {},
            "static_ip": o["static_ip"],
            "public_ipaddr": self.ip or None,
            "geolocation": o["geolocation"],
            "verification": o["verification"],
            "rentable": False,
            "host_id": o["host_id"],
            "min_bid": o["min_bid"],
            "is_bid": self.is_bid,
            "dph_base": machine,
            "dph_total": round(machine + storage, 6),
            "storage_cost": o["storage_cost"],
            "storage_total_cost": storage,
            "reliability2": o["reliability"],
            "num_gpus": o["num_gpus"],
            "external": o["external"],
        }
