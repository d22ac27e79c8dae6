"""Batches for the training loop: token ids with dynamic padding, or cached features.

Texts are tokenised once (no padding); each batch is padded only to its own
longest example, which on short reviews is several times cheaper than padding
everything to ``max_length``.
"""
from __future__ import annotations

import functools
from typing import Callable, Iterator, Optional, Sequence

import torch


def pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token-id rows to the longest one: (input_ids, attention_mask), both [n, width]."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        ids[j, :len(r)] = torch.as_tensor(r)
        mask[j, :len(r)] = 1
    return ids, mask


def collate_tokens(examples: list[dict], pad_id: int) -> dict:
    """A batch from examples ``{"input_ids": [...], "label": int}``: padded ids, the attention
    mask, and ``labels`` when the examples have them (what a DataLoader's ``collate_fn`` does)."""
    ids, mask = pad([e["input_ids"] for e in examples], pad_id)
    batch = {"input_ids": ids, "attention_mask": mask}
    if "label" in examples[0]:
        batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=torch.long)
    return batch


class EncodedSplit:
    """Tokenised examples of one split: ragged token-id lists plus integer labels."""

    def __init__(self, input_ids: list[list[int]], labels: Optional[torch.Tensor], pad_id: int,
                 collate_fn: Optional[Callable[[list[dict]], dict]] = None):
        self.input_ids = input_ids
        self.labels = labels
        self.pad_id = pad_id
        self.collate_fn = collate_fn or functools.partial(collate_tokens, pad_id=pad_id)

    @classmethod
    def encode(cls, tokenizer, texts: Sequence[str], labels: Optional[Sequence[int]], max_length: int,
               collate_fn: Optional[Callable[[list[dict]], dict]] = None) -> "EncodedSplit":
        """Token ids of ``texts`` (truncated to ``max_length``); ``labels`` None for a task
        that reads no labels (causal LM: the targets are the tokens themselves). ``collate_fn``
        turns a list of examples into a batch (the task's; default :func:`collate_tokens`)."""
        ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        labels = None if labels is None else torch.as_tensor(list(labels), dtype=torch.long)
        return cls(ids, labels, tokenizer.pad_token_id, collate_fn)

    def __len__(self) -> int:
        return len(self.input_ids)

    def example(self, i: int) -> dict:
        """One example: ``{"input_ids": [...]}``, plus ``"label"`` when the split has labels."""
        ex = {"input_ids": self.input_ids[i]}
        if self.labels is not None:
            ex["label"] = int(self.labels[i])
        return ex

    def subset(self, index: Sequence[int]) -> "EncodedSplit":
        labels = None if self.labels is None else self.labels[list(index)]
        return EncodedSplit([self.input_ids[i] for i in index], labels, self.pad_id, self.collate_fn)

    def collate(self, index: Sequence[int], device=None) -> dict:
        batch = self.collate_fn([self.example(i) for i in index])
        return {k: v.to(device) for k, v in batch.items()} if device is not None else batch

    def batches(self, batch_size: int, shuffle: bool = False, generator: Optional[torch.Generator] = None,
                device=None) -> Iterator[dict]:
        order = torch.randperm(len(self), generator=generator).tolist() if shuffle else range(len(self))
        order = list(order)
        for i in range(0, len(order), batch_size):
            yield self.collate(order[i:i + batch_size], device)

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)


class FeatureSplit:
    """Pre-computed feature vectors (e.g. a frozen backbone's) plus labels."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features = features
        self.labels = labels.to(features.device)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, shuffle: bool = False, generator: Optional[torch.Generator] = None,
                device=None) -> Iterator[dict]:
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        order = order.to(self.features.device)
        for i in range(0, n, batch_size):
            ix = order[i:i + batch_size]
            batch = {"features": self.features[ix], "labels": self.labels[ix]}
            yield {k: v.to(device) for k, v in batch.items()} if device is not None else batch

    def num_batches(self, batch_size: int) -> int:
        return -(-len(self) // batch_size)


@torch.no_grad()
def cached_features(model, split: EncodedSplit, batch_size: int) -> FeatureSplit:
    """The head inputs (``model.module.features``) of every example of ``split``, computed once
    in eval mode: what a probe trains on."""
    was_training = model.module.training
    model.module.eval()
    try:
        feats = [model.module.features(b["input_ids"], b["attention_mask"])
                 for b in split.batches(batch_size, device=model.device)]
    finally:
        model.module.train(was_training)
    return FeatureSplit(torch.cat(feats).float(), split.labels)
