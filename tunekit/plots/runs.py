"""Figures from run records: pure functions, runs in, plotly figures (or tables) out.

    runs = tk.compare(["probe", "lora", "full"], data)
    tk.plots.training_curves(runs)          # training loss per step, smoothed
    tk.plots.eval_curves(runs)              # the task's main metric per evaluation (accuracy, perplexity)
    tk.plots.comparison_table(runs)         # one readable row per run, the metrics its task has
    tk.plots.pareto(runs)                   # that metric vs trainable parameters

Every function takes a list of :class:`~tunekit.runs.Run` (a single run, a run
directory or a runs directory work too). A run is named and coloured the same way in every
figure and table, whichever runs are shown beside it (:mod:`tunekit.plots.identity`): its
name in words (``LoRA r8 α16 · 200 ex · 1 ep``), told apart from look-alikes, plus the
status of a run that did not complete; such runs are drawn dashed (curves) or hollow
(pareto). Accuracy and macro-F1 axes run from chance (dashed) to 1 and give the size of
the evaluation set (:mod:`tunekit.plots.axes`); a figure with nothing to draw says so.

No torch here: this module reads records only, so it works where torch is absent.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import pandas as pd
import plotly.graph_objects as go

from tunekit.config import ConfigError
from tunekit.metrics import METRICS, primary
from tunekit.plots.axes import (
    FONT,
    SCORES,
    eval_sizes,
    is_empty,
    num_labels,
    projector_layout,
    readable_log_axes,
    say_empty,
    score_axis,
    wrap,
)
from tunekit.plots.captions import figure_kind
from tunekit.plots.identity import (  # noqa: F401
    PALETTE,
    as_runs,
    colors,
    display_names,
    learning_rate,
    legend_names,
    literal_text,
    run_color,
    short_name,
)
from tunekit.run_names import loss_words
from tunekit.runs import Run, table

EVAL_METRICS = {f"val_{m.key}": f"validation {m.title}" for m in METRICS.values()}
"""Every metric a task evaluates (tunekit.metrics: accuracy, macro-F1, loss, perplexity, ROUGE, BLEU, chrF)."""
STEP_X = {"step": "step", "samples": "training examples seen", "epoch": "epoch", "elapsed_s": "seconds"}
PARETO_X = {"trainable_params": "trainable parameters", "peak_memory_mb": "training memory (MB)",
            "wall_time_s": "wall time (s)", "total_params": "parameters held",
            "nonzero_params": "non-zero parameters", "size_mb": "size on disk (MB)",
            "latency_ms": "CPU latency per batch (ms)"}
MEMORY_KINDS = {  # summary["memory_kind"] -> what the figure is; process RSS is never shown
    "measured_tensors": "training memory per run (MB, measured:<br>weights + gradients + optimizer + activations)",
    "cuda_max_allocated": "peak GPU memory allocated per run (MB, measured:<br>torch.cuda.max_memory_allocated)",
}
_DASH = {"completed": "solid", "running": "dot", "stopped": "dash", "failed": "dashdot", "crashed": "dashdot"}


@dataclass
class _Series:
    """What one legend entry needs: a name, a colour, a status, and its histories."""

    name: str
    label: str  # the run's name in words, told apart from the others shown
    legend: str  # the label, plus the status unless completed; escaped for plotly
    status: str
    color: str
    steps: pd.DataFrame
    evals: pd.DataFrame
    loss: str = "cross-entropy loss"  # what its training loss is, in words (run_names.loss_words)


def _series(runs: Any) -> list[_Series]:
    """Runs, or ``{legend name: history DataFrame}``, as legend entries with colours."""
    if isinstance(runs, dict) and all(isinstance(v, pd.DataFrame) for v in runs.values()):
        return [_Series(str(k), str(k), literal_text(k), "completed", PALETTE[i % len(PALETTE)], df, df)
                for i, (k, df) in enumerate(runs.items())]
    runs = as_runs(runs)
    names, legends = display_names(runs), legend_names(runs)
    return [_Series(r.name, names[r.name], legends[r.name], r.status, run_color(r), r.history("step"),
                    r.history("eval"), loss_words(r)) for r in runs]


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


def _run_line(s: _Series, xs, ys, x_name: str, mode: str, what: str = "") -> go.Scatter:
    """One run's curve: its colour, dashed unless it completed, hover ``value [what] at x``."""
    what = f" {what}" if what else ""
    return go.Scatter(x=xs, y=ys, mode=mode, name=s.legend, legendgroup=s.name,
                      line={"color": s.color, "width": 2, "dash": _dash(s.status)},
                      hovertemplate=f"%{{y:.4f}}{what} at {x_name} %{{x}}<extra>{s.legend}</extra>")


def _loss_axis_title(series: list) -> str:
    """The training-loss axis, named by what the runs' losses are: one name when they share it
    (``cross-entropy loss``), else each of them (a distillation's loss is not cross-entropy)."""
    kinds = list(dict.fromkeys(s.loss for s in series)) or ["cross-entropy loss"]
    return kinds[0] if len(kinds) == 1 else "loss: " + " / ".join(kinds)


def _nothing(fig: go.Figure, series: list, what: str) -> go.Figure:
    """Say so where there is nothing to draw: no runs, or runs without ``what`` yet."""
    return say_empty(fig, "no runs selected" if not series else f"no {what} logged yet") if is_empty(fig) else fig


@figure_kind("training_curves")
def training_curves(runs: Any, smooth: float = 0.6, x: str = "step") -> go.Figure:
    """Training loss of each run against ``x`` (step, samples, epoch or elapsed_s).

    With ``smooth`` > 0 (in [0, 1)), a smoothed line is drawn over the raw loss, which stays
    as a faint line of the same colour; 0 draws the raw loss alone. A run with no steps keeps
    its legend entry and draws nothing.
    """
    if not (isinstance(smooth, (int, float)) and not isinstance(smooth, bool) and 0 <= smooth < 1):
        raise ConfigError(f"smooth must be a number in [0, 1) (got {smooth!r})")
    if not isinstance(x, str) or x not in STEP_X:
        raise ConfigError(f"x must be one of {list(STEP_X)} (got {x!r})")
    series = _series(runs)
    fig = go.Figure()
    for s in series:
        xs, ys = _column(s.steps, x), _column(s.steps, "loss")
        if smooth:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=s.legend, legendgroup=s.name,
                                     showlegend=False, opacity=0.25, hoverinfo="skip",
                                     line={"color": s.color, "width": 1, "dash": _dash(s.status)}))
        fig.add_trace(_run_line(s, xs, ema(ys, smooth), x, "lines", s.loss))
    title = "Training loss" + (f" (smoothed {smooth:g}; raw faint)" if smooth else "")
    fig.update_layout(title=title, xaxis_title=STEP_X[x], yaxis_title=_loss_axis_title(series),
                      template="plotly_white", legend_title_text="run", hovermode="x unified")
    return projector_layout(_nothing(fig, series, "training steps"))


def _task_of(runs: list[Run]) -> str:
    tasks = {r.task for r in runs}
    return tasks.pop() if len(tasks) == 1 else "classification"


@figure_kind("eval_curves")
def eval_curves(runs: Any, metric: Optional[str] = None) -> go.Figure:
    """A validation metric (val_accuracy, val_macro_f1, val_loss or val_perplexity) at each
    evaluation, by step. None: the runs' task's main metric (accuracy; perplexity for a
    causal LM). Accuracy and macro-F1 run from chance (dashed) to 1, titled with the
    evaluation-set size."""
    runs = as_runs(runs)
    if metric is None:
        metric = "val_" + primary(_task_of(runs)).key
    if not isinstance(metric, str) or metric not in EVAL_METRICS:
        raise ConfigError(f"metric must be one of {list(EVAL_METRICS)} (got {metric!r})")
    series = _series(runs)
    fig = go.Figure()
    for s in series:
        fig.add_trace(_run_line(s, _column(s.evals, "step"), _column(s.evals, metric), "step", "lines+markers"))
    fig.update_layout(title=EVAL_METRICS[metric].capitalize(), xaxis_title="step",
                      yaxis_title=EVAL_METRICS[metric], template="plotly_white", legend_title_text="run")
    if is_empty(fig):
        return projector_layout(_nothing(fig, series, "evaluations"))
    if metric[4:] in SCORES:
        score_axis(fig, metric[4:], num_labels(runs), eval_sizes(runs))
    return projector_layout(fig)


# ----- tables and trade-offs ----------------------------------------------------------------------
def _rows(runs: Any) -> tuple[pd.DataFrame, Optional[list[Run]]]:
    """``runs.table()`` rows and the runs, from runs or from such a table itself (no runs)."""
    if isinstance(runs, pd.DataFrame):
        return runs.reset_index(drop=True), None
    runs = as_runs(runs)
    return table(runs), runs


def _memory(row: dict) -> Optional[float]:
    """A run's measured memory figure; None for process RSS (it grows with the runs made
    before in the same process, so it compares nothing) and for unknown kinds."""
    return row.get("peak_memory_mb") if row.get("memory_kind") in MEMORY_KINDS else None


def _settings(run: Run) -> dict:
    """What a training run was asked to do (post-training records: none of it)."""
    if run.kind in ("prune", "quantize"):
        return {}
    t, st, d = run.config.get("train") or {}, run.strategy, run.config.get("data") or {}
    phases = [p.get("epochs") for p in run.config.get("phases") or []]
    epochs = sum(phases) if phases and all(isinstance(e, int) for e in phases) else t.get("epochs")
    out = {"lr": learning_rate(run), "epochs": epochs, "train examples": d.get("train_used") or t.get("train_size"),
           "batch size": t.get("batch_size"), "seed": t.get("seed")}
    if st.get("name") in ("lora", "dora", "vera", "loha", "lokr"):  # the adapters with a rank
        rank, label = st.get("rank"), str(run.label)
        if rank is None and re.match(r"lora-r(\d+)", label):
            rank = int(re.match(r"lora-r(\d+)", label).group(1))  # records that kept only the label
        out.update({"rank": rank, "alpha": st.get("alpha")})
    return out


HYPERPARAMETERS = ("rank", "alpha", "lr", "epochs", "train examples", "batch size", "seed")
"""The settings columns of :func:`comparison_table` (rank and alpha only where a run is an adapter with a rank)."""


def comparison_table(runs: Any) -> pd.DataFrame:
    """One row per run with readable columns: run (its name in words, as in the figures),
    strategy; the settings (rank and alpha where a run is LoRA, lr, epochs, train examples,
    batch size, seed); the metrics the runs' tasks have (accuracy and macro-F1; perplexity),
    trainable params, trainable %, wall time s, samples/s, memory MB (the measured per-run
    figure; process RSS is left out), status, record (the run's folder name). With
    post-training records among them also kind, params, size MB and CPU latency ms. Numbers
    stay numbers (missing ones are NaN); accepts runs or a :func:`tunekit.runs.table` (which
    holds no settings)."""
    rows, records = _rows(runs)
    n = len(rows)
    col = lambda name: rows[name] if name in rows.columns else pd.Series([None] * n, dtype=object)  # noqa: E731
    names = display_names(records) if records is not None else {}
    settings = [_settings(r) for r in records] if records is not None else [{}] * n
    out = pd.DataFrame({"run": [names.get(r, s) for r, s in zip(col("run"), col("strategy"))],
                        "strategy": col("strategy")})
    post = "kind" in rows.columns and (rows["kind"].fillna("train") != "train").any()
    if post:  # post-training records: what each is
        out["kind"] = rows["kind"].fillna("train")
    lora = any("rank" in s for s in settings)
    for key in HYPERPARAMETERS:
        if key not in ("rank", "alpha") or lora:
            out[key] = [s.get(key) for s in settings]
    tasks = set(rows["task"].dropna()) if "task" in rows.columns else {"classification"}
    if "classification" in tasks or not tasks:
        out["accuracy"], out["macro-F1"] = col("accuracy"), col("macro_f1")
    if tasks & {"sft", "seq2seq"}:  # text to text: the generated text's scores first
        for key, name in (("rougeL", "ROUGE-L"), ("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("bleu", "BLEU"),
                          ("chrf", "chrF")):
            out[name] = col(key)
    if tasks & {"causal_lm", "sft", "seq2seq"}:
        out["perplexity"] = col("perplexity")
    for old, new in (("trainable_params", "trainable params"), ("trainable_percent", "trainable %"),
                     ("wall_time_s", "wall time s"), ("samples_per_s", "samples/s")):
        out[new] = col(old)
    out["memory MB"] = [_memory(r) for r in rows.to_dict("records")]
    if post:  # what it costs to keep and run
        for old, new in (("total_params", "params"), ("size_mb", "size MB"), ("latency_ms", "CPU latency ms")):
            if old in rows.columns:
                out[new] = rows[old]
    out["status"], out["record"] = col("status"), col("run")
    for c in out.columns:
        if c not in ("run", "strategy", "status", "kind", "record"):
            out[c] = pd.to_numeric(out[c], errors="coerce")
    for c in ("trainable params", "rank", "epochs", "train examples", "batch size", "seed"):
        if c in out.columns:
            out[c] = out[c].astype("Int64")
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


PARETO_Y = ("accuracy", "macro_f1", "perplexity", "rougeL", "rouge1", "rouge2", "bleu", "chrf")


@figure_kind("pareto")
def pareto(runs: Any, x: str = "trainable_params", y: Optional[str] = None,
           log_x: Optional[bool] = None) -> go.Figure:
    """A metric of each run against its cost ``x``: trainable_params, peak_memory_mb or
    wall_time_s (what training cost), or total_params, nonzero_params, size_mb or latency_ms
    (what the result costs to keep and run; measured by :mod:`tunekit.post`, and by
    ``tk.measure(run)`` for a training run).

    ``y``: accuracy, macro_f1, perplexity or a text-to-text score (rougeL, rouge1, rouge2, bleu,
    chrf); None takes the runs' task's main metric
    (accuracy and macro-F1 run from chance, dashed, to 1). One marker per run (hollow for
    runs that did not complete) and a grey line through the Pareto front (nothing cheaper
    is as good). ``log_x`` None: logarithmic for trainable parameters and wall time, linear
    otherwise. Memory is each run's own measured figure (its tensors, or CUDA's peak
    allocation); a run that recorded only its process's RSS is not plotted. Runs without
    both values (e.g. failed before the first evaluation) are listed under the plot instead.
    """
    if not isinstance(x, str) or x not in PARETO_X:
        raise ConfigError(f"x must be one of {list(PARETO_X)} (got {x!r})")
    rows, records = _rows(runs)
    if y is None:
        tasks = set(rows["task"].dropna()) if "task" in rows.columns else set()
        y = primary(tasks.pop() if len(tasks) == 1 else "classification").key
    if not isinstance(y, str) or y not in PARETO_Y:
        raise ConfigError(f"y must be one of {list(PARETO_Y)} (got {y!r})")
    metric = METRICS[y]
    log_x = x in ("trainable_params", "wall_time_s") if log_x is None else bool(log_x)
    dicts = rows.to_dict("records")
    if records is not None:
        legends, names = legend_names(records), display_names(records)
        series = [_Series(r.name, names[r.name], legends[r.name], r.status, run_color(r), pd.DataFrame(),
                          pd.DataFrame()) for r in records]
    else:  # a table holds no record paths: colours from the names
        series = [_Series(str(r.get("run")), str(r.get("strategy")),
                          literal_text(f"{r.get('strategy')} ({r.get('run')})" if r.get("status") == "completed"
                                else f"{r.get('strategy')} ({r.get('run')}) [{r.get('status')}]"),
                          str(r.get("status")), run_color(str(r.get("run"))), pd.DataFrame(), pd.DataFrame())
                  for r in dicts]
    fig, points, missing, rss = go.Figure(), [], [], []
    for s, r in zip(series, dicts):
        px = _number(_memory(r) if x == "peak_memory_mb" else r.get(x))
        py = _number(r.get(y))
        if px is None or py is None or (log_x and px <= 0):
            (rss if x == "peak_memory_mb" and r.get("memory_kind") == "process_rss" else missing).append(s.legend)
            continue
        points.append((px, py))
        fig.add_trace(go.Scatter(
            # the point says the run's number (its name is in the legend and the hover): long names
            # ran into each other and past the plot's edges
            x=[px], y=[py], mode="markers+text", name=s.legend, text=[literal_text(short_name(s.label))],
            textposition="top center", legendgroup=s.name, cliponaxis=False,
            marker={"color": s.color, "size": 12, "line": {"color": s.color, "width": 2},
                    "symbol": "circle" if s.status == "completed" else "circle-open"},
            hovertemplate=f"{PARETO_X[x]} %{{x:,}}<br>{y} %{{y:.4f}}<extra>{s.legend}</extra>"))
    _labels_apart(fig, points, log_x, score=y in SCORES)
    front = pareto_front(points, metric.higher_is_better)
    if len(front) > 1:
        fig.add_trace(go.Scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines",
                                 name="Pareto front", line={"color": "lightgrey", "dash": "dot"},
                                 hoverinfo="skip"))
    x_title = PARETO_X[x]
    if x == "peak_memory_mb":
        kinds = {r.get("memory_kind") for r in dicts if _memory(r) is not None}
        x_title = MEMORY_KINDS[kinds.pop()] if len(kinds) == 1 else "memory per run (MB)" if not kinds else \
            "memory per run (MB; measured differently across runs:<br>tensors measured, or CUDA's peak)"
    fig.update_layout(title=f"{metric.title[0].upper() + metric.title[1:]} vs {PARETO_X[x]}"
                            + ("" if metric.higher_is_better else " (lower is better)"),
                      xaxis_title=x_title + (" (log scale)" if log_x else ""),
                      yaxis_title="validation " + metric.title,
                      template="plotly_white", legend_title_text="run")
    fig.update_xaxes(type="log" if log_x else "linear")
    readable_log_axes(fig)
    notes = ["not plotted (no value): " + ", ".join(missing)] if missing else []
    if rss:
        notes.append("not plotted (memory recorded as process RSS, which grows with the runs before it): "
                     + ", ".join(rss))
    # notes sit above the plot, under the title (the legend is below it), wrapped, never cut
    notes = [wrap(n, 90) for n in notes]
    lines = [n.count("<br>") + 1 for n in notes]
    for i, note in enumerate(notes):
        fig.add_annotation(text=note, showarrow=False, xref="paper", yref="paper", x=0, y=1, xanchor="left",
                           yanchor="bottom", align="left", yshift=4 + 20 * sum(lines[i + 1:]), font={"size": FONT})
    if not points:
        return projector_layout(say_empty(fig, "no runs selected" if not series else "no run recorded its own memory "
                                          "(only the process's RSS)" if rss and not missing
                                          else "no run has both values yet"), margin=_note_margin(fig, lines))
    if y in SCORES and records is not None:  # the dashed line unlabelled: the points' labels fell on its text
        score_axis(fig, y, num_labels(records), eval_sizes(records), label=False)
    return projector_layout(fig, margin=_note_margin(fig, lines))


def _labels_apart(fig: go.Figure, points: list[tuple[float, float]], log_x: bool, score: bool) -> None:
    """A point's label goes under it where another point sits just above it at about the same x
    (a prune's record beside its source at the same size): above, the label fell on that marker.
    ``score``: the y axis runs from chance to 1 (about 0.5 of it shown), not over the points alone."""
    if len(points) < 2:
        return
    xs = [math.log10(x) if log_x and x > 0 else x for x, _ in points]
    ys = [y for _, y in points]
    dx = (max(xs) - min(xs)) or 1.0
    dy = max(max(ys) - min(ys), 0.5 if score else 0.0) or 1.0
    for i, trace in enumerate(fig.data[:len(points)]):
        if any(j != i and abs(xs[j] - xs[i]) <= 0.05 * dx and 0 <= ys[j] - ys[i] <= 0.12 * dy
               and (ys[j] > ys[i] or j < i) for j in range(len(points))):
            trace.textposition = "bottom center"


def _note_margin(fig: go.Figure, note_lines: list[int]) -> Optional[dict]:
    """The top margin for the title (wrapped as projector_layout wraps it) and the notes above the plot."""
    if not note_lines:
        return None
    title = wrap(fig.layout.title.text or "", 60)
    return {"t": 30 + 26 * (title.count("<br>") + 1) + 20 * sum(note_lines) + 8}


def _number(v) -> Optional[float]:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


__all__ = ["training_curves", "eval_curves", "comparison_table", "pareto", "pareto_front", "PARETO_Y", "ema", "colors",
           "legend_names", "display_names", "run_color", "as_runs", "PALETTE", "HYPERPARAMETERS"]
