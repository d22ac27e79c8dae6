"""Adaptation strategies, one file each, registered by name in one table
(:data:`tunekit.strategy_registry.STRATEGIES`; :func:`register` adds one at run time).

    tk.Probe()                      # head only, on cached frozen features
    tk.Freeze(train_blocks=[4, 5])  # any subset of layer groups
    tk.LoRA(rank=8)                 # low-rank adapters via peft
    tk.IA3()                        # learned rescaling vectors via peft
    tk.DoRA(rank=8), tk.VeRA(), tk.LoHa(rank=8), tk.LoKr(rank=8), tk.LNTuning()   # the PEFT family
    tk.AdaLoRA(target_rank=8)       # LoRA whose rank training moves to where it matters
    tk.PromptTuning(tokens=20)      # learned virtual tokens before the text, no weight changed
    tk.PrefixTuning(tokens=20)      # learned keys and values in every layer (causal LMs)
    tk.Full()                       # everything
    tk.LPFT()                       # probe, then full (two phases)
    tk.QAT(bits=8)                  # full, with fake-quantized Linear layers (torchao)
"""
from __future__ import annotations

import importlib

from tunekit.config import ConfigError
from tunekit.strategies.base import Phase, Plan, Strategy
from tunekit.strategy_registry import STRATEGIES, module_of

REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Add a strategy class to the registry under ``cls.name`` (the built-in ones are listed
    in :data:`tunekit.strategy_registry.STRATEGIES`; this adds one at run time)."""
    REGISTRY[cls.name] = cls
    return cls


def _built_in(name: str, class_name: str) -> type[Strategy]:
    """The class of a line of the registry table, checked to carry the table's name."""
    cls = getattr(importlib.import_module(module_of(name)), class_name)
    if cls.name != name:
        raise TypeError(f"{module_of(name)}.{class_name}.name is {cls.name!r}, but the registry lists it as {name!r}")
    return cls


for _name, _class_name in STRATEGIES.items():
    globals()[_class_name] = register(_built_in(_name, _class_name))  # tunekit.strategies.LoRA and the rest


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
    odd = [k for k in kw if not isinstance(k, str)]
    if odd:
        raise ConfigError(f"strategy {name!r}: parameter names are words (got {odd!r})")
    return REGISTRY[name](**kw)  # a parameter it does not have: the strategies' metaclass says so


def get_strategies(specs, where: str = "strategies") -> list[Strategy]:
    """A list of strategies from a list (or tuple) of what :func:`get_strategy` takes; one
    strategy, name or dict alone is a list of one."""
    if isinstance(specs, (Strategy, str, dict)):
        specs = [specs]
    if not isinstance(specs, (list, tuple)) or not specs:
        raise ConfigError(f"{where} must be a non-empty list of strategies (Strategy objects, names such as "
                          f"'lora', or dicts) (got {specs!r})")
    return [get_strategy(s) for s in specs]


__all__ = ["Strategy", "Phase", "Plan", *STRATEGIES.values(), "REGISTRY", "register", "get_strategy",
           "get_strategies"]
