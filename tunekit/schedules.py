"""Learning-rate schedules: the one place that builds them, for training and for drawing.

The engine steps the scheduler :func:`scheduler` gives after every optimizer step; the lab and
:func:`tunekit.learning_rates` draw the rates *before* training by stepping the same scheduler on
a stand-in optimizer (:func:`rates_over_steps`), so the drawn schedule is the one that will run,
step by step. constant / linear / cosine are tunekit's own warm-up factor (:func:`lr_factor`);
one-cycle and ULMFiT's slanted triangular (a one-cycle with straight ramps, no final drop) are
torch's ``OneCycleLR``, its rise chosen so that the peak falls on a whole step (torch's own
``pct_start`` puts it between two steps for most lengths, and fails below four steps);
cosine-with-restarts and warm-up–stable–decay are transformers' schedules.
Every parameter group keeps its own peak (discriminative rates): each schedule scales it.
"""
from __future__ import annotations

import math

import torch

from tunekit.config import SCHEDULES, require

STLR_RATIO = 32
"""Slanted triangular: the peak over the lowest rate (ULMFiT's ``ratio``)."""
ONE_CYCLE_DIV, ONE_CYCLE_FINAL_DIV = 25.0, 1e4
"""One-cycle: the peak over the start, and the start over the end (torch's defaults)."""


def lr_factor(step: int, total: int, warmup: float, schedule: str) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based) of ``total``, for the
    constant, linear and cosine schedules after a linear warm-up."""
    warm = int(round(warmup * total))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0


def peak_step(total: int, rise: float) -> int:
    """The step a rise-then-fall schedule peaks at: ``floor(rise * total)`` (ULMFiT's cut), at
    least one step in and one before the end."""
    return min(max(1, int(math.floor(rise * total))), total - 2)


def scheduler(optimizer: torch.optim.Optimizer, schedule: str, steps: int, warmup: float = 0.1,
              cycles: int = 3, cooldown: float = 0.2):
    """The scheduler of ``schedule`` over ``steps`` optimizer steps for ``optimizer``, whose
    groups' ``lr`` are their peaks (see :class:`~tunekit.config.TrainConfig` for each schedule).
    Step it after every optimizer step."""
    require(schedule in SCHEDULES, "schedule", f"one of {SCHEDULES}", schedule)
    steps = max(1, int(steps))
    warm = int(round(warmup * steps))
    if schedule in ("constant", "linear", "cosine"):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warmup, schedule))
    if schedule in ("slanted_triangular", "one_cycle"):
        if steps < 3:  # a rise and a fall need three steps at least: shorter runs take the peak
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
        # torch's phase ends at pct_start * total - 1: the peak at step ``peak_step``, exactly
        pct = (peak_step(steps, warmup) + 1) / steps
        peaks = [g["lr"] for g in optimizer.param_groups]
        if schedule == "slanted_triangular":  # ULMFiT eq. 3: peak/32 up to the peak, straight down to peak/32
            return torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=peaks, total_steps=steps, pct_start=pct, anneal_strategy="linear",
                cycle_momentum=False, div_factor=STLR_RATIO, final_div_factor=1.0)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=peaks, total_steps=steps, pct_start=pct, anneal_strategy="cos",
            cycle_momentum=False, div_factor=ONE_CYCLE_DIV, final_div_factor=ONE_CYCLE_FINAL_DIV)
    from transformers import optimization  # lazy: transformers takes seconds to import
    if schedule == "cosine_restarts":
        return optimization.get_cosine_with_hard_restarts_schedule_with_warmup(
            optimizer, num_warmup_steps=warm, num_training_steps=steps, num_cycles=cycles)
    decay = max(1, int(round(cooldown * steps)))
    return optimization.get_wsd_schedule(optimizer, num_warmup_steps=warm, num_decay_steps=decay,
                                         num_stable_steps=max(0, steps - warm - decay))


def rates_over_steps(peaks: dict, schedule: str, steps: int, warmup: float = 0.1, cycles: int = 3,
                     cooldown: float = 0.2) -> dict:
    """``{name: [rate at step 0, 1, ...]}``: the rate each optimizer step takes, for parameter
    groups whose peaks are ``peaks`` (``{name: peak}``), from the scheduler training uses,
    stepped on a stand-in optimizer (no model needed)."""
    names = list(peaks)
    stand_in = [torch.nn.Parameter(torch.zeros(1)) for _ in names]
    opt = torch.optim.SGD([{"params": [p], "lr": float(peaks[n])} for n, p in zip(names, stand_in)],
                          lr=float(next(iter(peaks.values()), 1.0)))
    sched = scheduler(opt, schedule, steps, warmup, cycles, cooldown)
    out = {n: [] for n in names}
    for _ in range(max(1, int(steps))):
        for n, g in zip(names, opt.param_groups):
            out[n].append(g["lr"])
        opt.step()
        sched.step()
    return out
