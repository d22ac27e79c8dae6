"""Figures from run records: pure functions, runs in, plotly figures (or tables) out.

    runs = tk.compare(["probe", "lora", "full"], data)
    tk.plots.training_curves(runs)          # training loss per step, smoothed
    tk.plots.eval_curves(runs)              # the task's main metric per evaluation (accuracy, perplexity)
    tk.plots.comparison_table(runs)         # one readable row per run, the metrics its task has
    tk.plots.pareto(runs)                   # that metric vs trainable parameters

Every function takes a list of :class:`~tunekit.runs.Run` (a single run, a run
directory or a runs directory work too). The i-th run gets the i-th colour in
every figure, so pass the same list to each. The legend shows the strategy label,
plus the run name where two runs share a label, plus the status of any run that
did not complete; such runs are drawn dashed (curves) or hollow (pareto).

No torch here: this module reads records only, so it works where torch is absent.
"""
from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from tunekit.config import ConfigError
from tunekit.metrics import METRICS, primary
from tunekit.runs import Run, list_runs, table

PALETTE = qualitative.Plotly
"""Run colours, in order; they repeat after ten runs."""
EVAL_METRICS = {"val_accuracy": "validation accuracy", "val_macro_f1": "validation macro-F1",
                "val_loss": "validation loss", "val_perplexity": "validation perplexity"}
STEP_X = {"step": "step", "samples": "training examples seen", "epoch": "epoch", "elapsed_s": "seconds"}
PARETO_X = {"trainable_params": "trainable parameters", "peak_memory_mb": "peak memory (MB)",
            "wall_time_s": "wall time (s)", "total_params": "parameters held",
            "nonzero_params": "non-zero parameters", "size_mb": "size on disk (MB)",
            "latency_ms": "CPU latency per batch (ms)"}
TABLE_COLUMNS = {  # runs.table() column -> readable name
    "strategy": "strategy", "run": "run", "trainable_params": "trainable params",
    "trainable_percent": "trainable %", "accuracy": "accuracy", "macro_f1": "macro-F1",
    "perplexity": "perplexity", "wall_time_s": "wall time s", "samples_per_s": "samples/s", "peak_memory_mb": "peak memory MB",
    "status": "status",
}
_DASH = {"completed": "solid", "running": "dot", "stopped": "dash", "failed": "dashdot", "crashed": "dashdot"}


# ----- input: runs, paths, or tables -----------------------------------------------------------------
def as_runs(runs: Any) -> list[Run]:
    """A list of runs from a Run, a run directory, a runs directory, or an iterable of those."""
    if isinstance(runs, Run):
        return [runs]
    if isinstance(runs, (str, os.PathLike)):
        path = Path(runs).expanduser()
        return [Run(path)] if (path / "config.json").is_file() else list_runs(path)
    if isinstance(runs, pd.DataFrame):
        raise ConfigError("runs must be Run records here (got a DataFrame); pass the runs themselves")
    try:
        items = list(runs)
    except TypeError:
        raise ConfigError(f"runs must be a Run, a list of runs or a runs directory (got {type(runs).__name__})") \
            from None
    out = []
    for r in items:
        if not isinstance(r, (Run, str, os.PathLike)):
            raise ConfigError(f"runs must hold Run records or run directories (got {type(r).__name__})")
        out.extend(as_runs(r))
    return out


@dataclass
class _Series:
    """What one legend entry needs: a name, a colour, a status, and its histories."""

    name: str
    label: str
    status: str
    color: str
    steps: pd.DataFrame
    evals: pd.DataFrame


def _series(runs: Any) -> list[_Series]:
    """Runs, or ``{legend name: history DataFrame}``, as legend entries with colours."""
    if isinstance(runs, dict) and all(isinstance(v, pd.DataFrame) for v in runs.values()):
        return [_Series(str(k), str(k), "completed", PALETTE[i % len(PALETTE)], df, df)
                for i, (k, df) in enumerate(runs.items())]
    runs = as_runs(runs)
    return [_Series(r.name, r.label, r.status, PALETTE[i % len(PALETTE)], r.history("step"), r.history("eval"))
            for i, r in enumerate(runs)]


def colors(runs: Any) -> dict[str, str]:
    """``{run name: colour}`` as every figure here draws it."""
    return {s.name: s.color for s in _series(runs)}


def _text(s: Any) -> str:
    """Record text for plotly, which reads a little HTML in labels: show it literally."""
    return html.escape(str(s), quote=False)


def legend_names(runs: Any) -> dict[str, str]:
    """``{run name: legend text}``: the label, the run name where labels repeat, the status
    unless completed."""
    series = _series(runs)
    return _legend(series)


def _legend(series: list[_Series]) -> dict[str, str]:
    counts: dict[str, int] = {}
    for s in series:
        counts[s.label] = counts.get(s.label, 0) + 1
    out = {}
    for s in series:
        text = s.label if counts[s.label] == 1 or s.label == s.name else f"{s.label} ({s.name})"
        if s.status != "completed":
            text += f" [{s.status}]"
        out[s.name] = _text(text)
    return out


def _column(df: pd.DataFrame, name: str) -> list:
    if name not in df.columns:
        return []
    return [None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v
            for v in df[name].tolist()]


def _dash(status: str) -> str:
    return _DASH.get(status, "dash")


# ----- curves ------------------------------------------------------------------------------------
def ema(values: Iterable[Optional[float]], smooth: float) -> list[Optional[float]]:
    """Exponential moving average with TensorBoard's start-up correction: a weight of
    ``smooth`` on the past; 0 returns the values unchanged. Missing values are skipped."""
    out, avg, n = [], 0.0, 0
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(None)
            continue
        avg, n = smooth * avg + (1 - smooth) * v, n + 1
        out.append(avg / (1 - smooth ** n) if smooth else v)
    return out


def _run_line(s, label: str, xs, ys, x_name: str, mode: str) -> go.Scatter:
    """One run's curve: its colour, dashed unless it completed, hover ``value at x``."""
    return go.Scatter(x=xs, y=ys, mode=mode, name=label, legendgroup=s.name,
                      line={"color": s.color, "width": 2, "dash": _dash(s.status)},
                      hovertemplate=f"%{{y:.4f}} at {x_name} %{{x}}<extra>{label}</extra>")


def training_curves(runs: Any, smooth: float = 0.6, x: str = "step") -> go.Figure:
    """Training loss of each run against ``x`` (step, samples, epoch or elapsed_s).

    With ``smooth`` > 0 (in [0, 1)), a smoothed line is drawn over the raw loss, which stays
    as a faint line of the same colour; 0 draws the raw loss alone. A run with no steps keeps
    its legend entry and draws nothing.
    """
    if not (isinstance(smooth, (int, float)) and not isinstance(smooth, bool) and 0 <= smooth < 1):
        raise ConfigError(f"smooth must be a number in [0, 1) (got {smooth!r})")
    if x not in STEP_X:
        raise ConfigError(f"x must be one of {list(STEP_X)} (got {x!r})")
    series = _series(runs)
    names = _legend(series)
    fig = go.Figure()
    for s in series:
        xs, ys = _column(s.steps, x), _column(s.steps, "loss")
        if smooth:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=names[s.name], legendgroup=s.name,
                                     showlegend=False, opacity=0.25, hoverinfo="skip",
                                     line={"color": s.color, "width": 1, "dash": _dash(s.status)}))
        fig.add_trace(_run_line(s, names[s.name], xs, ema(ys, smooth), x, "lines"))
    title = "Training loss" + (f" (smoothed {smooth:g}; raw faint)" if smooth else "")
    fig.update_layout(title=title, xaxis_title=STEP_X[x], yaxis_title="cross-entropy loss",
                      template="plotly_white", legend_title_text="run", hovermode="x unified")
    return fig


def _task_of(runs: list[Run]) -> str:
    tasks = {r.task for r in runs}
    return tasks.pop() if len(tasks) == 1 else "classification"


def eval_curves(runs: Any, metric: Optional[str] = None) -> go.Figure:
    """A validation metric (val_accuracy, val_macro_f1, val_loss or val_perplexity) at each
    evaluation, by step. None: the runs' task's main metric (accuracy; perplexity for a
    causal LM)."""
    runs = as_runs(runs)
    if metric is None:
        metric = "val_" + primary(_task_of(runs)).key
    if metric not in EVAL_METRICS:
        raise ConfigError(f"metric must be one of {list(EVAL_METRICS)} (got {metric!r})")
    series = _series(runs)
    names = _legend(series)
    fig = go.Figure()
    for s in series:
        fig.add_trace(_run_line(s, names[s.name], _column(s.evals, "step"), _column(s.evals, metric), "step",
                                "lines+markers"))
    fig.update_layout(title=EVAL_METRICS[metric].capitalize(), xaxis_title="step",
                      yaxis_title=EVAL_METRICS[metric], template="plotly_white", legend_title_text="run")
    if metric in ("val_accuracy", "val_macro_f1"):
        fig.update_yaxes(rangemode="tozero")
    return fig


# ----- tables and trade-offs ----------------------------------------------------------------------
def _rows(runs: Any) -> pd.DataFrame:
    """``runs.table()`` rows, from runs or from such a table itself."""
    if isinstance(runs, pd.DataFrame):
        return runs.reset_index(drop=True)
    return table(as_runs(runs))


def comparison_table(runs: Any) -> pd.DataFrame:
    """One row per run with readable columns: strategy, run, trainable params, trainable %,
    the metrics the runs' tasks have (accuracy and macro-F1; perplexity), wall time s,
    samples/s, peak memory MB, status; with post-training records among them also kind,
    params, size MB and CPU latency ms. Numbers stay numbers (missing ones are NaN); accepts
    runs or a :func:`tunekit.runs.table`."""
    rows = _rows(runs)
    metric_columns = {"accuracy", "macro_f1", "perplexity"}
    tasks = set(rows["task"].dropna()) if "task" in rows.columns else {"classification"}
    keep = {"accuracy", "macro_f1"} if "classification" in tasks or not tasks else set()
    keep |= {"perplexity"} if "causal_lm" in tasks else set()
    out = pd.DataFrame({new: rows[old] if old in rows.columns else [None] * len(rows)
                        for old, new in TABLE_COLUMNS.items() if old not in metric_columns or old in keep})
    if "kind" in rows.columns and (rows["kind"].fillna("train") != "train").any():
        # post-training records: what each is, and what it costs to keep and run
        out.insert(1, "kind", rows["kind"].fillna("train"))
        at = out.columns.get_loc("status")
        for old, new in (("total_params", "params"), ("size_mb", "size MB"), ("latency_ms", "CPU latency ms")):
            if old in rows.columns:
                out.insert(at, new, rows[old])
                at += 1
    for col in out.columns:
        if col not in ("strategy", "run", "status", "kind"):
            out[col] = pd.to_numeric(out[col], errors="coerce")
    out["trainable params"] = out["trainable params"].astype("Int64")
    return out


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool = True) -> list[tuple[float, float]]:
    """The points no other point beats on both counts (lower x, better y), by x."""
    sign = 1 if higher_is_better else -1
    front, best = [], -math.inf
    for px, py in sorted(points, key=lambda p: (p[0], -sign * p[1])):
        if sign * py > best:
            front.append((px, py))
            best = sign * py
    return front


PARETO_Y = ("accuracy", "macro_f1", "perplexity")


def pareto(runs: Any, x: str = "trainable_params", y: Optional[str] = None,
           log_x: Optional[bool] = None) -> go.Figure:
    """A metric of each run against its cost ``x``: trainable_params, peak_memory_mb or
    wall_time_s (what training cost), or total_params, nonzero_params, size_mb or latency_ms
    (what the result costs to keep and run; measured by :mod:`tunekit.post`, and by
    ``tk.measure(run)`` for a training run).

    ``y``: accuracy, macro_f1 or perplexity; None takes the runs' task's main metric. One
    marker per run (hollow for runs that did not complete) and a grey line through the
    Pareto front (nothing cheaper is as good). ``log_x`` None: logarithmic for trainable
    parameters and wall time, linear otherwise. Runs without both values (e.g. failed before
    the first evaluation) are listed under the plot instead.
    """
    if x not in PARETO_X:
        raise ConfigError(f"x must be one of {list(PARETO_X)} (got {x!r})")
    rows = _rows(runs)
    if y is None:
        tasks = set(rows["task"].dropna()) if "task" in rows.columns else set()
        y = primary(tasks.pop() if len(tasks) == 1 else "classification").key
    if y not in PARETO_Y:
        raise ConfigError(f"y must be one of {list(PARETO_Y)} (got {y!r})")
    metric = METRICS[y]
    log_x = x in ("trainable_params", "wall_time_s") if log_x is None else bool(log_x)
    series = [_Series(str(r.get("run")), str(r.get("strategy")), str(r.get("status")),
                      PALETTE[i % len(PALETTE)], pd.DataFrame(), pd.DataFrame())
              for i, r in enumerate(rows.to_dict("records"))]
    names = _legend(series)
    fig, points, missing = go.Figure(), [], []
    for s, r in zip(series, rows.to_dict("records")):
        px, py = _number(r.get(x)), _number(r.get(y))
        if px is None or py is None or (log_x and px <= 0):
            missing.append(names[s.name])
            continue
        points.append((px, py))
        fig.add_trace(go.Scatter(
            x=[px], y=[py], mode="markers+text", name=names[s.name], text=[_text(s.label)],
            textposition="top center", legendgroup=s.name,
            marker={"color": s.color, "size": 12, "line": {"color": s.color, "width": 2},
                    "symbol": "circle" if s.status == "completed" else "circle-open"},
            hovertemplate=f"{PARETO_X[x]} %{{x:,}}<br>{y} %{{y:.4f}}<extra>{names[s.name]}</extra>"))
    front = pareto_front(points, metric.higher_is_better)
    if len(front) > 1:
        fig.add_trace(go.Scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines",
                                 name="Pareto front", line={"color": "lightgrey", "dash": "dot"},
                                 hoverinfo="skip"))
    x_title = PARETO_X[x]
    if x == "peak_memory_mb" and "memory_kind" in rows.columns:
        kinds = set(rows["memory_kind"].dropna())
        if kinds == {"process_rss"}:  # what a CPU run measures: say what it includes
            x_title = ("peak process memory, RSS (MB; includes Python, the libraries and models of "
                       "earlier runs in the same process)")
        elif kinds == {"cuda_max_allocated"}:
            x_title = "peak GPU memory allocated (MB)"
        elif kinds == {"measured_tensors"}:
            x_title = "training memory (MB; weights + gradients + optimizer state + activations, measured)"
        elif len(kinds) > 1:
            x_title = "peak memory (MB; measured differently across runs)"
    fig.update_layout(title=f"{metric.title[0].upper() + metric.title[1:]} vs {PARETO_X[x]}"
                            + ("" if metric.higher_is_better else " (lower is better)"),
                      xaxis_title=x_title + (" (log scale)" if log_x else ""),
                      yaxis_title="validation " + metric.title,
                      template="plotly_white", legend_title_text="run")
    fig.update_xaxes(type="log" if log_x else "linear")
    if missing:
        fig.add_annotation(text="not plotted (no value): " + ", ".join(missing), showarrow=False,
                           xref="paper", yref="paper", x=0, y=-0.22, xanchor="left", font={"size": 11})
        fig.update_layout(margin={"b": 110})
    return fig


def _number(v) -> Optional[float]:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


__all__ = ["training_curves", "eval_curves", "comparison_table", "pareto", "pareto_front", "PARETO_Y", "ema", "colors",
           "legend_names", "as_runs", "PALETTE"]
