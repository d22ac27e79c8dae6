"""Prompt tuning through ``peft`` (Lester et al., 2021): learned virtual tokens before the text.

No weight of the model changes. ``tokens`` embedding vectors (one per virtual token, of the
model's hidden size) are trained and put before the embeddings of every input, as if the
text began with words that no vocabulary has; the model reads them with its own attention.
A classification task also trains its new head in full (peft's ``modules_to_save``). The
vectors start as random values (``init="random"``) or as the embeddings of the tokens of
``init_text`` as the tokenizer encodes it, special tokens included (``init="text"``, repeated
or cut to ``tokens``), which the paper found to train better. The record keeps them in peft's
own format; :func:`tunekit.inspect.virtual_tokens` reads them back (their lengths, the
vocabulary tokens nearest to each). They cannot be folded into the weights: export and
post-training refuse a prompt-tuning record in words.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tunekit.config import plain_fields, require
from tunekit.strategies.adapter import AdapterStrategy
from tunekit.strategy_registry import DEFAULT_LR

INITS = ("random", "text")
"""How the virtual tokens start (peft's ``prompt_tuning_init``)."""


@dataclass
class PromptTuning(AdapterStrategy):
    """Learned virtual tokens before every input; the model's weights stay as they are.

    Args:
        tokens: how many virtual tokens, 1 .. 512 (the paper: 20 to 100 for large models).
        init: ``"random"`` or ``"text"`` (start from the embeddings of ``init_text``'s tokens).
        init_text: the words the tokens start from with ``init="text"``, e.g. "Classify the
            sentiment of this review:"; None otherwise.
    """

    tokens: int = 20
    init: str = "random"
    init_text: Optional[str] = None

    name = "prompt_tuning"
    default_lr = DEFAULT_LR["prompt_tuning"]
    lab_label = "Prompt tuning"
    rank_field = rank_words = "tokens"  # the lab's box and the command line's prompt_tuning:N set how many

    def __post_init__(self) -> None:
        plain_fields(self)
        require(isinstance(self.tokens, int) and not isinstance(self.tokens, bool) and 1 <= self.tokens <= 512,
                "PromptTuning.tokens", "an integer in 1 .. 512", self.tokens)
        require(isinstance(self.init, str) and self.init in INITS, "PromptTuning.init", f"one of {INITS}", self.init)
        if self.init == "text":
            require(isinstance(self.init_text, str) and self.init_text.strip() != "", "PromptTuning.init_text",
                    "some words to start the virtual tokens from (init='text')", self.init_text)
        else:
            require(self.init_text is None, "PromptTuning.init_text", "None unless init='text'", self.init_text)

    def peft_config(self, model):
        from peft import PromptTuningConfig, PromptTuningInit
        text = {}
        if self.init == "text":  # peft reads the tokenizer from the model's own folder (local files only)
            text = dict(prompt_tuning_init_text=self.init_text, tokenizer_name_or_path=str(model.path),
                        tokenizer_kwargs={"local_files_only": True})
        # the width of the embeddings they join and the model's layout, said outright: peft reads them from
        # config names that not every family uses (DistilBERT's are dim, n_heads, n_layers)
        layout = dict(token_dim=model.hf.get_input_embeddings().embedding_dim, num_layers=model.num_blocks,
                      num_attention_heads=model.hf.config.num_attention_heads)
        return PromptTuningConfig(task_type=self.peft_task_type(model), num_virtual_tokens=self.tokens, **layout,
                                  prompt_tuning_init=PromptTuningInit.TEXT if self.init == "text"
                                  else PromptTuningInit.RANDOM,
                                  modules_to_save=self.head_modules(model) or None, **text)

    @property
    def label(self) -> str:
        return f"prompt-{self.tokens}" + ("-text" if self.init == "text" else "")
