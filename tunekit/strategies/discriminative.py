"""Discriminative learning rates as a strategy: another strategy, its layer groups at rates that
fall by a factor per group from the top down (ULMFiT section 3.2; ELECTRA's layer-wise decay).

``TrainConfig.lr_decay`` does the same for every strategy of a call; this wrapper gives the decay
to one strategy, so that one rate for all and a decay can be cells of one experiment, side by
side on the same seeds and test examples (``tk.experiment([tk.Full(), tk.Discriminative(tk.Full())])``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tunekit.config import ConfigError, finite_number, plain_fields, require
from tunekit.strategies.base import Phase, Plan, Strategy
from tunekit.strategy_registry import DEFAULT_LR


@dataclass
class Discriminative(Strategy):
    """``strategy`` with each layer group's rate ``decay`` times the one above it (the topmost
    group trained at the run's rate; each phase at its strategy's default where none is given)."""

    strategy: Any = "full"
    decay: float = 0.8

    name = "discriminative"
    default_lr = DEFAULT_LR["discriminative"]

    def __post_init__(self) -> None:
        plain_fields(self)
        from tunekit.strategies import get_strategy  # the registry imports this module
        if isinstance(self.strategy, Discriminative):
            raise ConfigError("Discriminative.strategy must not be a Discriminative itself (give one decay)")
        self.strategy = get_strategy(self.strategy)
        require(finite_number(self.decay) and 0 < self.decay <= 1, "Discriminative.decay",
                "a number in (0, 1] (the factor per layer group from the top down)", self.decay)

    @property
    def inner(self) -> Strategy:
        return self.strategy

    def _decayed(self, phases: list[Phase]) -> list[Phase]:
        return [dataclasses.replace(ph, lr_decay=self.decay) for ph in phases]

    def phases(self) -> list[Phase]:
        return self._decayed(self.strategy.phases())

    def phases_for(self, model, steps_per_epoch: int, epochs: int) -> list[Phase]:
        return self._decayed(self.strategy.phases_for(model, steps_per_epoch, epochs))

    def plan(self, model) -> Plan:
        return self.strategy.plan(model)

    def count(self, model) -> dict:
        return self.strategy.count(model)

    def describe(self) -> dict:
        return {"name": self.name, "strategy": self.strategy.describe(), "decay": self.decay}

    @property
    def label(self) -> str:
        return f"{self.strategy.label}-decay{self.decay:g}"

