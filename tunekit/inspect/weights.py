"""What training did to the weights: per-module change and the spectra of the updates.

For every parameter, ``delta = W - W0``, with ``W0`` the run's starting value (its
parent's result or the pretrained checkpoint, plus ``initial.safetensors`` for the
new head; see :class:`~tunekit.inspect.models.Pair`). For an adapter the update of
an adapted matrix is its effective one, measured with peft's own ``merge`` (LoRA:
``scale * B @ A``; IA3: ``W * (l - 1)``), not the norms of the adapter's tensors.
Frozen parameters give exactly 0.

    changes = weight_change([probe, lora, full])     # one row per run x module
    spectra = update_spectra([lora, full])           # one row per run x matrix

Module labels are shared across architectures (:mod:`tunekit.architectures`) so
that runs line up on the same axes: ``query key value attn_out intermediate
output`` (+ ``qkv`` for GPT-2's fused projection, ``attn_norm``, ``out_norm`` for
the block's layer norms, ``gate`` for Llama's MLP), and the groups outside the
blocks (``embeddings``, ``pooler``, ``norm``, ``head``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Optional

import pandas as pd
import torch

from tunekit import adapters
from tunekit.architectures import LABEL_ORDER  # noqa: F401 - the labels' order on every axis
from tunekit.config import finite_number, positive_int, require
from tunekit.inspect.models import Pair, load_pairs
from tunekit.models import Model


def module_of(model: Model, name: str) -> tuple[str, Optional[int], str]:
    """(group, block index or None, module label) of a canonical parameter name."""
    return model.backbone.locate(name)


def initial_state(pair) -> dict[str, torch.Tensor]:
    """Starting value of every parameter of the run (canonical names): its start model's."""
    pair = pair if isinstance(pair, Pair) else load_pairs(pair)[0]
    return {n: p.detach() for n, p in pair.start.hf.named_parameters()}


def _deltas(pair: Pair) -> tuple[Model, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """``{canonical name: (W0, delta)}``: W0 from the start, delta = effective result - W0, where
    an adapter's effective weight is measured through peft (:func:`tunekit.adapters.effective_state`).
    float32 on the CPU; a frozen parameter gives exactly 0."""
    model = pair.result
    w0 = initial_state(pair)
    with torch.no_grad():
        tuned = adapters.effective_state(model.hf)
        out = {}
        for name, base in w0.items():
            now = tuned.get(name)
            if now is None:
                raise ValueError(f"{pair.name}: the trained model has no parameter {name!r}")
            base = base.float().cpu()
            if type(now) not in (torch.Tensor, torch.nn.Parameter) and hasattr(now, "dequantize"):
                now = now.dequantize()  # a quantized record: the change is the rounding
            if now.dtype == torch.float64:  # an adapter's merged weight: subtract in float64
                delta = (now.cpu() - base.double()).float()
            else:
                delta = now.detach().float().cpu() - base
            out[name] = (base, delta)
    return model, out


def weight_deltas(run) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{canonical name: (W0, delta)}`` for every parameter of the run's model (CPU, float32)."""
    return _deltas(run if isinstance(run, Pair) else load_pairs(run)[0])[1]


def parameter_changes(pair) -> pd.DataFrame:
    """One row per parameter tensor: group, block, module, kind, shape, ||W0||, ||delta||, relative."""
    pair = pair if isinstance(pair, Pair) else load_pairs(pair)[0]
    run = pair.run
    model, deltas = _deltas(pair)
    rows = []
    for name, (w0, delta) in deltas.items():
        group, block, module = module_of(model, name)
        w0n, dn = float(torch.linalg.vector_norm(w0)), float(torch.linalg.vector_norm(delta))
        rows.append({"run": run.name, "label": run.label, "name": name, "group": group, "block": block,
                     "module": module, "kind": name.rsplit(".", 1)[-1], "shape": tuple(w0.shape),
                     "numel": w0.numel(), "w0_norm": w0n, "delta_norm": dn,
                     "rel_change": dn / w0n if w0n else (0.0 if dn == 0 else math.inf)})
    return pd.DataFrame(rows)


def weight_change(runs) -> pd.DataFrame:
    """Relative change ``||W - W0||_F / ||W0||_F`` and absolute norm ``||W - W0||_F`` per
    run x layer group x module (the module's weight and bias together).

    Columns: run, label, group, block, module, w0_norm, delta_norm, rel_change, numel.
    """
    frames = []
    for pair in load_pairs(runs):
        p = parameter_changes(pair)
        p = p.assign(w0_sq=p["w0_norm"] ** 2, delta_sq=p["delta_norm"] ** 2, block=p["block"].fillna(-1))
        g = p.groupby(["run", "label", "group", "block", "module"], sort=False, as_index=False).agg(
            w0_sq=("w0_sq", "sum"), delta_sq=("delta_sq", "sum"), numel=("numel", "sum"))
        g["w0_norm"] = g["w0_sq"] ** 0.5
        g["delta_norm"] = g["delta_sq"] ** 0.5
        g["rel_change"] = (g["delta_norm"] / g["w0_norm"]).where(g["w0_norm"] > 0, 0.0)
        g["block"] = g["block"].astype(int).where(g["block"] >= 0, None)
        frames.append(g.drop(columns=["w0_sq", "delta_sq"]))
    return pd.concat(frames, ignore_index=True)


NORM_LABELS = ("attn_norm", "out_norm")
"""The block's normalization layers (scale and shift vectors, not weight matrices)."""


def norms_only(wc: pd.DataFrame) -> list[str]:
    """The runs (names, in ``wc``'s order) that changed something inside the blocks, but only
    normalization layers: no weight matrix of a block moved (LayerNorm tuning)."""
    inside = wc[wc["block"].notna() & (wc["delta_norm"] > 0)]
    moved = inside.groupby("run", sort=False)["module"].agg(set)
    return [run for run, modules in moved.items() if modules <= set(NORM_LABELS)]


# ----- spectra -------------------------------------------------------------------------------------
def moved_blocks(wc: pd.DataFrame) -> list[str]:
    """The runs (names, in ``wc``'s order) whose update changed a weight inside the blocks; a
    probe or a frozen run changes none, so a difference map against it only repeats the other
    run's own map."""
    blocks = wc[wc["block"].notna() & (wc["rel_change"] > 0)]
    return [r for r in dict.fromkeys(wc["run"]) if r in set(blocks["run"])]


def effective_rank(s: torch.Tensor) -> float:
    """exp of the entropy of the normalised singular values (Roy & Vetterli, 2007); 0 for a zero matrix."""
    s = s[s > 0].double()
    if s.numel() == 0:
        return 0.0
    p = s / s.sum()
    return float(torch.exp(-(p * p.log()).sum()))


def stable_rank(s: torch.Tensor) -> float:
    """||A||_F^2 / ||A||_2^2 = sum s_i^2 / max s_i^2; 0 for a zero matrix."""
    s = s.double()
    return float((s ** 2).sum() / s.max() ** 2) if s.numel() and s.max() > 0 else 0.0


def energy_rank(s: torch.Tensor, energy: float = 0.9) -> int:
    """Fewest directions holding ``energy`` of sum s_i^2 (s sorted descending); 0 for a zero matrix."""
    e = (s.double() ** 2)
    total = e.sum()
    if total <= 0:
        return 0
    return int(torch.searchsorted(torch.cumsum(e, 0) / total, torch.tensor(energy, dtype=torch.float64) - 1e-12)) + 1


def singular_values(a: torch.Tensor) -> torch.Tensor:
    """Singular values of ``a`` (descending) from the eigenvalues of its smaller Gram matrix,
    in float64: accurate to ~1e-8 of the largest, so an update of rank r shows r non-zero
    values (those below 1e-7 of the largest are set to 0), and several times faster than a
    full SVD for 384 x 1536 matrices."""
    a = a.double()
    scale = a.abs().max()
    if scale == 0:
        return torch.zeros(min(a.shape), dtype=torch.float64)
    a = a / scale  # LAPACK's eigensolver is ~10x slower on tiny-valued matrices (updates are ~1e-4)
    g = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a
    s = torch.linalg.eigvalsh(g).flip(0).clamp_min(0).sqrt() * scale
    if s.numel() and s[0] > 0:  # below ~1e-8 of the largest is round-off of the Gram route: zero
        s = torch.where(s > s[0] * 1e-7, s, torch.zeros_like(s))
    return s


def left_singular_vectors(a: torch.Tensor, k: Optional[int] = None) -> torch.Tensor:
    """The top-``k`` (default: all non-zero) left singular vectors of ``a`` as columns, via the
    smaller Gram matrix (float32 is plenty for cosines between subspaces)."""
    a = a.float()
    a = a / a.abs().max().clamp_min(1e-30)  # scale-free, and keeps the eigensolver on its fast path
    m, n = a.shape
    if m <= n:
        u = torch.linalg.eigh(a @ a.T)[1].flip(1)
        return u[:, :k] if k else u
    evals, v = torch.linalg.eigh(a.T @ a)
    evals, v = evals.flip(0)[:k], v.flip(1)[:, :k]
    s = evals.clamp_min(0).sqrt()
    keep = s > s[0] * 1e-6
    return (a @ v[:, keep]) / s[keep]


def intruder_dimensions(w: torch.Tensor, w0: torch.Tensor, k: int = 10, eps: float = 0.5,
                        u0: Optional[torch.Tensor] = None) -> tuple[int, list[float]]:
    """Among the top-``k`` left singular vectors of the tuned ``w``, those whose largest |cosine|
    with any left singular vector of ``w0`` is below ``eps`` (Shuttleworth et al., 2024).

    Returns (count, max |cos| of each of the k vectors)."""
    u = left_singular_vectors(w, k)
    if u0 is None:
        u0 = left_singular_vectors(w0)
    best = (u.double().T @ u0.double()).abs().max(dim=1).values
    return int((best < eps).sum()), best.tolist()


@lru_cache(maxsize=16)
def _noise_spectrum(shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Singular values of a Gaussian matrix of ``shape`` scaled to unit Frobenius norm."""
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.linalg.svdvals(g / torch.linalg.matrix_norm(g))


@dataclass
class Spectra:
    """Spectra of the weight updates of one or more runs.

    ``table``: one row per run x matrix (run, label, name, group, block, module, shape,
    delta_norm, effective_rank, stable_rank, energy90, intruders).
    ``singular_values[(run, name)]``: the update's singular values, descending.
    ``noise[(run, name)]``: those of Gaussian noise with the same shape and Frobenius norm.
    """

    table: pd.DataFrame
    singular_values: dict = field(default_factory=dict)
    noise: dict = field(default_factory=dict)
    intruder_cosines: dict = field(default_factory=dict)


def update_spectra(runs, top_k: int = 10, eps: float = 0.5,
                   include_embeddings: bool = False, energy: float = 0.9, names=None) -> Spectra:
    """Singular values of every 2-D update ``delta W`` (head and, optionally, the embedding
    matrices included), with effective rank, stable rank, the number of directions holding
    ``energy`` of the update, and intruder dimensions of ``W0 + delta`` against ``W0``.
    ``names``: only these parameters (e.g. the one matrix a figure draws; each SVD costs)."""
    positive_int("top_k", top_k)
    require(finite_number(eps) and 0 < eps <= 1, "eps", "a number in (0, 1] (a cosine threshold)", eps)
    require(finite_number(energy) and 0 < energy <= 1, "energy", "a fraction in (0, 1]", energy)
    require(names is None or (isinstance(names, (list, tuple, set)) and all(isinstance(n, str) for n in names)),
            "names", "None or a list of parameter names (e.g. 'encoder.layer.0.attention.self.query.weight')", names)
    rows, sv, noise, cos = [], {}, {}, {}
    u0_cache: dict = {}
    for pair in load_pairs(runs):
        run = pair.run
        model, deltas = _deltas(pair)
        for name, (w0, delta) in deltas.items():
            if w0.ndim != 2 or (names is not None and name not in names):
                continue
            group, block, module = module_of(model, name)
            if group == "embeddings" and not include_embeddings:
                continue
            s = singular_values(delta)
            norm = float(torch.linalg.vector_norm(delta.double()))
            row = {"run": run.name, "label": run.label, "name": name, "group": group, "block": block,
                   "module": module, "shape": tuple(delta.shape), "delta_norm": norm,
                   "effective_rank": effective_rank(s), "stable_rank": stable_rank(s),
                   "energy90": energy_rank(s, energy), "intruders": 0}
            if norm > 0:
                cached = u0_cache.get(name)
                if cached is None or not torch.equal(cached[0], w0):  # runs sharing a base share its SVD
                    cached = u0_cache[name] = (w0, left_singular_vectors(w0))
                k = min(top_k, min(w0.shape))
                row["intruders"], cos[(run.name, name)] = intruder_dimensions(
                    w0 + delta, w0, k, eps, u0=cached[1])
                noise[(run.name, name)] = (_noise_spectrum(tuple(delta.shape)) * norm).tolist()
            sv[(run.name, name)] = s.tolist()
            rows.append(row)
    columns = ["run", "label", "name", "group", "block", "module", "shape", "delta_norm", "effective_rank",
               "stable_rank", "energy90", "intruders"]  # also when no matrix was asked for or moved
    return Spectra(pd.DataFrame(rows, columns=columns), sv, noise, cos)
