"""LoKr through ``peft``: a Kronecker product update (Yeh et al., 2023, LyCORIS).

The update of an adapted weight is ``(alpha / rank) * W1 kron (W2a W2b)``: a small
full factor ``W1`` and a low-rank one, whose Kronecker product has the weight's shape
(peft picks the factor sizes). The low-rank factor starts at zero, so training starts
from the pretrained model exactly. peft adapts ``nn.Linear`` layers with it (not GPT-2's
Conv1D: refused in words). Its parameters, checks and targets are LoHa's.
"""
from __future__ import annotations

from dataclasses import dataclass

from tunekit.strategies.loha import LoHa
from tunekit.strategy_registry import DEFAULT_LR


@dataclass
class LoKr(LoHa):
    """Low-rank Kronecker product adapters.

    Args:
        rank: rank of the low-rank factor, 1 .. the smallest dimension of the targets.
        alpha: scaling numerator (update scaled by alpha / rank); None means ``rank``.
        dropout: peft's rank dropout during training, in [0, 1).
        target_modules: layers to adapt (nn.Linear); None takes peft's default.
    """

    name = "lokr"
    default_lr = DEFAULT_LR["lokr"]
    lab_label = "LoKr"
    peft_table = "TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING"
    peft_class = "LoKrConfig"
