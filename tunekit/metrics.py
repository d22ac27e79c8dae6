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
}
TASK_METRICS = {"classification": ("accuracy", "macro_f1", "loss"), "causal_lm": ("perplexity", "loss")}


def for_task(task: str) -> list[Metric]:
    """The metrics of ``task`` (``"classification"``, ``"causal_lm"``), primary first."""
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
