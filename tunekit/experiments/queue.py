"""The cells of an experiment as an Optuna study that any number of workers pull from."""
from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import warnings
from typing import Optional

from tunekit.config import ConfigError
from tunekit.experiments.record import Experiment

GRACE = 10
"""A cell goes back to the queue after this many heartbeat intervals without a heartbeat: short
grace periods (three) re-queued live cells on a loaded 2-core machine, whose heartbeats were late,
and the cell trained twice."""


class Queue:
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
            with quiet():
                self.storage = optuna.storages.RDBStorage(
                    url, heartbeat_interval=self.interval, grace_period=GRACE * self.interval,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
                name = f"tunekit-experiment:{exp.name}"
                new = name not in optuna.study.get_all_study_names(self.storage)
                self.study = optuna.create_study(study_name=name, storage=self.storage,
                                                 direction="maximize", load_if_exists=True)
        except Exception as e:  # noqa: BLE001 - any storage failure, said with the URL
            raise ConfigError(f"storage {url!r} cannot be opened as an Optuna storage: {type(e).__name__}: {e}") from e
        self.trial = None
        if new:  # claims name a storage's trial ids: those of a queue that is gone would refuse new trials
            shutil.rmtree(exp.path / "claims", ignore_errors=True)

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

    def cells(self, stopped=lambda: False):
        """The keys of the cells this worker trains, one at a time, until none is queued or in
        training (a cell in training elsewhere may come back if its worker dies), or until
        ``stopped()``."""
        State = self.optuna.trial.TrialState
        while not stopped():
            with quiet():
                self.optuna.storages.fail_stale_trials(self.study)
            waiting, running = self._keys(State.WAITING), self._keys(State.RUNNING)
            if not waiting:
                if not running:
                    return
                deadline = time.monotonic() + self.interval
                while time.monotonic() < deadline and not stopped():
                    time.sleep(0.2)
                continue
            with quiet():
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
        the record: seen with two workers on one SQLite file, both got the first trial). A new
        queue (its storage deleted, or another storage) starts with no claims."""
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

    def sync(self) -> None:
        """Copy into the record what the storage holds and the record lacks: the cells finished by
        workers elsewhere (a worker on another machine writes its cells to its own disk; each
        finished trial carries its cell) and the tuned learning rates (study attributes)."""
        State = self.optuna.trial.TrialState
        cells = self.exp.cells
        for t in self.study.get_trials(deepcopy=False, states=(State.COMPLETE,)):
            cell, key = t.user_attrs.get("cell"), t.user_attrs.get("key")
            if isinstance(cell, dict) and key and cells.get(key, {}).get("status") != "completed":
                self.exp.write_cell(key, cell)
                cells[key] = cell
        tuning = self.exp.tuning
        for name, entry in self.study.user_attrs.items():
            key = name.removeprefix("tuning:")
            if name.startswith("tuning:") and isinstance(entry, dict) and "best" not in tuning.get(key, {}):
                self.exp.write_tuning(key, entry)

    def publish_tuning(self) -> None:
        """Put the record's finished learning-rate searches in the storage, for workers elsewhere."""
        known = self.study.user_attrs
        for key, entry in self.exp.tuning.items():
            if "best" in entry and known.get(f"tuning:{key}") != entry:
                self.study.set_user_attr(f"tuning:{key}", entry)

    def done(self, cell: dict) -> None:
        """Tell the queue how the cell ended. A trial already failed by another worker (this one's
        heartbeat was taken for dead) keeps that state; the cell's file holds the result."""
        State = self.optuna.trial.TrialState
        try:
            if cell["status"] == "completed":
                self.trial.set_user_attr("cell", cell)  # for the records of workers on other machines
                self.study.tell(self.trial, cell["test_accuracy"])
            else:
                self.study.tell(self.trial, state=State.FAIL)
        except (self.optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError) as e:
            warnings.warn(f"cell {cell.get('strategy')}, {cell.get('size')} examples, seed {cell.get('seed')}: "
                          f"the queue had given it up ({e}); its result is kept", stacklevel=2)
        self.trial = None


@contextlib.contextmanager
def quiet():
    """Without Optuna's notes that its heartbeat helpers are experimental and meant for
    ``Study.optimize`` (this queue records the heartbeat itself, as ``optimize`` does)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Hh]eartbeat.*")
        warnings.filterwarnings("ignore", message=".*is experimental.*")
        yield
