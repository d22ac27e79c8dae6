"""Who a run is, in every figure and table: one name and one colour for its whole life.

    tk.plots.display_names(runs)   # {run name: "#3 LoRA r8 α16 · 200 ex · 1 ep", ...}
    tk.plots.legend_names(runs)    # the same, plus the status of a run that did not complete
    tk.plots.run_color(run)        # the run's colour, whatever else is selected

A run's name is its number in its runs folder and its name in words
(:attr:`tunekit.runs.Run.display_name`); its colour is the palette colour of that number. The
number is fixed when the record is made (:mod:`tunekit.run_names`), so a run keeps its name
and colour in every view, whichever runs are selected beside it and whatever is deleted;
consecutive runs differ in colour. A run outside any folder of records gets a colour from its
name.

No torch here, and nothing but ``config.json`` and ``summary.json`` is opened.
"""
from __future__ import annotations

import html
import os
import sys
import zlib
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from tunekit.config import ConfigError
from tunekit.run_names import creation_order, next_number, run_number  # noqa: F401
from tunekit.runs import Run, list_runs
from tunekit.strategy_registry import DEFAULT_LR

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#d95f02", "#7b3294", "#8c564b",
           "#e7298a", "#00838f", "#5a5a5a", "#808000", "#1b2a6b", "#b8860b"]
"""Run colours, by each run's number in its runs folder: twelve, then again from the first (the
number in the name tells apart two runs that share one). Chosen for a projector: each stands
out on white at least 3:1 (WCAG contrast; no cyan, light green or pink), and any two differ by
at least 24 in CIELAB (Delta E 1976), blue and purple included; tests/test_run_identity.py
measures both."""


# ----- input: runs, paths, or tables -----------------------------------------------------------------
def as_runs(runs: Any) -> list[Run]:
    """A list of runs from a Run, a run directory, a runs directory, or an iterable of those."""
    if isinstance(runs, Run):
        return [runs]
    if isinstance(runs, (str, os.PathLike)):
        path = Path(runs).expanduser()
        return [Run(path)] if (path / "config.json").is_file() else list_runs(path)
    if isinstance(runs, pd.DataFrame):
        raise ConfigError("runs must be Run records here (got a DataFrame); pass the runs themselves")
    try:
        items = list(runs)
    except TypeError:
        raise ConfigError(f"runs must be a Run, a list of runs or a runs directory (got {type(runs).__name__})") \
            from None
    out = []
    for r in items:
        if not isinstance(r, (Run, str, os.PathLike)):
            raise ConfigError(f"runs must hold Run records or run directories (got {type(r).__name__})")
        out.extend(as_runs(r))
    return out


def literal_text(s: Any) -> str:
    """Record text for plotly, which reads a little HTML in labels: show it literally."""
    return html.escape(str(s), quote=False)


def short_name(name: str) -> str:
    """What a crowded figure says for a run: its number (``"#3"``) where its name starts with one
    (the whole name stays in the legend, the hover and the runs table), else the name."""
    return name.split(" ", 1)[0] if name.startswith("#") and " " in name else name


# ----- a run's number and its colour -------------------------------------------------------------------
def run_place(run: Run | str | os.PathLike) -> Optional[int]:
    """The run's number in its runs folder less one (0 for the first), or None."""
    n = run_number(run)
    return None if n is None else n - 1


def run_color(run: Run | str | os.PathLike) -> str:
    """The run's colour in every figure: the palette colour of its number (a run outside a
    runs folder: a colour from its name). ``run``: a Run or its record's path."""
    place = run_place(run)
    if place is None:
        name = run.name if isinstance(run, Run) else Path(run).name
        place = zlib.crc32(name.encode("utf-8"))
    return color_of(place + 1)


def color_of(number: int) -> str:
    """The colour of the run numbered ``number`` (a record's, or the next one's before it exists)."""
    return PALETTE[(number - 1) % len(PALETTE)]


def colors(runs: Any) -> dict[str, str]:
    """``{run name: colour}`` as every figure draws it (:func:`run_color`)."""
    return {r.name: run_color(r) for r in as_runs(runs)}


# ----- names ------------------------------------------------------------------------------------------
def asked_learning_rate(run: Run) -> Optional[float]:
    """The peak learning rate the run's (last) phase was given; None for the strategy's default."""
    if run.kind in ("prune", "quantize"):
        return None
    asked = (run.config.get("train") or {}).get("lr")
    phases = run.config.get("phases") or []
    if phases and phases[-1].get("lr") is not None:
        asked = phases[-1]["lr"]
    return float(asked) if isinstance(asked, (int, float)) and not isinstance(asked, bool) else None


def learning_rate(run: Run) -> Optional[float]:
    """The peak learning rate of the run's (last) phase, as its record says: the rate it used
    (``phases[-1]["lr_used"]``), else, in an older record, the one asked for, else the strategy's default
    (:data:`~tunekit.strategy_registry.DEFAULT_LR`; a strategy registered at run time: its
    class's, where the strategies are loaded). The same with or without torch."""
    if run.kind in ("prune", "quantize"):
        return None
    phases = run.config.get("phases") or []
    used = phases[-1].get("lr_used") if phases and isinstance(phases[-1], dict) else None
    if isinstance(used, (int, float)) and not isinstance(used, bool):
        return float(used)
    asked = asked_learning_rate(run)
    if asked is not None:
        return asked
    name = run.strategy.get("name")
    if name in DEFAULT_LR:
        return DEFAULT_LR[name]
    strategies = sys.modules.get("tunekit.strategies")  # imports torch: used only once loaded
    cls = getattr(strategies, "REGISTRY", {}).get(name) if strategies else None
    return float(cls.default_lr) if cls is not None else None


def display_names(runs: Any) -> dict[str, str]:
    """``{run name: name}`` for runs shown together: ``"#3 LoRA r8 α16 · 200 ex · 1 ep"``, the
    run's number in its runs folder and its :attr:`~tunekit.runs.Run.display_name`. The same
    wherever a run is shown, whichever runs are shown beside it."""
    out = {}
    for r in as_runs(runs):
        n = run_number(r)
        out[r.name] = r.display_name if n is None else f"#{n} {r.display_name}"
    return out


def legend_names(runs: Any) -> dict[str, str]:
    """``{run name: legend text}``: :func:`display_names`, plus the status of a run that did
    not complete (``[stopped]``), escaped for plotly."""
    runs = as_runs(runs)
    names = display_names(runs)
    return {r.name: literal_text(names[r.name] + ("" if r.status == "completed" else f" [{r.status}]")) for r in runs}


__all__ = ["PALETTE", "short_name", "as_runs", "creation_order", "run_number", "next_number", "run_place", "run_color",
           "color_of", "colors", "learning_rate",
           "display_names", "legend_names"]


def named(df, runs: Any):
    """``df`` (an instrument's frame: one ``label`` per ``run``) with the runs' names in
    words, as every other view shows them (changed in place and returned)."""
    names = display_names(runs)
    df["label"] = [names.get(r, lab) for r, lab in zip(df["run"], df["label"])]
    return df
