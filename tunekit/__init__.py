"""tunekit: see what happens when a pretrained language model is adapted.

    import tunekit as tk
    data  = tk.data.rotten_tomatoes()
    model = tk.load_model(label_names=data.label_names)
    run   = tk.train(model, data, strategy=tk.LoRA(rank=8), epochs=1)
    runs  = tk.compare([tk.Probe(), tk.Freeze(train_blocks=[4, 5]), tk.LoRA(rank=8), tk.Full()], data)
    tk.evaluate(run, split="test")
    lm    = tk.load_model("smollm2", task="causal_lm")        # next-token loss, perplexity
    tk.prune(run, sparsity=0.5); tk.quantize(run); tk.distil(run, student=[0, 2, 4], data=data)
    other = tk.import_run("hf-output/checkpoint-500", data=data)  # a peft adapter or fine-tune made elsewhere

Names are imported lazily, so ``import tunekit`` (and ``tunekit.plots``) stay light.
"""
from __future__ import annotations

import importlib
import logging
import sys

from tunekit.strategy_registry import STRATEGIES as _STRATEGIES

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
    "TrainingError": "tunekit.config", "RunRecordError": "tunekit.config",
    "TextDataset": "tunekit.data", "DataError": "tunekit.data",
    "load_model": "tunekit.models", "Model": "tunekit.models", "TextClassifier": "tunekit.models",
    "make_tiny": "tunekit.tiny", "Backbone": "tunekit.backbone",
    "ModelNotFoundError": "tunekit.models", "make_tiny_bert": "tunekit.tiny",
    **{class_name: "tunekit.strategies" for class_name in _STRATEGIES.values()},  # tk.Probe, tk.LoRA, ...
    "Strategy": "tunekit.strategies", "get_strategy": "tunekit.strategies",
    "train": "tunekit.engine", "compare": "tunekit.engine", "Trainer": "tunekit.engine",
    "Event": "tunekit.engine", "StopTraining": "tunekit.engine", "evaluate": "tunekit.evaluation",
    "generations": "tunekit.evaluation", "text_losses": "tunekit.evaluation",
    "Run": "tunekit.runs", "load_run": "tunekit.runs", "list_runs": "tunekit.runs",
    "import_run": "tunekit.imports", "learning_rates": "tunekit.rate_plan",
    "lr_find": "tunekit.lr_finder",
    "Lab": "tunekit.widgets",
    "prune": "tunekit.post", "quantize": "tunekit.post", "distil": "tunekit.post", "forgetting": "tunekit.post",
    "measure": "tunekit.post",
    "experiment": "tunekit.experiments", "Experiment": "tunekit.experiments",
    "list_experiments": "tunekit.experiments",
}
_MODULES = ("data", "models", "backbone", "tasks", "adapters", "strategies", "engine", "runs", "plots", "config",
            "report", "inspect", "widgets", "metrics", "post", "experiments")

__all__ = sorted(_EXPORTS) + list(_MODULES)


def _registered_at_run_time() -> dict:
    """``{class name: class}`` of the strategies added with ``tunekit.strategies.register``,
    once the strategies are loaded (never loading them: that imports torch)."""
    strategies = sys.modules.get("tunekit.strategies")
    registry = getattr(strategies, "REGISTRY", {})
    return {cls.__name__: cls for cls in registry.values() if cls.__name__ not in _EXPORTS}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return importlib.import_module(f"tunekit.{name}")
    registered = _registered_at_run_time()
    if name in registered:
        return registered[name]
    raise AttributeError(f"module 'tunekit' has no attribute {name!r}")


def __dir__():
    return __all__ + sorted(_registered_at_run_time()) + ["__version__"]
