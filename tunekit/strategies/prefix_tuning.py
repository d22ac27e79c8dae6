"""Prefix tuning through ``peft`` (Li & Liang, 2021): learned keys and values before the text, in
every layer.

No weight of the model changes. For ``tokens`` virtual tokens, every attention layer gets
trained keys and values, as if the text had been preceded by tokens the model had already
read (peft gives them as ``past_key_values``); unlike prompt tuning, which trains only the
input embeddings of its virtual tokens, the prefix acts on every layer directly.
``projection=True`` trains them through a small two-layer network (peft's
``prefix_projection``), as the paper does for stability.

peft's prefix tuning needs a model that takes past keys and values: transformers' decoders
trained as language models do; their classification heads and BERT-like encoders do not, and
tunekit refuses those in words (use :class:`~tunekit.strategies.prompt_tuning.PromptTuning`).
"""
from __future__ import annotations

from dataclasses import dataclass

from tunekit.config import ConfigError, plain_fields, require
from tunekit.strategies.adapter import AdapterStrategy
from tunekit.strategy_registry import DEFAULT_LR


@dataclass
class PrefixTuning(AdapterStrategy):
    """Learned keys and values for ``tokens`` virtual tokens in every layer; the weights stay.

    Args:
        tokens: how many virtual tokens, 1 .. 512.
        projection: train them through a two-layer network (peft's ``prefix_projection``).
    """

    tokens: int = 20
    projection: bool = False

    name = "prefix_tuning"
    default_lr = DEFAULT_LR["prefix_tuning"]
    lab_label = "Prefix tuning"
    rank_field = rank_words = "tokens"  # the lab's box and the command line's prefix_tuning:N set how many

    def __post_init__(self) -> None:
        plain_fields(self)
        require(isinstance(self.tokens, int) and not isinstance(self.tokens, bool) and 1 <= self.tokens <= 512,
                "PrefixTuning.tokens", "an integer in 1 .. 512", self.tokens)
        require(isinstance(self.projection, bool), "PrefixTuning.projection", "True or False", self.projection)

    def peft_config(self, model):
        from peft import PrefixTuningConfig
        if model.task.name != "causal_lm":
            raise ConfigError(f"PrefixTuning is for causal language models (task='causal_lm'); this model's task "
                              f"is {model.task.name!r}: peft's prefix tuning passes past keys and values, which "
                              f"transformers' classification models do not take (use PromptTuning)")
        return PrefixTuningConfig(task_type=self.peft_task_type(model), num_virtual_tokens=self.tokens,
                                  prefix_projection=self.projection)

    @property
    def label(self) -> str:
        return f"prefix-{self.tokens}" + ("-proj" if self.projection else "")
