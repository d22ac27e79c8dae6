"""Quantization-aware training: fine-tune every parameter with the block Linear layers
fake-quantized, so the weights learn to live with the rounding of the int model.

Fake quantization is torchao's (``QATConfig`` prepare): weights are rounded per output
channel to ``bits`` bits (symmetric), activations per token to int8 (asymmetric), in the
forward pass; gradients pass straight through (Jacob et al. 2018, "Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference").
``tk.quantize(run)`` then converts the run with exactly that scheme
(``method="intx-dynamic"``), to be compared with post-training quantization of a plain
fine-tune at the same bit width.
"""
from __future__ import annotations

from dataclasses import dataclass

from tunekit.config import ConfigError, plain_fields
from tunekit.quantizers import torchao
from tunekit.strategies.base import Plan, Strategy
from tunekit.strategy_registry import DEFAULT_LR


@dataclass
class QAT(Strategy):
    """Full fine-tuning with fake-quantized block Linear layers (``bits``-bit weights, 2..8)."""

    bits: int = 8

    name = "qat"
    default_lr = DEFAULT_LR["qat"]

    def __post_init__(self) -> None:
        plain_fields(self)
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ConfigError(f"QAT.bits must be an integer in 2..8 (got {self.bits!r})")
        torchao()  # a clear error now if torchao is missing

    def plan(self, model) -> Plan:
        return Plan(train=tuple(model.active_groups), fake_quant=self.bits)

    @property
    def label(self) -> str:
        return f"qat-int{self.bits}"
