"""DoRA through ``peft``: weight-decomposed low-rank adaptation (Liu et al., 2024).

Each adapted weight is split into a magnitude (the norm of each of its columns, a
vector ``m`` that trains) and a direction (``W / ||W||`` per column) that a LoRA
update ``scale * B @ A`` moves: ``W' = m * (W + scale * B A) / ||W + scale * B A||``.
Training starts from the pretrained model exactly (B = 0, m = ||W||). It is LoRA with
peft's ``use_dora=True``: the same rank, alpha, targets and starts, plus one
magnitude number per output feature of each adapted layer. Its effective change is
measured through peft's own merge (magnitude included), like every adapter's.
"""
from __future__ import annotations

from dataclasses import dataclass

from tunekit.strategies.lora import LoRA
from tunekit.strategy_registry import DEFAULT_LR


@dataclass
class DoRA(LoRA):
    """Weight-decomposed LoRA: LoRA's parameters (rank, alpha, dropout, target_modules,
    init, rslora), plus a trained magnitude per output feature of each adapted layer."""

    name = "dora"
    default_lr = DEFAULT_LR["dora"]
    lab_label = "DoRA"

    def lora_options(self, model) -> dict:
        return {"use_dora": True}
