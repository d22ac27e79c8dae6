"""VeRA through ``peft``: vector-based random matrix adaptation (Kopiczko et al., 2024).

One pair of random low-rank matrices ``A`` ``[rank, in]`` and ``B`` ``[out, rank]`` is
drawn once (from a fixed seed) and shared by every adapted layer, frozen; each layer
trains only two vectors, ``d`` (``rank`` numbers) and ``b`` (one per output): the update
is ``diag(b) B diag(d) A``. ``b`` starts at zero, so training starts from the pretrained
model exactly, and a rank of 256 costs a few hundred numbers per layer. The shared
matrices are saved with the adapter (``save_projection``), so plain peft reloads it
exactly. Defaults (targets) are peft's LoRA table; usual rates are higher than LoRA's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from tunekit.config import finite_number, plain_fields, require
from tunekit.strategies.adapter import AdapterStrategy, as_names
from tunekit.strategy_registry import DEFAULT_LR


@dataclass
class VeRA(AdapterStrategy):
    """Shared frozen random matrices, a trained scaling vector pair per layer.

    Args:
        rank: rank of the shared random matrices, 1 .. the smallest dimension of the
            target layers (peft's default is 256; a high rank costs little here).
        target_modules: layers to adapt; None takes peft's default for the architecture.
        d_initial: starting value of every entry of ``d`` (peft: 0.1).
        dropout: dropout on the adapter's input during training, in [0, 1).
        projection_seed: the seed of the shared random matrices.
    """

    rank: int = 256
    target_modules: Optional[Sequence[str]] = None
    d_initial: float = 0.1
    dropout: float = 0.0
    projection_seed: int = 0

    name = "vera"
    default_lr = DEFAULT_LR["vera"]
    lab_label = "VeRA"
    peft_table = "TRANSFORMERS_MODELS_TO_VERA_TARGET_MODULES_MAPPING"
    default_labels = ("query", "value")

    def __post_init__(self) -> None:
        plain_fields(self)
        require(isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 1,
                "VeRA.rank", "an integer >= 1", self.rank)
        require(finite_number(self.d_initial) and self.d_initial > 0, "VeRA.d_initial", "a finite number > 0",
                self.d_initial)
        require(finite_number(self.dropout) and 0 <= self.dropout < 1, "VeRA.dropout", "in [0, 1)", self.dropout)
        require(isinstance(self.projection_seed, int) and not isinstance(self.projection_seed, bool)
                and 0 <= self.projection_seed < 2**63, "VeRA.projection_seed", "an integer in [0, 2**63)",
                self.projection_seed)
        self.target_modules = as_names(self.target_modules, "VeRA.target_modules")

    def peft_config(self, model):
        from peft import VeraConfig
        asked = list(self.target_modules or self.default_target_names(model))
        layers = self.targets(model, asked)
        self.check_rank_fits(layers)
        return VeraConfig(task_type=self.peft_task_type(model), r=self.rank,
                          target_modules=self.peft_names(model, layers, asked), d_initial=self.d_initial,
                          vera_dropout=self.dropout, projection_prng_key=self.projection_seed, save_projection=True,
                          modules_to_save=self.head_modules(model) or None, fan_in_fan_out=self.transposed(layers))

    @property
    def label(self) -> str:
        return f"vera-r{self.rank}"
