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

from tunekit.batches import collate_tokens
from tunekit.config import ConfigError
from tunekit.tasks.base import MetricAccumulator, Task, TaskOutput, model_inputs


def lm_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The targets of next-token prediction: the ids themselves, with padding set to -100 (left
    out of the loss; the model shifts them by one). Padding is found from the attention mask, so
    a real end-of-text token that doubles as the pad token still counts."""
    return input_ids.masked_fill(attention_mask == 0, -100)


class CausalLMModule(nn.Module):
    """``forward(batch) -> TaskOutput(loss, logits)``: the mean next-token loss over the real
    tokens of the batch (``count`` = how many tokens were predicted)."""

    pooling = None  # a language model scores every token; nothing is pooled

    def __init__(self, hf: nn.Module, head_name: str):
        super().__init__()
        self.hf = hf
        self.head_name = head_name
        self.prompt = None  # learned virtual tokens before the text (prompt tuning)

    def inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        """The model's inputs (:func:`tunekit.tasks.base.model_inputs`: virtual tokens first, if any)."""
        return model_inputs(self, input_ids, attention_mask)

    def head(self) -> nn.Module:
        return self.hf.get_submodule(self.head_name)

    def forward(self, batch: dict) -> TaskOutput:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        labels = batch.get("labels")
        if labels is None:
            labels = lm_labels(ids, mask)
        inputs = self.inputs(ids, mask)
        # virtual tokens among the positions (prompt tuning; a prefix is past, not a position): nothing to predict
        extra = inputs["inputs_embeds"].shape[1] - ids.shape[1] if "inputs_embeds" in inputs else 0
        full = labels if not extra else torch.cat([labels.new_full((ids.shape[0], extra), -100), labels], dim=1)
        out = self.hf(**inputs, labels=full)
        count = (labels[:, 1:] != -100).sum()  # a tensor: reading it would wait for the device
        return TaskOutput(out.loss, out.logits[:, extra:], count)


@torch.no_grad()
def attends_only_to_the_past(hf: nn.Module) -> bool:
    """True when the first position's logits do not change with a later token (a causal model)."""
    vocab = hf.config.vocab_size
    ids = torch.tensor([[1 % vocab, 2 % vocab, 3 % vocab], [1 % vocab, 2 % vocab, 4 % vocab]])
    was_training = hf.training
    hf.eval()
    try:
        logits = hf(input_ids=ids).logits.float()
    finally:
        hf.train(was_training)
    return torch.allclose(logits[0, :2], logits[1, :2], atol=1e-5, rtol=1e-4)


class CausalLM(Task):
    """Next-token prediction on the texts of any TextDataset (labels are ignored)."""

    name = "causal_lm"
    auto_class = "AutoModelForCausalLM"
    pipeline_tag = "text-generation"
    peft_task_type = "CAUSAL_LM"
    uses_labels = False
    label_names: list = []

    def build(self, path: str, **kwargs):
        try:
            hf, new = super().build(path, **kwargs)
        except ValueError as e:  # transformers: "Unrecognized configuration class ..."
            raise ConfigError(f"task 'causal_lm' needs a model with a causal language-model head (a decoder such "
                              f"as SmolLM2, Llama, Qwen2 or GPT-2); transformers has none for {path}: "
                              f"{str(e).splitlines()[0]}") from e
        if not attends_only_to_the_past(hf):
            raise ConfigError(f"task 'causal_lm' needs a decoder, but {type(hf).__name__} at {path} lets each token "
                              "see the tokens after it (an encoder would learn to copy the next token); use a "
                              "decoder such as SmolLM2, Llama, Qwen2 or GPT-2")
        return hf, new

    def head_name(self, hf: nn.Module) -> str:
        out = hf.get_output_embeddings()
        for name, mod in hf.named_modules():
            if mod is out:
                return name
        raise ValueError(f"cannot find the output layer of {type(hf).__name__}")

    def collate(self, examples: list[dict], pad_id: int) -> dict:
        """Padded ids, the attention mask, and ``labels`` for next-token prediction (as
        transformers' ``DataCollatorForLanguageModeling(mlm=False)`` makes them)."""
        batch = collate_tokens(examples, pad_id)
        batch["labels"] = lm_labels(batch["input_ids"], batch["attention_mask"])
        if "index" in examples[0]:  # each text's place in its split (per-text losses read it)
            batch["index"] = torch.tensor([e["index"] for e in examples])
        return batch

    def module(self, backbone) -> CausalLMModule:
        return CausalLMModule(backbone.hf, self.head_name(backbone.hf))

    def metrics(self) -> "CausalLMMetrics":
        return CausalLMMetrics()


class CausalLMMetrics(MetricAccumulator):
    """Token-weighted mean loss and its perplexity."""

    def __init__(self):
        self.loss_sum, self.tokens = 0.0, 0

    def update(self, out: TaskOutput, batch: dict) -> None:
        count = int(out.count)
        if count:
            self.loss_sum += float(out.loss.float()) * count
            self.tokens += count

    def merge(self, other: "CausalLMMetrics") -> None:
        self.loss_sum += other.loss_sum
        self.tokens += other.tokens

    def compute(self) -> dict[str, float]:
        loss = self.loss_sum / self.tokens if self.tokens else float("nan")
        return {"loss": loss, "perplexity": math.exp(loss) if math.isfinite(loss) else float("nan")}


class TextLosses(CausalLMMetrics):
    """:class:`CausalLMMetrics` plus each text's own mean next-token loss and token count, kept
    by the text's place in its split (``index``), whatever order the batches come in."""

    def __init__(self, examples: int):
        super().__init__()
        self.losses = torch.full((examples,), float("nan"), dtype=torch.float64)
        self.counts = torch.zeros(examples, dtype=torch.long)

    def update(self, out: TaskOutput, batch: dict) -> None:
        super().update(out, batch)
        labels = batch["labels"][:, 1:]
        logits = out.logits[:, :-1].float()
        per_token = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100,
                                                      reduction="none")
        counts = (labels != -100).sum(dim=1)
        sums = per_token.sum(dim=1).double().cpu()
        index = batch["index"].cpu()
        self.counts[index] = counts.cpu()
        self.losses[index] = torch.where(counts.cpu() > 0, sums / counts.cpu().clamp(min=1), float("nan"))

    def merge(self, other: "TextLosses") -> None:
        super().merge(other)
        seen = other.counts > 0
        self.losses[seen], self.counts[seen] = other.losses[seen], other.counts[seen]
