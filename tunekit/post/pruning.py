"""Pruning: zero the smallest weights, or remove whole attention heads or feed-forward neurons.

    tk.prune(run, sparsity=0.5)                              # unstructured, global magnitude
    tk.prune(run, sparsity=[0.3, 0.5, 0.7, 0.9])             # a sweep: one record per sparsity
    tk.prune(run, method="heads", amount=4)                  # 4 heads fewer in every block
    tk.prune(run, method="neurons", amount=0.5)              # half the FFN neurons of every block
    tk.prune(run, sparsity=0.5, recover={"epochs": 1})       # then a short fine-tune, zeros kept

*Unstructured* pruning (``method="magnitude"``) zeroes the weights of smallest absolute
value among the Linear layers of the transformer blocks (embeddings, norms, biases and
the head are left alone), ranked over all of them (``scope="global"``) or layer by layer
(``scope="layer"``), with ``torch.nn.utils.prune``, made permanent: the saved weights
hold real zeros. A dense file is no smaller for it; ``nonzero_params`` says what a
sparse format or kernel could save.

*Structured* pruning removes rows and columns, so the matrices really shrink and the
model gets smaller and faster: ``method="heads"`` removes ``amount`` attention heads
per block (query / key / value rows and the attention output's columns);
``method="neurons"`` removes the fraction ``amount`` of each block's feed-forward
neurons (intermediate rows, output columns). Which ones go is chosen by importance:
``importance="taylor"`` (default) is the first-order estimate of how much the loss
changes when a head or neuron is masked, ``|sum of activation x gradient|`` averaged
over training examples (Michel, Levy and Neubig 2019, "Are Sixteen Heads Really Better
than One?"; Molchanov et al. 2017, "Pruning Convolutional Neural Networks for Resource
Efficient Inference"); ``importance="magnitude"`` is the L2 norm of the weights a head
or neuron owns (no data needed). The record stores which heads and neurons were kept,
so the pruned model reloads with its new shapes.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
from torch import nn

from tunekit import structure as st
from tunekit.batches import to_device
from tunekit.config import ConfigError, TrainConfig, plain_arguments, positive_int
from tunekit.engine import train
from tunekit.post.base import Source, before_and_after, copy_model, derived_record, measure, source
from tunekit.runs import Run
from tunekit.strategies import Full

METHODS = ("magnitude", "heads", "neurons")
SCOPES = ("global", "layer")
IMPORTANCES = ("taylor", "magnitude")


def _check_sparsity(s: Any) -> float:
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or not 0 <= s < 1:
        raise ConfigError(f"sparsity must be a number in [0, 1) (got {s!r})")
    return float(s)


def block_linears(model) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every Linear / Conv1D layer inside the transformer blocks."""
    return model.backbone.block_layers()


def magnitude_prune(model, sparsity: float, scope: str = "global") -> dict:
    """Zero the ``sparsity`` fraction of block weights of smallest magnitude, in place, made
    permanent. Returns ``{"pruned_weights": n, "of": total}``."""
    from torch.nn.utils import prune as tprune
    layers = block_linears(model)
    if not layers:
        raise ConfigError(f"found no Linear layers in the blocks of {type(model.hf).__name__}")
    if sparsity > 0:
        if scope == "global":
            tprune.global_unstructured([(m, "weight") for _, m in layers], pruning_method=tprune.L1Unstructured,
                                       amount=sparsity)
        else:
            for _, m in layers:
                tprune.l1_unstructured(m, "weight", amount=sparsity)
        for _, m in layers:
            tprune.remove(m, "weight")
    total = sum(m.weight.numel() for _, m in layers)
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    return {"pruned_weights": zeros, "of": total}


# ----- importance ------------------------------------------------------------------------------------
def _unit_slices(model, unit: str) -> list[tuple[nn.Module, int, int]]:
    """Per block: (the layer whose *input* holds the units, number of units, unit width)."""
    out = []
    for block in st.blocks(model):
        if unit == "heads":
            layer = st.block_layers(block, ("attn_out",))[0][1]
            out.append((layer, st.heads_of(model, block), st.head_size(model)))
        else:
            layer = st.block_layers(block, ("output",))[0][1]
            out.append((layer, st.neurons_of(block), 1))
    return out


def taylor_importance(model, batches, unit: str) -> list[torch.Tensor]:
    """Per block, the importance of each head or neuron: the mean over examples of
    ``|sum over tokens and the unit's features of activation x d loss / d activation|``,
    read at the input of the attention output (heads) or FFN output projection (neurons)."""
    slices = _unit_slices(model, unit)
    scores = [torch.zeros(n, dtype=torch.float64) for _, n, _ in slices]
    seen, handles = [], []

    def keep(_mod, args):
        x = args[0]
        x.retain_grad()
        seen.append(x)

    for layer, _, _ in slices:
        handles.append(layer.register_forward_pre_hook(keep))
    module = model.module
    module.eval()
    examples = 0
    frozen = [p for p in module.parameters() if not p.requires_grad]
    for p in frozen:  # the activations need gradients, whatever trained before
        p.requires_grad_(True)
    try:
        for batch in batches:
            seen.clear()
            module.zero_grad(set_to_none=True)
            out = module(batch)
            out.loss.backward()
            n = batch["input_ids"].shape[0]
            examples += n
            for k, (x, (_, units, width)) in enumerate(zip(seen, slices)):
                contrib = (x * x.grad).detach().reshape(n, -1, units, width).sum(dim=(1, 3))  # [examples, units]
                scores[k] += contrib.abs().sum(0).double() * n  # the loss is a batch mean
    finally:
        for h in handles:
            h.remove()
        for p in frozen:
            p.requires_grad_(False)
        module.zero_grad(set_to_none=True)
    return [(s / max(examples, 1)).float() for s in scores]


def magnitude_importance(model, unit: str) -> list[torch.Tensor]:
    """Per block, the L2 norm of the weights each head or neuron owns (rows of the projections
    that produce it, columns of the one that reads it)."""
    out = []
    rows_labels = st.HEAD_ROWS if unit == "heads" else st.FFN_ROWS
    cols_labels = st.HEAD_COLS if unit == "heads" else st.FFN_COLS
    for block in st.blocks(model):
        width = st.head_size(model) if unit == "heads" else 1
        sq = None
        for labels, outputs in ((rows_labels, True), (cols_labels, False)):
            for _, layer in st.block_layers(block, labels):
                w = layer.weight.detach()
                if not isinstance(layer, nn.Linear):  # Conv1D: [in, out]
                    w = w.t()
                w = w if outputs else w.t()  # units along dim 0
                part = (w.float() ** 2).reshape(-1, width, w.shape[1]).sum(dim=(1, 2))
                sq = part if sq is None else sq + part
        out.append(sq.sqrt())
    return out


def _importance_batches(src: Source, examples: int, batch_size: int = 16, max_length: int = 128):
    task = src.model.task
    df = src.data.train.iloc[:examples]
    enc = task.encode_frame(src.model.tokenizer, df, max_length)
    return [to_device(b, src.model.device) for b in enc.batches(batch_size, device=src.model.device, by_length=True)]


def structured_steps(src: Source, method: str, amount: Any, importance: str, examples: int) -> tuple[dict, list]:
    """The step that removes the least important heads or neurons, and the importances."""
    model = src.model
    if method == "heads":
        st.check_heads_prunable(model)
        counts = [st.heads_of(model, b) for b in st.blocks(model)]
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
            raise ConfigError(f"amount must be the number of heads to remove from each block, an integer >= 1 "
                              f"(got {amount!r})")
        if min(counts) < 2:
            raise ConfigError(f"method='heads': this model's blocks have {min(counts)} attention head(s), and a "
                              f"block keeps at least one, so there is no head to prune; try method='neurons'")
        if amount >= min(counts):
            raise ConfigError(f"amount={amount} would prune every attention head of a layer (the blocks have "
                              f"{min(counts)} heads); amount must be in 1..{min(counts) - 1}")
        remove = [amount] * len(counts)
    else:
        counts = [st.neurons_of(b) for b in st.blocks(model)]
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 < amount < 1:
            raise ConfigError(f"amount must be the fraction of feed-forward neurons to remove, in (0, 1) "
                              f"(got {amount!r})")
        remove = [min(c - 1, int(round(c * amount))) for c in counts]
    if importance == "taylor":
        batches = _importance_batches(src, examples, max_length=src.train.get("max_length") or 128)
        scores = taylor_importance(model, batches, method)
    else:
        scores = magnitude_importance(model, method)
    kept = {str(i): sorted(torch.argsort(s, descending=True)[:c - r].tolist())
            for i, (s, c, r) in enumerate(zip(scores, counts, remove))}
    return {method: kept}, [s.tolist() for s in scores]


# ----- the operation ---------------------------------------------------------------------------------
@plain_arguments
def prune(run: Any, sparsity: Any = 0.5, method: str = "magnitude", scope: str = "global", *,
          amount: Any = None, importance: str = "taylor", importance_examples: int = 256, data: Any = None,
          name: Optional[str] = None, runs_dir: Optional[str] = None, recover: Any = None) -> Run | list[Run]:
    """Prune a run's model (or a pretrained model) and write a ``prune`` record.

    Args:
        run: a :class:`~tunekit.runs.Run`, its directory, or a model from ``tk.load_model``.
        sparsity: ``method="magnitude"``: the fraction of block weights set to zero, in
            [0, 1); a list gives a sweep (one record each, returned as a list).
        method: ``"magnitude"`` (unstructured), ``"heads"`` or ``"neurons"`` (structured).
        scope: ``"global"`` (rank all block weights together) or ``"layer"`` (each layer
            loses the same fraction); magnitude only.
        amount: ``"heads"``: heads removed per block (1 .. heads - 1); ``"neurons"``: the
            fraction of each block's feed-forward neurons removed, in (0, 1).
        importance: ``"taylor"`` (activation x gradient on ``importance_examples`` training
            examples) or ``"magnitude"`` (weight norms); structured methods only.
        data: what to measure on (default: the run's built-in data set).
        name, runs_dir: the record's name and directory (default: beside the run).
        recover: ``None``, ``True`` or a dict of :class:`~tunekit.config.TrainConfig` fields
            (e.g. ``{"epochs": 1, "lr": 5e-5}``): fine-tune the pruned model afterwards through
            the engine (pruned weights stay zero) and return that ``train`` record, whose
            parent is the ``prune`` record.

    Returns the ``prune`` :class:`~tunekit.runs.Run` (or the recovery run), with the task's
    metrics, ``params``, ``nonzero_params``, ``size_mb`` and ``latency_ms`` measured before
    (``summary["before"]``) and after.
    """
    if method not in METHODS:
        raise ConfigError(f"method must be one of {METHODS} (got {method!r})")
    if method == "magnitude" and amount is not None:
        raise ConfigError(f"amount is for method='heads' or 'neurons' (got amount={amount!r} with method="
                          f"'magnitude', which takes sparsity); pass method= too")
    if isinstance(sparsity, (list, tuple)):
        if method != "magnitude":
            raise ConfigError("a list of sparsities is a sweep of method='magnitude'")
        values = [_check_sparsity(s) for s in sparsity]
        if not values:
            raise ConfigError("sparsity: give at least one value")
        return [prune(run, s, method, scope, data=data, runs_dir=runs_dir, recover=recover,
                      name=None if name is None else f"{name}-{int(round(100 * s))}") for s in values]
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {SCOPES} (got {scope!r})")
    if importance not in IMPORTANCES:
        raise ConfigError(f"importance must be one of {IMPORTANCES} (got {importance!r})")
    positive_int("importance_examples", importance_examples)
    recover_cfg = _recover_config(recover)
    if method == "magnitude":
        sparsity = _check_sparsity(sparsity)
    src = source(run, data)
    reference = copy_model(src.model)
    model = src.model
    detail: dict[str, Any] = {}
    if method == "magnitude":
        detail = magnitude_prune(model, sparsity, scope)
        detail["sparsity"] = detail["pruned_weights"] / detail["of"]  # of the block weights
        operation = {"name": "prune", "method": method, "sparsity": sparsity, "scope": scope}
        label = f"prune{int(round(100 * sparsity))}{'' if scope == 'global' else '-layer'}"
    else:
        step, scores = structured_steps(src, method, amount, importance, importance_examples)
        st.apply_steps(model, [step])
        detail = {"importance_scores": scores}
        operation = {"name": "prune", "method": method, "amount": amount, "importance": importance}
        label = f"prune-{method}{amount if method == 'heads' else int(round(100 * amount))}"
    with derived_record(src, model, "prune", label, operation, fmt="safetensors", name=name,
                        runs_dir=runs_dir) as writer:
        layers = block_linears(model)
        writer.save_tensors("weights.safetensors", {f"{n}.{p}": t for n, m in layers
                                                    for p, t in m.named_parameters(recurse=False)})
        before, after = before_and_after(reference, model, src)
        writer.update(**after, **detail, before=before,
                      overall_sparsity=1 - after["nonzero_params"] / after["params"] if after["params"] else None)
    pruned = Run(writer.path)
    if recover_cfg is not None:
        return recover_run(pruned, data=src.data, **recover_cfg)
    return pruned


def _recover_config(recover: Any) -> Optional[dict]:
    if recover is None or recover is False:
        return None
    if recover is True:
        return {}
    if not isinstance(recover, dict):
        raise ConfigError(f"recover must be None, True or a dict of TrainConfig fields (got {recover!r})")
    TrainConfig().replace(**recover)  # validated now, before anything is pruned
    return dict(recover)


def recover_run(pruned: Run, data: Any = None, **overrides) -> Run:
    """Fine-tune a pruned record's model through the engine (full fine-tuning; weights that
    pruning set to zero get no gradient, so they stay zero). A ``train`` record whose parent
    is ``pruned``, with its size and latency measured like the post-training records."""
    src = source(pruned, data)
    model = pruned.load_model()
    handles = []
    if pruned.strategy.get("method") == "magnitude":
        for _, layer in block_linears(model):
            mask = (layer.weight != 0).to(layer.weight.dtype)
            handles.append(layer.weight.register_hook(lambda g, m=mask: g * m))
    defaults = {"epochs": 1, "runs_dir": str(pruned.path.parent), "name": f"{pruned.name}-recovered"}
    for key in ("seed", "max_length", "eval_size", "train_size"):
        if src.train.get(key) is not None:
            defaults[key] = src.train[key]
    try:
        run = train(model, src.data, Full(), **{**defaults, **overrides})
    finally:
        for h in handles:
            h.remove()
    run.update_summary(**measure(model, src, evaluate=False))
    return run


def sweep_table(runs: Sequence[Run]) -> "Any":
    """A DataFrame of a sparsity sweep: sparsity, the metrics and the measurements per record."""
    import pandas as pd
    rows = []
    for r in runs:
        s = r.summary
        rows.append({"run": r.name, "sparsity": s.get("sparsity"), **r.metrics_summary(),
                     **{k: s.get(k) for k in ("params", "nonzero_params", "size_mb", "latency_ms")}})
    return pd.DataFrame(rows)
