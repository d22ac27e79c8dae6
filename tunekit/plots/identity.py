"""Who a run is, in every figure and table: one name and one colour for its whole life.

    tk.plots.display_names(runs)   # {run name: "LoRA r8 α16 · 200 ex · 1 ep", ...}, told apart
    tk.plots.legend_names(runs)    # the same, plus the status of a run that did not complete
    tk.plots.run_color(run)        # the run's colour, whatever else is selected

A run's name in words is :attr:`tunekit.runs.Run.display_name`. Where two runs shown
together would share it, :func:`display_names` adds the settings that differ between them
(model, data, learning rate, batch size, seed) and, if they still agree, ``#k``: the run's
place in its runs folder (the k-th record made there), the same number wherever it is shown.

A run's colour is chosen by that same place: the k-th record of a runs folder gets the k-th
palette colour (they repeat after ten), so consecutive runs differ and a run keeps its colour
in every view, whichever runs are selected beside it. The place is the order in which the
records' ``config.json`` were written (then the name); only deleting an older record of the
folder moves the later ones. A run outside any folder of records gets a colour from its name.

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
from plotly.colors import qualitative

from tunekit.config import ConfigError
from tunekit.runs import Run, list_runs

PALETTE = qualitative.Plotly
"""Run colours, by each run's place in its runs folder; they repeat after ten runs."""


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


def _text(s: Any) -> str:
    """Record text for plotly, which reads a little HTML in labels: show it literally."""
    return html.escape(str(s), quote=False)


# ----- a run's place in its folder, and its colour ------------------------------------------------------
_ORDERS: dict[str, tuple[int, dict[str, int]]] = {}


def creation_order(runs_dir: str | os.PathLike, refresh: bool = False) -> dict[str, int]:
    """``{record name: place}`` of the records in ``runs_dir``, 0 for the first made (by the
    time its config.json was written, then by name). Only file times are read; the result is
    kept until the folder changes."""
    root = os.path.abspath(os.fspath(runs_dir))
    try:
        stamp = os.stat(root).st_mtime_ns
    except OSError:
        return {}
    cached = _ORDERS.get(root)
    if cached is not None and cached[0] == stamp and not refresh:
        return cached[1]
    entries = []
    try:
        with os.scandir(root) as it:
            for e in it:
                if e.name.startswith(".") or not e.is_dir():
                    continue
                try:
                    entries.append((os.stat(os.path.join(e.path, "config.json")).st_mtime_ns, e.name))
                except OSError:
                    continue  # not a record (or one still being made)
    except OSError:
        return {}
    order = {name: i for i, (_, name) in enumerate(sorted(entries))}
    _ORDERS[root] = (stamp, order)
    return order


def run_place(run: Run | str | os.PathLike) -> Optional[int]:
    """The run's place in its runs folder (0 for the first record made there), or None."""
    path = run.path if isinstance(run, Run) else Path(run)
    order = creation_order(path.parent)
    if path.name not in order:  # made since the folder was last read (within its clock tick)
        order = creation_order(path.parent, refresh=True)
    return order.get(path.name)


def run_color(run: Run | str | os.PathLike) -> str:
    """The run's colour in every figure: the palette colour of its place in its runs folder
    (a run outside one: a colour from its name). ``run``: a Run or its record's path."""
    place = run_place(run)
    if place is None:
        name = run.name if isinstance(run, Run) else Path(run).name
        place = zlib.crc32(name.encode("utf-8"))
    return PALETTE[place % len(PALETTE)]


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
    """The peak learning rate of the run's (last) phase: the one asked for, else the
    strategy's default where the strategies are loaded (always in a training session; a
    torch-free reader of records, which cannot load them, gets None)."""
    asked = asked_learning_rate(run)
    if asked is not None or run.kind in ("prune", "quantize"):
        return asked
    strategies = sys.modules.get("tunekit.strategies")  # imports torch: used only once loaded
    cls = getattr(strategies, "REGISTRY", {}).get(run.strategy.get("name")) if strategies else None
    return float(cls.default_lr) if cls is not None else None


def _model(run: Run) -> Optional[str]:
    m = run.config.get("model") or {}
    source = m.get("source") or m.get("path")
    return f"model {Path(str(source)).name}" if source else None


def _setting(key: str, what: str):
    return lambda run: (lambda v: None if v is None else f"{what} {v:g}" if isinstance(v, float) else f"{what} {v}")(
        (run.config.get("train") or {}).get(key))


_TELL_APART = (
    _model,
    lambda run: f"data {(run.config.get('data') or {}).get('name')}" if (run.config.get("data") or {}).get("name")
    else None,
    lambda run: "lr default" if asked_learning_rate(run) is None else f"lr {asked_learning_rate(run):g}",
    _setting("batch_size", "batch"),
    _setting("seed", "seed"),
    _setting("max_length", "max tokens"),
)
"""What is added to the names of runs that would otherwise look alike, in this order."""


def display_names(runs: Any) -> dict[str, str]:
    """``{run name: name in words}`` for runs shown together, each different: the runs'
    :attr:`~tunekit.runs.Run.display_name`; runs that share it get the settings that differ
    between them (`` · lr 0.001``) and, if still alike, `` #k`` (their place in the runs folder)."""
    runs = as_runs(runs)
    names = {r.name: r.display_name for r in runs}
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(names[r.name], []).append(r)
    for base, group in groups.items():
        if len({r.name for r in group}) < 2:
            continue
        for tell in _TELL_APART:
            values = [tell(r) for r in group]
            if len(set(values)) > 1:
                for r, v in zip(group, values):
                    names[r.name] += "" if v is None else f" · {v}"
        alike: dict[str, list[Run]] = {}
        for r in group:
            alike.setdefault(names[r.name], []).append(r)
        for same in alike.values():
            if len({r.name for r in same}) < 2:
                continue
            places = [run_place(r) for r in same]
            if None in places:  # not all in a runs folder: by start, among these
                order = sorted(same, key=lambda r: (str(r.summary.get("started") or ""), r.name))
                places = [order.index(r) for r in same]
            for r, place in zip(same, places):
                names[r.name] += f" #{place + 1}"
    return names


def legend_names(runs: Any) -> dict[str, str]:
    """``{run name: legend text}``: :func:`display_names`, plus the status of a run that did
    not complete (``[stopped]``), escaped for plotly."""
    runs = as_runs(runs)
    names = display_names(runs)
    return {r.name: _text(names[r.name] + ("" if r.status == "completed" else f" [{r.status}]")) for r in runs}


__all__ = ["PALETTE", "as_runs", "creation_order", "run_place", "run_color", "colors", "learning_rate",
           "display_names", "legend_names"]


def named(df, runs: Any):
    """``df`` (an instrument's frame: one ``label`` per ``run``) with the runs' names in
    words, as every other view shows them (changed in place and returned)."""
    names = display_names(runs)
    df["label"] = [names.get(r, lab) for r, lab in zip(df["run"], df["label"])]
    return df
