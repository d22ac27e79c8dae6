"""Representation drift: how far the tuned model's hidden states moved from the base model's.

Both models read the same fixed examples; every hidden state (the embeddings'
output is layer 0, block ``k``'s output is layer ``k+1``) is mean-pooled over the
real tokens, giving one matrix ``[n examples, hidden]`` per layer and model.
Linear CKA (centred kernel alignment, Kornblith et al. 2019) then says how
similar the two geometries are: 1 when one is a rotation and rescaling of the
other, near 0 when unrelated.

    drift = representation_drift([probe, lora, full], data=data)   # run x layer -> cka
    points = pca_features([probe, full], data)                     # before/after, same axes

With ``Xc``, ``Yc`` the column-centred ``[n, d]`` matrices, ``K = X X^T``,
``L = Y Y^T`` and ``H = I - 11^T/n``:

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)          (feature form)
              = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),
    HSIC(K, L) = tr(K H L H) / (n-1)^2                                    (Gram form)

The biased HSIC makes CKA of unrelated features clearly positive when ``n`` is
small against ``d``; :func:`debiased_cka` swaps in the unbiased estimator
(Song et al. 2012; Nguyen et al. 2021), which is near 0 for independent features.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch

from tunekit.config import ConfigError, require
from tunekit.data import load as load_data
from tunekit.inspect.models import Pair, load_pairs
from tunekit.models import Model as TextClassifier
from tunekit.tasks.classification import pool

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[Sequence[float]]]


# ----- CKA ---------------------------------------------------------------------------------------
def _matrix(x: ArrayLike, name: str) -> torch.Tensor:
    """``x`` as a 2-D float64 CPU tensor [n, d]."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.to(device="cpu", dtype=torch.float64)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix [examples, features] (got shape {tuple(t.shape)})")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return t


def _pair(x: ArrayLike, y: ArrayLike, min_n: int = 2, why: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    X, Y = _matrix(x, "X"), _matrix(y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must hold the same examples in rows (got {X.shape[0]} and {Y.shape[0]} rows)")
    if X.shape[0] < min_n:
        raise ValueError(f"CKA needs at least {min_n} examples{why} (got n={X.shape[0]})")
    return X, Y


def _ratio(xy: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor) -> float:
    """``xy / sqrt(xx * yy)``; NaN when a side has no variance. ``sqrt(a*a) == a`` in IEEE
    arithmetic, so identical inputs (``xy == xx == yy``) give exactly 1."""
    den = xx * yy
    if not den > 0:
        return float("nan")
    return float(xy / torch.sqrt(den))


def linear_cka(X: ArrayLike, Y: ArrayLike) -> float:
    """Linear CKA in feature space: ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``.

    ``X`` [n, d1] and ``Y`` [n, d2] (torch or numpy) hold the same n examples in rows;
    columns are centred here and everything is computed in float64. Invariant to
    orthogonal transforms and isotropic scaling of either side, not to general
    linear maps. Identical inputs give exactly 1.0. NaN if a side is constant.
    """
    X, Y = _pair(X, Y)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    if torch.equal(Xc, Yc):
        return 1.0 if Xc.abs().max() > 0 else float("nan")
    xy = (Yc.T @ Xc).square().sum()
    xx = (Xc.T @ Xc).square().sum()
    yy = (Yc.T @ Yc).square().sum()
    return _ratio(xy, xx, yy)


def _centre_gram(K: torch.Tensor) -> torch.Tensor:
    """``H K H`` with ``H = I - 11^T/n``."""
    return K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()


def linear_cka_gram(X: ArrayLike, Y: ArrayLike) -> float:
    """Linear CKA through the Gram matrices: ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))``.

    ``K = X X^T`` and ``L = Y Y^T`` (uncentred inputs are fine: ``H K H`` centres them);
    ``HSIC(K, L) = tr(K H L H) / (n-1)^2``, and the ``(n-1)^2`` cancels. Equal to
    :func:`linear_cka`; costs O(n^2 d) instead of O(n d1 d2).
    """
    X, Y = _pair(X, Y)
    Kc, Lc = _centre_gram(X @ X.T), _centre_gram(Y @ Y.T)
    return _ratio((Kc * Lc).sum(), (Kc * Kc).sum(), (Lc * Lc).sum())


def hsic_unbiased(K: torch.Tensor, L: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC of two [..., n, n] Gram matrices (Song et al. 2012), n >= 4.

    With ``K~``, ``L~`` the Gram matrices with their diagonals set to 0:

        HSIC_1 = [ tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1 ] / (n(n-3))

    Leading dimensions are batched (one value per matrix pair).
    """
    n = K.shape[-1]
    if n < 4:
        raise ValueError(f"the unbiased HSIC needs at least 4 examples (got n={n})")
    Kt = K - torch.diag_embed(K.diagonal(dim1=-2, dim2=-1))
    Lt = L - torch.diag_embed(L.diagonal(dim1=-2, dim2=-1))
    k1, l1 = Kt.sum(-1), Lt.sum(-1)
    return ((Kt * Lt).sum((-2, -1)) + k1.sum(-1) * l1.sum(-1) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (k1 * l1).sum(-1)) / (n * (n - 3))


def debiased_cka(X: ArrayLike, Y: ArrayLike) -> float:
    """Linear CKA with the unbiased HSIC: ``HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L))``.

    As in Kornblith et al. 2019 / Nguyen et al. 2021 (see :func:`hsic_unbiased`). Unlike
    the biased estimate it is near 0 for independent features even when n is small
    against the dimension, and may be slightly negative. Needs n >= 4; identical
    inputs give exactly 1.0; NaN if a side's estimate is not positive.
    """
    X, Y = _pair(X, Y, min_n=4, why=" for the debiased estimate (the unbiased HSIC divides by n(n-3))")
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)  # centring changes nothing but the rounding
    K = Xc @ Xc.T
    if torch.equal(Xc, Yc):
        return 1.0 if hsic_unbiased(K, K) > 0 else float("nan")
    L = Yc @ Yc.T
    return _ratio(hsic_unbiased(K, L), hsic_unbiased(K, K), hsic_unbiased(L, L))


class _Grams:
    """Centred Gram matrices ``G = Xc Xc^T`` of a stack of layers [layers, n, d] and their
    self-similarities, computed once and compared with many others (the base model's
    layers against every run's). All layers go through each operation together: a few
    large tensor operations rather than many small ones, which matters on a busy CPU."""

    def __init__(self, X: torch.Tensor):
        self.X = X.detach().to(device="cpu", dtype=torch.float64)
        Xc = self.X - self.X.mean(-2, keepdim=True)
        self.G = Xc @ Xc.transpose(-1, -2)  # already double-centred: H G H = G
        self.biased = (self.G * self.G).sum((-2, -1))
        self.unbiased = hsic_unbiased(self.G, self.G)

    def cka(self, other: "_Grams") -> tuple[list[float], list[float]]:
        """(linear CKA, debiased CKA) per layer against ``other``: equal to :func:`linear_cka`
        and :func:`debiased_cka` of each layer's pair; an identical layer gives exactly 1.0."""
        nan = torch.tensor(float("nan"), dtype=torch.float64)

        def ratio(xy, xx, yy):
            den = xx * yy
            return torch.where(den > 0, xy / den.clamp_min(torch.finfo(den.dtype).tiny).sqrt(), nan)

        cka = ratio((self.G * other.G).sum((-2, -1)), self.biased, other.biased)
        dcka = ratio(hsic_unbiased(self.G, other.G), self.unbiased, other.unbiased)
        same = (self.X == other.X).flatten(1).all(1)
        cka = torch.where(same & (self.biased > 0), 1.0, cka)
        dcka = torch.where(same & (self.unbiased > 0), 1.0, dcka)
        return cka.tolist(), dcka.tolist()


# ----- features of a model -----------------------------------------------------------------------
def _text_list(texts: Any) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    try:
        texts = [str(t) for t in (texts.tolist() if hasattr(texts, "tolist") else list(texts))]
    except TypeError:
        raise ConfigError(f"texts must be a list of texts (got {type(texts).__name__})") from None
    if not texts:
        raise ConfigError("texts must hold at least one text")
    return texts


@torch.no_grad()
def _batched(model: TextClassifier, texts: Any, max_length: int, batch_size: int,
             features: Callable[[dict], torch.Tensor]) -> torch.Tensor:
    """``features(batch)`` ([b, ...]) over all texts, in eval mode and without gradients,
    batched by token length (less padding) and returned in the texts' order (float32, CPU)."""
    texts = _text_list(texts)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer (got {batch_size!r})")
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
        raise ConfigError(f"max_length must be an integer >= 2 (got {max_length!r})")
    max_length = model.backbone.fit_max_length(max_length)
    lengths = [len(ids) for ids in model.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    was_training = model.module.training
    model.module.eval()
    try:
        chunks = []
        for start in range(0, len(order), batch_size):
            enc = model.tokenize([texts[i] for i in order[start:start + batch_size]], max_length).to(model.device)
            chunks.append(features(enc).float().cpu())
    finally:
        model.module.train(was_training)
    done = torch.cat(chunks)
    out = torch.empty_like(done)
    out[torch.tensor(order)] = done
    return out


def pooled_hidden_states(model: TextClassifier, texts: Sequence[str], max_length: int = 128,
                         batch_size: int = 64) -> torch.Tensor:
    """Every hidden state, mean-pooled over real tokens: [layers + 1, n, hidden] (float32, CPU).

    Layer 0 is the embeddings' output, layer ``k`` the output of block ``k-1``
    (``output_hidden_states=True`` on ``model.hf.base_model``; LoRA layers, if any,
    are inside it). Eval mode, no gradients, deterministic for a given input.

    An encoder-decoder (T5, BART, Marian) reads each text with its encoder and, teacher-forced,
    with its decoder (the decoder fed the same tokens): layer 0 is the encoder's embeddings, then
    the encoder's blocks, then the decoder's, so layer ``k`` is still block ``k-1``'s output.
    """
    def pool(enc: dict) -> torch.Tensor:
        inputs = model.module.inputs(enc["input_ids"], enc["attention_mask"])  # virtual tokens first, if any
        if model.backbone.encoder_decoder:
            out = model.hf(**inputs, decoder_input_ids=enc["input_ids"], decoder_attention_mask=enc["attention_mask"],
                           output_hidden_states=True)
            states = tuple(out.encoder_hidden_states) + tuple(out.decoder_hidden_states[1:])
            if "inputs_embeds" in inputs:  # the encoder saw virtual tokens first; the decoder did not
                extra = inputs["inputs_embeds"].shape[1] - enc["input_ids"].shape[1]
                states = tuple(s[:, extra:] for s in out.encoder_hidden_states) + tuple(out.decoder_hidden_states[1:])
            h = torch.stack(states, 1)
            m = enc["attention_mask"].to(h.dtype)[:, None, :, None]
            return (h * m).sum(2) / m.sum(2).clamp_min(1.0)
        out = model.hf.base_model(**inputs, output_hidden_states=True)
        h = torch.stack(out.hidden_states, 1)  # [b, layers+1, tokens, hidden]
        m = inputs["attention_mask"][:, -h.shape[2]:].to(h.dtype)[:, None, :, None]  # a prefix is past: not here
        return (h * m).sum(2) / m.sum(2).clamp_min(1.0)

    return _batched(model, texts, max_length, batch_size, pool).transpose(0, 1).contiguous()


@contextlib.contextmanager
def _head_inputs(model: TextClassifier):
    """Record what the head's final Linear receives; the hook is always removed."""
    seen: list[torch.Tensor] = []
    handle = model.head().register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    try:
        yield seen
    finally:
        handle.remove()


def head_features(model: TextClassifier, texts: Sequence[str], max_length: int = 128,
                  batch_size: int = 64, pooling: Optional[str] = None) -> torch.Tensor:
    """What the head sees for each text: [n, hidden] (float32, CPU).

    ``pooling`` (default: the model's own; a language model's is ``"mean"``): ``"mean"``,
    the mean of the last hidden states over real tokens; ``"last"``: the last real token's
    hidden state; ``"model"``: the architecture's own head input (BERT's pooler output; a
    decoder's hidden state at the last non-padding token, picked the way Hugging Face
    picks it). The model is not changed.
    """
    pooling = pooling or model.pooling or "mean"

    def feats(enc: dict) -> torch.Tensor:
        inputs = model.module.inputs(enc["input_ids"], enc["attention_mask"])  # virtual tokens first, if any
        if pooling in ("mean", "last"):
            h = model.hf.base_model(**inputs).last_hidden_state
            return pool(h, inputs["attention_mask"][:, -h.shape[1]:], pooling)
        with _head_inputs(model) as seen:
            model.hf(**inputs)
        h = seen[-1]
        if h.ndim == 3:  # a decoder's head runs on every position; the logits come from one
            pad = model.hf.config.pad_token_id
            ids = enc["input_ids"]
            if pad is None:
                last = torch.full((ids.shape[0],), ids.shape[1] - 1, device=ids.device)
            else:
                last = (torch.arange(ids.shape[1], device=ids.device) * (ids != pad)).argmax(-1)
            extra = h.shape[1] - ids.shape[1]  # virtual tokens before the text (prompt tuning)
            h = h[torch.arange(h.shape[0], device=h.device), last + extra]
        return h

    return _batched(model, texts, max_length, batch_size, feats)


# ----- runs -------------------------------------------------------------------------------------
def _sample(data: Any, n: int, seed: int) -> pd.DataFrame:
    """A seeded sample of ``n`` validation examples (all of them if there are fewer)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"n must be a positive integer (got {n!r})")
    require(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**32,
            "seed", "an integer in 0 .. 2**32 - 1 (it seeds pandas' sample)", seed)
    data = load_data(data)
    df = data.validation
    if len(df) == 0:
        raise ConfigError(f"{data.name} has no validation examples to compare on")
    return df.sample(n=min(n, len(df)), random_state=seed).reset_index(drop=True)


def _base_key(pair: Pair, skip: set[str], *extra) -> tuple:
    """Which runs share a base's features: the same parent (or checkpoint), and the same
    starting values of the tensors it lacks, except in groups that cannot change the
    features (``skip``: the head, and the pooler for hidden states)."""
    return (pair.run.model_source, (pair.run.parent or {}).get("name"), pair.start_digest(skip), *extra)


def representation_drift(runs, texts: Optional[Sequence[str]] = None,
                         data: Any = None, n: int = 256, seed: int = 0, max_length: int = 128,
                         batch_size: int = 64) -> pd.DataFrame:
    """CKA between the base and the tuned model's pooled hidden states, at every layer.

    Args:
        runs: runs (live, or reloaded from disk), run directories, or one of them.
        texts: the examples to compare on; or else
        data: a :class:`~tunekit.data.TextDataset` (or a name ``tunekit.data.load``
            knows), of which ``n`` validation texts are sampled with ``seed``.

    Returns one row per run x layer: ``run, label, layer, cka, debiased_cka`` (layer 0
    = embeddings' output, layer k = block k-1's output). A frozen backbone (a probe)
    gives exactly 1.0. The base model's states are computed once per checkpoint (the
    head does not touch the hidden states). ``attrs["n"]`` is the number of examples.
    """
    if texts is None:
        if data is None:
            raise ConfigError("representation_drift needs the examples: pass texts=[...] or data=<TextDataset>")
        texts = _sample(data, n, seed)["text"].tolist()
    texts = _text_list(texts)
    if len(texts) < 4:
        raise ConfigError(f"representation_drift needs at least 4 texts for the debiased CKA (got {len(texts)})")
    rows, bases = [], {}
    for pair in load_pairs(runs):
        run, tuned = pair.run, pair.result
        key = _base_key(pair, {"head", "pooler"}, str(tuned.device))
        if key not in bases:
            base = pair.start.to(tuned.device)
            bases[key] = _Grams(pooled_hidden_states(base, texts, max_length, batch_size))
        cka, dcka = bases[key].cka(_Grams(pooled_hidden_states(tuned, texts, max_length, batch_size)))
        rows.extend({"run": run.name, "label": run.label, "layer": layer, "cka": c, "debiased_cka": d}
                    for layer, (c, d) in enumerate(zip(cka, dcka)))
    out = pd.DataFrame(rows, columns=["run", "label", "layer", "cka", "debiased_cka"])
    out.attrs["n"] = len(texts)
    return out


def _pca_axes(F: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean [d], the first two principal axes [d, 2], their explained-variance ratios [2]) of
    ``F`` [n, d], by a full SVD in float64 (deterministic). Each axis's sign is fixed so
    that its largest loading is positive."""
    mean = F.mean(0)
    _, s, vh = torch.linalg.svd(F - mean, full_matrices=False)
    vh = vh[:2]
    signs = torch.sign(vh.gather(1, vh.abs().argmax(1, keepdim=True)))
    vh = vh * torch.where(signs == 0, torch.ones_like(signs), signs)
    var = s.square()
    ratio = var[:2] / var.sum() if var.sum() > 0 else torch.zeros(2, dtype=F.dtype)
    if vh.shape[0] < 2:  # a single feature: the second axis is empty
        vh = torch.cat([vh, torch.zeros_like(vh)])
        ratio = torch.cat([ratio, torch.zeros(1, dtype=F.dtype)])[:2]
    return mean, vh.T, ratio


def pca_features(runs, data: Any, n: int = 256, seed: int = 0,
                 max_length: int = 128, batch_size: int = 64) -> pd.DataFrame:
    """The head's input features before and after training, projected on the base's two PCs.

    For each run, PCA is fitted on the base model's features (what the head sees:
    the mean-pooled last layer for pooling ``"mean"``) of ``n`` seeded validation
    examples, and both the base and the tuned features are projected on those SAME
    axes (centred by the base mean), so that movement shows.

    Returns one row per run x stage x example: ``run, label, stage`` ("before" /
    "after"), ``x, y, class`` (label name), ``text``. ``attrs``:
    ``explained_variance`` ``{run: [pc1, pc2]}`` (share of the base features' variance),
    ``explained_variance_after`` (share of the tuned features' variance, about their
    own mean, that the same two axes hold) and ``n``.
    """
    data = load_data(data)
    sample = _sample(data, n, seed)
    texts = sample["text"].tolist()
    classes = [data.label_names[i] for i in sample["label"]]
    frames, explained, explained_after, bases = [], {}, {}, {}
    for pair in load_pairs(runs):
        run, tuned = pair.run, pair.result
        key = _base_key(pair, {"head"}, tuned.pooling, str(tuned.device))
        if key not in bases:
            base = pair.start.to(tuned.device)
            bases[key] = head_features(base, texts, max_length, batch_size, pooling=tuned.pooling).double()
        before = bases[key]
        after = head_features(tuned, texts, max_length, batch_size).double()
        mean, axes, ratio = _pca_axes(before)
        centred_after = after - after.mean(0)
        total = centred_after.square().sum()
        explained[run.name] = ratio.tolist()
        explained_after[run.name] = ((centred_after @ axes).square().sum(0) / total).tolist() \
            if total > 0 else [0.0, 0.0]
        for stage, F in (("before", before), ("after", after)):
            xy = ((F - mean) @ axes).numpy()
            frames.append(pd.DataFrame({"run": run.name, "label": run.label, "stage": stage,
                                        "x": xy[:, 0], "y": xy[:, 1], "class": classes, "text": texts}))
    out = pd.concat(frames, ignore_index=True)
    out.attrs.update(explained_variance=explained, explained_variance_after=explained_after, n=len(texts))
    return out
