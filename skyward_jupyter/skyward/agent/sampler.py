"""Machine metrics sampled on an instance: CPU %, memory, and NVIDIA GPUs where present.

Standard library only (uploaded beside the agent). GPUs are read through NVML
(``nvidia-ml-py``, imported as ``pynvml``) when it imports on the instance, else through
``nvidia-smi``; a machine with neither simply has no GPU metrics.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Sampler", "cpu_times", "gpu_readings", "memory_used_gb"]

Emit = Callable[[str, float, float], None]


def cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies from /proc/stat, or None off Linux."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def memory_used_gb() -> float | None:
    """Memory in use (total − available), in GiB, from /proc/meminfo."""
    info: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                info[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if "MemTotal" not in info or "MemAvailable" not in info:
        return None
    return (info["MemTotal"] - info["MemAvailable"]) / (1024 * 1024)


class _Nvml:
    """NVML through pynvml, initialised once."""

    def __init__(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self.nvml = pynvml
        count = pynvml.nvmlDeviceGetCount()
        self.handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]

    def read(self) -> list[tuple[float, float]]:
        readings = []
        for handle in self.handles:
            util = self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu
            memory = self.nvml.nvmlDeviceGetMemoryInfo(handle).used / (1024**3)
            readings.append((float(util), float(memory)))
        return readings


def _nvidia_smi() -> list[tuple[float, float]]:
    out = subprocess.run(
        [
            "nvidia-smi",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
        ],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    readings = []
    for line in out.strip().splitlines():
        util, memory = (part.strip() for part in line.split(","))
        readings.append((float(util), float(memory) / 1024))
    return readings


def gpu_readings(nvml: Any = None) -> list[tuple[float, float]]:
    """Per GPU: (utilisation %, memory used GiB); empty without NVIDIA GPUs."""
    if nvml is not None:
        return nvml.read()
    if shutil.which("nvidia-smi"):
        return _nvidia_smi()
    return []


class Sampler:
    """Emits ``cpu_percent``, ``memory_gb`` and per-GPU ``gpuN_util``/``gpuN_memory_gb``."""

    def __init__(self, emit: Emit, interval: float = 2.0) -> None:
        self.emit = emit
        self.interval = interval
        self._stop = threading.Event()
        self._nvml: Any = None
        self._gpus = True

    def start(self) -> None:
        try:
            self._nvml = _Nvml()
        except Exception:
            self._nvml = None
        threading.Thread(target=self._loop, name="skyward-metrics", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def sample(self, previous: tuple[int, int] | None) -> tuple[int, int] | None:
        """Take one sample; ``previous`` CPU times give the CPU % since then."""
        now = time.time()
        times = cpu_times()
        if times and previous and times[1] > previous[1]:
            busy = (times[0] - previous[0]) / (times[1] - previous[1])
            self.emit("cpu_percent", round(100.0 * busy, 2), now)
        memory = memory_used_gb()
        if memory is not None:
            self.emit("memory_gb", round(memory, 3), now)
        if self._gpus:
            try:
                for i, (util, gpu_memory) in enumerate(gpu_readings(self._nvml)):
                    self.emit(f"gpu{i}_util", util, now)
                    self.emit(f"gpu{i}_memory_gb", round(gpu_memory, 3), now)
            except Exception:
                self._gpus = False  # a broken driver: stop asking, keep the other metrics
        return times

    def _loop(self) -> None:
        previous = cpu_times()
        while not self._stop.wait(self.interval):
            previous = self.sample(previous)
