"""Which metrics each task reports, how they read and which way is better. No torch here, so
run tables, plots and reports can use it where torch is absent.

A record's summary holds each metric with the ``val_`` prefix (``val_accuracy``,
``val_perplexity``); :func:`for_task` lists a task's metrics, the primary one first.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    higher_is_better: bool
    fmt: str = ".3f"


METRICS = {
    "accuracy": Metric("accuracy", "accuracy", True),
    "macro_f1": Metric("macro_f1", "macro-F1", True),
    "loss": Metric("loss", "loss", False, ".4f"),
    "perplexity": Metric("perplexity", "perplexity", False, ".2f"),
    "rougeL": Metric("rougeL", "ROUGE-L", True),
    "rouge1": Metric("rouge1", "ROUGE-1", True),
    "rouge2": Metric("rouge2", "ROUGE-2", True),
    "bleu": Metric("bleu", "BLEU", True, ".2f"),
    "chrf": Metric("chrf", "chrF", True, ".2f"),
}
GENERATION_METRICS = ("rougeL", "rouge1", "rouge2", "bleu", "chrf", "perplexity", "loss")
TASK_METRICS = {"classification": ("accuracy", "macro_f1", "loss"), "causal_lm": ("perplexity", "loss"),
                "sft": GENERATION_METRICS, "seq2seq": GENERATION_METRICS}


def for_task(task: str) -> list[Metric]:
    """The metrics of ``task`` (``"classification"``, ``"causal_lm"``, ``"sft"``, ``"seq2seq"``),
    primary first. The text-to-text tasks score generated text against the reference: ROUGE-1/2/L
    (F-measure, 0..1, as rouge-score computes them) and BLEU and chrF (0..100, sacrebleu's corpus
    scores), with the perplexity of the reference under teacher forcing."""
    return [METRICS[k] for k in TASK_METRICS.get(task, TASK_METRICS["classification"])]


def primary(task: str) -> Metric:
    return for_task(task)[0]


def macro_f1(preds: np.ndarray, labels: np.ndarray, num_labels: int) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in labels or predictions."""
    scores = []
    for c in range(num_labels):
        tp = int(np.sum((preds == c) & (labels == c)))
        fp = int(np.sum((preds == c) & (labels != c)))
        fn = int(np.sum((preds != c) & (labels == c)))
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def correlation_interval(x, y, level: float = 0.95):
    """Pearson's r of ``x`` and ``y`` with its interval at ``level`` (Fisher's z transform):
    ``(r, low, high)``, or None under 4 points or where either has no spread (no interval then)."""
    import math
    from statistics import NormalDist
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n < 4 or x.std() == 0 or y.std() == 0:
        return None
    r = float(np.corrcoef(x, y)[0, 1])
    r = max(min(r, 1 - 1e-12), -1 + 1e-12)
    half = NormalDist().inv_cdf(0.5 + level / 2) / math.sqrt(n - 3)
    z = math.atanh(r)
    return r, math.tanh(z - half), math.tanh(z + half)


BOOTSTRAP = 2000
"""Bootstrap resamples for every interval (percentile method, seeded: the same record gives the
same interval)."""


def bootstrap_mean(correct: np.ndarray, resamples: int = BOOTSTRAP, seed: int = 0,
                   level: float = 0.95, weights=None) -> tuple[float, float, float]:
    """The mean of ``correct`` (seeds x examples, 0/1 or any score) and its ``level`` interval
    by a two-level percentile bootstrap: resample the seeds (rows), then the examples (columns)
    within each resampled seed. One seed: the examples alone.

    ``weights`` (one per example, e.g. the tokens each text's mean loss is over): the weighted
    mean, resampled with the same draws, so a long text counts as much as its tokens do, as in a
    token-weighted loss."""
    correct = np.asarray(correct, dtype=float)
    if correct.ndim != 2 or correct.size == 0:
        raise ValueError("expected a non-empty seeds x examples array")
    seeds, examples = correct.shape
    if weights is not None:
        weights = np.broadcast_to(np.asarray(weights, dtype=float), correct.shape)
        if not (weights >= 0).all() or not weights.sum():
            raise ValueError("weights must be non-negative and not all zero")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, seeds, size=(resamples, seeds)) if seeds > 1 else np.zeros((resamples, 1), int)
    cols = rng.integers(0, examples, size=(resamples, seeds, examples))
    if weights is None:
        mean, means = correct.mean(), correct[rows[..., None], cols].mean(axis=(1, 2))
    else:
        w = weights[rows[..., None], cols]
        mean = (correct * weights).sum() / weights.sum()
        means = (correct[rows[..., None], cols] * w).sum(axis=(1, 2)) / np.maximum(w.sum(axis=(1, 2)), 1e-300)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(mean), float(lo), float(hi)


def perplexity_interval(losses, tokens, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """The perplexity of a language model on some texts with its ``level`` interval: ``losses``
    holds each text's mean next-token loss (texts, or seeds x texts: one row per seed's run on the
    same texts), ``tokens`` how many tokens each text's loss is over. The perplexity is exp of the
    token-weighted mean loss (what :func:`tunekit.evaluate` reports); the interval is exp of the
    two-level bootstrap interval of that mean (:func:`bootstrap_mean` with ``weights``): seeds and
    texts both vary. Returns ``(perplexity, low, high)``."""
    import math
    losses = np.asarray(losses, dtype=float)
    losses = losses[None, :] if losses.ndim == 1 else losses
    mean, lo, hi = bootstrap_mean(losses, seed=seed, level=level, weights=tokens)
    return math.exp(mean), math.exp(lo), math.exp(hi)


def paired_perplexity(a, b, tokens, name_a: str = "a", name_b: str = "b", seed: int = 0,
                      level: float = 0.95) -> dict:
    """``a``'s perplexity over ``b``'s on the same texts (and seeds), paired text by text:
    ``a`` and ``b`` are per-text mean losses (texts, or seeds x texts, row k of each from seed k),
    ``tokens`` the tokens each is over. The ratio is exp of the token-weighted mean loss
    difference, its interval from the same two-level bootstrap; under 1, ``a`` predicts the texts
    better. The finding in words: which is better, or ``inside the noise`` when the interval holds 1."""
    import math
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    a, b = (a[None, :], b[None, :]) if a.ndim == 1 else (a, b)
    if a.shape != b.shape or not a.size:
        raise ValueError(f"paired_perplexity needs two equally shaped, non-empty arrays of losses (got {a.shape} and "
                         f"{b.shape})")
    diff, lo, hi = bootstrap_mean(a - b, seed=seed, level=level, weights=tokens)
    ratio, low, high = math.exp(diff), math.exp(lo), math.exp(hi)
    inside = bool(lo <= 0 <= hi)
    verdict = "inside the noise" if inside else f"{name_a if diff < 0 else name_b} better"
    said = (f"{name_a} vs {name_b}: perplexity x{ratio:.3f} [{low:.3f}, {high:.3f}] over {a.shape[1]} texts"
            f"{f' x {a.shape[0]} seeds' if a.shape[0] > 1 else ''}, {verdict}")
    return {"ratio": ratio, "low": low, "high": high, "texts": int(a.shape[1]), "seeds": int(a.shape[0]),
            "inside_noise": inside, "said": said}


def paired_difference(a, b, name_a: str = "a", name_b: str = "b", metric: str = "score", seed: int = 0,
                      level: float = 0.95) -> dict:
    """``a`` minus ``b``, paired example by example (two equally long sequences of per-example
    scores on the same examples, e.g. the ``rougeL`` column of two :func:`tunekit.generations`
    tables), with its ``level`` bootstrap interval and the finding in words: which is better, or
    ``inside the noise`` when the interval holds 0."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired_difference needs two equally long, non-empty lists of scores (got {a.shape} and "
                         f"{b.shape})")
    diff, lo, hi = bootstrap_mean((a - b)[None, :], seed=seed, level=level)
    verdict = "inside the noise" if lo <= 0 <= hi else f"{name_a if diff > 0 else name_b} better"
    said = (f"{name_a} vs {name_b}: {metric} {diff:+.3f} [{lo:+.3f}, {hi:+.3f}] over {len(a)} examples, {verdict}")
    return {"difference": diff, "low": lo, "high": hi, "examples": int(len(a)), "inside_noise": bool(lo <= 0 <= hi),
            "said": said}
