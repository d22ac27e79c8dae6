"""Gradual unfreezing (Howard & Ruder 2018, ULMFiT, section 3.2; fastai's ``freeze_to``).

The run is cut into stages, one phase each: first only what sits above the blocks trains (the
head, and a pooler or final norm), then the top block joins, then the one below it, one layer
group per stage, down to the embeddings (or down to ``stop_at``). Each stage is a
:class:`~tunekit.strategies.freeze.Freeze` of the groups trained so far, with its own optimizer
and schedule (as fastai's ``fit_one_cycle`` per stage); the record keeps each stage as a phase,
the learning-rate view shows when each group joins.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tunekit.config import ConfigError, plain_fields, require
from tunekit.strategies.base import Phase, Plan, Strategy
from tunekit.strategies.freeze import Freeze
from tunekit.strategy_registry import DEFAULT_LR

UNITS = ("steps", "epochs")


@dataclass
class GradualUnfreeze(Strategy):
    """Unfreeze one layer group more at each stage, from the top down.

    Args:
        every: the length of each stage but the last, in ``unit``; the last stage (everything
            down to ``stop_at`` trains) takes the rest of the run. None: the run's steps split
            evenly among the stages.
        unit: ``"steps"`` or ``"epochs"``.
        stop_at: the lowest layer group that joins (``"block.2"``: the blocks below it and the
            embeddings stay frozen); None: every group, the embeddings last.
    """

    every: Optional[int] = None
    unit: str = "steps"
    stop_at: Optional[str] = None

    name = "gradual"
    default_lr = DEFAULT_LR["gradual"]
    lab_label = "Gradual unfreezing"

    def __post_init__(self) -> None:
        plain_fields(self)
        require(self.every is None or (isinstance(self.every, int) and not isinstance(self.every, bool)
                                       and self.every >= 1),
                "GradualUnfreeze.every", "a positive integer (steps or epochs per stage) or None (even stages)",
                self.every)
        require(self.unit in UNITS, "GradualUnfreeze.unit", f"one of {UNITS}", self.unit)
        require(self.stop_at is None or isinstance(self.stop_at, str), "GradualUnfreeze.stop_at",
                "a layer group name such as 'block.2', or None (every group)", self.stop_at)

    def stages(self, model) -> list[list[str]]:
        """The groups that train in each stage on ``model``, top stage first."""
        active = model.active_groups
        blocks = [g for g in active if g.startswith("block.")]
        above = [g for g in active if g not in blocks and g != "embeddings"]
        order = blocks[::-1] + (["embeddings"] if "embeddings" in active else [])
        if self.stop_at is not None:
            joinable = above + order
            if self.stop_at not in joinable:
                raise ConfigError(f"GradualUnfreeze.stop_at: {self.stop_at!r} is not a layer group of this model; "
                                  f"its groups are {joinable}")
            order = order[:order.index(self.stop_at) + 1] if self.stop_at in order else []
        stages = [list(above)] if above else []
        for g in order:
            stages.append((stages[-1] if stages else []) + [g])
        if len(stages) < 2:
            raise ConfigError(f"GradualUnfreeze needs at least two groups to unfreeze one after another; "
                              f"{'stop_at=' + repr(self.stop_at) if self.stop_at else 'this model'} leaves one "
                              f"stage ({stages[0] if stages else 'none'}): use Freeze for a fixed set")
        return stages

    def phases(self) -> list[Phase]:
        """Without the run's length and model, one phase of the end state (everything trains)."""
        return [Phase(self)]

    def phases_for(self, model, steps_per_epoch: int, epochs: int) -> list[Phase]:
        stages = self.stages(model)
        total, n = steps_per_epoch * epochs, len(stages)
        if self.every is None:
            if total < n:
                raise ConfigError(f"GradualUnfreeze: the run has {total} steps, fewer than its {n} stages; train "
                                  f"longer (epochs, train_size) or unfreeze fewer groups (stop_at)")
            lengths = [total // n] * (n - 1)
        else:
            unit = steps_per_epoch if self.unit == "epochs" else 1
            lengths = [self.every * unit] * (n - 1)
            if sum(lengths) >= total:
                most = max(1, (total - 1) // (n - 1) // unit)
                raise ConfigError(f"GradualUnfreeze.every: {n - 1} stages of {self.every} {self.unit} take "
                                  f"{sum(lengths)} of the run's {total} steps, leaving none for the last; at most "
                                  f"{most} {self.unit} here, or train longer")
        lengths.append(total - sum(lengths))
        return [Phase(Freeze(train=groups), steps=length) for groups, length in zip(stages, lengths)]

    def plan(self, model) -> Plan:
        """What the run trains in the end (the last stage's groups); each stage has its own plan."""
        return Plan(train=tuple(self.stages(model)[-1]))

    @property
    def label(self) -> str:
        return "gradual" + (f"-every{self.every}{'ep' if self.unit == 'epochs' else ''}" if self.every else "")
