"""Learning rates you can see: the rate of every layer group at every step, planned and logged.

:func:`learning_rates` (``tk.learning_rates``) gives the rates a run *will* take, from the model,
the strategy and the config, before anything trains (the lab draws it as the settings change):
the same layer groups
(:func:`tunekit.rates.group_rates`) and the same scheduler (:func:`tunekit.schedules.scheduler`)
the engine uses. :meth:`tunekit.runs.Run.learning_rates` reads what the optimizer took from a
run's record. Both are one
row per (step, layer group), so the two can be compared step by step, and
:func:`tunekit.plots.learning_rates` draws them above the loss on a shared step axis.
"""
from __future__ import annotations

import copy
from typing import Any, Optional

import pandas as pd
import torch

from tunekit import adapters
from tunekit.config import ConfigError, TrainConfig, positive_int
from tunekit.models import Model
from tunekit.rates import group_rates
from tunekit.runs import LR_COLUMNS
from tunekit.schedules import rates_over_steps
from tunekit.strategies import get_strategy
from tunekit.strategies.base import phase_steps

COLUMNS = LR_COLUMNS


def trained_groups(model: Model, plan) -> list[str]:
    """The layer groups a :class:`~tunekit.models.Plan` trains on ``model``, in the model's
    order (virtual tokens, ``prompt``, first), without changing ``model``: an adapter's from a
    skeleton of the wrapped model on the meta device, as :func:`tunekit.adapters.count` counts."""
    if plan.adapter is None:
        groups = [g for g in plan.train if g in model.active_groups]
    else:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            skeleton = adapters.wrap(type(model.hf)(copy.deepcopy(model.hf.config)), copy.deepcopy(plan.adapter))
        groups = set()
        for name, p in skeleton.named_parameters():
            if p.requires_grad:
                groups.add("prompt" if "prompt_encoder" in name else
                           model.group_of(name.removeprefix("base_model.model.")))
    order = ["prompt"] + list(model.group_names)
    return sorted(set(groups), key=lambda g: order.index(g) if g in order else len(order))


def learning_rates(model: Model, strategy: Any = None, data: Any = None, config: Optional[TrainConfig] = None, *,
            steps: Optional[int] = None, **overrides) -> pd.DataFrame:
    """The learning rate every layer group will take at every optimizer step of training
    ``model`` with ``strategy`` (default full fine-tuning, as :func:`tunekit.train`) and
    ``config`` (keywords set its fields, as :func:`tunekit.train` takes them): one row per
    (step, phase, group, lr), steps counted from 1 as the record's ``step`` events count them.
    The number of steps comes from ``data`` (its training split, or ``train_size`` of it, in
    batches of ``batch_size``, times the epochs) or is given as ``steps`` (per epoch).
    ``model`` is not changed."""
    config = (config or TrainConfig()).replace(**overrides) if overrides else (config or TrainConfig())
    strategy = get_strategy(strategy if strategy is not None else "full")
    if steps is None:
        if data is None:
            raise ConfigError("learning_rates needs data (its training split sets the steps) or steps=<steps per "
                              "epoch>")
        from tunekit.data import load as load_data
        n = len(load_data(data).train)
        n = min(n, config.train_size) if config.train_size else n
        steps = -(-n // config.batch_size)
    positive_int("steps", steps)
    rows, start = [], 0
    phases = strategy.phases_for(model, steps, config.epochs)
    for index, (phase, n) in enumerate(zip(phases, phase_steps(phases, steps, config.epochs))):
        plan = phase.strategy.plan(model)
        groups = trained_groups(model, plan)
        base = phase.lr if phase.lr is not None else config.lr
        decay = config.lr_decay if phase.lr_decay is None else phase.lr_decay
        peaks = group_rates(model, groups, base, phase.strategy.default_lr, decay)
        rates = rates_over_steps(peaks, config.schedule, n, config.warmup, config.cycles, config.cooldown)
        for group, values in rates.items():
            rows += [(start + i + 1, index, group, v) for i, v in enumerate(values)]
        start += n
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["step", "phase"], kind="stable", ignore_index=True)
