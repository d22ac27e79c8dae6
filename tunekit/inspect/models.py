"""The contract every instrument shares: a run's pair of models, (start, result), loaded once.

    pairs = load_pairs([probe, lora, full])      # runs, run directories, or pairs
    weight_change(pairs); representation_drift(pairs, data=data)   # each a function of pairs

A :class:`Pair`'s ``start`` is the model as the run found it: its parent record's
result, or the pretrained checkpoint, plus the record's ``initial.safetensors`` for
the tensors neither holds (a new head). It is rebuilt from disk, never kept from
training, so a run reloaded after a kernel restart has exactly the same start as the
live one. ``result`` is the live model when this process trained it, else the record's
weights loaded by their format. Pairs made together share the models they have in
common: runs that start from the same checkpoint and head share one start.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from typing import Iterable, Optional, Union

from tunekit.config import ConfigError
from tunekit.models import Model
from tunekit.runs import Run, load_run

RunLike = Union[Run, str, os.PathLike]


def as_run(run: RunLike) -> Run:
    return run if isinstance(run, Run) else load_run(run)


class Pair:
    """A run and the two models an instrument compares: ``start`` and ``result`` (both in eval
    mode; loaded on first use, once)."""

    def __init__(self, run: RunLike, starts: Optional[dict] = None, step: Optional[int] = None):
        self.run = as_run(run)
        self._starts = starts if starts is not None else {}
        self._result: Optional[Model] = None
        self.step = step
        """None: the run's end; else one of its ``snapshot_steps`` (the result is the model then)."""

    name = property(lambda self: self.run.name)
    label = property(lambda self: self.run.label)

    @functools.cached_property
    def start_key(self) -> tuple:
        """Runs with equal keys start from the same weights: the same parent (or checkpoint),
        the same structural steps replayed on it (a heads prune starts from a smaller model than
        a magnitude prune of the same parent) and the same starting values of the tensors it lacks."""
        return (self.run.model_source, (self.run.parent or {}).get("name"),
                json.dumps(self.run.structure, sort_keys=True), self.start_digest())

    def start_digest(self, skip_groups: Iterable[str] = ()) -> str:
        """A digest of the record's starting tensors, leaving out those of ``skip_groups``
        (e.g. the head, for instruments that read hidden states only)."""
        skip = set(skip_groups)
        digest = hashlib.sha256()
        tuned = self.result if skip else None
        for name, value in sorted(self.run.initial_tensors().items()):
            if tuned is not None and tuned.group_of(name) in skip:
                continue
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    @property
    def start(self) -> Model:
        key = self.start_key
        if key not in self._starts:
            self._starts[key] = self.run.load_start()
        return self._starts[key]

    @property
    def result(self) -> Model:
        if self._result is None:
            end = self.step is None or self.step == (self.run.snapshot_steps or [None])[-1]
            if end:
                model = self.run.model if self.run.model is not None else self.run.load_model()
            else:
                model = self.start if self.step == 0 else self.run.load_model(step=self.step)
            model.module.eval()
            self._result = model
        return self._result

    def __repr__(self) -> str:
        return f"Pair({self.run.name!r}, {self.run.label}{'' if self.step is None else f', step {self.step}'})"


def kept_points(pairs) -> bool:
    """True when some run of ``pairs`` kept points between its start and its end (``snapshots=k``):
    the views then draw every point, not only the end."""
    return any(len(p.run.snapshot_steps) > 2 for p in pairs)


def snapshot_pairs(run: Union[RunLike, Pair]) -> list[Pair]:
    """One pair per point of ``run`` kept with ``snapshots=k`` (its ``snapshot_steps``: the start,
    the points between, the end), all sharing the run's start; each pair's result is the model
    at its ``step``. A run trained without snapshots gives its end alone."""
    first = run if isinstance(run, Pair) else load_pairs(run)[0]
    steps = first.run.snapshot_steps
    if not steps:
        return [first]
    return [Pair(first.run, first._starts, step) for step in steps]


def _unusable(run: Run) -> Optional[str]:
    """Why an instrument cannot read ``run`` (None when it can): a training run that took no
    step changed nothing; a record without weights (saved with ``save_weights=False``, or a
    run that failed) has nothing to compare unless its model is in memory."""
    if run.kind == "train" and not (run.summary.get("steps") or 0) > 0:
        return "took no training step"
    if run.model is None and not run.has_weights:
        return "has no weights to compare"
    return None


def load_pairs(runs: Union[RunLike, Pair, Iterable[Union[RunLike, Pair]]]) -> list[Pair]:
    """``runs`` (one run, a path, a pair, or an iterable of them) as pairs, sharing starts.

    A record without weights (saved with ``save_weights=False``, or a run that failed or
    stopped before its first step) has nothing to compare: it is left out with a warning,
    so that it does not pose as its own starting model. Raises ConfigError when none is left."""
    if isinstance(runs, (Run, Pair, str, os.PathLike)) or not isinstance(runs, Iterable):
        runs = [runs]
    items = list(runs)
    if not items:
        raise ConfigError("runs must hold at least one run (got none)")
    starts: dict = {}
    for item in items:  # pairs given by the caller bring their loaded starts
        if isinstance(item, Pair):
            starts.update(item._starts)
    out, skipped = [], []
    for item in items:
        if isinstance(item, Pair):
            out.append(item)
            continue
        run = as_run(item)
        problem = _unusable(run)
        if problem is None:
            out.append(Pair(run, starts))
        else:
            skipped.append(run)
            why = run.summary.get("reason")
            warnings.warn(f"run {run.name!r} ({run.status}) {problem}; it is left out"
                          + (f": {why}" if why else ""), stacklevel=3)
    if not out:
        raise ConfigError(f"none of the runs took a training step and kept its weights: "
                          f"{', '.join(r.name for r in skipped)}")
    return out


def initial_tensors(run: RunLike) -> dict:
    """The tensors the run's parent (or the checkpoint) does not hold, at their starting values
    (canonical names)."""
    return as_run(run).initial_tensors()


def base_model(run: Union[RunLike, Pair]) -> Model:
    """The model as it was when ``run`` started (eval mode, on the CPU)."""
    return (run if isinstance(run, Pair) else Pair(run)).start


def tuned_model(run: Union[RunLike, Pair]) -> Model:
    """The trained model: the live one if this process trained it (switched to eval mode),
    else rebuilt from disk."""
    return (run if isinstance(run, Pair) else Pair(run)).result
