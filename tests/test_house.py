"""The habits that keep the house in order, run with the tests: ruff is clean over the code
and the tests, and every import in tunekit points down its layers (import-linter's contracts
in pyproject.toml; grimp's graph counts imports made inside functions too)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    found = Path(sys.executable).with_name(name)
    if found.exists():
        return str(found)
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: bash scripts/setup.sh --dev installs it")
    return path


def test_ruff_is_clean():
    out = subprocess.run([_tool("ruff"), "check", "--no-cache", "tunekit", "tests", "benchmarks"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _lint_imports(root: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env=env)


def test_every_import_points_down_and_no_cycle():
    out = _lint_imports(ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "Contracts: 3 kept, 0 broken." in out.stdout, out.stdout[-2000:]


def test_the_contract_sees_an_upward_import_inside_a_function(tmp_path):
    """The check can fail: a copy of tunekit whose config module imports the engine inside a
    function (the kind of import that hid two cycles from Python) breaks the layers contract
    and the no-cycle contract."""
    import os
    shutil.copytree(ROOT / "tunekit", tmp_path / "tunekit", ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    config = tmp_path / "tunekit" / "config.py"
    config.write_text(config.read_text() + "\n\ndef _later():\n    from tunekit.engine import train\n    return train\n")
    out = _lint_imports(tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode != 0
    assert "tunekit.config is not allowed to import tunekit.engine" in out.stdout, out.stdout[-3000:]
    assert "Contracts: 1 kept, 2 broken." in out.stdout, out.stdout[-2000:]
