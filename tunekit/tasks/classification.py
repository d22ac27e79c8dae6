"""Text classification: a pretrained model with a classification head, cross-entropy loss,
accuracy and macro-F1.

What the head sees is the task module's *pooling*:

* ``"mean"``: the mean of the last hidden states over the real tokens (how the built-in
  MiniLM was trained; its BERT pooler never was);
* ``"last"``: the last real token's hidden state, found from the attention mask (a
  decoder's default: it is the only token that has seen the whole text);
* ``"model"``: the architecture's own head input (BERT's pooler, Hugging Face's
  decoder heads).

Under ``"mean"`` and ``"last"`` the module runs the base model and the head itself;
both sit inside one ``forward``, so a wrapper (DDP, accelerate) sees the whole
computation. A batch with ``"features"`` (a probe's cached head inputs) runs the head
alone.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tunekit.config import ConfigError
from tunekit.metrics import macro_f1
from tunekit.tasks.base import MetricAccumulator, Task, TaskOutput, model_inputs

POOLINGS = ("mean", "last", "model")


def default_pooling(path, hf: Optional[nn.Module] = None) -> str:
    """'mean' for a sentence-transformers checkpoint that mean-pools (all-MiniLM-L6-v2);
    'last' for a decoder whose head is ``score`` (Llama, Qwen, Mistral, GPT-2); else 'model'."""
    f = Path(path) / "1_Pooling" / "config.json"
    try:
        if json.loads(f.read_text()).get("pooling_mode_mean_tokens"):
            return "mean"
    except (OSError, ValueError):
        pass
    if hf is not None and isinstance(getattr(hf, "score", None), nn.Linear):
        return "last"
    return "model"


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """[batch, hidden] from the last hidden states [batch, tokens, hidden].

    ``"last"`` finds each row's last real token from the attention mask, so it holds for
    left or right padding and whatever the token ids are (Hugging Face's decoder heads
    compare ids with the pad id, which moves when the ids change, e.g. to an attribution
    baseline)."""
    if pooling == "last":
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        last = (attention_mask.to(hidden.device) * positions).argmax(-1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


class ClassifierModule(nn.Module):
    """``forward(batch) -> TaskOutput(loss, logits)`` for text classification."""

    def __init__(self, hf: nn.Module, head_name: str, pooling: str):
        super().__init__()
        self.hf = hf
        self.head_name = head_name
        self.pooling = pooling
        self.prompt: Optional[nn.Module] = None  # learned virtual tokens before the text (prompt tuning)

    def inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        """The model's inputs (:func:`tunekit.tasks.base.model_inputs`: virtual tokens first, if any)."""
        return model_inputs(self, input_ids, attention_mask)

    @property
    def pools_itself(self) -> bool:
        """True when this module pools the last hidden states for the head ("mean" or "last"),
        bypassing the architecture's own head input (e.g. BERT's pooler)."""
        return self.pooling in ("mean", "last")

    def head(self) -> nn.Module:
        return self.hf.get_submodule(self.head_name)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """What the head sees: [batch, hidden]."""
        inputs = self.inputs(input_ids, attention_mask)
        if self.pools_itself:
            h = self.hf.base_model(**inputs).last_hidden_state
            return pool(h, inputs["attention_mask"][:, -h.shape[1]:], self.pooling)  # a prefix is past: not in h
        seen = []
        handle = self.head().register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
        try:
            self.hf(**inputs)
        finally:
            handle.remove()
        if seen[-1].ndim != 2:
            raise ConfigError(f"pooling 'model' gives {type(self.hf).__name__}'s head "
                              f"{tuple(seen[-1].shape)} (every token), not one vector per example; "
                              "use pooling='last' or pooling='mean'")
        return seen[-1]

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pools_itself:
            return self.head()(self.features(input_ids, attention_mask))
        return self.hf(**self.inputs(input_ids, attention_mask)).logits

    def forward(self, batch: dict) -> TaskOutput:
        if "features" in batch:
            logits = self.head()(batch["features"])
        else:
            logits = self.logits(batch["input_ids"], batch["attention_mask"])
        labels = batch.get("labels")
        loss = None if labels is None else F.cross_entropy(logits.float(), labels)
        return TaskOutput(loss, logits, 0 if labels is None else int(labels.numel()))


class Classification(Task):
    """Text classification into ``label_names``.

    Args:
        label_names: the class names (at least 2).
        pooling: ``"mean"``, ``"last"``, ``"model"``, or None for :func:`default_pooling`.
    """

    name = "classification"
    auto_class = "AutoModelForSequenceClassification"
    pipeline_tag = "text-classification"
    peft_task_type = "SEQ_CLS"

    def __init__(self, label_names: Sequence[str], pooling: Optional[str] = None):
        self.label_names = [str(n) for n in label_names]
        if len(self.label_names) < 2:
            raise ConfigError(f"label_names must name at least 2 classes (got {list(label_names)!r})")
        if pooling is not None and pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS} (got {pooling!r})")
        self.pooling = pooling

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def build(self, path: str, **kwargs) -> tuple[nn.Module, list[str]]:
        id2label = dict(enumerate(self.label_names))
        hf, new = super().build(path, num_labels=self.num_labels, id2label=id2label,
                                label2id={v: k for k, v in id2label.items()}, **kwargs)
        if self.pooling is None:
            self.pooling = default_pooling(path, hf)
        return hf, new

    def head_name(self, hf: nn.Module, prefix: str) -> str:
        """The head's final Linear layer (hidden -> num_labels)."""
        for name, mod in hf.named_modules():
            if not name.startswith(prefix) and isinstance(mod, nn.Linear) and mod.out_features == self.num_labels:
                return name
        raise ConfigError(f"cannot find a classification head in {type(hf).__name__}")

    def module(self, backbone) -> ClassifierModule:
        return ClassifierModule(backbone.hf, self.head_name(backbone.hf, backbone.base_prefix), self.pooling)

    def metrics(self) -> "ClassificationMetrics":
        return ClassificationMetrics(self.num_labels)

    def describe(self) -> dict:
        return {"name": self.name, "label_names": self.label_names, "pooling": self.pooling}


class ClassificationMetrics(MetricAccumulator):
    """Mean cross-entropy, accuracy and macro-F1 over every example seen."""

    def __init__(self, num_labels: int):
        self.num_labels = num_labels
        self.loss_sum, self.preds, self.labels = 0.0, [], []

    def update(self, out: TaskOutput, batch: dict) -> None:
        logits = out.logits.float()
        self.loss_sum += F.cross_entropy(logits, batch["labels"], reduction="sum").item()
        self.preds.append(logits.argmax(-1).cpu())
        self.labels.append(batch["labels"].cpu())

    def merge(self, other: "ClassificationMetrics") -> None:
        self.loss_sum += other.loss_sum
        self.preds += other.preds
        self.labels += other.labels

    def compute(self) -> dict[str, float]:
        p, y = torch.cat(self.preds).numpy(), torch.cat(self.labels).numpy()
        return {"loss": self.loss_sum / len(y), "accuracy": float(np.mean(p == y)),
                "macro_f1": macro_f1(p, y, self.num_labels)}
