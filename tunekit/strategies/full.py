"""Full fine-tuning: every parameter trains."""
from __future__ import annotations

from dataclasses import dataclass

from tunekit.strategies.base import Plan, Strategy
from tunekit.strategy_registry import DEFAULT_LR


@dataclass
class Full(Strategy):
    """Fine-tune every parameter of the model (the reference all others are compared with)."""

    name = "full"
    default_lr = DEFAULT_LR["full"]
    lab_label = "Full fine-tune"  # what the lab's strategy picker calls it

    def plan(self, model) -> Plan:
        return Plan(train=tuple(model.active_groups))
