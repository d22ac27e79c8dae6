"""The two models every instrument compares: the run's starting point and its result.

The starting point is rebuilt, not kept in memory: the pretrained checkpoint
loaded again, plus the run's ``initial.safetensors`` for the tensors the
checkpoint does not hold (the new head). So a reloaded run (after a kernel
restart) gives exactly the same base as the live one.
"""
from __future__ import annotations

import os
import warnings
from typing import Iterable, Union

import torch

from tunekit.models import TextClassifier, canonical_name, load_model
from tunekit.runs import Run, load_run

RunLike = Union[Run, str]


def as_run(run: RunLike) -> Run:
    return run if isinstance(run, Run) else load_run(run)


def trained_runs(runs: Union[RunLike, Iterable[RunLike]]) -> list[Run]:
    """``runs`` (one run, a path or name, or an iterable of them) as a list of runs that took
    at least one training step. A run that never trained (e.g. one that failed before its
    first step) has nothing to inspect: it is left out with a warning, so that it does not
    pose as its own starting model. Raises ConfigError when no run is left."""
    from tunekit.config import ConfigError

    if isinstance(runs, (Run, str, os.PathLike)) or not isinstance(runs, Iterable):
        runs = [runs]
    runs = [as_run(r) for r in runs]
    if not runs:
        raise ConfigError("runs must hold at least one run (got none)")
    kept = []
    for r in runs:
        if (r.summary.get("steps") or 0) > 0:
            kept.append(r)
        else:
            warnings.warn(f"run {r.name!r} ({r.status}) took no training step; it is left out"
                          + (f": {r.summary['reason']}" if r.summary.get("reason") else ""), stacklevel=3)
    if not kept:
        raise ConfigError(f"none of the runs took a training step: {', '.join(r.name for r in runs)}")
    return kept


def initial_tensors(run: RunLike) -> dict[str, torch.Tensor]:
    """The tensors the checkpoint does not hold, at their values when ``run`` started
    (the new head), by canonical name. LoRA's own A/B start values are left out: the
    base has no adapters. Refuses a run that continued training an already-changed model."""
    run = as_run(run)
    if run.config.get("trained_before"):
        raise ValueError(f"run {run.name!r} continued training a model already changed by "
                         f"{run.config['trained_before']}; its start is not the pretrained checkpoint")
    return {canonical_name(n): v for n, v in run.initial_tensors().items() if "lora_" not in n}


def base_model(run: RunLike) -> TextClassifier:
    """The model as it was when ``run`` started (eval mode, on the CPU)."""
    run = as_run(run)
    start = initial_tensors(run)
    m = run.config["model"]
    model = load_model(run.model_source, label_names=m["label_names"], seed=run.seed,
                       pooling=run.summary.get("pooling") or m.get("pooling"))
    params = dict(model.hf.named_parameters())
    with torch.no_grad():
        for name, value in start.items():
            target = params.get(name)
            if target is not None and target.shape == value.shape:
                target.copy_(value)
    model.module.eval()
    return model


def tuned_model(run: RunLike) -> TextClassifier:
    """The trained model: the live one if this process trained it (switched to eval mode),
    else rebuilt from disk."""
    run = as_run(run)
    model = run.model if run.model is not None else run.load_model()
    model.module.eval()
    return model
