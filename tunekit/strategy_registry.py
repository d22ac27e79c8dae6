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
    "full": "Full",
    "lpft": "LPFT",
    "qat": "QAT",
}


def module_of(name: str) -> str:
    """The module that holds strategy ``name``: ``"lora"`` -> ``"tunekit.strategies.lora"``."""
    return f"tunekit.strategies.{name}"
