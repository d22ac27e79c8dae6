"""LoRA through ``peft``: low-rank adapters on chosen layers, a new head trained in full.

The update of a wrapped weight is ``(alpha / rank) * B @ A`` with ``A`` of shape
``[rank, in]`` and ``B`` of shape ``[out, rank]`` (``B`` starts at zero, so
training starts from the pretrained model exactly). The default targets are
peft's own per-architecture defaults (BERT: ``query``, ``value``; Llama:
``q_proj``, ``v_proj``; GPT-2: ``c_attn``), or the query and value projections
where peft has no entry (DistilBERT: ``q_lin``, ``v_lin``). The run record stores
the adapter in peft's own ``save_pretrained`` format, so plain ``peft`` loads it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from tunekit.config import finite_number, plain_fields, require
from tunekit.strategies.adapter import AdapterStrategy, as_names
from tunekit.strategy_registry import DEFAULT_LR

MAX_SCALE = 1000.0
"""The largest alpha / rank accepted: beyond it an update of any size swamps the weights."""


@dataclass
class LoRA(AdapterStrategy):
    """Low-rank adaptation.

    Args:
        rank: rank r of each update, 1 .. min(in, out) of the smallest target layer.
        alpha: scaling numerator; the update is scaled by alpha / rank. None means
            ``2 * rank`` (a constant scale of 2 across a rank sweep).
        dropout: dropout on the adapter's input during training, in [0, 1).
        target_modules: names (or dotted name suffixes) of the layers to adapt (Linear or
            Conv1D); None takes peft's default for the architecture.
    """

    rank: int = 8
    alpha: Optional[float] = None
    dropout: float = 0.05
    target_modules: Optional[Sequence[str]] = None

    name = "lora"
    default_lr = DEFAULT_LR["lora"]
    lab_label = "LoRA"  # what the lab's strategy picker calls it
    peft_table = "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING"
    default_labels = ("query", "value")

    def __post_init__(self) -> None:
        plain_fields(self)
        require(isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 1,
                "LoRA.rank", "an integer >= 1", self.rank)
        if self.alpha is None:
            self.alpha = 2 * self.rank
        require(finite_number(self.alpha) and self.alpha > 0, "LoRA.alpha", "a finite number > 0", self.alpha)
        require(self.alpha / self.rank <= MAX_SCALE, "LoRA.alpha",
                f"at most {MAX_SCALE:g} x rank = {MAX_SCALE * self.rank:g} (alpha / rank scales every update; "
                f"usual values are 1 to 4 x rank)", self.alpha)
        require(finite_number(self.dropout) and 0 <= self.dropout < 1,
                "LoRA.dropout", "in [0, 1)", self.dropout)
        self.target_modules = as_names(self.target_modules, "LoRA.target_modules")

    def peft_config(self, model):
        from peft import LoraConfig
        asked = list(self.target_modules or self.default_target_names(model))
        layers = self.targets(model, asked)
        smallest = self.smallest_dim(model)
        require(self.rank <= smallest, "LoRA.rank",
                f"at most {smallest} (the smallest dimension of the target layers)", self.rank)
        return LoraConfig(task_type=self.peft_task_type(model), r=self.rank, lora_alpha=self.alpha,
                          lora_dropout=self.dropout, target_modules=self.peft_names(model, layers, asked),
                          modules_to_save=self.head_modules(model) or None,
                          fan_in_fan_out=self.transposed(layers))

    @property
    def label(self) -> str:
        """``lora-r8``; with an alpha other than the default 2 x rank, ``lora-r8-a32`` (so
        that runs that differ in alpha never share a label)."""
        if self.alpha == 2 * self.rank:
            return f"lora-r{self.rank}"
        return f"lora-r{self.rank}-a{self.alpha:g}"
