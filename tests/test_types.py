"""The type check: mypy, as pyproject.toml configures it ([tool.mypy]), passes on imagine/,
bot/, cli/ and worker/: strict everywhere, but the worker may return what torch, numpy and the
skipped diffusers/transformers type as Any. Run from the repository root with the venv's mypy
(the first run analyses torch's stubs, about half a minute; later runs read .mypy_cache/).
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"imagine", "bot", "cli", "worker"}


def test_the_code_type_checks() -> None:
    mypy = Path(sys.executable).parent / "mypy"
    done = subprocess.run([str(mypy)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    assert "Success: no issues found" in done.stdout


def test_the_check_is_strict_on_every_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    assert set(config["files"]) == PACKAGES
    assert config["strict"] is True
    for override in config.get("overrides", []):
        modules = [override["module"]] if isinstance(override["module"], str) else override["module"]
        if any(module.split(".")[0] in PACKAGES for module in modules):  # one of ours: checked, not skipped
            assert not override.get("ignore_errors") and override.get("follow_imports") != "skip", override
