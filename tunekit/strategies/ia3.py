"""IA3 through ``peft``: learned vectors that rescale chosen activations (Liu et al., 2022).

An adapted layer's output (or, for a feed-forward layer, its input) is multiplied
element-wise by a vector ``l`` that starts at 1, so training starts from the
pretrained model exactly and adds one number per output (or input) feature: far
fewer parameters than LoRA. Its effective change of a weight is ``W * (l - 1)``
(rows or columns rescaled), which the weight views show. Defaults are peft's per
architecture (BERT: ``key``, ``value``, ``output.dense``, the last one feed-forward).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from tunekit.config import ConfigError, plain_fields
from tunekit.strategies.adapter import AdapterStrategy, as_names
from tunekit.strategy_registry import DEFAULT_LR


@dataclass
class IA3(AdapterStrategy):
    """Infused adapters by inhibiting and amplifying inner activations.

    Args:
        target_modules: names (or dotted suffixes) of the layers to rescale; None takes
            peft's default for the architecture.
        feedforward_modules: which of those are feed-forward layers (their *input* is
            rescaled); must be among ``target_modules``. None takes peft's default (with
            your own ``target_modules``: none of them).
    """

    target_modules: Optional[Sequence[str]] = None
    feedforward_modules: Optional[Sequence[str]] = None

    name = "ia3"
    default_lr = DEFAULT_LR["ia3"]
    lab_label = "IA3"  # what the lab's strategy picker calls it
    peft_table = "TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING"
    default_labels = ("key", "value", "output")

    def __post_init__(self) -> None:
        plain_fields(self)
        self.target_modules = as_names(self.target_modules, "IA3.target_modules")
        self.feedforward_modules = as_names(self.feedforward_modules, "IA3.feedforward_modules")

    def peft_config(self, model):
        from peft import IA3Config
        asked = list(self.target_modules or self.default_target_names(model))
        layers = self.targets(model, asked)
        if self.feedforward_modules is not None:
            ff_asked = list(self.feedforward_modules)
        elif self.target_modules is None:
            ff_asked = self.default_target_names(model, "TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING",
                                                 ("output",))
        else:
            ff_asked = []
        ff = self.targets(model, ff_asked, "feedforward_modules") if ff_asked else {}
        outside = sorted(set(ff) - set(layers))
        if outside:
            raise ConfigError(f"IA3.feedforward_modules must be among target_modules; {outside} are not")
        target_names = self.peft_names(model, layers, asked)
        ff_names = self.peft_names(model, ff, ff_asked) if ff else []
        if ff_names and target_names == sorted(layers) and ff_names != sorted(ff):
            ff_names = sorted(ff)  # full names on one side: full names on both, so that they line up
        return IA3Config(task_type=self.peft_task_type(model), target_modules=target_names,
                         feedforward_modules=ff_names, modules_to_save=self.head_modules(model) or None,
                         fan_in_fan_out=self.transposed(layers))

    @property
    def label(self) -> str:
        return "ia3"
