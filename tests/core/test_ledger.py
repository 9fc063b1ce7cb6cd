import os
import signal
import subprocess
import sys
import time

from skyward.core.ledger import KernelIdentity, Ledger, spec_from_dict
from skyward.model import ClusterSpec


def test_entry_lives_from_before_launch_until_removed(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json")
    spec = ClusterSpec("container", nodes=2, pip=("numpy",), env=("A",), keep=True)
    key = ledger.begin(
        "container", "sky-1", 0, spec, keep=spec.keep, host_public_key="ssh-ed25519 X"
    )
    [entry] = ledger.entries()
    assert entry.instance_id is None and entry.kernel_pid == os.getpid() and entry.keep
    ledger.update(key, instance_id="i-1", ip="127.0.0.2", ssh_port=2222, price_per_hour=1.5)
    [entry] = Ledger(tmp_path / "ledger.json").entries()  # another reader sees it
    assert (entry.instance_id, entry.ip, entry.ssh_port) == ("i-1", "127.0.0.2", 2222)
    assert spec_from_dict(entry.spec) == spec
    assert ledger.orphans() == []  # this kernel is alive
    ledger.remove(key)
    assert ledger.entries() == []
    assert (os.stat(tmp_path / "ledger.json").st_mode & 0o777) == 0o600


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])


def test_a_dead_kernel_makes_orphans(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json")
    key = ledger.begin("container", "sky-2", 1, ClusterSpec("container"))
    child = _sleeper()  # the entry's kernel
    try:
        kernel = KernelIdentity.of(child.pid)
        ledger.update(key, kernel_pid=kernel.pid, kernel_started=kernel.started)
        assert kernel.alive()
        assert ledger.orphans() == []  # its kernel runs: not an orphan
    finally:
        child.kill()
        child.wait()
    assert not kernel.alive()
    assert [e.key for e in ledger.orphans()] == [key]


def test_a_killed_kernel_not_yet_reaped_is_dead():
    child = _sleeper()
    try:
        kernel = KernelIdentity.of(child.pid)
        assert kernel.alive()
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _state(child.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(child.pid) == "Z"  # a zombie: its pid still answers kill(0)
        assert not kernel.alive()
    finally:
        child.kill()
        child.wait()


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0]


def test_pid_reuse_is_not_mistaken_for_the_kernel(tmp_path):
    fake = KernelIdentity(os.getpid(), "1")  # this pid, another start time
    assert not fake.alive()
