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
