"""Prefix tuning through ``peft`` (Li & Liang, 2021): learned keys and values before the text, in
every layer.

No weight of the model changes. For ``tokens`` virtual tokens, every attention layer gets
trained keys and values, as if the text had been preceded by tokens the model had already
read (peft gives them as ``past_key_values``); unlike prompt tuning, which trains only the
input embeddings of its virtual tokens, the prefix acts on every layer directly.
``projection=True`` trains them through a small two-layer network (peft's
``prefix_projection``), as the paper does for stability.

The prefix starts as random values (``init="random"``, peft's start: N(0, 1) keys and values in
every layer, far from any the model computes: SmolLM2's loss starts near 8.5 against its 4.0 on
the same text) or as the keys and values the model itself computes for the tokens of
``init_text`` (``init="text"``, repeated or cut to ``tokens``; the paper's start "from real
words"): the model with that prefix reads a text exactly as it reads ``init_text`` followed
by the text.

peft's prefix tuning needs a model that takes past keys and values: transformers' decoders
trained as language models do; their classification heads and BERT-like encoders do not, and
tunekit refuses those in words (use :class:`~tunekit.strategies.prompt_tuning.PromptTuning`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from tunekit.config import ConfigError, plain_fields, require
from tunekit.strategies.adapter import AdapterStrategy
from tunekit.strategies.base import Plan
from tunekit.strategy_registry import DEFAULT_LR
from tunekit.tasks.base import returned_cache

INITS = ("random", "text")
"""How the prefix starts: peft's random values, or the keys and values of real tokens."""


def cache_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(keys, values)]`` per layer of a transformers cache (``[batch, heads, tokens, dim]``)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    if hasattr(cache, "to_legacy_cache"):
        cache = cache.to_legacy_cache()
    return [(k, v) for k, v in cache]


def prefix_from_cache(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The rows of peft's prefix embedding (``[tokens, layers * 2 * heads * dim]``) that give
    back ``layers``' keys and values: the inverse of how peft unfolds it (a view to ``[batch,
    tokens, layers * 2, heads, dim]``, then ``permute(2, 0, 3, 1, 4)``: key then value per layer)."""
    stacked = torch.stack([t[0] for kv in layers for t in kv])  # [layers * 2, heads, tokens, dim]
    return stacked.permute(2, 0, 1, 3).reshape(stacked.shape[2], -1)


@dataclass
class PrefixTuning(AdapterStrategy):
    """Learned keys and values for ``tokens`` virtual tokens in every layer; the weights stay.

    Args:
        tokens: how many virtual tokens, 1 .. 512.
        projection: train them through a two-layer network (peft's ``prefix_projection``).
        init: ``"random"`` or ``"text"`` (start from the model's own keys and values for the
            tokens of ``init_text``; without ``projection`` only).
        init_text: the words the prefix starts from with ``init="text"``; None otherwise.
    """

    tokens: int = 20
    projection: bool = False
    init: str = "random"
    init_text: Optional[str] = None

    name = "prefix_tuning"
    default_lr = DEFAULT_LR["prefix_tuning"]
    lab_label = "Prefix tuning"
    rank_field = rank_words = "tokens"  # the lab's box and the command line's prefix_tuning:N set how many

    def __post_init__(self) -> None:
        plain_fields(self)
        require(isinstance(self.tokens, int) and not isinstance(self.tokens, bool) and 1 <= self.tokens <= 512,
                "PrefixTuning.tokens", "an integer in 1 .. 512", self.tokens)
        require(isinstance(self.projection, bool), "PrefixTuning.projection", "True or False", self.projection)
        require(isinstance(self.init, str) and self.init in INITS, "PrefixTuning.init", f"one of {INITS}", self.init)
        if self.init == "text":
            require(isinstance(self.init_text, str) and self.init_text.strip() != "", "PrefixTuning.init_text",
                    "some words to start the prefix from (init='text')", self.init_text)
            require(not self.projection, "PrefixTuning.init", "'random' with projection=True (the network's "
                    "output cannot be set to given keys and values)", self.init)
        else:
            require(self.init_text is None, "PrefixTuning.init_text", "None unless init='text'", self.init_text)

    def peft_config(self, model):
        from peft import PrefixTuningConfig
        if model.task.peft_task_type != "CAUSAL_LM":
            raise ConfigError(f"PrefixTuning is for causal language models (task='causal_lm' or 'sft'); this model's "
                              f"task is {model.task.name!r}: peft's prefix tuning passes past keys and values, which "
                              f"transformers' classification models do not take (use PromptTuning)")
        return PrefixTuningConfig(task_type=self.peft_task_type(model), num_virtual_tokens=self.tokens,
                                  prefix_projection=self.projection)

    def plan(self, model) -> Plan:
        plan = super().plan(model)
        if self.init == "text":
            plan.start = self.start_from_text
        return plan

    def text_ids(self, model) -> list[int]:
        """The token ids the prefix starts from: ``init_text``'s (no special tokens), repeated
        or cut to ``tokens``."""
        ids = model.tokenizer(self.init_text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ConfigError(f"PrefixTuning.init_text {self.init_text!r} has no tokens for this tokenizer")
        return (ids * (self.tokens // len(ids) + 1))[:self.tokens]

    def start_from_text(self, model) -> None:
        """Set the prefix to the keys and values ``model`` computes for :meth:`text_ids`."""
        peft_model = model.peft
        encoder = peft_model.prompt_encoder[peft_model.active_adapter]
        weight = encoder.embedding.weight
        ids = torch.tensor([self.text_ids(model)], device=weight.device)
        base = peft_model.get_base_model()
        was = base.training
        base.eval()  # the keys and values it computes when it reads (no dropout)
        try:
            with torch.no_grad():
                out = base(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
        finally:
            base.train(was)
        with torch.no_grad():
            rows = prefix_from_cache(cache_layers(returned_cache(out)))
            if rows.shape != weight.shape:
                raise ConfigError(f"PrefixTuning init='text': this model's keys and values ({tuple(rows.shape)}) do "
                                  f"not fit peft's prefix ({tuple(weight.shape)}) on {model.hf.config.model_type}; "
                                  f"use init='random'")
            weight.copy_(rows.to(weight.dtype))

    @property
    def label(self) -> str:
        return f"prefix-{self.tokens}" + ("-proj" if self.projection else "") + ("-text" if self.init == "text" else "")
