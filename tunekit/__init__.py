"""tunekit: see what happens when a pretrained language model is adapted.

    import tunekit as tk
    data  = tk.data.rotten_tomatoes()
    model = tk.load_model(label_names=data.label_names)
    run   = tk.train(model, data, strategy=tk.LoRA(rank=8), epochs=1)
    runs  = tk.compare([tk.Probe(), tk.Freeze(train_blocks=[4, 5]), tk.LoRA(rank=8), tk.Full()], data)
    tk.evaluate(run, split="test")
    lm    = tk.load_model("smollm2", task="causal_lm")        # next-token loss, perplexity
    tk.prune(run, sparsity=0.5); tk.quantize(run); tk.distil(run, student=[0, 2, 4], data=data)

Names are imported lazily, so ``import tunekit`` (and ``tunekit.plots``) stay light.
"""
from __future__ import annotations

import importlib
import logging
import sys

__version__ = "0.1.0"


class _ImportNoise(logging.Filter):
    """Drops two messages that say nothing to a tunekit user, whoever imports torchao (peft
    and transformers do too): torchao failing to load its CUDA-only kernels on a CPU build
    of torch, and torch's notice that torchao registers enums the old way."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name == "torchao" and message.startswith("Failed to load") and ".so" in message:
            torch = sys.modules.get("torch")
            return not (torch is not None and getattr(torch.version, "cuda", None) is None)
        return "is an Enum subclass and is now natively supported by torch.compile" not in message


for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).addFilter(_ImportNoise())

_EXPORTS = {
    "TrainConfig": "tunekit.config", "ConfigError": "tunekit.config", "TunekitError": "tunekit.config",
    "TrainingError": "tunekit.config", "RunRecordError": "tunekit.runs",
    "TextDataset": "tunekit.data", "DataError": "tunekit.data",
    "load_model": "tunekit.models", "Model": "tunekit.models", "TextClassifier": "tunekit.models",
    "make_tiny": "tunekit.models", "Backbone": "tunekit.backbone",
    "ModelNotFoundError": "tunekit.models", "make_tiny_bert": "tunekit.models",
    "Probe": "tunekit.strategies", "Freeze": "tunekit.strategies", "LoRA": "tunekit.strategies",
    "IA3": "tunekit.strategies", "Full": "tunekit.strategies", "LPFT": "tunekit.strategies",
    "QAT": "tunekit.strategies", "Strategy": "tunekit.strategies",
    "get_strategy": "tunekit.strategies",
    "train": "tunekit.engine", "compare": "tunekit.engine", "Trainer": "tunekit.engine",
    "Event": "tunekit.engine", "StopTraining": "tunekit.engine", "evaluate": "tunekit.evaluation",
    "Run": "tunekit.runs", "load_run": "tunekit.runs", "list_runs": "tunekit.runs",
    "Lab": "tunekit.widgets",
    "prune": "tunekit.post", "quantize": "tunekit.post", "distil": "tunekit.post", "forgetting": "tunekit.post",
    "measure": "tunekit.post",
}
_MODULES = ("data", "models", "backbone", "tasks", "adapters", "strategies", "engine", "runs", "plots", "config",
            "report", "inspect", "widgets", "metrics", "post")

__all__ = sorted(_EXPORTS) + list(_MODULES)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"tunekit.{name}")
    raise AttributeError(f"module 'tunekit' has no attribute {name!r}")


def __dir__():
    return __all__ + ["__version__"]
