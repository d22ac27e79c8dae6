"""``tk.experiment``: check the grid, tune the learning rates, fill the queue, train cells from it."""
from __future__ import annotations

import math
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from tunekit.cache import cached_logits
from tunekit.config import DEFAULT_RUNS_DIR, ConfigError, TrainConfig, TrainingError, positive_int
from tunekit.data import load as load_data
from tunekit.distributed import World
from tunekit.distributed import world as current_world
from tunekit.engine import StopTraining, Trainer
from tunekit.experiments.queue import Queue
from tunekit.experiments.record import FORMAT, RECORD, Experiment, cell_key, split_key
from tunekit.models import load_for
from tunekit.sharing import SharedInputs
from tunekit.strategies import get_strategies
from tunekit.writer import sanitize_name, write_json


def experiment(strategies: Sequence[Any], data: Any = "rotten_tomatoes", *, sizes: Sequence[int],
               seeds: int = 3, model: str = "minilm", name: str = "experiment",
               runs_dir: str = DEFAULT_RUNS_DIR, lr: Optional[float | dict] = None,
               test_size: Optional[int] = None, tune_trials: int = 4, progress: bool = True,
               storage: Optional[str] = None, worker: bool = False, work: bool = True, heartbeat: int = 30,
               stop: Optional[threading.Event] = None, callback: Optional[Callable[[dict], Any]] = None,
               share: bool = True, **overrides) -> Experiment:
    """Train every (strategy, size, seed) cell not yet done, and return the :class:`Experiment`.

    Launched by ``torchrun`` or ``accelerate launch`` (say, one worker of several GPUs), every cell
    and learning-rate trial is one run of all the launched processes: the main process pulls it
    from the queue, tells the others, and writes every record; the call returns on each process.

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
        stop: a ``threading.Event``; once set (from any thread: the lab's Stop), the cell or
            learning-rate trial in training ends at its next step, its partial run is kept
            (stopped), no further cell starts, and the call returns. Every finished cell is kept;
            the same call again resumes the rest.
        callback: called with a dict per event, from the training thread, for a live view:
            ``{"event": "tuning", "strategy", "size", "trial", "trials"}`` before each learning-rate
            trial, ``{"event": "cell_start", "key", "strategy", "size", "seed"}``, ``{"event":
            "step", "key", "step", "total"}`` per optimizer step, and ``{"event": "cell_end",
            "key", "cell"}``; each also has ``"path"``, the experiment's folder. A callback that
            raises is reported as a warning, never fails a cell.
        share: the cells (and learning-rate trials) this call trains share one
            :class:`~tunekit.sharing.SharedInputs` memo: each example is tokenised once, a probe's
            features and a Freeze run's frozen prefixes are computed once per example, and probe
            and Freeze cells are scored on the test split from them (the head on the shared
            features, the trained top blocks on the shared prefix) instead of a whole forward
            pass each. False computes everything per cell (the benchmark's reference); the
            results differ only by float rounding. Not part of the grid: a resume may change it.
        **overrides: other :class:`~tunekit.config.TrainConfig` fields for every cell (epochs,
            batch_size, eval_size, ...).
    """
    data = load_data(data)
    if not strategies:
        raise ConfigError("experiment needs at least one strategy (e.g. [tk.Probe(), tk.LoRA(rank=8), tk.Full()])")
    strategies = get_strategies(strategies)
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
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise ConfigError(f"stop must be a threading.Event (got {type(stop).__name__})")
    if callback is not None and not callable(callback):
        raise ConfigError(f"callback must be a function of one dict (got {callback!r})")
    hooks = _Hooks(stop, callback)
    rates = _rates(lr, labels)
    tune = rates.pop("tune", False)
    positive_int("tune_trials", tune_trials)
    checked = TrainConfig(**overrides)  # every override checked before anything trains
    shared = SharedInputs(checked.cache_budget_mb) if share else None  # one memo for every cell of this call

    folder = Path(runs_dir).expanduser() / sanitize_name(name)
    grid = {"strategies": labels, "specs": [s.describe() for s in strategies],
            "sizes": sizes, "seeds": int(seeds), "data": data.name, "model": str(model),
            "test_size": test_size, "lr": "tune" if tune else rates,
            "tune_trials": int(tune_trials) if tune else None,
            "overrides": {k: overrides[k] for k in sorted(overrides)}}
    world = current_world(overrides.get("device"))
    hooks.world = world
    test = data.test
    if test_size is not None and test_size < len(test):
        test = test.sample(n=test_size, random_state=0).sort_index()
    if not world.main:  # launched by torchrun / accelerate: train the cells the main process says, with it
        refused = world.share(None)
        if refused:
            raise ConfigError(refused)
        exp = Experiment.load(folder)
        _follow(world, exp, dict(zip(labels, strategies)), data, test, model, overrides, shared)
        return exp
    try:
        exp = _open(folder, name, grid)
    except ConfigError as e:
        world.share(str(e))
        raise
    world.share("")
    hooks.path = str(exp.path)
    try:
        return _lead(exp, strategies, labels, sizes, seeds, data, test, model, overrides, rates, tune, tune_trials,
                     storage, worker, work, heartbeat, progress, hooks, shared)
    finally:
        world.share(None)  # the other processes (if any) stop following


def _lead(exp: Experiment, strategies: list, labels: list[str], sizes: list[int], seeds: int, data, test,
          model: str, overrides: dict, rates: dict, tune: bool, tune_trials: int, storage: Optional[str],
          worker: bool, work: bool, heartbeat: int, progress: bool, hooks: "_Hooks",
          shared: Optional[SharedInputs]) -> Experiment:
    """The experiment's work in its main process: the searches, the queue, the cells."""
    name = exp.name

    if len(exp.done()) < len(labels) * len(sizes) * seeds:  # every strategy checked on the model before any trains
        m = load_for(model, data, "classification", 0)
        for strategy in strategies:
            for phase in strategy.phases():
                phase.strategy.plan(m)
    total = len(labels) * len(sizes) * seeds
    positive_int("heartbeat", heartbeat)
    queue = Queue(exp, storage, heartbeat)
    queue.sync()  # what workers on other machines finished (and tuned) is in the storage
    if tune and not worker:  # the searches first, in this process: every seed's cell needs their result
        for strategy, label in zip(strategies, labels):
            for size in sizes:
                if hooks.stopped():
                    return exp
                if any(exp.cells.get(cell_key(label, size, sd), {}).get("status") != "completed"
                       for sd in range(seeds)):
                    _tuned_lr(exp, strategy, label, size, data, model, tune_trials, overrides, hooks, shared)
        queue.publish_tuning()
    if not worker:
        queue.fill([cell_key(label, size, seed) for seed in range(seeds) for size in sizes for label in labels])
    if work:
        by_label = dict(zip(labels, strategies))
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, initial=len(exp.done()), desc=name, unit="cell")
        try:
            for key in queue.cells(hooks.stopped):
                label, size, seed = split_key(key)
                if bar is not None:
                    bar.set_postfix_str(f"{label}, {size:,} examples, seed {seed}")
                rate = _tuned_rate(exp, queue, label, size) if tune else rates.get(label)
                hooks.emit({"event": "cell_start", "key": key, "strategy": label, "size": size, "seed": seed})
                hooks.world.share(("cell", key, rate))
                with queue.heartbeat():
                    cell = _train_cell(exp, by_label[label], label, size, seed, data, test, model, rate, overrides,
                                       hooks.for_cell(key), shared)
                exp.write_cell(key, cell)
                queue.done(cell)
                hooks.emit({"event": "cell_end", "key": key, "cell": cell})
                if bar is not None:
                    bar.n = len(exp.done())
                    bar.refresh()
                if cell["status"] != "completed" and not hooks.stopped():
                    warnings.warn(f"cell {label}, {size} examples, seed {seed} {cell['status']}: "
                                  f"{cell.get('reason')}", stacklevel=2)
        finally:
            if bar is not None:
                bar.close()
    queue.sync()
    done = len(exp.done())
    if work and done < total and not hooks.stopped():
        warnings.warn(f"experiment {name!r}: {done} of {total} cells finished; call it again to retry the others",
                      stacklevel=2)
    return exp


def _tuned_rate(exp: Experiment, queue: Queue, label: str, size: int) -> float:
    """The tuned learning rate of ``label`` at ``size``, from the record or the queue's storage."""
    rate = exp.tuning.get(f"{label}|{size}", {}).get("best")
    if rate is None:
        queue.sync()
        rate = exp.tuning.get(f"{label}|{size}", {}).get("best")
    if rate is None:
        raise ConfigError(f"no tuned learning rate for {label} at {size} examples in {exp.path} or its queue: "
                          "call the experiment once without worker=True (--worker) to run the searches first")
    return float(rate)


def _name_experiment(trainer, exp: Experiment, **which) -> None:
    """The run's record names the experiment and the cell (or learning-rate search) it is."""
    trainer.add_callback("train_start", lambda ev: ev.trainer.writer.update(
        experiment={"name": exp.name, "path": str(exp.path), **which}))


class _Hooks:
    """The caller's stop event and callback, as the runner uses them: ``watch`` a trainer (a step
    checks the event and reports progress), ``emit`` an event (a failing callback warns)."""

    def __init__(self, stop: Optional[threading.Event] = None, callback: Optional[Callable[[dict], Any]] = None,
                 key: Optional[str] = None):
        self.stop, self.callback, self.key = stop, callback, key
        self.path: Optional[str] = None  # the experiment's folder, in every event (set once it is open)
        self.world = World()  # the processes a launcher started for each run (one, without a launcher)

    def stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def for_cell(self, key: str) -> "_Hooks":
        hooks = _Hooks(self.stop, self.callback, key)
        hooks.path, hooks.world = self.path, self.world
        return hooks

    def emit(self, event: dict) -> None:
        if self.callback is None:
            return
        try:
            self.callback({**event, "path": self.path})
        except Exception as e:  # noqa: BLE001 - a live view must never fail a cell
            warnings.warn(f"the experiment's callback failed on {event.get('event')!r}: {type(e).__name__}: {e}",
                          stacklevel=2)

    def watch(self, trainer) -> None:
        total = {}

        def start(ev):
            total["steps"] = ev.payload["total_steps"]

        def step(ev):
            if self.stopped():
                raise StopTraining()
            if self.key is not None:
                self.emit({"event": "step", "key": self.key, "step": ev.payload["step"],
                           "total": total.get("steps")})
        trainer.add_callback("train_start", start)
        trainer.add_callback("step", step)


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


def _trial_config(exp: Experiment, label: str, size: int, k: int, lr: float, overrides: dict) -> TrainConfig:
    """The ``k``-th learning-rate trial of ``label`` at ``size``: seed 0's subset at rate ``lr``."""
    return TrainConfig(**{"progress": False, **overrides}).replace(
        seed=0, train_size=size, lr=lr, runs_dir=str(exp.path.parent),
        name=sanitize_name(f"{exp.name}-tune-{label}-n{size}-t{k}"))


def _follow(world, exp: Experiment, by_label: dict, data, test: pd.DataFrame, model: str, overrides: dict,
            shared: Optional[SharedInputs]) -> None:
    """A process other than the main one of a ``torchrun`` / ``accelerate launch`` group: train each
    cell and learning-rate trial the main process announces, as one of the run's processes (the
    main process pulls them from the queue and writes every record), until it says none is left."""
    while (job := world.share(None)) is not None:
        if job[0] == "cell":
            _, key, rate = job
            label, size, seed = split_key(key)
            _train_cell(exp, by_label[label], label, size, seed, data, test, model, rate, overrides, shared=shared,
                        follower=True)
        else:
            _, label, size, k, lr = job
            try:
                Trainer(load_for(model, data, "classification", 0), data, by_label[label],
                        _trial_config(exp, label, size, k, lr, overrides), shared=shared).run()
            except TrainingError:
                pass  # the main process records how the trial ended


def _train_cell(exp: Experiment, strategy, label: str, size: int, seed: int, data, test: pd.DataFrame,
                model: str, lr: Optional[float], overrides: dict, hooks: Optional["_Hooks"] = None,
                shared: Optional[SharedInputs] = None, follower: bool = False) -> dict:
    """Train one cell (a fresh model, the first ``size`` examples of the seed's permutation) and
    score it on the test examples; the cell's entry for the experiment's record. ``shared``: the
    experiment's memo (a probe or Freeze cell is then scored from shared test features or prefixes).
    ``follower``: this process trains beside the main one of a launched group, which records and
    scores the cell; nothing is read back."""
    run_name = sanitize_name(f"{exp.name}-{label}-n{size}-s{seed}")
    cfg = TrainConfig(**{"progress": False, **overrides}).replace(
        seed=seed, train_size=size, runs_dir=str(exp.path.parent), name=run_name,
        **({"lr": lr} if lr is not None else {}))
    cell = {"strategy": label, "size": size, "seed": seed, "run": None, "status": "failed"}
    try:
        m = load_for(model, data, "classification", seed)
        trainer = Trainer(m, data, strategy, cfg, shared=shared)
        _name_experiment(trainer, exp, cell=cell_key(label, size, seed))
        if hooks is not None:
            hooks.watch(trainer)
        run = trainer.run()
    except TrainingError as e:
        cell.update(reason=str(e), run=e.run.name if e.run is not None else None)
        return cell
    if follower:
        return cell
    s = run.summary
    cell.update(run=run.name, status=run.status, reason=s.get("reason"), wall_time_s=s.get("wall_time_s"),
                peak_memory_mb=s.get("peak_memory_mb"), trainable=(run.config.get("params") or {}).get("trainable"),
                lr=(run.config.get("train") or {}).get("lr") or getattr(strategy, "default_lr", None))
    if run.status == "completed":
        cached = (s.get("cache") or [{}])[-1] or {}  # what its last phase trained on: features, a prefix, tokens
        cell["correct"] = _test_correct(m, test, cfg.eval_batch_size, cfg.max_length,
                                        shared if cached.get("kind") else None, cached)
        cell["test_accuracy"] = float(np.mean(cell["correct"]))
    return cell


def _tuned_lr(exp: Experiment, strategy, label: str, size: int, data, model: str, trials: int,
              overrides: dict, hooks: Optional["_Hooks"] = None,
              shared: Optional[SharedInputs] = None) -> Optional[float]:
    """The learning rate for ``label`` at ``size``: the best of ``trials`` runs on seed 0's subset by
    validation accuracy, Optuna's TPE sampler (seeded) choosing each rate on a log scale from a
    tenth to ten times the strategy's default. Trials already in the record are given to the
    sampler again (a resumed search goes on where it stopped); each new one is written to the
    record as soon as it ends. ``shared``: the experiment's memo, given to every trial."""
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
        cfg = _trial_config(exp, label, size, k, lr, overrides)
        value, run_name = None, None
        hooks = hooks or _Hooks()
        hooks.emit({"event": "tuning", "strategy": label, "size": size, "trial": k + 1, "trials": trials})
        hooks.world.share(("trial", label, size, k, lr))
        try:
            trainer = Trainer(load_for(model, data, "classification", 0), data, strategy, cfg, shared=shared)
            _name_experiment(trainer, exp, trial=key)
            hooks.watch(trainer)
            run = trainer.run()
            run_name = run.name
            value = run.summary.get("val_accuracy") if run.status == "completed" else None
        except TrainingError as e:
            run_name = e.run.name if e.run is not None else None
        if hooks.stopped():
            return None
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


@torch.no_grad()
def _test_correct(model, test: pd.DataFrame, batch_size: int, max_length: int,
                  shared: Optional[SharedInputs] = None, cached: Optional[dict] = None) -> list[int]:
    """1 where ``model`` predicts the test example's label, else 0 (in the test split's order).
    ``shared`` (a cell whose last phase trained on cached ``features`` or a ``prefix``: its run's
    ``cache`` entry ``cached``): the head on the test features, or the blocks above the prefix on
    the test prefix, which the memo holds after the first cell of the kind (fp32, as
    ``predict_proba``)."""
    if shared is None or not cached or not cached.get("kind"):
        probs = model.predict_proba(list(test["text"]), max_length=max_length, batch_size=batch_size)
    else:
        split = shared.encode(model, test, "test", None, max_length)
        probs = cached_logits(model, split, batch_size, cached["kind"], cached.get("blocks", 0), shared).softmax(-1)
    return (probs.argmax(-1).cpu().numpy() == test["label"].to_numpy()).astype(int).tolist()
