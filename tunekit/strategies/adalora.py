"""AdaLoRA through ``peft``: LoRA whose rank is moved to where it matters (Zhang et al., 2023).

Each adapted weight gets an update in SVD form, ``scale * P diag(e) Q`` (peft's ``lora_B``,
``lora_E``, ``lora_A``; ``e`` starts at zero, so training starts from the pretrained model
exactly), at ``init_rank`` per layer. During training the triplets ``(P[:, i], e[i], Q[i])``
are scored by how much the loss depends on them, and the least important ones are cut
(their ``e[i]`` set to zero), until the model holds ``target_rank`` per layer *on average*:
a layer that matters more keeps more. Three stretches, as fractions of the phase's steps:
``warmup`` at the full rank, the budget then falling (a cubic schedule) and, for the last
``final`` fraction, the ranks fixed. The engine adds the orthogonality penalty
``orth_reg * mean(||Q Q^T - I||_F, ||P^T P - I||_F)`` to the task's loss (logged curves show
the task's loss alone) and calls peft's ``update_and_allocate`` after every optimizer step.

The phase's length is only known once the data is batched, so peft's ``total_step`` (and
``tinit`` / ``tfinal`` from the fractions) are set by :meth:`AdaLoRA.scheduled`; the record's
``adapter_config.json`` keeps them and the final ``rank_pattern``, from which plain peft
reloads the adapter at its final ranks. :func:`tunekit.inspect.adapter_ranks` reads where
the rank went.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from tunekit.config import ConfigError, finite_number, plain_fields, require
from tunekit.strategies.adapter import AdapterStrategy, as_names
from tunekit.strategies.base import Plan
from tunekit.strategy_registry import DEFAULT_LR

NOMINAL_STEPS = 1000
"""The phase length assumed where only the adapter's layout matters (counting, checking): the
number of steps changes the rank schedule, never the tensors."""


@dataclass
class AdaLoRA(AdapterStrategy):
    """LoRA with a rank budget that training distributes over the layers.

    Args:
        target_rank: the average rank per adapted layer at the end, >= 1 and < ``init_rank``.
        init_rank: every layer's rank at the start (peft's ``init_r``), at most the smallest
            dimension of the target layers. None means 1.5 x ``target_rank`` (peft's 12 for 8).
        alpha: scaling numerator; the update is scaled by ``alpha / init_rank``. None means
            ``2 * init_rank`` (a scale of 2, as LoRA's default).
        dropout: dropout on the adapter's input during training, in [0, 1).
        target_modules: layers to adapt; None takes peft's default for the architecture.
        warmup: fraction of the phase's steps trained at the full rank before any is cut
            (peft's ``tinit``), in [0, 1).
        final: fraction of the phase's steps at the end with the ranks fixed (peft's
            ``tfinal``), in (0, 1); ``warmup + final`` below 1 leaves steps to cut in.
        interval: cut every ``interval`` steps (peft's ``deltaT``), an integer >= 1.
        beta1, beta2: the smoothing of the importance scores and of their uncertainty, in [0, 1).
        orth_reg: weight of the orthogonality penalty, >= 0.
    """

    target_rank: int = 8
    init_rank: Optional[int] = None
    alpha: Optional[float] = None
    dropout: float = 0.05
    target_modules: Optional[Sequence[str]] = None
    warmup: float = 0.1
    final: float = 0.2
    interval: int = 1
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg: float = 0.5

    name = "adalora"
    rank_field = "target_rank"  # what the lab's rank box and the command line's adalora:R set
    rank_words = "target rank"
    default_lr = DEFAULT_LR["adalora"]
    lab_label = "AdaLoRA"
    peft_table = "TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING"
    default_labels = ("query", "value")

    def __post_init__(self) -> None:
        plain_fields(self)
        if self.init_rank is None and isinstance(self.target_rank, int):
            self.init_rank = self.target_rank + max(1, self.target_rank // 2)
        for field in ("target_rank", "init_rank", "interval"):
            value = getattr(self, field)
            require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"AdaLoRA.{field}",
                    "an integer >= 1", value)
        require(self.target_rank < self.init_rank, "AdaLoRA.target_rank",
                f"below init_rank={self.init_rank} (AdaLoRA cuts from init_rank down to target_rank on average)",
                self.target_rank)
        if self.alpha is None:
            self.alpha = 2 * self.init_rank
        require(finite_number(self.alpha) and self.alpha > 0, "AdaLoRA.alpha", "a finite number > 0", self.alpha)
        require(finite_number(self.dropout) and 0 <= self.dropout < 1, "AdaLoRA.dropout", "in [0, 1)", self.dropout)
        require(finite_number(self.warmup) and 0 <= self.warmup < 1, "AdaLoRA.warmup", "in [0, 1)", self.warmup)
        require(finite_number(self.final) and 0 < self.final < 1, "AdaLoRA.final", "in (0, 1)", self.final)
        require(self.warmup + self.final < 1, "AdaLoRA.warmup + AdaLoRA.final",
                "below 1 (the steps between them are where ranks are cut)", self.warmup + self.final)
        for field in ("beta1", "beta2"):
            value = getattr(self, field)
            require(finite_number(value) and 0 <= value < 1, f"AdaLoRA.{field}", "in [0, 1)", value)
        require(finite_number(self.orth_reg) and self.orth_reg >= 0, "AdaLoRA.orth_reg", "a finite number >= 0",
                self.orth_reg)
        self.target_modules = as_names(self.target_modules, "AdaLoRA.target_modules")

    def stretches(self, steps: int) -> tuple[int, int]:
        """``(tinit, tfinal)`` in steps for a phase of ``steps``: ``warmup`` and ``final`` of it,
        at least one step fixed at the end (where peft makes the final cut), and at least one
        step between them to cut in. Raises ConfigError for a phase too short for that."""
        tinit, tfinal = int(self.warmup * steps), max(1, round(self.final * steps))
        if steps - tfinal <= tinit:
            raise ConfigError(f"AdaLoRA needs a phase long enough to cut ranks in: {steps} step(s) leave none between "
                              f"warmup={self.warmup:g} ({tinit} steps) and final={self.final:g} ({tfinal} steps); "
                              f"train more steps (epochs, train_size, a smaller batch_size) or lower warmup / final")
        return tinit, tfinal

    def peft_config(self, model, steps: int = NOMINAL_STEPS):
        from peft import AdaLoraConfig
        asked = list(self.target_modules or self.default_target_names(model))
        layers = self.targets(model, asked)
        self.check_rank_fits(layers, "init_rank")
        tinit, tfinal = self.stretches(steps)
        return AdaLoraConfig(task_type=self.peft_task_type(model), target_r=self.target_rank, init_r=self.init_rank,
                             lora_alpha=self.alpha, lora_dropout=self.dropout,
                             target_modules=self.peft_names(model, layers, asked),
                             modules_to_save=self.head_modules(model) or None,
                             fan_in_fan_out=self.transposed(layers), tinit=tinit, tfinal=tfinal,
                             deltaT=self.interval, beta1=self.beta1, beta2=self.beta2,
                             orth_reg_weight=self.orth_reg, total_step=steps)

    def scheduled(self, model, plan: Plan, steps: int) -> Plan:
        """The plan for a phase of ``steps`` optimizer steps: peft's schedule over those steps,
        the orthogonality penalty and the rank allocation after each step."""
        return dataclasses.replace(plan, adapter=self.peft_config(model, steps), penalty=orthogonality,
                                   after_step=allocate)

    @property
    def label(self) -> str:
        return f"adalora-r{self.target_rank}-of{self.init_rank}"


def orthogonality(model) -> torch.Tensor:
    """The mean over adapted layers of ``||Q Q^T - I||_F`` and ``||P^T P - I||_F`` (``Q`` is
    ``lora_A`` ``[r, in]``, ``P`` is ``lora_B`` ``[out, r]``) of the adapter that trains, times
    its ``orth_reg_weight``: what AdaLoRA adds to the loss to keep ``P`` and ``Q`` near orthogonal."""
    from peft.tuners.adalora.layer import AdaLoraLayer
    peft_model = model.peft
    name = peft_model.active_adapter
    terms = []
    for module in peft_model.modules():
        if isinstance(module, AdaLoraLayer) and name in module.lora_A:
            q, p = module.lora_A[name], module.lora_B[name]
            for cov in (q @ q.T, p.T @ p):
                eye = torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype)
                terms.append(torch.linalg.matrix_norm(cov - eye))
    weight = peft_model.peft_config[name].orth_reg_weight
    return weight * torch.stack(terms).mean()


def allocate(model, step: int) -> None:
    """peft's rank allocation after optimizer step ``step`` (0-based within the phase; the
    gradients are still there): the importance scores, the budget, the cut."""
    model.peft.base_model.update_and_allocate(step)
