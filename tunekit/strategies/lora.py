"""LoRA through ``peft``: low-rank adapters on chosen Linear layers, head trained in full.

The update of a wrapped weight is ``(alpha / rank) * B @ A`` with ``A`` of shape
``[rank, in]`` and ``B`` of shape ``[out, rank]`` (``B`` starts at zero, so
training starts from the pretrained model exactly). The default targets are
peft's own per-architecture defaults (BERT: ``query``, ``value``; Llama:
``q_proj``, ``v_proj``). The run record stores the adapter in peft's own
``save_pretrained`` format, so plain ``peft`` can load it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from torch import nn

from tunekit.config import ConfigError, require
from tunekit.strategies.base import Strategy, counts


def default_targets(model_type: str) -> list[str]:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as table
    if model_type not in table:
        raise ConfigError(f"LoRA has no default target modules for model type {model_type!r}; "
                          "pass LoRA(target_modules=[...]) with names of Linear layers")
    return list(table[model_type])


@dataclass
class LoRA(Strategy):
    """Low-rank adaptation.

    Args:
        rank: rank r of each update, 1 .. min(in, out) of the smallest target layer.
        alpha: scaling numerator; the update is scaled by alpha / rank. None means
            ``2 * rank`` (a constant scale of 2 across a rank sweep).
        dropout: dropout on the adapter's input during training, in [0, 1).
        target_modules: names (or name suffixes) of the Linear layers to adapt; None
            takes peft's default for the architecture.
    """

    rank: int = 8
    alpha: Optional[float] = None
    dropout: float = 0.05
    target_modules: Optional[Sequence[str]] = None

    name = "lora"
    default_lr = 1e-3

    def __post_init__(self) -> None:
        require(isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 1,
                "LoRA.rank", "an integer >= 1", self.rank)
        if self.alpha is None:
            self.alpha = 2 * self.rank
        require(isinstance(self.alpha, (int, float)) and self.alpha > 0, "LoRA.alpha", "> 0", self.alpha)
        require(isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1,
                "LoRA.dropout", "in [0, 1)", self.dropout)
        if self.target_modules is not None:
            if isinstance(self.target_modules, str):
                self.target_modules = [self.target_modules]
            self.target_modules = tuple(self.target_modules)
            require(len(self.target_modules) > 0, "LoRA.target_modules", "a non-empty list or None",
                    self.target_modules)

    def targets(self, model) -> dict[str, nn.Linear]:
        """The Linear layers this LoRA adapts on ``model``, by name (validated)."""
        names = list(self.target_modules or default_targets(model.hf.config.model_type))
        prefix = model.hf.base_model_prefix + "."
        linears = {n: m for n, m in model.hf.named_modules() if isinstance(m, nn.Linear) and n.startswith(prefix)}
        found = {n: m for n, m in linears.items() if any(n == t or n.endswith("." + t) for t in names)}
        missing = [t for t in names if not any(n == t or n.endswith("." + t) for n in found)]
        if missing:
            short = sorted({n.rsplit(".", 1)[-1] for n in linears})
            raise ConfigError(f"LoRA.target_modules: {missing} match no Linear layer of "
                              f"{type(model.hf).__name__}; available: {short}")
        smallest = min(min(m.in_features, m.out_features) for m in found.values())
        require(self.rank <= smallest, "LoRA.rank",
                f"at most {smallest} (the smallest dimension of the target layers)", self.rank)
        return found

    def head_modules(self, model) -> list[str]:
        prefix = model.hf.base_model_prefix
        return [n for n, m in model.hf.named_children()
                if n != prefix and any(True for _ in m.parameters())]

    def peft_config(self, model):
        from peft import LoraConfig, TaskType
        return LoraConfig(task_type=TaskType.SEQ_CLS, r=self.rank, lora_alpha=self.alpha,
                          lora_dropout=self.dropout, target_modules=sorted({n.rsplit(".", 1)[-1] for n in self.targets(model)}),
                          modules_to_save=self.head_modules(model))

    def prepare(self, model) -> None:
        from peft import get_peft_model
        if model.peft_config is not None:
            raise ConfigError("this model already carries a LoRA adapter; load a fresh model "
                              "(tk.load_model) for another LoRA run")
        cfg = self.peft_config(model)
        model.module = get_peft_model(model.hf, cfg)
        model.peft_config = cfg

    def count(self, model) -> dict:
        lora = sum(self.rank * (m.in_features + m.out_features) for m in self.targets(model).values())
        head = sum(p.numel() for n in self.head_modules(model)
                   for p in model.hf.get_submodule(n).parameters())
        base = sum(p.numel() for p in model.hf.parameters())
        # peft keeps the original head and trains a copy (modules_to_save), so both count.
        return counts(lora + head, base + lora + head)

    @property
    def label(self) -> str:
        return f"lora-r{self.rank}"
