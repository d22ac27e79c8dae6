"""Linear probe (feature extraction): the backbone is frozen, only the head trains.

Because the backbone never changes, its features are computed once per split
and cached; every epoch then trains the head on those cached vectors (seconds,
not minutes). The features are what the model's head sees under its pooling:
the mean of the last hidden states over real tokens (``"mean"``; the built-in
MiniLM's default, ~9 points better than its BERT pooler), the last real token's
hidden state (``"last"``; a decoder's default) or the architecture's own head
input (``"model"``: BERT's pooler output).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tunekit.config import ConfigError, plain_fields
from tunekit.strategies.base import Plan, Strategy, needs_classification
from tunekit.strategy_registry import DEFAULT_LR
from tunekit.tasks import POOLINGS


@dataclass
class Probe(Strategy):
    """Train only the classification head on frozen, cached features.

    Args:
        pooling: None keeps the model's pooling; ``"mean"``, ``"last"`` or ``"model"`` sets
            it for this run (and the trained model keeps it: its head was trained on it).
    """

    pooling: Optional[str] = None

    name = "probe"
    default_lr = DEFAULT_LR["probe"]
    lab_label = "Probe (head only)"  # what the lab's strategy picker calls it

    def __post_init__(self) -> None:
        plain_fields(self)
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ConfigError(f"Probe.pooling must be one of {POOLINGS} or None (got {self.pooling!r})")

    def plan(self, model) -> Plan:
        needs_classification(model, "Probe")
        return Plan(train=("head",), cached_features=True, pooling=self.pooling)

    @property
    def label(self) -> str:
        return "probe" if self.pooling is None else f"probe-{self.pooling}"
