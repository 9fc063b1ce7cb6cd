"""Hatch build hook: bundle the panel's TypeScript (js/) into skyward/static/ with esbuild.

Runs for wheels, editable installs and wheels built from the sdist, so `pip install .`
from a clone builds the bundle (it needs Node.js and npm). The bundle is not committed;
the wheel carries it. ``SKYWARD_SKIP_JS=1`` skips the build (the panel then says its
bundle is missing); an editable install without npm only warns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

BUNDLE = ("skyward_jupyter/skyward/static/panel.js", "skyward_jupyter/skyward/static/panel.css")


class PanelBuildHook(BuildHookInterface):
    """Build js/ before the package's files are collected."""

    PLUGIN_NAME = "skyward-panel"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        js = root / "js"
        build_data.setdefault("artifacts", []).extend(BUNDLE)
        if os.environ.get("SKYWARD_SKIP_JS") or not (js / "package.json").is_file():
            return
        npm = shutil.which("npm")
        if npm is None:
            message = "skyward: npm not found, the panel's JavaScript bundle is not built"
            if version == "editable":
                self.app.display_warning(message)
                return
            raise RuntimeError(message + " (install Node.js 18+, or set SKYWARD_SKIP_JS=1)")
        lock = js / "package-lock.json"
        stamp = js / "node_modules" / ".package-lock.json"
        if not stamp.is_file() or (lock.is_file() and lock.stat().st_mtime > stamp.stat().st_mtime):
            command = "ci" if lock.is_file() else "install"
            subprocess.run([npm, command, "--no-audit", "--no-fund"], cwd=js, check=True)
        subprocess.run([npm, "run", "--silent", "build"], cwd=js, check=True)
        missing = [p for p in BUNDLE if not (root / p).is_file()]
        if missing:
            raise RuntimeError(f"skyward: the panel build did not write {', '.join(missing)}")
