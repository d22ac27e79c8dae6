"""LoKr through ``peft``: a Kronecker product update (Yeh et al., 2023, LyCORIS).

The update of an adapted weight is ``(alpha / rank) * W1 kron (W2a W2b)``: a small
full factor ``W1`` and a low-rank one, whose Kronecker product has the weight's shape
(peft picks the factor sizes). The low-rank factor starts at zero, so training starts
from the pretrained model exactly. peft adapts ``nn.Linear`` layers with it (not GPT-2's
Conv1D: refused in words). Targets default to peft's LoRA table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from tunekit.config import finite_number, plain_fields, require
from tunekit.strategies.adapter import AdapterStrategy, as_names
from tunekit.strategy_registry import DEFAULT_LR


@dataclass
class LoKr(AdapterStrategy):
    """Low-rank Kronecker product adapters.

    Args:
        rank: rank of the low-rank factor, 1 .. the smallest dimension of the targets.
        alpha: scaling numerator (update scaled by alpha / rank); None means ``rank``.
        dropout: peft's rank dropout during training, in [0, 1).
        target_modules: layers to adapt (nn.Linear); None takes peft's default.
    """

    rank: int = 8
    alpha: Optional[float] = None
    dropout: float = 0.0
    target_modules: Optional[Sequence[str]] = None

    name = "lokr"
    default_lr = DEFAULT_LR["lokr"]
    lab_label = "LoKr"
    peft_table = "TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING"
    default_labels = ("query", "value")

    def __post_init__(self) -> None:
        plain_fields(self)
        self.check_rank()
        require(finite_number(self.dropout) and 0 <= self.dropout < 1, "LoKr.dropout", "in [0, 1)", self.dropout)
        self.target_modules = as_names(self.target_modules, "LoKr.target_modules")

    def peft_config(self, model):
        from peft import LoKrConfig
        asked = list(self.target_modules or self.default_target_names(model))
        layers = self.targets(model, asked)
        self.linear_only(model, layers)
        smallest = self.smallest_dim(model)
        require(self.rank <= smallest, "LoKr.rank", f"at most {smallest} (the smallest dimension of the target "
                f"layers)", self.rank)
        return LoKrConfig(task_type=self.peft_task_type(model), r=self.rank, alpha=self.alpha,
                          rank_dropout=self.dropout, target_modules=self.peft_names(model, layers, asked),
                          modules_to_save=self.head_modules(model) or None)

    @property
    def label(self) -> str:
        return f"lokr-r{self.rank}" + ("" if self.alpha == self.rank else f"-a{self.alpha:g}")
