"""What one training run holds while it trains, as named state (minGPT's trainer keeps
``iter_num``, ``iter_time`` ... as attributes; tunekit's keeps these):

* :class:`Progress`: how far the run has come (``trainer.progress``, also for callbacks);
* :class:`Setup`: what the run settles before it trains (device, precision, phases, examples);
* :class:`PhaseRun`: one phase while it trains (optimizer, schedule, batches, pending loss);
* :class:`Outcome`: how the training ended (completed, stopped or failed, and why).

:class:`tunekit.engine.Trainer` fills them in; nothing here trains.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn


@dataclass
class Progress:
    """How far a run has come: what it has trained on, its clocks and what it measured last.
    The trainer holds its run's as ``trainer.progress`` (a callback's ``ev.trainer.progress``)."""

    step: int = 0
    """Optimizer steps taken."""
    samples: int = 0
    """Training examples seen, over every process."""
    tokens: int = 0
    """Real (non-padding) tokens seen, over every process."""
    padded_tokens: int = 0
    """Tokens seen, padding included, over every process."""
    started: float = field(default_factory=time.perf_counter)
    """When the run started (``time.perf_counter()``): the zero of ``elapsed_s`` and ``wall_time_s``."""
    train_time: float = 0.0
    """Seconds spent training, up to the clock's last stop (evaluations do not count; building
    a cache does)."""
    clock: Optional[float] = None
    """When the training clock started, while it runs; None while it is stopped."""
    last_eval: Optional[dict] = None
    """The last ``eval`` event's payload, or None before the first."""
    memory: Optional[dict] = None
    """The measured memory of the phase that needed the most so far, or None before any."""
    cache: list = field(default_factory=list)
    """Each phase's frozen-prefix cache, as it describes itself."""
    rates: list = field(default_factory=list)
    """Each phase's ``{layer group: peak rate}``."""
    validation: Any = None
    """The validation inputs of the phase that trains now (None before the first phase has them):
    a stopped run's final evaluation uses them."""
    initial: dict = field(default_factory=dict)
    """The starting values (by canonical name) of trainable tensors that the run's parent cannot
    give back."""
    snapshots: list = field(default_factory=list)
    """The snapshots written so far: ``{"step", "file"}`` each (``TrainConfig.snapshots``)."""
    snapshot_bytes: int = 0
    """Their size on disk."""
    snapshot_s: float = 0.0
    """Seconds spent writing them (not training time)."""

    def start_clock(self) -> None:
        self.clock = time.perf_counter()

    def stop_clock(self) -> None:
        if self.clock is not None:
            self.train_time += time.perf_counter() - self.clock
            self.clock = None

    def elapsed_s(self) -> float:
        """Seconds since the run started, evaluations included."""
        return round(time.perf_counter() - self.started, 3)


@dataclass
class Setup:
    """What a run settles before it trains, and keeps to the end."""

    device: torch.device
    """Where it trains."""
    amp: Optional[torch.dtype]
    """The autocast dtype (bf16), or None to train in fp32."""
    precision_why: str
    """Why that precision (the record says)."""
    phases: list
    """The strategy's phases, in order."""
    plans: list
    """Each phase's plan, made before anything is written or trained (a later phase makes its
    own again, against the model the earlier ones leave)."""
    epochs: list
    """Each phase's epochs."""
    train: Any
    """The encoded training examples (the ``train_size`` subset)."""
    validation: Any
    """The encoded validation examples (the ``eval_size`` subset)."""
    steps_per_epoch: int
    """Optimizer steps in one epoch."""
    steps: list = field(default_factory=list)
    """Each phase's optimizer steps (:func:`tunekit.strategies.base.phase_steps`)."""
    bar: Any = None
    """The progress bar (``progress=True``, on the main process), else None."""
    snapshot_at: tuple = ()
    """The steps after which the trained tensors are kept (:func:`snapshot_steps`)."""

    @property
    def total_steps(self) -> int:
        """Optimizer steps over every phase."""
        return sum(self.steps) if self.steps else self.steps_per_epoch * sum(self.epochs)


@dataclass
class PhaseRun:
    """One phase while it trains: what each step goes through, and the loss not logged yet."""

    lr: float
    """The phase's peak learning rate (its highest layer group's)."""
    inputs: Any
    """Its inputs (:func:`tunekit.cache.inputs_for`): training and validation examples, the
    cache's info, the frozen layers."""
    forward: nn.Module
    """What each step calls (the task module, wrapped or compiled as asked)."""
    optimizer: torch.optim.Optimizer
    """AdamW over the phase's parameter groups."""
    schedule: Any
    """The learning-rate schedule (:func:`tunekit.schedules.scheduler`), stepped once per step."""
    batches: Any
    """The ``DataLoader`` of training batches (this process's share)."""
    steps_per_epoch: int
    """Batches in one epoch (of this process)."""
    trainable: list
    """The parameters it trains (what ``grad_clip`` clips)."""
    eval_at: set
    """The batches of an epoch (counted from 1) after which it evaluates."""
    log_every: int
    """Steps between ``step`` events (an evaluation or an epoch's end logs too)."""
    loss_sum: torch.Tensor
    """The losses since the last ``step`` event, summed on the device."""
    losses: int = 0
    """How many losses ``loss_sum`` holds."""
    measure: bool = True
    """Whether the next step measures memory (the phase's first does)."""
    plan: Any = None
    """The phase's :class:`~tunekit.models.Plan` (its ``penalty`` and ``after_step`` act at each step)."""
    taken: int = 0
    """Optimizer steps taken in this phase."""
    rates: dict = field(default_factory=dict)
    """``{layer group: peak rate}`` (:func:`tunekit.rates.group_rates`)."""
    step_lrs: dict = field(default_factory=dict)
    """``{layer group: rate}`` the last step took."""


@dataclass
class Outcome:
    """How the training ended."""

    status: str = "completed"
    """``"completed"``, ``"stopped"`` or ``"failed"``."""
    reason: Optional[str] = None
    """Why it stopped or failed, in words."""
    error: Optional[BaseException] = None
    """The exception that ended it (raised again once the record is final), if any."""


def snapshot_steps(points: int, total: int) -> tuple[int, ...]:
    """The steps strictly between the start (0) and the end (``total``) of ``points`` evenly
    spaced points that count both ends (``TrainConfig.snapshots``): 5 over 100 steps gives
    25, 50, 75. Points that round onto one step (or onto an end) are one."""
    if points < 3 or total < 2:
        return ()
    return tuple(sorted({round(i * total / (points - 1)) for i in range(1, points - 1)} - {0, total}))
