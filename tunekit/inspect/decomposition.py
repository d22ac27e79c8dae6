"""Magnitude and direction of each weight update (Liu et al. 2024, DoRA, section 2).

A weight matrix is split, per output feature, into a magnitude (the norm of the weights
feeding that feature) and a direction (those weights divided by their norm). For each
block matrix of a run, against its starting value W0:

    delta_m = mean over output features of |m - m0|
    delta_d = mean over output features of 1 - cos(w, w0)

The paper plots delta_d against delta_m per layer: full fine-tuning moves the two in
opposite senses (a negative slope), LoRA in the same sense (positive), DoRA like full
fine-tuning. An adapter's matrix is its effective one, measured through peft's merge
(DoRA's magnitude included); PiSSA / OLoRA are measured against the original checkpoint.
nn.Linear stores a weight [out, in] (a row per output feature); GPT-2's Conv1D stores
[in, out] (a column per output feature): each is read the way it is stored.

    table = magnitude_direction([full, lora, dora])   # one row per run x block matrix
    correlations(table, modules=["query", "value"])   # r per run, its 95 % interval and its sign
"""
from __future__ import annotations

import pandas as pd
import torch

from tunekit.inspect.models import load_pairs, snapshot_pairs
from tunekit.inspect.weights import _deltas, module_of
from tunekit.metrics import correlation_interval


def decompose(w: torch.Tensor, w0: torch.Tensor, columns: bool = False) -> tuple[float, float]:
    """(delta_m, delta_d) of ``w`` against ``w0``: the mean absolute change of the
    per-output-feature norms, and the mean of 1 - cosine between each feature's weights.
    ``columns=True`` when output features are columns (Conv1D's [in, out])."""
    w, w0 = w.double(), w0.double()
    if columns:
        w, w0 = w.T, w0.T
    m, m0 = w.norm(dim=1), w0.norm(dim=1)
    cos = (w * w0).sum(dim=1) / (m * m0).clamp_min(torch.finfo(torch.float64).tiny)
    return float((m - m0).abs().mean()), float((1 - cos).mean())


def _stored_by_column(model, name: str) -> bool:
    """True for a layer that keeps its weight [in, out] (transformers' Conv1D)."""
    module = model.hf.get_submodule(name.rsplit(".", 1)[0])
    return type(module).__name__ == "Conv1D"


def magnitude_direction(runs, steps: bool = False) -> pd.DataFrame:
    """One row per run x block weight matrix that changed: run, label, step, block, module,
    name, delta_m, delta_d (see the module's text). Matrices the run left as they were
    (frozen layers, a probe) are left out; a run that changed none gives no rows.
    ``steps=True``: a row set per point a run kept with ``snapshots=k`` after its start
    (:func:`tunekit.inspect.snapshot_pairs`), as the paper plots several points of training."""
    rows = []
    for first in load_pairs(runs):
        for pair in (snapshot_pairs(first) if steps else [first]):
            if pair.step == 0:
                continue  # the start: nothing changed yet
            step = pair.run.summary.get("steps") if pair.step is None else pair.step
            rows += [{**row, "step": step} for row in _rows(pair)]
    return pd.DataFrame(rows, columns=["run", "label", "step", "block", "module", "name", "delta_m", "delta_d"])


def _rows(pair) -> list[dict]:
    """The rows of one pair: each changed block weight matrix's delta_m and delta_d."""
    rows = []
    start = pair.start
    _, deltas = _deltas(pair)
    for name, (w0, delta) in deltas.items():
        _, block, module = module_of(start, name)
        if block is None or w0.ndim != 2 or not name.endswith(".weight") or not delta.any():
            continue
        dm, dd = decompose(w0.double() + delta.double(), w0, _stored_by_column(start, name))
        rows.append({"run": pair.run.name, "label": pair.run.label, "block": block, "module": module,
                     "name": name, "delta_m": dm, "delta_d": dd})
    return rows


def correlations(table: pd.DataFrame, modules=None) -> pd.DataFrame:
    """Per run of a :func:`magnitude_direction` table (its last step, where it has several): n
    (matrices), r = corr(ΔD, ΔM) with its 95 % interval (low, high; Fisher z) and its sign in
    words: ``"negative"`` or ``"positive"`` where the interval leaves out 0, ``"inside the
    noise"`` where it holds 0, ``"too few"`` under 4 matrices. ``modules``: only those matrices
    (e.g. ``["query", "value"]``, which full fine-tuning, LoRA and DoRA all change)."""
    rows = []
    for (run, label), d in table.groupby(["run", "label"], sort=False):
        d = d[d["step"] == d["step"].max()] if "step" in d else d
        if modules is not None:
            d = d[d["module"].isin(list(modules))]
        c = correlation_interval(d["delta_d"], d["delta_m"])
        r, low, high = c if c else (float("nan"),) * 3
        sign = "too few" if c is None else "negative" if high < 0 else "positive" if low > 0 else "inside the noise"
        rows.append({"run": run, "label": label, "n": len(d), "r": r, "low": low, "high": high, "sign": sign})
    return pd.DataFrame(rows, columns=["run", "label", "n", "r", "low", "high", "sign"])
