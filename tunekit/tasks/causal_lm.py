"""Causal language modelling: next-token loss on plain text, metrics loss and perplexity.

Each text is one example, truncated to ``max_length`` tokens; the targets are the
tokens themselves shifted by one (Hugging Face's own shift inside the model), with
padding left out of the loss. Perplexity is ``exp`` of the mean loss per predicted
token over the whole evaluation set (not the mean of per-batch perplexities).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from tunekit.tasks.base import MetricAccumulator, Task, TaskOutput


class CausalLMModule(nn.Module):
    """``forward(batch) -> TaskOutput(loss, logits)``: the mean next-token loss over the real
    tokens of the batch (``count`` = how many tokens were predicted)."""

    pooling = None  # a language model scores every token; nothing is pooled

    def __init__(self, hf: nn.Module, head_name: str):
        super().__init__()
        self.hf = hf
        self.head_name = head_name

    def head(self) -> nn.Module:
        return self.hf.get_submodule(self.head_name)

    def forward(self, batch: dict) -> TaskOutput:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        labels = ids.masked_fill(mask == 0, -100)
        out = self.hf(input_ids=ids, attention_mask=mask, labels=labels)
        count = int((labels[:, 1:] != -100).sum())
        return TaskOutput(out.loss, out.logits, count)


class CausalLM(Task):
    """Next-token prediction on the texts of any TextDataset (labels are ignored)."""

    name = "causal_lm"
    auto_class = "AutoModelForCausalLM"
    pipeline_tag = "text-generation"
    peft_task_type = "CAUSAL_LM"
    uses_labels = False
    label_names: list = []

    def head_name(self, hf: nn.Module) -> str:
        out = hf.get_output_embeddings()
        for name, mod in hf.named_modules():
            if mod is out:
                return name
        raise ValueError(f"cannot find the output layer of {type(hf).__name__}")

    def module(self, backbone) -> CausalLMModule:
        return CausalLMModule(backbone.hf, self.head_name(backbone.hf))

    def metrics(self) -> "CausalLMMetrics":
        return CausalLMMetrics()


class CausalLMMetrics(MetricAccumulator):
    """Token-weighted mean loss and its perplexity."""

    def __init__(self):
        self.loss_sum, self.tokens = 0.0, 0

    def update(self, out: TaskOutput, batch: dict) -> None:
        if out.count:
            self.loss_sum += float(out.loss.float()) * out.count
            self.tokens += out.count

    def compute(self) -> dict[str, float]:
        loss = self.loss_sum / self.tokens if self.tokens else float("nan")
        return {"loss": loss, "perplexity": math.exp(loss) if math.isfinite(loss) else float("nan")}
