"""LoHa through ``peft``: a low-rank Hadamard product update (Hyeon-Woo et al., 2022, FedPara).

The update of an adapted weight is ``(alpha / rank) * (W1a W1b) * (W2a W2b)``, the
element-wise product of two rank-``rank`` matrices, so it can reach rank ``rank**2``
for the parameters of two LoRAs. One factor starts at zero, so training starts from
the pretrained model exactly. peft adapts ``nn.Linear`` layers with it (not GPT-2's
Conv1D: refused in words). Targets default to peft's LoRA table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from tunekit.config import finite_number, plain_fields, require
from tunekit.strategies.adapter import AdapterStrategy, as_names
from tunekit.strategy_registry import DEFAULT_LR


@dataclass
class LoHa(AdapterStrategy):
    """Low-rank Hadamard product adapters.

    Args:
        rank: rank of each of the two factors, 1 .. the smallest dimension of the targets.
        alpha: scaling numerator (update scaled by alpha / rank); None means ``rank``.
        dropout: peft's rank dropout during training, in [0, 1).
        target_modules: layers to adapt (nn.Linear); None takes peft's default.
    """

    rank: int = 8
    alpha: Optional[float] = None
    dropout: float = 0.0
    target_modules: Optional[Sequence[str]] = None

    name = "loha"
    default_lr = DEFAULT_LR["loha"]
    lab_label = "LoHa"
    peft_table = "TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING"
    peft_class = "LoHaConfig"
    """The peft config class (LoKr shares everything else)."""
    default_labels = ("query", "value")

    def __post_init__(self) -> None:
        plain_fields(self)
        self.check_rank()
        require(finite_number(self.dropout) and 0 <= self.dropout < 1, f"{type(self).__name__}.dropout",
                "in [0, 1)", self.dropout)
        self.target_modules = as_names(self.target_modules, f"{type(self).__name__}.target_modules")

    def peft_config(self, model):
        import peft
        asked = list(self.target_modules or self.default_target_names(model))
        layers = self.targets(model, asked)
        self.linear_only(model, layers)
        self.check_rank_fits(layers)
        config = getattr(peft, self.peft_class)
        return config(task_type=self.peft_task_type(model), r=self.rank, alpha=self.alpha, rank_dropout=self.dropout,
                      target_modules=self.peft_names(model, layers, asked),
                      modules_to_save=self.head_modules(model) or None)

    @property
    def label(self) -> str:
        return f"{self.name}-r{self.rank}" + ("" if self.alpha == self.rank else f"-a{self.alpha:g}")
