"""Full fine-tuning: every parameter trains."""
from __future__ import annotations

from dataclasses import dataclass

from tunekit.strategies.base import Strategy, group_counts


@dataclass
class Full(Strategy):
    """Fine-tune every parameter of the model (the reference all others are compared with)."""

    name = "full"
    default_lr = 1e-4

    def prepare(self, model) -> None:
        model.set_trainable(model.group_names)

    def count(self, model) -> dict:
        return group_counts(model, set(model.active_groups))
