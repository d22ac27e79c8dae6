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

import torch

from tunekit.batches import FeatureSplit
from tunekit.config import ConfigError
from tunekit.models import POOLINGS
from tunekit.strategies.base import Strategy, group_counts


@dataclass
class Probe(Strategy):
    """Train only the classification head on frozen, cached features.

    Args:
        pooling: None keeps the model's pooling; ``"mean"``, ``"last"`` or ``"model"`` sets it.
    """

    pooling: Optional[str] = None

    name = "probe"
    default_lr = 1e-2

    def __post_init__(self) -> None:
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ConfigError(f"Probe.pooling must be one of {POOLINGS} or None (got {self.pooling!r})")

    def prepare(self, model) -> None:
        if self.pooling is not None:
            model.pooling = self.pooling
        model.set_trainable(["head"])

    def count(self, model) -> dict:
        return group_counts(model, {"head"})

    @torch.no_grad()
    def inputs(self, model, split, batch_size: int) -> FeatureSplit:
        was_training = model.module.training
        model.module.eval()
        try:
            feats = [self._features(model, b) for b in split.batches(batch_size, device=model.device)]
        finally:
            model.module.train(was_training)
        return FeatureSplit(torch.cat(feats).float(), split.labels)

    def _features(self, model, batch: dict) -> torch.Tensor:
        if model.pools_itself:
            return model.features(batch["input_ids"], batch["attention_mask"])
        seen = []
        handle = model.head().register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
        try:
            model.hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        finally:
            handle.remove()
        if seen[-1].ndim != 2:
            raise ConfigError(f"Probe with pooling 'model' needs a head that sees one vector per example; "
                              f"{type(model.hf).__name__}'s head sees {tuple(seen[-1].shape)}; "
                              "use Probe(pooling='last') or Probe(pooling='mean')")
        return seen[-1]

    def forward(self, model, batch: dict) -> torch.Tensor:
        return model.head()(batch["features"])

    @property
    def label(self) -> str:
        return "probe" if self.pooling is None else f"probe-{self.pooling}"
