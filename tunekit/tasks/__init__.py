"""Tasks, one file each, registered by name: what the model is trained to do.

    tk.load_model("minilm", label_names=data.label_names)     # "classification" (default)
    tk.load_model("smollm2", task="causal_lm")                 # next-token loss, perplexity
    tk.load_model("smollm2", task="sft")                       # prompt -> response pairs, loss on the response
    tk.load_model("path/to/t5", task="seq2seq")                # an encoder-decoder: source -> target
"""
from __future__ import annotations

from tunekit.config import ConfigError
from tunekit.tasks.base import MetricAccumulator, Task, TaskOutput
from tunekit.tasks.causal_lm import CausalLM
from tunekit.tasks.classification import POOLINGS, Classification
from tunekit.tasks.seq2seq import Seq2Seq
from tunekit.tasks.sft import SFT

TASKS: dict[str, type[Task]] = {
    "classification": Classification,
    "causal_lm": CausalLM,
    "sft": SFT,
    "seq2seq": Seq2Seq,
}


def task_class(name: str) -> type[Task]:
    if not isinstance(name, str) or name not in TASKS:
        raise ConfigError(f"task must be one of {sorted(TASKS)} (got {name!r})")
    return TASKS[name]


__all__ = ["Task", "TaskOutput", "MetricAccumulator", "Classification", "CausalLM", "SFT", "Seq2Seq", "TASKS",
           "POOLINGS",
           "task_class"]
