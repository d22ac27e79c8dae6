"""Experiments: which strategy wins at which data size, with error bars.

    exp = tk.experiment([tk.Probe(), tk.Freeze.top(2), tk.LoRA(rank=8), tk.Full()], "rotten_tomatoes",
                        sizes=[100, 300, 1000], seeds=3, name="rt-transfer")
    exp.table()                      # one row per (strategy, size): mean, 95 % interval, seeds, cost
    exp.compare("LoRA r8", "full")   # the paired difference per size, with its interval

The grid is every (strategy, training-set size, seed). Each cell is an ordinary run record in
``runs_dir`` (listed, loaded, inspected and pruned like any other); the experiment's own record,
``runs_dir/<name>/``, holds ``experiment.json`` (the grid) and one file per trained cell under
``cells/`` (its run, its cost, and whether it got each test example right), written atomically as
the cell ends, so calling the same experiment again **resumes**: finished cells are not retrained,
a failed one is retried, and a kernel restart or a kill loses at most the cell in progress.

Fair by construction:

- for a seed, the training subsets are nested: the ``n`` examples are the first ``n`` of one
  seeded permutation of the training split (:func:`tunekit.evaluation.subset`), so the 100 are
  inside the 300 and a learning curve moves with the data, not with sampling noise;
- every cell is evaluated on the same validation subset while it trains, and reported on the same
  **test** split, which no training or choice saw;
- a seed seeds the model's new weights, the subset and the shuffling alike, for every strategy.

Statistics: per cell, the mean test accuracy over seeds with a 95 % interval from a two-level
percentile bootstrap (resample the seeds, then the test examples within each resampled seed;
:data:`BOOTSTRAP` resamples, seeded), so the interval holds both sources of noise. Between two
strategies, :meth:`Experiment.compare` takes the paired difference on the same seeds and the same
test examples, bootstrapped the same way, and says when it is inside the noise.

Learning rates: each strategy's default, one rate or one per strategy, or ``lr="tune"``: the same
small Optuna (TPE) search per strategy and size on the validation split, the test split kept out
of it (nested evaluation; the record keeps every trial).

This part trains the cells one after another in this process; workers sharing one queue and the
lab's tab are the rest of issue 21.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from tunekit.config import DEFAULT_RUNS_DIR, ConfigError, TrainConfig, TrainingError, positive_int
from tunekit.data import load as load_data
from tunekit.engine import Trainer
from tunekit.models import load_for
from tunekit.runs import Run, RunRecordError
from tunekit.strategies import get_strategy
from tunekit.writer import sanitize_name, write_json

BOOTSTRAP = 2000
"""Bootstrap resamples for every interval (percentile method, seeded: the same record gives the
same interval)."""

GRACE = 10
"""A cell goes back to the queue after this many heartbeat intervals without a heartbeat: short
grace periods (three) re-queued live cells on a loaded 2-core machine, whose heartbeats were late,
and the cell trained twice."""

FORMAT = "tunekit-experiment/1"
RECORD = "experiment.json"


def _cell_key(label: str, size: int, seed: int) -> str:
    return f"{label}|{size}|{seed}"


def bootstrap_mean(correct: np.ndarray, resamples: int = BOOTSTRAP, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float, float]:
    """The mean of ``correct`` (seeds x examples, 0/1 or any score) and its ``level`` interval
    by a two-level percentile bootstrap: resample the seeds (rows), then the examples (columns)
    within each resampled seed. One seed: the examples alone."""
    correct = np.asarray(correct, dtype=float)
    if correct.ndim != 2 or correct.size == 0:
        raise ValueError("expected a non-empty seeds x examples array")
    rng = np.random.default_rng(seed)
    seeds, examples = correct.shape
    rows = rng.integers(0, seeds, size=(resamples, seeds)) if seeds > 1 else np.zeros((resamples, 1), int)
    cols = rng.integers(0, examples, size=(resamples, seeds, examples))
    means = correct[rows[..., None], cols].mean(axis=(1, 2))
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(correct.mean()), float(lo), float(hi)


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


@torch.no_grad()
def _test_correct(model, test: pd.DataFrame, batch_size: int, max_length: int) -> list[int]:
    """1 where ``model`` predicts the test example's label, else 0 (in the test split's order)."""
    probs = model.predict_proba(list(test["text"]), max_length=max_length, batch_size=batch_size)
    return (probs.argmax(-1).numpy() == test["label"].to_numpy()).astype(int).tolist()


def experiment(strategies: Sequence[Any], data: Any = "rotten_tomatoes", *, sizes: Sequence[int],
               seeds: int = 3, model: str = "minilm", name: str = "experiment",
               runs_dir: str = DEFAULT_RUNS_DIR, lr: Optional[float | dict] = None,
               test_size: Optional[int] = None, tune_trials: int = 4, progress: bool = True,
               storage: Optional[str] = None, worker: bool = False, work: bool = True, heartbeat: int = 30,
               **overrides) -> Experiment:
    """Train every (strategy, size, seed) cell not yet done, and return the :class:`Experiment`.

    Args:
        strategies: strategy objects or names (``tk.LoRA(rank=8)``, ``"probe"``); their labels
            name them in the table (two strategies with one label are refused).
        data: a TextDataset or anything :func:`tunekit.data.load` takes; its test split reports.
        sizes: training-set sizes, each at most the training split's size (nested per seed).
        seeds: how many seeds (0, 1, ...) per (strategy, size).
        model: the built-in name, directory or cached hub id every cell starts from.
        name: the experiment's folder in ``runs_dir``; the same name and grid resumes it, the
            same name with another grid is refused.
        lr: None (each strategy's default), one rate for all, ``{label: rate}``, or ``"tune"``:
            per strategy and size, ``tune_trials`` training runs on seed 0's subset, their learning
            rates chosen by Optuna's TPE sampler (log scale, a tenth to ten times the strategy's
            default), judged by validation accuracy; every seed's cell then trains at the best rate
            and is reported on the test split, which the search never saw. Every trial is kept in
            the record (and is a run record of its own).
        tune_trials: the search budget per (strategy, size) for ``lr="tune"``, the same for all.
        test_size: report on a seeded subset of the test split (None: all of it).
        progress: a progress bar over the cells (tqdm), with the cell being trained.
        storage: an Optuna storage URL holding the queue of cells (``sqlite:///path.db``, a
            PostgreSQL URL for workers on several machines); None: a SQLite file inside the
            experiment's record. The call puts every cell not yet done in the queue (as
            WAITING trials), then trains cells from it until none is left.
        worker: only take cells from the queue, never add to it: the call for more processes,
            GPUs or machines (same grid, same storage) beside the one that filled the queue.
        work: False fills the queue and returns at once (the workers train).
        heartbeat: seconds between a working cell's heartbeats; a cell whose worker died (no
            heartbeat for :data:`GRACE` of them) goes back to the queue for another worker, up to twice.
        **overrides: other :class:`~tunekit.config.TrainConfig` fields for every cell (epochs,
            batch_size, eval_size, ...).
    """
    data = load_data(data)
    if not strategies:
        raise ConfigError("experiment needs at least one strategy (e.g. [tk.Probe(), tk.LoRA(rank=8), tk.Full()])")
    strategies = [get_strategy(s) for s in strategies]
    labels = [s.label for s in strategies]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"two strategies share a label in {labels}: give each its own settings")
    sizes = list(sizes)
    if not sizes:
        raise ConfigError("sizes must list at least one training-set size, e.g. sizes=[100, 300, 1000]")
    for n in sizes:
        positive_int("sizes", n)
        if n > len(data.train):
            raise ConfigError(f"sizes: {n:,} is more than the {len(data.train):,} training examples of "
                              f"{data.name!r}")
    if len(set(sizes)) != len(sizes):
        raise ConfigError(f"sizes has a size twice: {sizes}")
    sizes = sorted(sizes)
    positive_int("seeds", seeds)
    if len(data.test) == 0:
        raise ConfigError(f"{data.name!r} has no test split to report on; make one (test_size > 0 when loading)")
    if test_size is not None:
        positive_int("test_size", test_size)
    for key in ("seed", "train_size", "runs_dir", "name"):
        if key in overrides:
            raise ConfigError(f"{key} is set per cell by the experiment; leave it out")
    rates = _rates(lr, labels)
    tune = rates.pop("tune", False)
    positive_int("tune_trials", tune_trials)
    TrainConfig(**overrides)  # every override checked before anything trains

    folder = Path(runs_dir).expanduser() / sanitize_name(name)
    grid = {"strategies": labels, "specs": [s.describe() for s in strategies],
            "sizes": sizes, "seeds": int(seeds), "data": data.name, "model": str(model),
            "test_size": test_size, "lr": "tune" if tune else rates,
            "tune_trials": int(tune_trials) if tune else None,
            "overrides": {k: overrides[k] for k in sorted(overrides)}}
    exp = _open(folder, name, grid)
    test = data.test
    if test_size is not None and test_size < len(test):
        test = test.sample(n=test_size, random_state=0).sort_index()

    if len(exp.done()) < len(labels) * len(sizes) * seeds:  # every strategy checked on the model before any trains
        m = load_for(model, data, "classification", 0)
        for strategy in strategies:
            for phase in strategy.phases():
                phase.strategy.plan(m)
    total = len(labels) * len(sizes) * seeds
    if tune and not worker:  # the searches first, in this process: every seed's cell needs their result
        for strategy, label in zip(strategies, labels):
            for size in sizes:
                if any(exp.cells.get(_cell_key(label, size, sd), {}).get("status") != "completed"
                       for sd in range(seeds)):
                    _tuned_lr(exp, strategy, label, size, data, model, tune_trials, overrides)
    positive_int("heartbeat", heartbeat)
    queue = _Queue(exp, storage, heartbeat)
    if not worker:
        queue.fill([_cell_key(label, size, seed) for seed in range(seeds) for size in sizes for label in labels])
    if work:
        by_label = dict(zip(labels, strategies))
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, initial=len(exp.done()), desc=name, unit="cell")
        try:
            for key in queue.cells():
                label, size, seed = _split_key(key)
                if bar is not None:
                    bar.set_postfix_str(f"{label}, {size:,} examples, seed {seed}")
                rate = exp.tuning.get(f"{label}|{size}", {}).get("best") if tune else rates.get(label)
                with queue.heartbeat():
                    cell = _train_cell(exp, by_label[label], label, size, seed, data, test, model, rate, overrides)
                exp.write_cell(key, cell)
                queue.done(cell)
                if bar is not None:
                    bar.n = len(exp.done())
                    bar.refresh()
                if cell["status"] != "completed":
                    warnings.warn(f"cell {label}, {size} examples, seed {seed} {cell['status']}: "
                                  f"{cell.get('reason')}", stacklevel=2)
        finally:
            if bar is not None:
                bar.close()
    done = len(exp.done())
    if work and done < total:
        warnings.warn(f"experiment {name!r}: {done} of {total} cells finished; call it again to retry the others",
                      stacklevel=2)
    return exp


def _split_key(key: str) -> tuple[str, int, int]:
    label, size, seed = key.rsplit("|", 2)
    return label, int(size), int(seed)


class _Queue:
    """The experiment's cells as an Optuna study: each cell to train is a trial put in the queue
    as WAITING (``enqueue_trial``, its key in ``user_attrs``), which ``ask()`` hands to exactly
    one worker inside a storage transaction; a worker records a heartbeat while it trains, and a
    trial whose heartbeat stopped (its worker killed) is failed and put back as WAITING by
    Optuna's ``RetryHeartbeatStaleTrialCallback`` for another worker."""

    def __init__(self, exp: Experiment, storage: Optional[str], heartbeat: int):
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna, self.exp, self.interval = optuna, exp, int(heartbeat)
        url = storage or f"sqlite:///{(exp.path / 'queue.db').resolve()}"
        try:
            with _quiet():
                self.storage = optuna.storages.RDBStorage(
                    url, heartbeat_interval=self.interval, grace_period=GRACE * self.interval,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
                self.study = optuna.create_study(study_name=f"tunekit-experiment:{exp.name}", storage=self.storage,
                                                 direction="maximize", load_if_exists=True)
        except Exception as e:  # noqa: BLE001 - any storage failure, said with the URL
            raise ConfigError(f"storage {url!r} cannot be opened as an Optuna storage: {type(e).__name__}: {e}") from e
        self.trial = None

    def _keys(self, *states) -> list[str]:
        return [t.user_attrs.get("key") for t in self.study.get_trials(deepcopy=False, states=states)]

    def fill(self, keys: list[str]) -> None:
        """Put each cell not yet done and not already queued or training in the queue."""
        State = self.optuna.trial.TrialState
        cells = self.exp.cells
        busy = set(self._keys(State.WAITING, State.RUNNING))
        for key in keys:
            if cells.get(key, {}).get("status") != "completed" and key not in busy:
                self.study.enqueue_trial({}, user_attrs={"key": key})

    def cells(self):
        """The keys of the cells this worker trains, one at a time, until none is queued or in
        training (a cell in training elsewhere may come back if its worker dies)."""
        State = self.optuna.trial.TrialState
        while True:
            with _quiet():
                self.optuna.storages.fail_stale_trials(self.study)
            waiting, running = self._keys(State.WAITING), self._keys(State.RUNNING)
            if not waiting:
                if not running:
                    return
                time.sleep(self.interval)
                continue
            with _quiet():
                trial = self.study.ask()
            key = trial.user_attrs.get("key")
            if key is None:  # the last queued cell went to another worker first: this trial is none of ours
                self.study.tell(trial, state=State.FAIL)
                continue
            if not self._claim(trial):  # SQLite can hand one trial to two workers at once: one trains it
                continue
            if self.exp.cells.get(key, {}).get("status") == "completed":  # queued twice, trained already
                self.study.tell(trial, state=State.PRUNED)
                continue
            self.trial = trial
            yield key

    def _claim(self, trial) -> bool:
        """Whether this worker is the first to take ``trial`` (an exclusive file per trial id in
        the record: seen with two workers on one SQLite file, both got the first trial)."""
        folder = self.exp.path / "claims"
        folder.mkdir(exist_ok=True)
        try:
            os.close(os.open(folder / str(trial._trial_id), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            return False

    @contextlib.contextmanager
    def heartbeat(self):
        """Record the current cell's heartbeat every ``interval`` seconds while it trains."""
        stop = threading.Event()
        trial_id = self.trial._trial_id

        def beat():
            while not stop.wait(self.interval):
                self.storage.record_heartbeat(trial_id)
        self.storage.record_heartbeat(trial_id)
        thread = threading.Thread(target=beat, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def done(self, cell: dict) -> None:
        """Tell the queue how the cell ended. A trial already failed by another worker (this one's
        heartbeat was taken for dead) keeps that state; the cell's file holds the result."""
        State = self.optuna.trial.TrialState
        try:
            if cell["status"] == "completed":
                self.study.tell(self.trial, cell["test_accuracy"])
            else:
                self.study.tell(self.trial, state=State.FAIL)
        except (self.optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError) as e:
            warnings.warn(f"cell {cell.get('strategy')}, {cell.get('size')} examples, seed {cell.get('seed')}: "
                          f"the queue had given it up ({e}); its result is kept", stacklevel=2)
        self.trial = None


@contextlib.contextmanager
def _quiet():
    """Without Optuna's notes that its heartbeat helpers are experimental and meant for
    ``Study.optimize`` (this queue records the heartbeat itself, as ``optimize`` does)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Hh]eartbeat.*")
        warnings.filterwarnings("ignore", message=".*is experimental.*")
        yield


def _rates(lr, labels: list[str]) -> dict:
    if lr is None:
        return {}
    if lr == "tune":
        return {"tune": True}
    if isinstance(lr, dict):
        unknown = sorted(set(lr) - set(labels))
        if unknown:
            raise ConfigError(f"lr names strategies not in the grid: {unknown} (the grid has {labels})")
        for k, v in lr.items():
            if not (isinstance(v, (int, float)) and v > 0):
                raise ConfigError(f"lr[{k!r}] must be a positive number (got {v!r})")
        return {k: float(v) for k, v in lr.items()}
    if isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0:
        return {label: float(lr) for label in labels}
    raise ConfigError(f"lr must be None, a positive number, {{label: rate}} or 'tune' (got {lr!r})")


def _open(folder: Path, name: str, grid: dict) -> Experiment:
    """The experiment record in ``folder``: a new one, or the existing one if its grid is this
    one (resume); another grid under the same name is refused."""
    if (folder / RECORD).exists():
        exp = Experiment.load(folder)
        if exp.grid != grid:
            changed = sorted(k for k in set(grid) | set(exp.grid) if grid.get(k) != exp.grid.get(k))
            raise ConfigError(f"experiment {name!r} exists in {folder} with another grid (it differs in "
                              f"{', '.join(changed)}): call it with the same grid to resume it, or give "
                              f"this one another name")
        return exp
    if folder.exists() and any(folder.iterdir()):
        raise ConfigError(f"{folder} exists and is not an experiment: give the experiment another name")
    folder.mkdir(parents=True, exist_ok=True)
    exp = Experiment(folder, {"format": FORMAT, "kind": "experiment", "name": name, "grid": grid,
                              "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
    write_json(folder / RECORD, exp.record)
    return exp


def _train_cell(exp: Experiment, strategy, label: str, size: int, seed: int, data, test: pd.DataFrame,
                model: str, lr: Optional[float], overrides: dict) -> dict:
    """Train one cell (a fresh model, the first ``size`` examples of the seed's permutation) and
    score it on the test examples; the cell's entry for the experiment's record."""
    run_name = sanitize_name(f"{exp.name}-{label}-n{size}-s{seed}")
    cfg = TrainConfig(**{"progress": False, **overrides}).replace(
        seed=seed, train_size=size, runs_dir=str(exp.path.parent), name=run_name,
        **({"lr": lr} if lr is not None else {}))
    cell = {"strategy": label, "size": size, "seed": seed, "run": None, "status": "failed"}
    try:
        m = load_for(model, data, "classification", seed)
        run = Trainer(m, data, strategy, cfg).run()
    except TrainingError as e:
        cell.update(reason=str(e), run=e.run.name if e.run is not None else None)
        return cell
    s = run.summary
    cell.update(run=run.name, status=run.status, reason=s.get("reason"), wall_time_s=s.get("wall_time_s"),
                peak_memory_mb=s.get("peak_memory_mb"), trainable=(run.config.get("params") or {}).get("trainable"),
                lr=(run.config.get("train") or {}).get("lr") or getattr(strategy, "default_lr", None))
    if run.status == "completed":
        cell["correct"] = _test_correct(m, test, cfg.eval_batch_size, cfg.max_length)
        cell["test_accuracy"] = float(np.mean(cell["correct"]))
    return cell


def _tuned_lr(exp: Experiment, strategy, label: str, size: int, data, model: str, trials: int,
              overrides: dict) -> float:
    """The learning rate for ``label`` at ``size``: the best of ``trials`` runs on seed 0's subset by
    validation accuracy, Optuna's TPE sampler (seeded) choosing each rate on a log scale from a
    tenth to ten times the strategy's default. Trials already in the record are given to the
    sampler again (a resumed search goes on where it stopped); each new one is written to the
    record as soon as it ends."""
    import optuna
    from optuna.distributions import FloatDistribution
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = float(getattr(strategy, "default_lr", None) or 1e-4)
    space = {"lr": FloatDistribution(base / 10, base * 10, log=True)}
    key = f"{label}|{size}"
    entry = exp.tuning.get(key) or {"trials": [], "space": [base / 10, base * 10]}
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=size))
    for t in entry["trials"]:
        if t.get("value") is not None:
            study.add_trial(optuna.trial.create_trial(params={"lr": t["lr"]}, distributions=space, value=t["value"]))
    while len(entry["trials"]) < trials:
        trial = study.ask(space)
        lr = float(trial.params["lr"])
        k = len(entry["trials"])
        cfg = TrainConfig(**{"progress": False, **overrides}).replace(
            seed=0, train_size=size, lr=lr, runs_dir=str(exp.path.parent),
            name=sanitize_name(f"{exp.name}-tune-{label}-n{size}-t{k}"))
        value, run_name = None, None
        try:
            run = Trainer(load_for(model, data, "classification", 0), data, strategy, cfg).run()
            run_name = run.name
            value = run.summary.get("val_accuracy") if run.status == "completed" else None
        except TrainingError as e:
            run_name = e.run.name if e.run is not None else None
        if value is None or not math.isfinite(value):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, float(value))
        entry["trials"].append({"lr": lr, "value": value, "run": run_name})
        exp.write_tuning(key, entry)
    done = [t for t in entry["trials"] if t.get("value") is not None]
    if not done:
        raise TrainingError(f"every learning-rate trial of {label} at {size} examples failed; see the runs "
                            f"{[t['run'] for t in entry['trials']]}")
    entry["best"] = max(done, key=lambda t: t["value"])["lr"]
    exp.write_tuning(key, entry)
    return float(entry["best"])


def report_sections(exp: Experiment) -> list[tuple[str, Any]]:
    """The experiment's sections of an HTML report (:func:`tunekit.report.write_report`'s
    ``extra``): the learning curves, the cost plane, the grid's table with intervals, every
    paired difference, and what to choose per size, each table's text escaped."""
    import html

    from tunekit import plots
    table = exp.table()
    labels = exp.grid["strategies"]
    grid = table.assign(**{"95 % interval": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(table["low"], table["high"])]})
    grid = grid[["strategy", "size", "accuracy", "95 % interval", "seeds", "test examples", "seconds",
                 "memory_mb", "trainable", "lr"]]
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


__all__ = ["experiment", "Experiment", "list_experiments", "bootstrap_mean", "in_words", "BOOTSTRAP"]
