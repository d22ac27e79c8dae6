"""The strategies tunekit knows, one line each; a plain table, read without importing torch.

A strategy is one file, ``tunekit/strategies/<name>.py`` holding a
:class:`~tunekit.strategies.Strategy` subclass whose ``name`` is ``<name>``, plus one
line in :data:`STRATEGIES`. From this table come ``tunekit.strategies.REGISTRY`` (and
that package's names), the ``tk.<ClassName>`` exports, the names ``tunekit compare
--strategies`` accepts and lists in its help, and the lab's strategy picker (which
offers those whose class sets a ``lab_label`` of its own).

``tunekit.strategies.register(cls)`` adds a strategy at run time: ``get_strategy``, the
command line's strategy parser and ``tk.<ClassName>`` then know it too.
"""
from __future__ import annotations

# name -> its class in tunekit/strategies/<name>.py, in the order the command line lists them
STRATEGIES: dict[str, str] = {
    "probe": "Probe",
    "freeze": "Freeze",
    "lora": "LoRA",
    "ia3": "IA3",
    "dora": "DoRA",
    "adalora": "AdaLoRA",
    "vera": "VeRA",
    "loha": "LoHa",
    "lokr": "LoKr",
    "ln_tuning": "LNTuning",
    "prompt_tuning": "PromptTuning",
    "prefix_tuning": "PrefixTuning",
    "full": "Full",
    "lpft": "LPFT",
    "gradual": "GradualUnfreeze",
    "discriminative": "Discriminative",
    "qat": "QAT",
}

# name -> its default peak learning rate (the class's ``default_lr`` is read from here), so that a
# reader of records that does not import torch shows the rate a run used where it kept none
DEFAULT_LR: dict[str, float] = {
    "probe": 1e-2,
    "freeze": 2e-4,
    "lora": 1e-3,
    "ia3": 3e-3,
    "dora": 1e-3,
    # AdaLoRA, LoHa and LoKr start their update at or near zero through a product of small factors: at
    # LoRA's 1e-3 they barely moved in 125 steps; 1e-2 measured best of 1e-3..3e-2 (benchmarks/RESULTS.md)
    "adalora": 1e-2,
    "vera": 5e-3,
    "loha": 1e-2,
    "lokr": 1e-2,
    "ln_tuning": 1e-3,
    "prompt_tuning": 3e-2,
    "prefix_tuning": 1e-2,
    "full": 1e-4,
    "lpft": 1e-4,
    "gradual": 2e-4,
    "discriminative": 1e-4,
    "qat": 1e-4,
}


def module_of(name: str) -> str:
    """The module that holds strategy ``name``: ``"lora"`` -> ``"tunekit.strategies.lora"``."""
    return f"tunekit.strategies.{name}"

LORA_INITS = ("default", "gaussian", "pissa", "olora")
"""How a LoRA adapter may start (peft's ``init_lora_weights``; ``"default"`` is its ``True``). Here,
torch-free, so that the command line's words (``lora:8:pissa``) are read from the same list."""
