"""Structural changes to a model, as steps a record can replay on its parent's model.

A step is one small dict, so that ``config.json`` can hold it and a reloaded record
rebuilds exactly the same shapes (after a kernel restart too):

* ``{"blocks": [0, 2, 4]}``: keep these transformer blocks, in this order (a
  DistilBERT-style student made from its teacher);
* ``{"heads": {"3": [0, 1, 4, ...]}}``: in block 3 keep these attention heads (rows of
  the query / key / value projections, columns of the attention output);
* ``{"neurons": {"3": [...]}}``: in block 3 keep these feed-forward neurons (rows of the
  intermediate (and gate) projection, columns of the output projection);
* ``{"labels": ["business", ...], "seed": 0}``: a new classification head for these
  labels (the body keeps what it learned; forgetting experiments train a second task).

:func:`apply_steps` replays steps in order. transformers 5 has no ``prune_heads``; the
slicing here keeps the head size and lets every attention implementation infer the
number of heads from the tensor shapes, as BERT, DistilBERT and Llama's do.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from tunekit.architectures import block_layers, module_label
from tunekit.config import ConfigError
from tunekit.tasks import Classification

#: labels of the projections that are sliced, by what they hold: a head's rows and columns,
#: a feed-forward neuron's rows and columns
HEAD_ROWS = ("query", "key", "value")
HEAD_COLS = ("attn_out",)
FFN_ROWS = ("intermediate", "gate")
FFN_COLS = ("output",)


def blocks(model) -> nn.ModuleList:
    """The model's list of transformer blocks (what it has now)."""
    return model.backbone.blocks


def _is_conv1d(layer: nn.Module) -> bool:
    return not isinstance(layer, nn.Linear)


def slice_layer(layer: nn.Module, keep: torch.Tensor, outputs: bool) -> nn.Module:
    """A new layer holding only the ``keep`` outputs (``outputs=True``) or inputs of ``layer``.
    Works for ``nn.Linear`` (weight [out, in]) and transformers' ``Conv1D`` (weight [in, out])."""
    keep = keep.to(layer.weight.device)
    conv = _is_conv1d(layer)
    dim = (1 if conv else 0) if outputs else (0 if conv else 1)
    w = layer.weight.detach().index_select(dim, keep).clone()
    b = None if layer.bias is None else (layer.bias.detach()[keep].clone() if outputs else layer.bias.detach().clone())
    if conv:
        from transformers.pytorch_utils import Conv1D
        new = Conv1D(w.shape[1], w.shape[0])
    else:
        new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    new = new.to(device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    new.weight.requires_grad_(layer.weight.requires_grad)
    return new


def _replace(block: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(block.get_submodule(parent) if parent else block, name, new)


def head_size(model) -> int:
    cfg = model.hf.config
    return int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)


def heads_of(model, block: nn.Module) -> int:
    """The number of attention heads ``block`` holds now (after any pruning)."""
    rows = block_layers(block, ("query",))
    if not rows:
        fused = sorted({module_label(p) for p, _ in block_layers(block, ("qkv",))}) or "none"
        raise ConfigError(f"head pruning needs separate query / key / value projections; "
                          f"{type(model.hf).__name__} has {fused} "
                          "(use method='magnitude' or 'neurons')")
    layer = rows[0][1]
    out = layer.weight.shape[1] if _is_conv1d(layer) else layer.weight.shape[0]
    return out // head_size(model)


def check_heads_prunable(model) -> None:
    cfg = model.hf.config
    kv = getattr(cfg, "num_key_value_heads", None)
    if kv is not None and kv != cfg.num_attention_heads:
        raise ConfigError(f"head pruning supports attention where every query head has its own key and value "
                          f"head; {type(model.hf).__name__} shares {kv} key/value heads among "
                          f"{cfg.num_attention_heads} query heads (use method='neurons' or 'magnitude')")
    heads_of(model, blocks(model)[0])


def keep_heads(model, kept: dict) -> None:
    """In each block named in ``kept`` (``{"3": [head indices to keep]}``), keep those heads."""
    check_heads_prunable(model)
    size = head_size(model)
    all_blocks = blocks(model)
    for key, heads in kept.items():
        block = all_blocks[int(key)]
        n = heads_of(model, block)
        heads = sorted(int(h) for h in heads)
        if not heads:
            raise ConfigError(f"block {key}: pruning every attention head of a layer leaves it nothing to attend "
                              "with; keep at least one")
        if heads[-1] >= n or heads[0] < 0:
            raise ConfigError(f"block {key} has heads 0..{n - 1} (got {heads})")
        index = torch.cat([torch.arange(h * size, (h + 1) * size) for h in heads])
        for path, layer in block_layers(block, HEAD_ROWS):
            _replace(block, path, slice_layer(layer, index, outputs=True))
        for path, layer in block_layers(block, HEAD_COLS):
            _replace(block, path, slice_layer(layer, index, outputs=False))
        for mod in block.modules():  # bookkeeping attributes, where the attention module keeps them
            for attr in ("num_attention_heads", "n_heads", "num_heads"):
                if isinstance(getattr(mod, attr, None), int):
                    setattr(mod, attr, len(heads))
            if isinstance(getattr(mod, "all_head_size", None), int):
                mod.all_head_size = len(heads) * size


def neurons_of(block: nn.Module) -> int:
    rows = block_layers(block, ("intermediate",))
    if not rows:
        raise ConfigError("cannot find the feed-forward projections of this model's blocks")
    layer = rows[0][1]
    return int(layer.weight.shape[1] if _is_conv1d(layer) else layer.weight.shape[0])


def keep_neurons(model, kept: dict) -> None:
    """In each block named in ``kept`` (``{"3": [neuron indices to keep]}``), keep those neurons."""
    all_blocks = blocks(model)
    for key, neurons in kept.items():
        block = all_blocks[int(key)]
        n = neurons_of(block)
        neurons = sorted(int(j) for j in neurons)
        if not neurons:
            raise ConfigError(f"block {key}: keep at least one feed-forward neuron")
        if neurons[-1] >= n or neurons[0] < 0:
            raise ConfigError(f"block {key} has neurons 0..{n - 1} (got {neurons[:3]}...)")
        index = torch.tensor(neurons)
        for path, layer in block_layers(block, FFN_ROWS):
            _replace(block, path, slice_layer(layer, index, outputs=True))
        for path, layer in block_layers(block, FFN_COLS):
            _replace(block, path, slice_layer(layer, index, outputs=False))


def keep_blocks(model, kept: Sequence[int]) -> None:
    """Keep only the blocks ``kept`` (in that order): the model's config and each block's
    ``layer_idx`` (decoders' key/value caches index by it) are updated to match."""
    path, old = model.backbone.blocks_path, model.backbone.blocks
    kept = [int(i) for i in kept]
    if not kept:
        raise ConfigError("student: keep at least one block")
    bad = [i for i in kept if not 0 <= i < len(old)]
    if bad:
        raise ConfigError(f"student blocks must be in 0..{len(old) - 1} (got {bad})")
    if len(set(kept)) != len(kept):
        raise ConfigError(f"student blocks must not repeat (got {kept})")
    new = nn.ModuleList([old[i] for i in kept])
    for i, block in enumerate(new):
        for mod in block.modules():
            if isinstance(getattr(mod, "layer_idx", None), int):
                mod.layer_idx = i
    _replace(model.hf.base_model, path, new)
    cfg = model.hf.config
    cfg.num_hidden_layers = len(kept)
    for name in ("layer_types",):
        if isinstance(getattr(cfg, name, None), list) and len(getattr(cfg, name)) == len(old):
            setattr(cfg, name, [getattr(cfg, name)[i] for i in kept])


def new_head(model, labels: Sequence[str], seed: int = 0) -> None:
    """Replace a classification model's head with a new one (seeded) for ``labels``."""
    if model.task.name != "classification":
        raise ConfigError(f"a new head is for classification models (this one is {model.task.name!r})")
    labels = [str(x) for x in labels]
    if len(labels) < 2:
        raise ConfigError(f"label_names must name at least 2 classes (got {labels!r})")
    old = model.head()
    path = model.head_name
    generator = torch.Generator().manual_seed(seed)
    std = float(getattr(model.hf.config, "initializer_range", 0.02))
    head = nn.Linear(old.in_features, len(labels), bias=old.bias is not None)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator) * std)
        if head.bias is not None:
            head.bias.zero_()
    head = head.to(device=old.weight.device, dtype=old.weight.dtype)
    _replace(model.hf, path, head)
    cfg = model.hf.config
    cfg.num_labels = len(labels)
    cfg.id2label = dict(enumerate(labels))
    cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    pooling = model.pooling
    model.task = Classification(labels, pooling)
    model.new_parameters = sorted(f"{path}.{n}" for n, _ in head.named_parameters())


_FFN_SIZE = ("intermediate_size", "hidden_dim", "n_inner")


def describe_in_config(model, steps: Iterable[dict]) -> None:
    """Write the shapes ``steps`` left into the Hugging Face config, so that plain transformers
    rebuilds the model from an exported folder; raise a ConfigError where a config cannot
    say it (pruned heads: transformers derives the head size from the head count)."""
    steps = list(steps)
    if any("heads" in s for s in steps):
        raise ConfigError("a model with pruned attention heads cannot be exported as a plain transformers "
                          "folder: its config derives the head size from the number of heads, so the smaller "
                          "projections would not load. tk.load_run(path).load_model() reloads it in tunekit")
    if any("neurons" in s for s in steps):
        sizes = {neurons_of(b) for b in blocks(model)}
        names = [n for n in _FFN_SIZE if hasattr(model.hf.config, n)]
        if len(sizes) != 1 or not names:
            raise ConfigError("the blocks kept different numbers of feed-forward neurons, which a transformers "
                              "config cannot describe; tk.load_run(path).load_model() reloads it in tunekit")
        setattr(model.hf.config, names[0], sizes.pop())


STEPS = {"blocks": lambda m, s: keep_blocks(m, s["blocks"]),
         "heads": lambda m, s: keep_heads(m, s["heads"]),
         "neurons": lambda m, s: keep_neurons(m, s["neurons"]),
         "labels": lambda m, s: new_head(m, s["labels"], int(s.get("seed", 0)))}


def apply_steps(model, steps: Iterable[dict]) -> None:
    """Replay structural ``steps`` on ``model`` in place (see the module docstring); each is
    also appended to ``model.structure`` so the next record written from it keeps them."""
    if model.peft is not None:
        raise ConfigError("structural changes apply to a plain model: merge the adapter first "
                          "(run.load_model(merged=True))")
    for step in steps:
        kind = next((k for k in STEPS if k in step), None)
        if kind is None:
            raise ConfigError(f"unknown structural step {step!r}; known: {sorted(STEPS)}")
        STEPS[kind](model, step)
        model.replace_hf(model.hf)
        model.structure.append(dict(step))
