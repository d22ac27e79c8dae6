"""Adaptation strategies, one file each, registered by name.

    tk.Probe()                      # head only, on cached frozen features
    tk.Freeze(train_blocks=[4, 5])  # any subset of layer groups
    tk.LoRA(rank=8)                 # low-rank adapters via peft
    tk.IA3()                        # learned rescaling vectors via peft
    tk.Full()                       # everything
    tk.LPFT()                       # probe, then full (two phases)
    tk.QAT(bits=8)                  # full, with fake-quantized Linear layers (torchao)
"""
from __future__ import annotations

import dataclasses

from tunekit.config import ConfigError
from tunekit.strategies.base import Phase, Plan, Strategy
from tunekit.strategies.freeze import Freeze
from tunekit.strategies.full import Full
from tunekit.strategies.ia3 import IA3
from tunekit.strategies.lora import LoRA
from tunekit.strategies.lpft import LPFT
from tunekit.strategies.probe import Probe
from tunekit.strategies.qat import QAT

REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Add a strategy class to the registry under ``cls.name``."""
    REGISTRY[cls.name] = cls
    return cls


for _cls in (Probe, Freeze, LoRA, IA3, Full, LPFT, QAT):
    register(_cls)


def get_strategy(spec) -> Strategy:
    """A strategy from an instance, a name (``"lora"``), or a dict such as
    ``{"name": "lora", "rank": 4}`` (what run records store)."""
    if isinstance(spec, Strategy):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(f"strategy must be a Strategy, a name or a dict with 'name' (got {spec!r})")
    kw = dict(spec)
    name = kw.pop("name")
    if not isinstance(name, str) or name not in REGISTRY:
        raise ConfigError(f"unknown strategy {name!r}; known: {sorted(REGISTRY)}")
    cls = REGISTRY[name]
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(str(k) for k in kw if k not in fields)
    if unknown:
        raise ConfigError(f"strategy {name!r} has no parameter(s) {unknown}; its parameters are {fields}")
    return cls(**kw)


__all__ = ["Strategy", "Phase", "Plan", "Probe", "Freeze", "LoRA", "IA3", "Full", "LPFT", "QAT", "REGISTRY", "register",
           "get_strategy"]
