"""Evaluation: a model or a run on a split of a data set, as the task's metrics.

    tk.evaluate(run)                                  # the run's own validation subset
    tk.evaluate(run, data, split="test")              # {"accuracy": ..., "macro_f1": ..., "loss": ...}
    tk.evaluate(model, tk.data.from_texts(texts))     # causal LM: {"perplexity": ..., "loss": ...}

The engine logs exactly these numbers (prefixed ``val_``) at each evaluation of a run:
both go through :func:`evaluate_batches`.
"""
from __future__ import annotations

import time
from typing import Any, Iterable, Optional

import numpy as np
import torch

from tunekit.config import ConfigError, plain_arguments, positive_int
from tunekit.data import load as load_data
from tunekit.data import match_labels
from tunekit.models import Model
from tunekit.runs import Run, load_run
from tunekit.runtime import autocast_dtype, pick_device

SPLITS = ("train", "validation", "test")


def subset(n: int, size: Optional[int], seed: int) -> Optional[list[int]]:
    """A seeded random subset of ``range(n)`` of ``size`` (sorted), or None for all of it."""
    if size is None or size >= n:
        return None
    return sorted(np.random.default_rng(seed).permutation(n)[:size].tolist())


@torch.no_grad()
def evaluate_batches(module: torch.nn.Module, metrics, batches: Iterable[dict], device: torch.device,
                     amp: Optional[torch.dtype] = None, merge=None) -> dict[str, float]:
    """Run the task module over ``batches`` in eval mode and return ``metrics.compute()``.
    The module's training mode is restored afterwards. ``merge``: given the accumulator,
    returns one holding every process's share (several processes evaluate one split)."""
    was_training = module.training
    module.eval()
    if hasattr(metrics, "attach"):  # a text-to-text task's metrics generate with the module
        metrics.attach(module)
    try:
        for batch in batches:
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                out = module(batch)
            metrics.update(out, batch)
    finally:
        module.train(was_training)
    if merge is not None:
        metrics = merge(metrics)
    return metrics.compute()


def run_precision(run) -> str:
    """The precision a run trained in: ``"bf16"`` or ``"fp32"``."""
    recorded = run.config.get("precision")
    if isinstance(recorded, dict):
        return "bf16" if recorded.get("autocast") == "bf16" else "fp32"
    requested = run.config.get("train", {}).get("precision", "auto")  # before the record said
    if requested == "auto":
        return "bf16" if str(run.config.get("device", "cpu")).startswith("cuda") else "fp32"
    return requested


@plain_arguments
def evaluate(run_or_model: Any, data: Any = None, split: str = "validation", *, size: Optional[int] = None,
             seed: Optional[int] = None, batch_size: int = 128, max_length: Optional[int] = None,
             device: Optional[str] = None, precision: Optional[str] = None) -> dict[str, float]:
    """The task's metrics of a model (or of a run's trained model) on one split of ``data``.

    Args:
        run_or_model: a :class:`~tunekit.models.Model`, a :class:`~tunekit.runs.Run` or a run
            directory.
        data: a TextDataset (or anything :func:`tunekit.data.load` takes); for a run, None
            reloads the run's built-in data set.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        size, seed: evaluate on a seeded subset of ``size`` examples. For a run evaluated on
            its validation split both default to what the run used (``eval_size`` and its
            seed), so the numbers equal the ones the run recorded at its end.
        batch_size: examples per forward pass; max_length: truncation (a run's own by default, else 128).
        device, precision: as in :class:`~tunekit.config.TrainConfig`; ``precision`` None means
            the one a run trained in (its record says; a record of tunekit 0.1 ran in fp32
            on a CPU), and ``"auto"`` for a model.

    Returns ``{metric: value}``: ``accuracy``, ``macro_f1``, ``loss`` (classification) or
    ``perplexity``, ``loss`` (causal LM), plus ``examples``.
    """
    return _evaluate(run_or_model, data, split, size, seed, batch_size, max_length, device, precision)[0]


def _evaluate(run_or_model, data, split, size, seed, batch_size, max_length, device, precision, metrics=None):
    """:func:`evaluate`'s numbers, the accumulator that made them (``metrics``: one given) and the
    rows of the split they were read from."""

    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS} (got {split!r})")
    positive_int("batch_size", batch_size)
    if max_length is not None:
        positive_int("max_length", max_length)
    if size is not None:
        positive_int("size", size)
    run = None
    if isinstance(run_or_model, Model):
        model = run_or_model
    else:
        run = run_or_model if isinstance(run_or_model, Run) else load_run(run_or_model)
        model = run.model if run.model is not None else run.load_model()
        train_cfg = run.config.get("train", {})
        if split == "validation":
            size = train_cfg.get("eval_size") if size is None else size
            seed = int(train_cfg.get("seed", 0)) + 1 if seed is None else seed
        max_length = max_length or train_cfg.get("max_length")
        if precision is None:
            precision = run_precision(run)
        if data is None:
            data = run.dataset()
    precision = precision or "auto"
    if data is None:
        raise ConfigError("evaluate needs data: pass data=<TextDataset> (or a built-in name)")
    data = load_data(data)
    if model.task.name == "classification":
        data = match_labels(data, model.label_names)
    df = data.split(split)
    ix = subset(len(df), size, 0 if seed is None else seed)
    df = df if ix is None else df.iloc[ix]
    if len(df) == 0:
        raise ConfigError(f"the {split} split of {data.name!r} is empty")
    dev = pick_device(device) if device else model.device
    model.to(dev)
    max_length = model.fit_length(max_length or 128)
    enc = model.task.encode_frame(model.tokenizer, df, max_length)
    t = time.perf_counter()
    metrics = metrics(len(enc)) if metrics is not None else model.task.metrics()
    out = evaluate_batches(model.module, metrics, enc.batches(batch_size, device=dev, by_length=True), dev,
                           autocast_dtype(dev, precision))
    out["examples"] = len(enc)
    out["seconds"] = round(time.perf_counter() - t, 3)
    return out, metrics, df


@plain_arguments
def text_losses(run_or_model: Any, data: Any = None, split: str = "validation", *, size: Optional[int] = None,
                seed: Optional[int] = None, batch_size: int = 32, max_length: Optional[int] = None,
                device: Optional[str] = None, precision: Optional[str] = None):
    """Each text's own next-token loss under a language model (``task="causal_lm"``), in the
    split's order: a DataFrame with ``text``, ``loss`` (the mean over its predicted tokens) and
    ``tokens`` (how many were predicted). The arguments are :func:`evaluate`'s, so two tables of
    the same subset pair text by text: :func:`tunekit.metrics.perplexity_interval` gives the
    perplexity with its interval over texts (and seeds), :func:`tunekit.metrics.paired_perplexity`
    one model against another. ``df.attrs["metrics"]`` holds :func:`evaluate`'s numbers (the
    token-weighted mean of ``loss`` is its ``loss``)."""
    import pandas as pd

    from tunekit.tasks.causal_lm import TextLosses
    task = (run_or_model.task.name if isinstance(run_or_model, Model) else
            (run_or_model if isinstance(run_or_model, Run) else load_run(run_or_model)).task)
    if task != "causal_lm":
        raise ConfigError(f"text_losses() is for language models (task 'causal_lm'); this one's task is {task!r}")
    out, acc, rows = _evaluate(run_or_model, data, split, size, seed, batch_size, max_length, device, precision,
                               metrics=TextLosses)
    df = pd.DataFrame({"text": rows["text"].tolist(), "loss": acc.losses.numpy(), "tokens": acc.counts.numpy()})
    df.attrs["metrics"] = out
    return df


@plain_arguments
def generations(run_or_model: Any, data: Any = None, split: str = "validation", *, size: Optional[int] = None,
                seed: Optional[int] = None, batch_size: int = 16, max_length: Optional[int] = None,
                device: Optional[str] = None, precision: Optional[str] = None):
    """What a text-to-text model (``task="sft"`` or ``"seq2seq"``) writes for every pair of a
    split, beside the reference: a DataFrame with ``source``, ``reference``, ``generated`` and
    that example's ``rougeL``, in the split's order. The arguments are :func:`evaluate`'s (a run's
    own validation subset by default), so two tables of the same subset pair example by example
    (:func:`tunekit.metrics.paired_difference`); ``df.attrs["metrics"]`` holds the scores over them."""
    import pandas as pd

    from tunekit.tasks.generation import GenerationMetrics
    model = run_or_model if isinstance(run_or_model, Model) else None
    if model is None:
        run = run_or_model if isinstance(run_or_model, Run) else load_run(run_or_model)
        task = run.task
    else:
        task = model.task.name
    if task not in ("sft", "seq2seq"):
        raise ConfigError(f"generations() is for text-to-text models (task 'sft' or 'seq2seq'); this one's task is "
                          f"{task!r}")
    out, acc, _ = _evaluate(run_or_model, data, split, size, seed, batch_size, max_length, device, precision,
                            metrics=GenerationMetrics)
    df = pd.DataFrame(acc.samples, columns=["source", "reference", "generated", "rougeL"])
    df.attrs["metrics"] = out
    return df
