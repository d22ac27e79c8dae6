"""What every strategy is: which parameters train, on what inputs, through which head.

A strategy is a small dataclass. The engine asks it for its :class:`Phase` list
(one phase for most; LP-FT has two), and for each phase calls

* :meth:`Strategy.prepare` - freeze / unfreeze / wrap the model;
* :meth:`Strategy.inputs` - what the loop iterates over (token ids by default,
  cached features for the probe);
* :meth:`Strategy.forward` - logits for one batch of those inputs;
* :meth:`Strategy.param_groups` - the optimizer's parameter groups (one learning
  rate by default; discriminative learning rates override this).

Adding a strategy is one file plus one registry line in ``strategies/__init__.py``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Optional

import torch

if TYPE_CHECKING:
    from tunekit.batches import EncodedSplit
    from tunekit.models import TextClassifier


@dataclass
class Phase:
    """One stretch of training with one strategy.

    ``epochs=None`` takes ``TrainConfig.epochs``; ``lr=None`` takes
    ``TrainConfig.lr`` or, if that is unset too, the strategy's default.
    """

    strategy: "Strategy"
    epochs: Optional[int] = None
    lr: Optional[float] = None


class Strategy:
    """Base class. Subclasses are dataclasses and set ``name`` and ``default_lr``."""

    name: ClassVar[str] = "strategy"
    default_lr: ClassVar[float] = 1e-4

    def phases(self) -> list[Phase]:
        return [Phase(self)]

    def prepare(self, model: "TextClassifier") -> None:
        raise NotImplementedError

    def count(self, model: "TextClassifier") -> dict:
        """Trainable / total parameters this strategy *will* give ``model``, without changing it."""
        raise NotImplementedError

    def inputs(self, model: "TextClassifier", split: "EncodedSplit", batch_size: int):
        """What the training loop iterates over for ``split``. Default: the token ids."""
        return split

    def forward(self, model: "TextClassifier", batch: dict) -> torch.Tensor:
        return model.logits(batch["input_ids"], batch["attention_mask"])

    def param_groups(self, model: "TextClassifier", lr: float, weight_decay: float) -> list[dict]:
        """AdamW parameter groups over the trainable parameters only. Biases and norms
        get no weight decay."""
        decay, no_decay = [], []
        for n, p in model.module.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 else decay).append(p)
        return [g for g in ({"params": decay, "lr": lr, "weight_decay": weight_decay},
                            {"params": no_decay, "lr": lr, "weight_decay": 0.0}) if g["params"]]

    def describe(self) -> dict:
        """Plain data that recreates the strategy with :func:`tunekit.strategies.get_strategy`."""
        d = {"name": self.name}
        if dataclasses.is_dataclass(self):
            for f in dataclasses.fields(self):
                v = getattr(self, f.name)
                d[f.name] = list(v) if isinstance(v, tuple) else v
        return d

    @property
    def label(self) -> str:
        """Short human-readable label, e.g. ``lora-r8``."""
        return self.name


def counts(trainable: int, total: int) -> dict:
    return {"trainable": int(trainable), "total": int(total),
            "percent": 100.0 * trainable / total if total else 0.0}


def group_counts(model: "TextClassifier", train: set[str]) -> dict:
    by = model.parameter_counts()["by_group"]
    train = set(train) & set(model.active_groups)
    return counts(sum(v["total"] for g, v in by.items() if g in train), sum(v["total"] for v in by.values()))
