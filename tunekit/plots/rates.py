"""The learning rate of every layer group over the steps, planned and logged, above the loss.

Records (and the tables :func:`tunekit.learning_rates` gives) to a plotly figure; no
torch here. Groups whose rates are the same at every step share one line, so one rate for all
is one line and a layer-wise decay is a fan of them.
"""
from __future__ import annotations

from typing import Any, Optional

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from tunekit.plots.captions import figure_kind
from tunekit.runs import LR_COLUMNS, Run, load_run


def _order(groups) -> list[str]:
    """Layer groups from the input up: virtual tokens, embeddings, the blocks in order, then the
    rest in the order they first come (the model's: pooler before head)."""
    first = list(dict.fromkeys(groups))

    def key(g: str):
        if g == "prompt":
            return (0, 0)
        if g == "embeddings":
            return (1, 0)
        if g.startswith("block.") and g.split(".")[1].isdigit():
            return (2, int(g.split(".")[1]))
        return (3, first.index(g))
    return sorted(first, key=key)


def shared_lines(table: pd.DataFrame) -> list[tuple[str, list[str], pd.DataFrame]]:
    """``[(name, groups, rows of one of them)]``: the groups of ``table`` gathered where their
    rates are equal at every step, from the input up; a gathering of several is named by its
    count and its ends (``"every group (5)"`` where it holds them all)."""
    groups = _order(table["group"])
    seen: dict[tuple, list[str]] = {}
    for g in groups:
        rows = table[table["group"] == g].sort_values("step")
        seen.setdefault((tuple(rows["step"]), tuple(round(v, 15) for v in rows["lr"])), []).append(g)
    out = []
    for members in seen.values():
        if len(members) == 1:
            name = members[0]
        elif len(members) == len(groups):
            name = f"every group ({len(members)})"
        else:
            name = f"{members[0]} … {members[-1]} ({len(members)})"
        out.append((name, members, table[table["group"] == members[0]].sort_values("step")))
    return out


def phase_joins(starts: list[dict]) -> list[tuple[int, str]]:
    """``[(step, words)]`` from ``phase_start`` events (in order): where each phase after the
    first began (the steps taken before it), and what it changed in words: the groups that
    joined (gradual unfreezing), or its strategy's name."""
    out, before = [], None
    for e in starts:
        if not isinstance(e.get("step"), int):
            continue
        strategy = e.get("strategy") if isinstance(e.get("strategy"), dict) else {}
        train = strategy.get("train") if isinstance(strategy.get("train"), list) else None
        if e.get("phase", 0) > 0:
            joined = [g for g in (train or []) if before is not None and g not in before]
            out.append((e["step"], f"{', '.join(joined)} joins" if joined else str(strategy.get("name", "next phase"))))
        before = train
    return out


def joins(run: Run) -> list[tuple[int, str]]:
    """:func:`phase_joins` of ``run``'s logged phases."""
    return phase_joins([e for e in run.metrics() if e.get("event") == "phase_start"])


@figure_kind("learning_rates")
def learning_rates(run: Any = None, planned: Optional[pd.DataFrame] = None, loss: bool = True,
                   title: Optional[str] = None) -> go.Figure:
    """The rate of every layer group per step: ``planned`` (a table from
    :func:`tunekit.learning_rates`, drawn as dashed lines) and what ``run`` logged (its
    :meth:`~tunekit.runs.Run.learning_rates`, solid), on a log axis, with the run's training loss
    below on the same step axis (``loss=False`` leaves it out). Either may be given alone."""
    if run is not None and not isinstance(run, Run):
        run = load_run(run)
    logged = run.learning_rates() if run is not None else pd.DataFrame(columns=LR_COLUMNS)
    planned = planned if planned is not None else pd.DataFrame(columns=LR_COLUMNS)
    below = loss and run is not None
    fig = make_subplots(rows=2 if below else 1, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        row_heights=[0.62, 0.38] if below else None)
    groups = _order(list(planned["group"]) + list(logged["group"]))
    palette = dict(zip(groups, sample_colorscale("Viridis", [i / max(1, len(groups) - 1) * 0.9
                                                             for i in range(len(groups))])))
    for table, dash, what in ((planned, "dash", "planned"), (logged, "solid", "logged")):
        if table.empty:
            continue
        for name, members, rows in shared_lines(table):
            fig.add_trace(go.Scatter(
                x=rows["step"], y=rows["lr"], mode="lines" if what == "planned" else "lines+markers",
                line=dict(color=palette[members[-1]], dash=dash, width=2), marker=dict(size=4),
                name=f"{name} ({what})", legendgroup=name,
                hovertemplate=f"{name}<br>step %{{x}}<br>rate %{{y:.3g}} ({what})<extra></extra>"), row=1, col=1)
    fig.update_yaxes(type="log", title_text="learning rate", exponentformat="power", row=1, col=1)
    if run is not None:
        for step, words in joins(run):
            fig.add_vline(x=step + 0.5, line=dict(color="#888", dash="dot", width=1))
            fig.add_annotation(x=step + 0.5, y=1.0, yref="paper", text=words, showarrow=False, xanchor="left",
                               yanchor="bottom", font=dict(size=10, color="#555"), textangle=-30)
    if below:
        history = run.history("step")
        if "loss" in history:
            fig.add_trace(go.Scatter(x=history["step"], y=history["loss"], mode="lines", name="training loss",
                                     line=dict(color="#444", width=1.5)), row=2, col=1)
        fig.update_yaxes(title_text="loss", row=2, col=1)
        fig.update_xaxes(title_text="optimizer step", row=2, col=1)
    else:
        fig.update_xaxes(title_text="optimizer step", row=1, col=1)
    steps = pd.concat([planned["step"], logged["step"]])
    if len(steps) and steps.max() - steps.min() <= 12:  # a short run: a tick per step, no half steps
        fig.update_xaxes(dtick=1)
    if planned.empty and logged.empty:
        fig.add_annotation(text="no learning rates to draw: the run logged no steps yet", showarrow=False,
                           xref="paper", yref="paper", x=0.5, y=0.5)
    fig.update_layout(title=title or ("Learning rate per layer group" + (f": {run.display_name}" if run else "")),
                      template="plotly_white", height=480 if below else 340, legend=dict(font=dict(size=11)))
    return fig


@figure_kind("lr_find")
def lr_find(result: Any, title: Optional[str] = None) -> go.Figure:
    """The sweep of :func:`tunekit.lr_find`: each step's loss (dots) and the smoothed loss (a
    line) against the rate on a log axis, every rule's suggestion marked, the chosen one solid."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=result.lrs, y=result.losses, mode="markers", name="loss of the step",
                             marker=dict(size=4, color="rgba(120,120,120,0.45)"),
                             hovertemplate="rate %{x:.2e}<br>loss %{y:.4g}<extra></extra>"))
    fig.add_trace(go.Scatter(x=result.lrs, y=result.smoothed, mode="lines", name="smoothed loss",
                             line=dict(color="#1f77b4", width=2.5),
                             hovertemplate="rate %{x:.2e}<br>smoothed %{y:.4g}<extra></extra>"))
    if result.smoothed:  # the run-away tail would flatten the part that matters
        low, start = min(result.smoothed), result.smoothed[0]
        low, high = low - 0.1 * (start - low + 1e-9), max(start, low) * 1.25 + 1e-9
        fig.update_yaxes(range=[low, high])
    # each rule's rate a vertical line named in the legend (labels over the plot collide where
    # two rules land close together), the chosen one solid red and first
    rules = sorted(result.suggestions.items(), key=lambda kv: kv[0] != result.rule)
    for rule, lr in rules:
        chosen = rule == result.rule
        line = dict(color="#d62728" if chosen else "#999", dash="solid" if chosen else "dot",
                    width=2 if chosen else 1.5)
        fig.add_shape(type="line", x0=lr, x1=lr, y0=0, y1=1, yref="paper", line=line)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=line,
                                 name=f"{rule}: {lr:.1e}" + (" (suggested)" if chosen else "")))
    if not result.lrs:
        fig.add_annotation(text=f"nothing to draw: {result.stopped}", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5)
    fig.update_xaxes(type="log", title_text="learning rate", exponentformat="power")
    fig.update_yaxes(title_text="training loss")
    said = f"suggests {result.suggestion:.1e} ({result.rule})" if result.suggestion else "no suggestion"
    fig.update_layout(title=title or (f"Learning-rate finder: {result.strategy}<br><sup>{said}</sup>"
                                      f"<br><sup>{result.stopped}</sup>"),
                      template="plotly_white", height=400, margin=dict(t=100), legend=dict(font=dict(size=10)))
    return fig
