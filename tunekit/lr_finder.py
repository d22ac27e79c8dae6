"""A learning-rate finder (Smith 2015, "Cyclical learning rates", section 3.3; fastai's ``lr_find``).

A short sweep on a copy of the model: the rate grows exponentially from ``start`` to ``end``,
one optimizer step per rate, until the loss runs away; the smoothed loss against the rate (on a
log axis) shows where training starts to learn and where it blows up. The suggestion is a rate
on the falling part of that curve, and the result says which rule gave it:

- ``valley``: the middle of the longest stretch over which the smoothed loss keeps falling;
- ``steepest``: where the smoothed loss falls fastest per decade of rate (before its lowest);
- ``minimum/10``: a tenth of the rate at the lowest smoothed loss.

The model is not changed (the sweep trains a deep copy); each strategy gets its own sweep, with
the strategy's layer groups at the ratios the config gives them (``lr_decay``, a rate per group).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from tunekit import cache as prefix
from tunekit.batches import loader, to_device
from tunekit.config import ConfigError, TrainConfig, finite_number, require
from tunekit.engine import Trainer
from tunekit.models import Model
from tunekit.rates import group_rates
from tunekit.runtime import adamw, choose_precision, pick_device
from tunekit.strategies import get_strategy

RULES = ("valley", "steepest", "minimum/10")


@dataclass
class LRFind:
    """What a sweep measured, and the rate it suggests (``suggestion``, by ``rule``)."""

    strategy: str
    """The label of the strategy swept."""
    lrs: list = field(default_factory=list)
    """The peak rate of each step (the top layer group's; the others at their ratios)."""
    losses: list = field(default_factory=list)
    """The training loss of each step."""
    smoothed: list = field(default_factory=list)
    """The losses smoothed (an exponential moving average, bias-corrected)."""
    suggestions: dict = field(default_factory=dict)
    """``{rule: rate}`` for every rule of :data:`RULES` that found one."""
    rule: str = "valley"
    """The rule whose rate is :attr:`suggestion`."""
    stopped: str = ""
    """Why the sweep ended, in words."""
    ratios: dict = field(default_factory=dict)
    """``{layer group: its rate / the peak}``: 1 for all with one rate."""

    @property
    def suggestion(self) -> Optional[float]:
        return self.suggestions.get(self.rule)

    def table(self) -> pd.DataFrame:
        """One row per step: its rate, loss and smoothed loss."""
        return pd.DataFrame({"lr": self.lrs, "loss": self.losses, "smoothed": self.smoothed})

    def plot(self):
        """:func:`tunekit.plots.lr_find` of this sweep."""
        from tunekit.plots.rates import lr_find
        return lr_find(self)

    def __repr__(self) -> str:
        said = ", ".join(f"{k} {v:.2e}" for k, v in self.suggestions.items())
        return f"LRFind({self.strategy}: {len(self.lrs)} steps; suggests {said or 'nothing'}; {self.stopped})"


# ----- the rules ------------------------------------------------------------------------------------
def longest_fall(values) -> list[int]:
    """The indices of the longest strictly falling subsequence of ``values`` (the earliest such
    where several are as long)."""
    n = len(values)
    length, before = [1] * n, [-1] * n
    for i in range(n):
        for j in range(i):
            if values[j] > values[i] and length[j] + 1 > length[i]:
                length[i], before[i] = length[j] + 1, j
    if not n:
        return []
    i = max(range(n), key=lambda k: (length[k], -k))
    chain = []
    while i >= 0:
        chain.append(i)
        i = before[i]
    return chain[::-1]


def suggest(lrs, smoothed) -> dict:
    """``{rule: rate}`` from a sweep's rates and smoothed losses (see the module's docstring)."""
    lrs, smoothed = np.asarray(lrs, float), np.asarray(smoothed, float)
    if len(lrs) < 3:
        return {}
    out = {}
    chain = longest_fall(smoothed.tolist())
    if len(chain) >= 2:
        out["valley"] = float(lrs[(chain[0] + chain[-1]) // 2])
    low = int(np.argmin(smoothed))
    if low >= 2:
        slope = np.gradient(smoothed[:low + 1], np.log10(lrs[:low + 1]))
        out["steepest"] = float(lrs[int(np.argmin(slope))])
    out["minimum/10"] = float(lrs[low] / 10)
    return out


# ----- the sweep ------------------------------------------------------------------------------------
def lr_find(model: Model, data: Any, strategy: Any = None, config: Optional[TrainConfig] = None, *,
            start: float = 1e-7, end: float = 10.0, steps: int = 100, smooth: float = 0.98, diverge: float = 4.0,
            rule: str = "valley", **overrides) -> LRFind:
    """Sweep the learning rate for ``strategy`` (default full fine-tuning) on a copy of ``model``:
    ``steps`` optimizer steps on ``data``'s training batches, the rate growing exponentially from
    ``start`` to ``end``, stopping once the smoothed loss is ``diverge`` times its lowest or not
    finite. Keywords set :class:`TrainConfig` fields (``batch_size``, ``max_length``,
    ``train_size``, ``lr_decay``, ``seed``, ``device`` ...). A strategy of several phases (LP-FT)
    is swept for its last. Returns an :class:`LRFind`; ``model`` is not changed."""
    require(finite_number(start) and start > 0, "start", "a positive number", start)
    require(finite_number(end) and end > start, "end", f"a number greater than start={start:g} (the sweep goes "
                                                      f"up; an empty or reversed range sweeps nothing)", end)
    require(isinstance(steps, int) and not isinstance(steps, bool) and 5 <= steps <= 10_000, "steps",
            "an integer in 5 .. 10000", steps)
    require(finite_number(smooth) and 0 <= smooth < 1, "smooth", "in [0, 1)", smooth)
    require(finite_number(diverge) and diverge > 1, "diverge", "a number > 1", diverge)
    require(rule in RULES, "rule", f"one of {RULES}", rule)
    if not isinstance(model, Model):
        raise ConfigError(f"model must be a model from tk.load_model() (got {type(model).__name__})")
    phase = get_strategy(strategy if strategy is not None else "full").phases()[-1]
    work = copy.deepcopy(model)
    prep = Trainer(work, data, phase.strategy, config, **{"progress": False, **overrides})
    cfg = prep.config = prep.config.replace(max_length=work.fit_length(prep.config.max_length))
    strat = phase.strategy
    plan = strat.scheduled(work, strat.plan(work), steps)
    train, validation = prep._examples()
    device = pick_device(cfg.device)
    amp, _ = choose_precision(device, cfg.precision)
    torch.manual_seed(cfg.seed)
    work.adapt(plan)
    work.module.to(device)
    inputs = prefix.inputs_for(work, plan, train, validation, cfg.eval_batch_size, cfg.cache_budget_mb, amp)
    module = inputs.module(work)
    groups = strat.param_groups(work, start, cfg.weight_decay)
    peaks = group_rates(work, [g["group"] for g in groups], phase.lr if phase.lr is not None else cfg.lr,
                        strat.default_lr, cfg.lr_decay if phase.lr_decay is None else phase.lr_decay)
    top = max(peaks.values())
    ratios = {g: r / top for g, r in peaks.items()}
    opt = adamw(groups, start, device)
    trainable = [p for g in groups for p in g["params"]]
    module.train()
    prefix.frozen_prefix_eval(work, inputs.frozen)
    batches = loader(inputs.train, cfg.batch_size, shuffle=True, group_by_length=cfg.group_by_length, seed=cfg.seed)
    found = LRFind(strategy=phase.strategy.label, rule=rule, ratios=ratios)
    stream, mean, best = iter(batches), 0.0, math.inf
    found.stopped = f"swept {steps} steps from {start:g} to {end:g} without the loss running away"
    for i in range(steps):
        lr = start * (end / start) ** (i / (steps - 1))
        for g in opt.param_groups:
            g["lr"] = lr * ratios[g["group"]]
        try:
            batch = next(stream)
        except StopIteration:  # fewer batches than steps: another pass
            stream = iter(batches)
            batch = next(stream)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = module(to_device(batch, device)).loss
        (loss if plan.penalty is None else loss + plan.penalty(work)).backward()
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            found.stopped = f"the loss became {value} at rate {lr:.2e} (step {i + 1})"
            break
        mean = smooth * mean + (1 - smooth) * value
        smoothed = mean / (1 - smooth ** (i + 1))
        found.lrs.append(lr)
        found.losses.append(value)
        found.smoothed.append(smoothed)
        best = min(best, smoothed)
        if smoothed > diverge * best:
            found.stopped = (f"the smoothed loss passed {diverge:g} x its lowest at rate {lr:.2e} (step {i + 1} "
                             f"of {steps})")
            break
    found.suggestions = suggest(found.lrs, found.smoothed)
    del work, opt
    return found
