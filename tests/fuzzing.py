"""What the property-based fuzz of the public surface shares (tests/test_fuzz_api.py):
Hypothesis's profiles, the values it draws, and the property every call must keep.

Profiles: ``ci`` (the default: derandomized, so a CI run tries the same examples every time,
a few per test, no deadline) and ``long`` (``HYPOTHESIS_PROFILE=long``: many random examples,
for a deeper run: ``HYPOTHESIS_PROFILE=long pytest -m fuzz``).

The property (:func:`holds`): the call succeeds, or raises a :class:`tunekit.TunekitError`
whose message names the parameter (or file) it is about; and afterwards every record in
the runs folder lists, and none reads ``running``.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import tunekit as tk

# ----- profiles ---------------------------------------------------------------------------------
_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", derandomize=True, max_examples=12, deadline=None, suppress_health_check=_QUIET,
                          print_blob=True, database=None)
settings.register_profile("long", max_examples=300, deadline=None, suppress_health_check=_QUIET, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def examples(n: int) -> settings:
    """``@examples(n)``: n examples per test in CI; the long profile's own count otherwise."""
    if settings.default.max_examples > settings.get_profile("ci").max_examples:
        return settings()  # the long profile: as many as it says
    return settings(max_examples=n)


# ----- values ------------------------------------------------------------------------------------
EDGE_NUMBERS = [0, 1, -1, 2, 3, 2**31, 2**63 - 1, 2**63, 2**64 + 1, -(2**63) - 1, 10**30,
                0.0, -0.0, 0.5, 1.0, 1e-300, 5e-324, 1e300, 1.7976931348623157e308, -1e300,
                math.nan, math.inf, -math.inf]
EDGE_TEXTS = ["", " ", "\x00", "\n", "a" * 5000, "é", "\U0001d518\u200b", "../..", "/", ".", "None", "nan",
              "-1", "1e-4", "True", "🙂" * 40, "con", "a/b", "\\", "tab\there", "~nobody-here", "~nobody-here/x"]

numbers = st.one_of(st.sampled_from(EDGE_NUMBERS), st.integers(), st.floats())
texts = st.one_of(st.sampled_from(EDGE_TEXTS), st.text(max_size=30))
scalars = st.one_of(st.none(), st.booleans(), numbers, texts,
                    st.sampled_from([np.float64(0.5), np.int64(3), np.float32("nan"), np.bool_(True)]))
wild = st.one_of(scalars, st.lists(scalars, max_size=3), st.tuples(scalars),
                 st.dictionaries(st.text(max_size=4), scalars, max_size=2),
                 st.sampled_from([object(), b"bytes", {1, 2}, 1j, Path("/")]))
"""Anything a user might pass where one value goes: the wrong type, or the right type at its edge."""


def around(valid: Iterable[Any], other: st.SearchStrategy = wild) -> st.SearchStrategy:
    """A parameter's good values (so that the call also succeeds now and then) or wild ones."""
    return st.one_of(st.sampled_from(list(valid)), other)


def cheap(value: Any, most: int = 3) -> bool:
    """False for a positive integer above ``most``: a value that is allowed but would make
    an example slow (epochs=10**9 trains for ever)."""
    return not (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and value > most)


# ----- the property ------------------------------------------------------------------------------
def records_list(runs_dir: Optional[str | os.PathLike]) -> list:
    """Every record folder in ``runs_dir`` lists (no 'skipping run record' warning) and none
    reads ``running``; returns the runs."""
    if runs_dir is None or not Path(runs_dir).is_dir():
        return []
    folders = sorted(p.name for p in Path(runs_dir).iterdir()
                     if p.is_dir() and not p.name.startswith(".") and not (p / "experiment.json").exists())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = tk.list_runs(runs_dir)
        tk.runs.table(runs)
    skipped = [str(w.message) for w in caught if "skipping run record" in str(w.message)]
    assert not skipped, f"a record tunekit wrote does not list: {skipped}"
    assert sorted(r.path.name for r in runs) == folders, f"listed {[r.path.name for r in runs]}, on disk {folders}"
    running = [r.name for r in runs if r.status == "running"]
    assert not running, f"records left 'running': {running}"
    return runs


def names_one(message: str, names: Iterable[str]) -> bool:
    return any(str(n) in message for n in names)


def holds(call: Callable[[], Any], names: Iterable[str], runs_dir: Optional[str | os.PathLike] = None,
          training: bool = False) -> Any:
    """Run ``call``; it returns, or raises a TunekitError naming one of ``names``; with
    ``training``, a :class:`tunekit.TrainingError` (a run that failed, e.g. a learning rate so
    large the loss overflows) is an outcome too, its record ``failed``; but never one that wraps a
    raw Python or torch error (a value that should have been refused before the run began). Then the records in
    ``runs_dir`` list. Returns what ``call`` returned, or the error."""
    names = list(names)
    try:
        out = call()
    except tk.TrainingError as e:
        raw = e.__cause__ is not None and not isinstance(e.__cause__, tk.TunekitError)
        assert not raw, (f"a run failed on a raw {type(e.__cause__).__name__} (a value tunekit should have "
                         f"refused before training?): {e}")
        if not training:
            assert names_one(str(e), names), f"TrainingError names none of {names}: {e}"
        elif e.run is not None:
            assert e.run.status in ("failed", "stopped"), f"a failed run reads {e.run.status!r}"
        out = e
    except tk.TunekitError as e:
        message = str(e)
        assert message.strip(), f"{type(e).__name__} with an empty message"
        assert names_one(message, names), f"{type(e).__name__} names none of {names}: {message}"
        out = e
    records_list(runs_dir)
    return out
