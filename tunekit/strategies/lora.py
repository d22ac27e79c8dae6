"""LoRA through ``peft``: low-rank adapters on chosen layers, a new head trained in full.

The update of a wrapped weight is ``(alpha / rank) * B @ A`` with ``A`` of shape
``[rank, in]`` and ``B`` of shape ``[out, rank]`` (``B`` starts at zero, so
training starts from the pretrained model exactly). The default targets are
peft's own per-architecture defaults (BERT: ``query``, ``value``; Llama:
``q_proj``, ``v_proj``; GPT-2: ``c_attn``), or the query and value projections
where peft has no entry (DistilBERT: ``q_lin``, ``v_lin``). The run record stores
the adapter in peft's own ``save_pretrained`` format, so plain ``peft`` loads it.

``init`` chooses how A and B start (peft's ``init_lora_weights``): ``"default"`` (B = 0),
``"gaussian"``, or ``"pissa"`` / ``"olora"``, which start the adapter on the principal
singular directions (PiSSA, Meng et al. 2024) or an orthonormal QR basis (OLoRA) of each
weight and take that part out of the base weight. Those two change the base weights
before training; the views therefore measure their change against the original
checkpoint, and loading the record with plain peft repeats the same (deterministic)
start. ``rslora=True`` scales by ``alpha / sqrt(rank)`` (Kalajdzievski 2023).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from tunekit import adapters
from tunekit.config import ConfigError, finite_number, plain_fields, require
from tunekit.strategies.adapter import AdapterStrategy, as_names
from tunekit.strategy_registry import DEFAULT_LR, LORA_INITS

MAX_SCALE = 1000.0
"""The largest alpha / rank accepted: beyond it an update of any size swamps the weights."""

INITS = LORA_INITS
"""How a LoRA adapter may start (peft's ``init_lora_weights``; ``"default"`` is its ``True``)."""
CHANGES_BASE = ("pissa", "olora")
"""Starts that move part of each base weight into the adapter."""


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
        init: how the adapter starts: one of :data:`INITS` (see the module's text).
        rslora: scale by ``alpha / sqrt(rank)`` instead of ``alpha / rank``.
    """

    rank: int = 8
    alpha: Optional[float] = None
    dropout: float = 0.05
    target_modules: Optional[Sequence[str]] = None
    init: str = "default"
    rslora: bool = False

    name = "lora"
    default_lr = DEFAULT_LR["lora"]
    lab_label = "LoRA"  # what the lab's strategy picker calls it
    peft_table = "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING"
    default_labels = ("query", "value")

    def __post_init__(self) -> None:
        plain_fields(self)
        who = type(self).__name__
        require(isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 1,
                f"{who}.rank", "an integer >= 1", self.rank)
        if self.alpha is None:
            self.alpha = 2 * self.rank
        require(finite_number(self.alpha) and self.alpha > 0, f"{who}.alpha", "a finite number > 0", self.alpha)
        require(self.alpha / self.rank <= MAX_SCALE, f"{who}.alpha",
                f"at most {MAX_SCALE:g} x rank = {MAX_SCALE * self.rank:g} (alpha / rank scales every update; "
                f"usual values are 1 to 4 x rank)", self.alpha)
        require(finite_number(self.dropout) and 0 <= self.dropout < 1,
                f"{who}.dropout", "in [0, 1)", self.dropout)
        require(isinstance(self.init, str) and self.init in INITS, f"{who}.init", f"one of {INITS}", self.init)
        require(isinstance(self.rslora, bool), f"{who}.rslora", "True or False", self.rslora)
        self.target_modules = as_names(self.target_modules, f"{who}.target_modules")

    @property
    def changes_base(self) -> bool:
        """True when the adapter's start moves part of each base weight into it (PiSSA, OLoRA)."""
        return self.init in CHANGES_BASE

    def lora_options(self, model) -> dict:
        """What a LoRA-like method adds to peft's ``LoraConfig`` (DoRA: ``use_dora``)."""
        return {}

    def peft_config(self, model):
        from peft import LoraConfig
        who = type(self).__name__
        asked = list(self.target_modules or self.default_target_names(model))
        layers = self.targets(model, asked)
        self.check_rank_fits(layers)
        if self.init == "olora" and self.transposed(layers):
            raise ConfigError(f"{who}.init='olora' is not available for {model.hf.config.model_type!r} models: peft's "
                              f"OLoRA start cannot read transformers' Conv1D layers (weights stored [in, out]); use "
                              f"init='pissa', 'gaussian' or 'default'")
        quantized = [n for n in layers if adapters.quantized(layers[n].weight)]
        if self.changes_base and quantized:
            raise ConfigError(f"{who}.init={self.init!r} rewrites each base weight from its own decomposition; "
                              f"{len(quantized)} target layer(s) of this model are quantized (e.g. {quantized[0]}): "
                              f"use init='default' or 'gaussian', or start from the unquantized model")
        return LoraConfig(task_type=self.peft_task_type(model), r=self.rank, lora_alpha=self.alpha,
                          lora_dropout=self.dropout, target_modules=self.peft_names(model, layers, asked),
                          modules_to_save=self.head_modules(model) or None,
                          fan_in_fan_out=self.transposed(layers),
                          init_lora_weights=True if self.init == "default" else self.init,
                          use_rslora=self.rslora, **self.lora_options(model))

    @property
    def label(self) -> str:
        """``lora-r8``; with an alpha other than the default 2 x rank, ``lora-r8-a32`` (so
        that runs that differ in alpha never share a label)."""
        label = f"{self.name}-r{self.rank}" + ("" if self.alpha == 2 * self.rank else f"-a{self.alpha:g}")
        return label + ("" if self.init == "default" else f"-{self.init}") + ("-rs" if self.rslora else "")
