"""LayerNorm tuning through ``peft``: train only the normalization layers (Zhao et al., 2023).

Every normalization layer of the base model (the blocks' LayerNorm / RMSNorm, the
embeddings' and the final one) trains its scale (and shift, where it has one); all weight
matrices stay as they were, and a new classification head trains in full. peft keeps a
trained copy of each norm beside the original, so the record is a small peft adapter.
No weight matrix changes: the Weights view says so and shows the norms' change.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from torch import nn

from tunekit.config import ConfigError, plain_fields
from tunekit.strategies.adapter import AdapterStrategy, as_names
from tunekit.strategy_registry import DEFAULT_LR


def norm_layers(hf: nn.Module, under: str) -> dict[str, nn.Module]:
    """Normalization layers (LayerNorm, RMSNorm and their model-specific classes) whose name
    starts with ``under``, by name."""
    def is_norm(m: nn.Module) -> bool:
        return isinstance(m, (nn.LayerNorm, nn.RMSNorm)) or type(m).__name__.endswith(("LayerNorm", "RMSNorm"))
    return {n: m for n, m in hf.named_modules() if n.startswith(under) and is_norm(m)
            and any(True for _ in m.parameters(recurse=False))}


@dataclass
class LNTuning(AdapterStrategy):
    """Train the normalization layers only.

    Args:
        target_modules: names (or dotted suffixes) of the norm layers to train; None takes
            every normalization layer of the base model.
    """

    target_modules: Optional[Sequence[str]] = None

    name = "ln_tuning"
    default_lr = DEFAULT_LR["ln_tuning"]
    lab_label = "LayerNorm tuning"

    def __post_init__(self) -> None:
        plain_fields(self)
        self.target_modules = as_names(self.target_modules, "LNTuning.target_modules")

    def norms(self, model) -> dict[str, nn.Module]:
        inside = norm_layers(model.hf, model.backbone.base_prefix)
        if not inside:
            raise ConfigError(f"LNTuning: {type(model.hf).__name__} has no normalization layer with parameters "
                              f"to train")
        if self.target_modules is None:
            return inside
        chosen = {t: [n for n in inside if n == t or n.endswith("." + t)] for t in self.target_modules}
        missing = [t for t, found in chosen.items() if not found]
        if missing:
            some = sorted({n.split(".")[-1] for n in inside})
            raise ConfigError(f"LNTuning.target_modules: {missing} match no normalization layer of "
                              f"{type(model.hf).__name__}; its norm layers are named {some}")
        return {n: inside[n] for found in chosen.values() for n in found}

    def peft_config(self, model):
        from peft import LNTuningConfig
        return LNTuningConfig(task_type=self.peft_task_type(model), target_modules=sorted(self.norms(model)),
                              modules_to_save=self.head_modules(model) or None)

    @property
    def label(self) -> str:
        return "ln-tuning"
