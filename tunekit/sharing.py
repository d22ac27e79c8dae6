"""Inputs shared by the runs of one process: token ids, and what a pristine frozen backbone computes.

The cells of an experiment (:func:`tunekit.experiment`) start from one pretrained model and
train on nested subsets of the same splits, so most of what a cell computes before it trains,
another has computed already: the token ids of its examples, a probe's pooled features, the
hidden states after a Freeze run's frozen bottom blocks. A :class:`SharedInputs` memo, given to
every trainer of the experiment (``Trainer(..., shared=memo)``), keeps them row by row:

* **token ids**, keyed by the tokenizer (the model's path and vocabulary size), ``max_length``,
  the split (the data frame itself, and its name) and the row's position in it: a row is
  tokenised once per process;
* **features** (a probe's head inputs) and **prefixes** (the hidden states after the bottom
  ``k`` frozen blocks, real tokens only), keyed by the row's token key and by what computed
  them: the backbone (:meth:`SharedInputs.backbone_key`), the pooling or ``k``, the autocast
  dtype and the device. :func:`tunekit.cache.feature_cache` and :func:`tunekit.cache.prefix_cache`
  compute only the rows the memo lacks and assemble the rest.

Only a **pristine** backbone's outputs are kept or read: a model with no run in its history,
no structural change, no adapter and no fake quantization. Part of its key is a fingerprint of
the weights the outputs depend on (every weight but the head's for features; the embeddings and
the bottom ``k`` blocks for a prefix), sampled (about 4,096 values a tensor, so that it costs
milliseconds, not a pass over every weight): a model edited by hand (a tensor zeroed, noise
added, a layer retrained) reads as another backbone and shares nothing with the first, though
an edit to a few single numbers would not be seen. A model that has trained since it was seen
pristine still counts while that fingerprint is unchanged (a probe trained only its head, a
Freeze run only the blocks above its prefix), which is what scoring it on the test split from
shared features or prefixes needs (:func:`tunekit.cache.cached_logits`). Features computed
for a subset of rows in other batches than an unshared run would use differ from its own by
float rounding only (batch shapes change the order of sums): about 1e-6 in fp32, about 5e-3
under bf16 autocast, as much as changing ``eval_batch_size`` does.

Memory is bounded by ``budget_mb`` (an experiment gives its ``cache_budget_mb``). Tensors are
kept on the CPU (a GPU run copies the rows it reads, so the GPU's memory stays the runs') and
count at their size; token ids count 36 bytes an id (a Python int and its list slot) plus 56 a
row. Once the total reaches the budget, rows are still computed where needed but no longer kept.
The memo holds the data frames it has seen by reference and knows them by identity: they must
not change in place while it lives. It lives as long as the caller keeps it (an experiment: one
call of :func:`tunekit.experiment`).
"""
from __future__ import annotations

import hashlib
import weakref
from collections import Counter
from typing import Any, Optional, Sequence

import torch

from tunekit.batches import EncodedSplit, token_ids
from tunekit.config import ConfigError, finite_number

SAMPLE = 4096
"""Values of each weight tensor the backbone fingerprint reads (evenly strided)."""
ID_BYTES, ROW_BYTES = 36, 56
"""What a token id and a row's list are counted as in the memo's memory."""


class SharedInputs:
    """A memo of token ids, probe features and frozen prefixes, shared by the runs of one process.

    Args:
        budget_mb: the most memory it keeps (see the module's words); 0 keeps nothing.

    Attributes:
        hits, misses: per kind (``"tokens"``, ``"features"``, ``"prefix"``), the rows found in
            the memo and the rows computed because they were not.
        not_kept: per kind, rows computed but not kept because the budget was reached.
        bypassed: why a model's outputs were neither read nor kept (one entry each time).
    """

    def __init__(self, budget_mb: float = 4096.0):
        if not (finite_number(budget_mb) and budget_mb >= 0):
            raise ConfigError(f"SharedInputs budget_mb must be a number >= 0 (got {budget_mb!r})")
        self.budget_mb = float(budget_mb)
        self.hits: Counter = Counter()
        self.misses: Counter = Counter()
        self.not_kept: Counter = Counter()
        self.bypassed: list[str] = []
        self._rows: dict = {}                      # key -> token ids or a tensor
        self._shapes: dict = {}                    # prefix context -> how the last cached block returns
        self._frames: dict[int, tuple[Any, int]] = {}  # id(frame) -> (the frame, its number)
        self._seen = weakref.WeakKeyDictionary()   # model -> {part: the key it had while pristine}
        self._bytes = 0

    # ----- what it holds -----------------------------------------------------------------------
    @property
    def mb(self) -> float:
        """The memory the memo counts as held, in MB."""
        return self._bytes / 2**20

    def describe(self) -> dict:
        """Plain data: hits, misses and rows not kept per kind, the MB held, the bypasses."""
        return {"hits": dict(self.hits), "misses": dict(self.misses), "not_kept": dict(self.not_kept),
                "mb": round(self.mb, 2), "bypassed": list(self.bypassed)}

    def __repr__(self) -> str:
        return (f"SharedInputs({self.mb:.1f} of {self.budget_mb:g} MB, hits={dict(self.hits)}, "
                f"misses={dict(self.misses)})")

    # ----- token ids ---------------------------------------------------------------------------
    def encode(self, model, frame, split: str, positions: Optional[Sequence[int]], max_length: int) -> EncodedSplit:
        """The task's encoded split of ``frame``'s rows at ``positions`` (None: every row), as
        ``model.task.encode`` makes it, tokenising only the rows not seen before; its ``rows``
        are the rows' keys, which the feature and prefix caches read."""
        positions = list(range(len(frame))) if positions is None else [int(p) for p in positions]
        tokenizer = model.tokenizer
        if model.task.pairs:  # pairs are tokenised with their template each time (no memo; they are few)
            return model.task.encode_frame(tokenizer, frame.iloc[positions], max_length)
        context = ("tokens", str(model.path), len(tokenizer), int(max_length))
        number = self._frame(frame)
        rows = [(context, split, number, p) for p in positions]
        ids = self.get(rows)
        missing = [j for j, x in enumerate(ids) if x is None]
        if missing:
            made = token_ids(tokenizer, frame["text"].iloc[[positions[j] for j in missing]], max_length)
            for j, row_ids in zip(missing, made):
                ids[j] = row_ids
                self.put(rows[j], row_ids)
        labels = frame["label"].iloc[positions] if "label" in frame else None
        return model.task.from_ids(tokenizer, ids, labels, rows)

    def _frame(self, frame) -> int:
        """The frame's number in this memo (held by reference, so that its identity stays its own)."""
        known = self._frames.get(id(frame))
        if known is None:
            known = self._frames[id(frame)] = (frame, len(self._frames))
        return known[1]

    # ----- a backbone's outputs ------------------------------------------------------------------
    def backbone_key(self, model, part: tuple = ("features",), plan=None) -> Optional[tuple]:
        """What identifies the weights that ``part`` of ``model``'s outputs depends on while they
        are pristine: its path and a sampled fingerprint of every weight but the head's
        (``("features",)``), or of the embeddings and the bottom ``k`` blocks (``("prefix", k)``).
        None, with the reason added to :attr:`bypassed`, for a model whose outputs must not be
        shared: changed in structure, carrying an adapter or fake quantization (its own or
        ``plan``'s), or trained before this memo saw it pristine, or since in a way that changed
        those weights (a probe's head or a Freeze run's top blocks do not)."""
        why = _changed(model, plan)
        if why is None:
            key = (str(model.path), *part, _fingerprint(model, part))
            if not model.history:
                self._seen.setdefault(model, {})[part] = key
                return key
            seen = self._seen.get(model, {}).get(part)
            if seen == key:
                return key  # trained since, but not the weights this part depends on
            why = ("it was trained before this memo saw it" if seen is None else
                   f"it was trained since this memo saw it, and the weights that compute its {part[0]} changed")
        self.bypassed.append(why)
        return None

    def keys(self, model, split, what: tuple, amp: Optional[torch.dtype], plan=None) -> Optional[list]:
        """The memo's key for each row of ``split`` for the outputs ``what`` (``("features",
        pooling)`` or ``("prefix", k)``) of ``model`` under autocast ``amp``; None when the split
        was not encoded by this memo or the model's outputs are not shared (:meth:`backbone_key`)."""
        rows = getattr(split, "rows", None)
        if rows is None:
            return None
        backbone = self.backbone_key(model, ("features",) if what[0] == "features" else what, plan)
        if backbone is None:
            return None
        context = (*what, backbone, str(amp), str(model.device))
        return [(context, row) for row in rows]

    def shape(self, context: tuple):
        """How the last frozen block returns its output, for prefixes under ``context``."""
        return self._shapes.get(context)

    def keep_shape(self, context: tuple, shape) -> None:
        """Remember how the last frozen block returns its output, for prefixes under ``context``."""
        self._shapes[context] = shape

    # ----- rows (every key starts with its context, whose first item is the kind) ----------------
    def get(self, keys: Sequence[tuple], device=None) -> list:
        """What the memo holds for each key (None where it holds nothing), tensors on ``device``
        (None: where they are kept, the CPU); counted as hits and misses."""
        found = [self._rows.get(k) for k in keys]
        for k, v in zip(keys, found):
            (self.hits if v is not None else self.misses)[k[0][0]] += 1
        if device is not None:
            found = [v.to(device) if isinstance(v, torch.Tensor) else v for v in found]
        return found

    def put(self, key: tuple, value) -> None:
        """Keep ``value`` (token ids, or a tensor no one changes in place) under ``key``, if the
        budget has room for it. Tensors are kept on the CPU: a GPU's memory stays the runs'."""
        if key in self._rows:
            return
        if isinstance(value, torch.Tensor) and value.device.type != "cpu":
            value = value.to("cpu")
        size = (value.numel() * value.element_size() if isinstance(value, torch.Tensor)
                else ROW_BYTES + ID_BYTES * len(value))
        if self._bytes + size > self.budget_mb * 2**20:
            self.not_kept[key[0][0]] += 1
            return
        self._rows[key] = value
        self._bytes += size


def _changed(model, plan) -> Optional[str]:
    """Why ``model`` (with ``plan`` applied) computes something else than its checkpoint's
    backbone, or None."""
    if getattr(model, "structure", None):
        return "its structure was changed"
    if getattr(model, "peft", None) is not None or (plan is not None and plan.adapter is not None):
        return "it carries an adapter"
    if plan is not None and getattr(plan, "fake_quant", None) is not None:
        return "it is fake-quantized"
    return None


@torch.no_grad()
def _fingerprint(model, part: tuple) -> str:
    """A hash of the names, shapes and a strided sample of the values of the weights ``part``
    depends on: every weight outside the head (the last layer, which a probe trains) for
    ``("features",)``; the embeddings and the bottom ``k`` blocks for ``("prefix", k)``."""
    if part[0] == "prefix":
        groups = model.backbone.parameters_by_group()
        weights = [w for g in ["embeddings"] + [f"block.{i}" for i in range(part[1])] for w in groups[g]]
    else:
        head = model.head_name + "."
        weights = [(n, p) for n, p in model.hf.named_parameters() if not n.startswith(head)]
    digest = hashlib.sha1()
    for name, p in weights:
        flat = p.detach().reshape(-1)
        sample = flat[::max(1, flat.numel() // SAMPLE)]
        digest.update(f"{name}{tuple(p.shape)}".encode())
        digest.update(sample.float().cpu().numpy().tobytes())
    return digest.hexdigest()
