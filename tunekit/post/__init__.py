"""After adaptation: pruning, quantization, distillation and forgetting.

    pruned    = tk.prune(run, sparsity=0.5)                     # or method="heads" / "neurons"
    quantized = tk.quantize(run)                                # int8 with torchao
    student   = tk.distil(run, student=[0, 2, 4], loss="response+feature")
    table     = tk.forgetting([tk.Probe(), tk.LoRA(), tk.Full()], first="rotten_tomatoes", then="bbc_news")

Each operation reads a record (or a pretrained model) and writes a record of its own
``kind`` (``prune``, ``quantize``, ``distil``) whose ``parent`` is the run it started
from, so the results sit in the same runs table, Compare, Weights and Representations
views as the training runs. Each measures its effect the same way, before and after, on
this machine (:mod:`tunekit.post.base`): the task's metrics on the run's validation
subset, parameters held and non-zero, size on disk and CPU latency.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "prune": "tunekit.post.pruning", "quantize": "tunekit.post.quantization", "distil": "tunekit.post.distillation",
    "forgetting": "tunekit.post.continual", "measure": "tunekit.post.base", "in_words": "tunekit.post.words",
    "recover_run": "tunekit.post.pruning", "sweep_table": "tunekit.post.pruning",
    "Distillation": "tunekit.post.distillation", "DistillationModule": "tunekit.post.distillation",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tunekit.post' has no attribute {name!r}")
