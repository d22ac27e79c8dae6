"""LP-FT: linear probe first, then fine-tune everything (Kumar et al., 2022).

Probing first gives the head a good start, so full fine-tuning distorts the
pretrained features less. It is written as two :class:`Phase` s; gradual
unfreezing or discriminative learning rates are the same kind of phase list.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tunekit.config import finite_number, plain_fields, positive_int, require
from tunekit.strategies.base import Phase, Plan, Strategy, needs_classification
from tunekit.strategies.full import Full
from tunekit.strategies.probe import Probe


@dataclass
class LPFT(Strategy):
    """Probe the head for ``probe_epochs`` (on cached features), then fine-tune
    the whole model for ``TrainConfig.epochs``."""

    probe_epochs: int = 1
    probe_lr: Optional[float] = None

    name = "lpft"
    default_lr = Full.default_lr

    def __post_init__(self) -> None:
        plain_fields(self)
        positive_int("LPFT.probe_epochs", self.probe_epochs)
        if self.probe_lr is not None:
            require(finite_number(self.probe_lr) and self.probe_lr > 0, "LPFT.probe_lr", "a finite number > 0 or None",
                    self.probe_lr)

    def phases(self) -> list[Phase]:
        return [Phase(Probe(), epochs=self.probe_epochs, lr=self.probe_lr or Probe.default_lr),
                Phase(Full())]

    def plan(self, model) -> Plan:
        """What the run trains in the end (every group); each phase has its own plan."""
        needs_classification(model, "LPFT")
        return Full().plan(model)
