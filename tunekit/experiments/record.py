"""An experiment's record, read as data: the grid, its cells, the table with intervals, the
paired differences and what to choose (see :mod:`tunekit.experiments`)."""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from tunekit.config import DEFAULT_RUNS_DIR, ConfigError
from tunekit.metrics import BOOTSTRAP, bootstrap_mean  # noqa: F401 - the experiments' intervals, named here too
from tunekit.runs import Run, RunRecordError
from tunekit.writer import sanitize_name, write_json

FORMAT = "tunekit-experiment/1"
RECORD = "experiment.json"


def cell_key(label: str, size: int, seed: int) -> str:
    return f"{label}|{size}|{seed}"


def in_words(diff: float, lo: float, hi: float, a: str, b: str, size: int) -> str:
    """``LoRA r8 vs full at 300 examples: -0.4 points [-2.1, 1.3], inside the noise``."""
    verdict = ("inside the noise" if lo <= 0 <= hi
               else f"{a if diff > 0 else b} better")
    return f"{a} vs {b} at {size:,} examples: {100 * diff:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}], {verdict}"


@dataclass
class Experiment:
    """An experiment's record (``runs_dir/<name>/experiment.json``), read as data."""

    path: Path
    record: dict

    @classmethod
    def load(cls, path: str | Path) -> "Experiment":
        """The experiment in folder ``path`` (or its ``experiment.json``)."""
        p = Path(path)
        p = p.parent if p.name == RECORD else p
        try:
            record = json.loads((p / RECORD).read_text())
        except (OSError, ValueError) as e:
            raise RunRecordError(f"{p / RECORD} is not a readable experiment record: {e}") from e
        if record.get("format") != FORMAT:
            raise RunRecordError(f"{p / RECORD} is not a tunekit experiment record (format {record.get('format')!r})")
        return cls(p, record)

    @property
    def name(self) -> str:
        return self.record["name"]

    @property
    def grid(self) -> dict:
        return self.record["grid"]

    @property
    def cells(self) -> dict:
        """Every cell trained so far, by key (``"label|size|seed"``): one JSON file each under
        ``cells/`` (written whole, atomically, by whichever process trained it); a damaged file is
        skipped with a warning, and its cell trains again."""
        return _read_entries(self.path / "cells")

    @property
    def tuning(self) -> dict:
        """The learning-rate searches (``lr="tune"``), by ``"label|size"``: every trial and the best."""
        return _read_entries(self.path / "tuning")

    def write_cell(self, key: str, cell: dict) -> None:
        """Record one cell (its own file: two processes never write one file)."""
        (self.path / "cells").mkdir(exist_ok=True)
        write_json(self.path / "cells" / f"{sanitize_name(key)}.json", {**cell, "key": key})

    def write_tuning(self, key: str, entry: dict) -> None:
        (self.path / "tuning").mkdir(exist_ok=True)
        write_json(self.path / "tuning" / f"{sanitize_name(key)}.json", {**entry, "key": key})

    def done(self) -> list[dict]:
        """The finished cells (their test results recorded)."""
        return [c for c in self.cells.values() if c.get("status") == "completed" and c.get("correct") is not None]

    def keys(self) -> list[str]:
        """Every cell's key (``"label|size|seed"``), strategy by strategy, size by size, seed by seed."""
        g = self.grid
        return [cell_key(label, size, seed) for label in g["strategies"] for size in g["sizes"]
                for seed in range(g["seeds"])]

    def states(self, running: Sequence[str] = ()) -> dict[str, str]:
        """Each cell's state by key, in :meth:`keys` order: ``"done"``, ``"running"`` (the keys in
        ``running``: what the caller is training), ``"failed"`` or ``"stopped"`` (to be retried),
        or ``"queued"`` (not started)."""
        cells, running = self.cells, set(running)
        out = {}
        for key in self.keys():
            status = cells.get(key, {}).get("status")
            out[key] = ("running" if key in running else "done" if status == "completed"
                        else status if status in ("failed", "stopped") else "queued")
        return out

    def time_left(self, keys: Sequence[str]) -> Optional[float]:
        """An estimate, in seconds, of training the cells ``keys``: each from the mean wall time of
        its (strategy, size) cells done so far, else its strategy's time per example at the
        nearest size done, else every done cell's time per example; None before any is done."""
        done = self.done()
        if not done:
            return None
        per_example = float(np.mean([c["wall_time_s"] / c["size"] for c in done]))
        total = 0.0
        for key in keys:
            label, size, _ = split_key(key)
            same = [c["wall_time_s"] for c in done if c["strategy"] == label and c["size"] == size]
            if same:
                total += float(np.mean(same))
                continue
            mine = [c for c in done if c["strategy"] == label]
            if mine:
                near = min(mine, key=lambda c: abs(math.log(c["size"] / size)))
                total += near["wall_time_s"] / near["size"] * size
            else:
                total += per_example * size
        return total

    def runs(self) -> list[Run]:
        """The run records of the finished cells (ordinary runs), in the grid's order."""
        root = self.path.parent
        return [Run(root / c["run"]) for c in self.done() if (root / c["run"]).is_dir()]

    def label(self, name: str) -> str:
        """The grid's label for ``name``: the label itself, or as written in words (``"LoRA r8"``
        is ``lora-r8``: any case, spaces for hyphens)."""
        labels = self.grid["strategies"]
        if name in labels:
            return name
        wanted = "-".join(str(name).lower().replace("_", " ").split())
        for label in labels:
            if label.lower() == wanted:
                return label
        raise ConfigError(f"strategy {name!r} is not in experiment {self.name!r}; it has {labels}")

    def _matrix(self, label: str, size: int) -> tuple[np.ndarray, list[int]]:
        cells = sorted((c for c in self.done() if c["strategy"] == label and c["size"] == size),
                       key=lambda c: c["seed"])
        if not cells:
            return np.zeros((0, 0)), []
        return np.array([c["correct"] for c in cells], dtype=float), [c["seed"] for c in cells]

    def table(self) -> pd.DataFrame:
        """One row per (strategy, size) with a finished cell: the test accuracy's mean over seeds,
        its 95 % interval (two-level bootstrap, see the module), the seeds done, and the mean
        cost per cell: wall time, measured peak memory, trainable parameters, the learning rate."""
        rows = []
        for label in self.grid["strategies"]:
            for size in self.grid["sizes"]:
                m, seeds = self._matrix(label, size)
                if not seeds:
                    continue
                mean, lo, hi = bootstrap_mean(m, seed=size)
                cells = [c for c in self.done() if c["strategy"] == label and c["size"] == size]
                rows.append({"strategy": label, "size": size, "accuracy": mean, "low": lo, "high": hi,
                             "seeds": len(seeds), "test examples": m.shape[1],
                             "seconds": float(np.mean([c["wall_time_s"] for c in cells])),
                             "memory_mb": _mean([c.get("peak_memory_mb") for c in cells]),
                             "trainable": _mean([c.get("trainable") for c in cells]),
                             "lr": cells[0].get("lr")})
        return pd.DataFrame(rows, columns=["strategy", "size", "accuracy", "low", "high", "seeds", "test examples",
                                           "seconds", "memory_mb", "trainable", "lr"])

    def compare(self, a: str, b: str) -> pd.DataFrame:
        """``a`` minus ``b`` in test accuracy per size, paired: on the seeds both finished and the
        same test examples, with a 95 % interval (two-level bootstrap over the per-example
        differences) and the finding in words (``inside the noise`` when the interval holds 0)."""
        a, b = self.label(a), self.label(b)
        rows = []
        for size in self.grid["sizes"]:
            ma, sa = self._matrix(a, size)
            mb, sb = self._matrix(b, size)
            both = sorted(set(sa) & set(sb))
            if not both:
                continue
            d = ma[[sa.index(s) for s in both]] - mb[[sb.index(s) for s in both]]
            diff, lo, hi = bootstrap_mean(d, seed=size + 1)
            rows.append({"size": size, "difference": diff, "low": lo, "high": hi, "seeds": len(both),
                         "inside_noise": bool(lo <= 0 <= hi), "said": in_words(diff, lo, hi, a, b, size)})
        return pd.DataFrame(rows, columns=["size", "difference", "low", "high", "seeds", "inside_noise", "said"])

    def choose(self, cost: str = "seconds") -> pd.DataFrame:
        """What to choose, per size: the strategy with the best mean test accuracy, and the
        cheapest strategy (by ``cost``: ``"seconds"``, ``"memory_mb"`` or ``"trainable"``) whose
        paired difference to the best holds 0 in its 95 % interval (as good, within the noise),
        with what each costs and a sentence."""
        if cost not in ("seconds", "memory_mb", "trainable"):
            raise ConfigError(f"cost must be 'seconds', 'memory_mb' or 'trainable' (got {cost!r})")
        table, rows = self.table(), []
        for size, at in table.groupby("size", sort=True):
            best = at.loc[at["accuracy"].idxmax()]
            alike = [best["strategy"]]
            for other in at["strategy"]:
                if other == best["strategy"]:
                    continue
                d = self.compare(best["strategy"], other)
                d = d[d["size"] == size]
                if len(d) and bool(d["inside_noise"].iloc[0]):
                    alike.append(other)
            pool = at[at["strategy"].isin(alike)]
            cheap = pool.loc[pool[cost].fillna(float("inf")).idxmin()]
            cheapest = at.loc[at[cost].fillna(float("inf")).idxmin(), "strategy"]
            if cheapest == best["strategy"]:
                rest = " and the cheapest"
            elif cheap["strategy"] != best["strategy"]:
                rest = f"; {cheap['strategy']} is as good within the noise ({cheap['accuracy']:.3f}) and cheaper"
            else:
                rest = "; no cheaper strategy is as good within the noise"
            said = f"at {size:,} examples {best['strategy']} is best ({best['accuracy']:.3f}){rest}"
            rows.append({"size": size, "best": best["strategy"], "best_accuracy": best["accuracy"],
                         "best_low": best["low"], "best_high": best["high"], "choose": cheap["strategy"],
                         "choose_accuracy": cheap["accuracy"], "seconds": cheap["seconds"],
                         "memory_mb": cheap["memory_mb"], "trainable": cheap["trainable"], "said": said})
        return pd.DataFrame(rows, columns=["size", "best", "best_accuracy", "best_low", "best_high", "choose",
                                           "choose_accuracy", "seconds", "memory_mb", "trainable", "said"])

    def __repr__(self) -> str:
        g = self.grid
        total = len(g["strategies"]) * len(g["sizes"]) * g["seeds"]
        return f"Experiment({self.name!r}, {len(self.done())}/{total} cells done, {self.path})"


def _read_entries(folder: Path) -> dict:
    out = {}
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            entry = json.loads(f.read_text())
            out[entry["key"]] = entry
        except (OSError, ValueError, KeyError, TypeError) as e:
            warnings.warn(f"skipping a damaged experiment entry {f}: {e}", stacklevel=3)
    return out


def _mean(values) -> Optional[float]:
    xs = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(np.mean(xs)) if xs else None


def split_key(key: str) -> tuple[str, int, int]:
    label, size, seed = key.rsplit("|", 2)
    return label, int(size), int(seed)


SHOWN = ["strategy", "size", "accuracy", "95 % interval", "seeds", "test examples", "seconds", "memory_mb",
         "trainable", "lr"]
"""The columns of :func:`table_with_intervals`, in the order a person reads them."""


def table_with_intervals(exp: Experiment) -> pd.DataFrame:
    """``exp.table()`` as shown in the CLI, the report and the lab: each interval as one
    ``[low, high]`` column beside the mean (three decimals)."""
    table = exp.table()
    shown = table.assign(**{"95 % interval": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(table["low"], table["high"])]})
    return shown[SHOWN]


def report_sections(exp: Experiment) -> list[tuple[str, Any]]:
    """The experiment's sections of an HTML report (:func:`tunekit.report.write_report`'s
    ``extra``): the learning curves, the cost plane, the grid's table with intervals, every
    paired difference, and what to choose per size, each table's text escaped."""
    import html

    from tunekit import plots
    labels = exp.grid["strategies"]
    grid = table_with_intervals(exp)
    said = [s for i, a in enumerate(labels) for b in labels[i + 1:] for s in exp.compare(b, a)["said"]]
    choose = exp.choose()["said"].tolist()

    def lines(items: list[str]) -> str:
        return "<ul>" + "".join(f"<li>{html.escape(t)}</li>" for t in items) + "</ul>" if items else "<p>None yet.</p>"
    return [("Test accuracy vs training examples", plots.learning_curves(exp)),
            ("Test accuracy vs wall time per cell", plots.cost_curves(exp, "seconds")),
            ("The grid: test accuracy per strategy and size (mean over seeds, 95 % interval over seeds and "
             "test examples)", grid.to_html(index=False, float_format=lambda v: f"{v:,.4g}", border=0)),
            ("Paired differences (same seeds, same test examples)", lines(said)),
            ("What to choose", lines(choose))]


def list_experiments(runs_dir: str = DEFAULT_RUNS_DIR) -> list[Experiment]:
    """Every experiment record under ``runs_dir`` (a damaged one is skipped with a warning)."""
    root = Path(runs_dir).expanduser()
    out = []
    for d in sorted(p for p in root.iterdir() if (p / RECORD).exists()) if root.is_dir() else []:
        try:
            out.append(Experiment.load(d))
        except RunRecordError as e:
            warnings.warn(f"skipping experiment record: {e}", stacklevel=2)
    return out


__all__ = ["Experiment", "list_experiments", "report_sections", "bootstrap_mean", "in_words", "table_with_intervals",
           "BOOTSTRAP"]
