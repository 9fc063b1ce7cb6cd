"""``--env`` values are secrets: the cell sees them; no file, event, log line or command
line does. Through a real kernel and real nodes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from .kernel import Kernel

pytestmark = pytest.mark.slow

SECRET = "hf_s3cr3t-value-9f27c1"
FILE_SECRET = "wandb-0a1b2c3d4e"


def _command_lines(stop: threading.Event, seen: list[str]) -> None:
    """Every process's command line, read again and again until ``stop``."""
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                seen.append(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
            except OSError:
                continue


def test_env_values_reach_the_cell_and_nothing_else(tmp_path):
    data = Path(os.environ["XDG_DATA_HOME"])
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"WANDB_API_KEY={FILE_SECRET}\n")
    k = Kernel()
    stop, cmdlines = threading.Event(), []
    watcher = threading.Thread(target=_command_lines, args=(stop, cmdlines), daemon=True)
    try:
        assert k.execute("%load_ext skyward").ok
        record = (
            "from skyward.jupyter.extension import session\n"
            "_seen = []\n"
            "session().bus.subscribe_all(lambda e: _seen.append(repr(e)))"
        )
        assert k.execute(record).ok
        watcher.start()
        up = k.execute(
            f"%skyward up --provider container --nodes 2 --env HF_TOKEN={SECRET} "
            f"--env-file {dotenv}",
            timeout=300,
        )
        assert up.ok, up.text()
        run = k.execute(
            "%%skyward run\nimport os\n"
            f"(os.environ['HF_TOKEN'] == {SECRET!r}, "
            f"os.environ['WANDB_API_KEY'] == {FILE_SECRET!r})"
        )
        assert run.ok and run.values() == {0: "(True, True)", 1: "(True, True)"}
        stop.set()
        watcher.join()
        for secret in (SECRET, FILE_SECRET):
            assert not [line for line in cmdlines if secret in line], "a command line"
            # (the cell's code holds the secrets: the TaskStarted/Log events carry no code)
            shown = k.execute(f"any({secret!r} in r for r in _seen), len(_seen)").text()
            assert "(False," in shown, "an event's repr"
            assert secret not in up.text()
            found = [
                path
                for path in data.rglob("*")
                if path.is_file() and not path.is_symlink() and secret.encode() in path.read_bytes()
            ]
            assert found == [], "a file under the data folder (the ledger, node logs, keys)"
    finally:
        stop.set()
        k.execute("%skyward down", timeout=60)
        k.shutdown()
