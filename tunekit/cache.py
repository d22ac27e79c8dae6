"""Frozen prefixes, computed once.

When the embeddings and the bottom ``k`` blocks of a model are frozen, what they
output for an example never changes during training. Frozen layers run in eval mode
(dropout off), so that output is exact to compute once: :func:`prefix_cache` runs the
split through the model in eval mode, keeps each example's hidden states after block
``k - 1`` (real tokens only), and :class:`CachedPrefix` then trains with those blocks
replaced, for the length of each forward call, by a lookup. The embeddings still run
(a table lookup), the mask and position computations are the model's own, and the
blocks above run as usual, so every architecture family works the same way.

The probe is the ``k = all`` case: its head reads one pooled vector per example, so it
caches those (:func:`feature_cache`), not the hidden states.

A cache larger than ``TrainConfig.cache_budget_mb`` is not built; the frozen layers are
recomputed at every step instead, and the run's record says so.

Given a :class:`~tunekit.sharing.SharedInputs` memo (``shared``) and splits it encoded, both
caches compute only the rows the memo lacks and take the others from it, and keep what they
compute there for the next run of the process (an experiment's next cell).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from tunekit.batches import EncodedSplit, FeatureSplit, to_device
from tunekit.sharing import SharedInputs


@dataclass
class CacheInfo:
    """What was cached for a run (its record's ``cache``)."""

    kind: Optional[str]               # "features", "prefix" or None
    blocks: int = 0                   # frozen bottom blocks whose output is cached
    mb: float = 0.0                   # memory the cache takes (train + validation)
    build_s: float = 0.0              # the caching pass
    reason: str = ""                  # why nothing is cached, when nothing is

    def describe(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "") or k == "kind"}


def frozen_blocks(model) -> int:
    """How many bottom blocks are frozen, together with the embeddings: 0 when anything in
    the embeddings trains (or an adapter sits in block 0), or learned virtual tokens come
    before the text (prompt tuning: every block then sees a changing input). An encoder-decoder
    counts 0: its decoder reads the embeddings and the encoder's output beside its own blocks, so
    no one bottom stretch of it can be computed once and read back."""
    if getattr(model.module, "prompt", None) is not None or model.backbone.encoder_decoder:
        return 0
    groups = model.backbone.parameters_by_group()
    if any(p.requires_grad for _, p in groups["embeddings"]):
        return 0
    k = 0
    while k < model.num_blocks and not any(p.requires_grad for _, p in groups[f"block.{k}"]):
        k += 1
    return k


def frozen_prefix_eval(model, k: int) -> None:
    """Put what runs below block ``k`` in eval mode (no dropout): the embeddings, every module
    the base model registers before its blocks (GPT-2's embedding dropout has no weights, so
    it is in no layer group), and the bottom ``k`` blocks. Frozen layers then compute the same
    thing whether or not their output is cached."""
    if k <= 0:
        return
    groups = model.backbone.parameters_by_group()
    if k == model.num_blocks and not any(p.requires_grad for g, ps in groups.items() if g != "head" for _, p in ps):
        model.module.eval()  # only the head trains (a probe): it reads what the eval-mode model gives it
        model.module.head().train()
        return
    inside = model.backbone.blocks_path
    for name, child in model.hf.base_model.named_children():
        if inside == name or inside.startswith(name + "."):
            break
        child.eval()
    blocks = model.backbone.blocks
    for i in range(k):
        blocks[i].eval()


def cache_size_mb(model, split: EncodedSplit) -> float:
    """Bytes a prefix cache of ``split`` takes: one hidden vector per real token."""
    p = next(model.hf.parameters())
    return split.tokens() * model.hf.config.hidden_size * p.element_size() / 2**20


def _autocast(device: torch.device, amp: Optional[torch.dtype]):
    return torch.autocast(device.type, dtype=amp, enabled=amp is not None)


class _Shape:
    """How a block returns its output: a bare tensor, or a tuple (tensor, None, ...)."""

    def __init__(self, out: Any):
        if isinstance(out, torch.Tensor):
            self.tuple_len = 0
        elif isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor) \
                and all(x is None for x in out[1:]):
            self.tuple_len = len(out)
        else:
            raise TypeError(f"a block returned {type(out).__name__} with extra outputs")

    def make(self, hidden: torch.Tensor):
        return hidden if self.tuple_len == 0 else (hidden,) + (None,) * (self.tuple_len - 1)


def _hidden_arg(block: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    first = next(iter(inspect.signature(block.forward).parameters))
    return kwargs[first]


@torch.no_grad()
def prefix_cache(model, split: EncodedSplit, k: int, batch_size: int, amp: Optional[torch.dtype] = None,
                 shared: Optional[SharedInputs] = None, plan=None) -> tuple[list[torch.Tensor], _Shape]:
    """Each example's hidden states after block ``k - 1`` (``[length, hidden]``, real tokens
    only), computed in eval mode (under the run's autocast ``amp``), and how that block
    returns them. ``shared``: rows the memo holds are taken from it, the others computed and
    kept there (``plan``: what the model carries, for the memo's pristine check)."""
    keys = shared.keys(model, split, ("prefix", k), amp, plan) if shared is not None else None
    rows: list[Optional[torch.Tensor]] = shared.get(keys, model.device) if keys else [None] * len(split)
    shape = shared.shape(keys[0][0]) if keys else None
    missing = [i for i, r in enumerate(rows) if r is None]
    if keys and not missing:
        if shape is not None:
            return rows, shape
        missing = [0]  # every row is held, but not how the block returns them
    blocks = model.backbone.blocks
    seen: dict = {}

    def grab(mod, args, out):
        seen["out"] = out
        raise _Enough()

    was_training = model.module.training
    model.module.eval()
    handle = blocks[k - 1].register_forward_hook(grab)
    order = sorted(missing, key=lambda i: len(split.input_ids[i]))
    try:
        for s in range(0, len(order), batch_size):
            index = order[s:s + batch_size]
            batch = split.collate(index, model.device)
            try:
                with _autocast(model.device, amp):
                    model.hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            except _Enough:
                pass
            out = seen.pop("out")
            shape = shape or _Shape(out)
            hidden = out if shape.tuple_len == 0 else out[0]
            for j, i in enumerate(index):
                rows[i] = hidden[j, :len(split.input_ids[i])].clone()
                if keys:
                    shared.put(keys[i], rows[i])
    finally:
        handle.remove()
        model.module.train(was_training)
    if keys:
        shared.keep_shape(keys[0][0], shape)
    return rows, shape


class _Enough(Exception):
    """Raised by the caching hook: nothing above the cached block needs to run."""


class _Lookup(nn.Module):
    """Stands in for a frozen block during one forward call."""

    def __init__(self, shape: _Shape, holder: dict, last: bool):
        super().__init__()
        self.shape, self.holder, self.last = shape, holder, last

    def forward(self, *args, **kwargs):
        if self.last:
            return self.shape.make(self.holder["hidden"])
        return self.shape.make(args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor)))


@dataclass
class CachedSplit:
    """An :class:`EncodedSplit` whose batches carry the cached prefix hidden states."""

    split: EncodedSplit
    rows: list
    pad_value: float = 0.0
    collate_fn: Any = field(init=False)

    def __post_init__(self):
        self.collate_fn = self._collate

    def _collate(self, examples: list[dict]) -> dict:
        batch = self.split.collate_fn(examples)
        hidden = [self.rows[e["index"]] for e in examples]
        width = batch["input_ids"].shape[1]
        out = hidden[0].new_full((len(hidden), width, hidden[0].shape[-1]), self.pad_value)
        for j, h in enumerate(hidden):
            out[j, :len(h)] = h
        batch["prefix_hidden"] = out
        return batch

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict:
        return self.split[i]

    def lengths(self) -> list[int]:
        return self.split.lengths()

    def tokens(self) -> int:
        return self.split.tokens()


class CachedPrefix(nn.Module):
    """The task module, with its bottom ``k`` blocks read from ``batch["prefix_hidden"]``.

    The blocks are swapped for lookups only inside ``forward`` (and swapped back in a
    ``finally``), so the model's structure, names and saved weights never change; a batch
    without ``prefix_hidden`` runs the whole model.
    """

    def __init__(self, module: nn.Module, blocks: nn.ModuleList, k: int, shape: _Shape):
        super().__init__()
        self.module = module
        self._blocks = [blocks]  # not a submodule: the task module already holds it
        self.k = k
        self.holder: dict = {}
        self._lookups = [_Lookup(shape, self.holder, i == k - 1) for i in range(k)]

    def forward(self, batch: dict):
        if "prefix_hidden" not in batch:
            return self.module(batch)
        batch = dict(batch)
        self.holder["hidden"] = batch.pop("prefix_hidden")
        blocks = self._blocks[0]
        saved = [blocks[i] for i in range(self.k)]
        try:
            for i in range(self.k):
                blocks[i] = self._lookups[i]
            return self.module(batch)
        finally:
            for i, b in enumerate(saved):
                blocks[i] = b
            self.holder.clear()

    def generate_samples(self, batch: dict, n: int) -> list[dict]:
        """A text-to-text module's generations (:meth:`tunekit.tasks.sft.SFTModule.generate_samples`):
        the whole model runs, since each new token extends the sequence the cache was made for."""
        return self.module.generate_samples({k: v for k, v in batch.items() if k != "prefix_hidden"}, n)


@torch.no_grad()
def feature_cache(model, split: EncodedSplit, batch_size: int, amp: Optional[torch.dtype] = None,
                  shared: Optional[SharedInputs] = None, plan=None) -> FeatureSplit:
    """The head inputs (``model.module.features``) of every example of ``split``, computed once
    in eval mode (under the run's autocast ``amp``): what a probe trains on. ``shared``: rows
    the memo holds are taken from it, the others computed and kept there (``plan``: what the
    model carries, for the memo's pristine check)."""
    keys = shared.keys(model, split, ("features", model.pooling), amp, plan) if shared is not None else None
    feats = shared.get(keys, model.device) if keys else [None] * len(split)
    order = sorted((i for i, f in enumerate(feats) if f is None), key=lambda i: len(split.input_ids[i]))
    was_training = model.module.training
    model.module.eval()
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            b = split.collate(idx, model.device)
            with _autocast(model.device, amp):
                f = model.module.features(b["input_ids"], b["attention_mask"]).float()
            for j, i in enumerate(idx):
                feats[i] = f[j].clone() if keys else f[j]  # kept: its own storage (the memo counts it)
                if keys:
                    shared.put(keys[i], feats[i])
    finally:
        model.module.train(was_training)
    return FeatureSplit(torch.stack(feats), split.labels, split.lengths())


@torch.no_grad()
def cached_logits(model, split: EncodedSplit, batch_size: int, kind: str, frozen: int = 0,
                  shared: Optional[SharedInputs] = None) -> torch.Tensor:
    """The logits of every example of ``split`` (in its order), in eval mode and fp32 as
    :meth:`~tunekit.models.Model.predict_proba` computes them, from cached inputs: the head
    applied to the features (``kind="features"``, a probe), or the blocks above the bottom
    ``frozen`` run on their cached output (``kind="prefix"``, a Freeze run). With a ``shared``
    memo that holds them (the test split, after the first cell of the kind), nothing below the
    head or those blocks runs again. Float rounding aside (batches of other shapes), the same
    logits as a forward pass."""
    was_training = model.module.training
    try:
        if kind == "features":
            features = feature_cache(model, split, batch_size, None, shared).features
            model.module.eval()
            return model.head()(features).float()
        if kind != "prefix" or not 0 < frozen <= model.num_blocks:
            raise ValueError(f"cached_logits: kind must be 'features', or 'prefix' with 0 < frozen <= "
                             f"{model.num_blocks} (got {kind!r}, {frozen})")
        rows, shape = prefix_cache(model, split, frozen, batch_size, None, shared)
        cached, module = CachedSplit(split, rows), CachedPrefix(model.module, model.backbone.blocks, frozen, shape)
        model.module.eval()
        logits: list = [None] * len(split)
        order = sorted(range(len(split)), key=lambda i: len(split.input_ids[i]))
        for s in range(0, len(order), batch_size):
            index = order[s:s + batch_size]
            batch = cached.collate_fn([cached[i] for i in index])
            batch.pop("labels", None)
            out = module(to_device(batch, model.device)).logits.float()
            for j, i in enumerate(index):
                logits[i] = out[j]
        return torch.stack(logits)
    finally:
        model.module.train(was_training)


def feature_size_mb(model, split) -> float:
    return len(split) * model.hf.config.hidden_size * 4 / 2**20


@dataclass
class Inputs:
    """What one phase of training iterates over, and what was cached to make it."""

    train: Any                        # an EncodedSplit, a CachedSplit or a FeatureSplit
    validation: Any
    info: CacheInfo
    frozen: int                       # frozen bottom blocks (with the embeddings); they run in eval mode
    shape: Optional[_Shape] = None    # how the last cached block returns its output

    def module(self, model) -> nn.Module:
        """The task module, reading the cached blocks when there are any."""
        if self.info.kind != "prefix":
            return model.module
        return CachedPrefix(model.module, model.backbone.blocks, self.frozen, self.shape)


def inputs_for(model, plan, train: EncodedSplit, validation: EncodedSplit, batch_size: int, budget_mb: float,
               amp: Optional[torch.dtype] = None, shared: Optional[SharedInputs] = None) -> Inputs:
    """A probe's head inputs, the output of the frozen bottom blocks, or (nothing frozen, or
    the cache over ``budget_mb``) the token ids themselves; ``model`` already carries ``plan``.
    ``shared``: a memo that the features or prefixes are read from and kept in, row by row."""
    frozen = frozen_blocks(model)
    if plan.cached_features:
        mb = feature_size_mb(model, train) + feature_size_mb(model, validation)
        if mb <= budget_mb:
            return Inputs(feature_cache(model, train, batch_size, amp, shared, plan),
                          feature_cache(model, validation, batch_size, amp, shared, plan),
                          CacheInfo("features", model.num_blocks, round(mb, 2)), frozen)
        return Inputs(train, validation, CacheInfo(None, frozen, reason=(
            f"the probe's features would take {mb:,.0f} MB, over cache_budget_mb={budget_mb:g}; "
            "the frozen backbone runs at every step instead")), frozen)
    if frozen == 0:
        return Inputs(train, validation, CacheInfo(None, 0), 0)
    mb = cache_size_mb(model, train) + cache_size_mb(model, validation)
    if mb > budget_mb:
        return Inputs(train, validation, CacheInfo(None, frozen, reason=(
            f"caching the output of the {frozen} frozen bottom blocks would take {mb:,.0f} MB, over "
            f"cache_budget_mb={budget_mb:g}; they are recomputed at every step instead")), frozen)
    try:
        rows, shape = prefix_cache(model, train, frozen, batch_size, amp, shared, plan)
        val_rows, _ = prefix_cache(model, validation, frozen, batch_size, amp, shared, plan)
    except TypeError as e:  # a block whose output the lookup cannot stand in for
        return Inputs(train, validation, CacheInfo(None, frozen, reason=f"not cached: {e}"), frozen)
    return Inputs(CachedSplit(train, rows), CachedSplit(validation, val_rows),
                  CacheInfo("prefix", frozen, round(mb, 2)), frozen, shape)
