"""The clouds' official SDKs as a second client of our simulators, each in its own venv.

Why separate venvs: the three SDKs cannot share one (runpod needs cryptography >= 50,
vastai pins 49), and none of them belongs in the package's own dependencies. ``uv``
(installed by the test extra) makes each venv in seconds from the same interpreter as
the tests; it is kept under ``.venv-sdk/<name>`` (git-ignored) and rebuilt only when its
pin or the interpreter changes. A driver script then runs inside that venv, against a
simulator, and prints one JSON report.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["SDKS", "run_driver", "sdk_python"]

ROOT = Path(__file__).resolve().parents[2]
VENVS = ROOT / ".venv-sdk"
SDKS = {"runpod": "runpod==1.12.0", "vastai": "vastai==1.9.1", "verda": "verda==1.25.0"}
"""SDK name -> the pinned release its users install."""


def _uv() -> str:
    found = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if found is None:
        raise RuntimeError('uv is needed to make the SDK venvs: pip install -e ".[test]"')
    return found


def sdk_python(name: str) -> Path:
    """The interpreter of the venv that holds the official SDK ``name`` (made if missing)."""
    pin = SDKS[name]
    venv = VENVS / name
    marker = venv / "skyward-sdk.json"
    wanted = {"pin": pin, "python": sys.version}
    VENVS.mkdir(exist_ok=True)
    with open(VENVS / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            made = json.loads(marker.read_text())
        except (OSError, ValueError):
            made = {}
        python = venv / "bin" / "python"
        if {k: made.get(k) for k in wanted} == wanted and python.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        started = time.monotonic()
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
        for command in (
            [_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)],
            [_uv(), "pip", "install", "--quiet", "--python", str(python), pin],
        ):
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"making the {name} SDK venv failed: {done.stderr[-2000:]}")
        marker.write_text(json.dumps({**wanted, "seconds": round(time.monotonic() - started, 1)}))
        return python


def run_driver(name: str, script: Path, env: dict[str, str], timeout: float = 180) -> Any:
    """Run ``script`` in the SDK ``name``'s venv with ``env``; its JSON report (the last
    line it prints). A failing driver fails with everything it printed."""
    python = sdk_python(name)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(python), str(script)],
        env={**clean, "HOME": str(VENVS / name), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"the {name} SDK driver failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def drive_sdk(name: str, test_file: str, folder: Path, env: dict[str, str]) -> Any:
    """Run the ``sdk_driver.py`` beside ``test_file`` with the official SDK ``name``,
    the simulator's ``env`` and a fresh cluster public key; the driver's report."""
    from .cloudtests import make_keys

    key = make_keys(folder).public_key
    driver = Path(test_file).with_name("sdk_driver.py")
    return run_driver(name, driver, {**env, "SKYWARD_TEST_PUBLIC_KEY": key})
