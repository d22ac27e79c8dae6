"""An experiment's grid as figures: learning curves with their intervals, and the cost plane.

Both read :meth:`tunekit.experiments.Experiment.table` (or that table itself): one row per
(strategy, size) with the test accuracy's mean and 95 % interval over seeds and test examples.
No torch, and nothing of :mod:`tunekit.experiments` is imported: the table is data.
"""
from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from tunekit.config import ConfigError
from tunekit.plots.axes import projector_layout, readable_log_axes, say_empty
from tunekit.plots.captions import figure_kind
from tunekit.plots.identity import PALETTE

COST_X = {"seconds": "wall time per cell (s)", "memory_mb": "measured peak memory per cell (MB)",
          "trainable": "trainable parameters"}
"""The cost axes of :func:`cost_curves`: a table's column and its axis title."""


def _table(exp: Any) -> pd.DataFrame:
    table = exp.table() if hasattr(exp, "table") else exp
    if not isinstance(table, pd.DataFrame):
        raise ConfigError(f"expected an experiment (tk.experiment(...)) or its table(), got {type(exp).__name__}")
    return table


def _band(hex_color: str, alpha: float = 0.18) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


@figure_kind("learning_curves")
def learning_curves(exp: Any) -> go.Figure:
    """Test accuracy against the number of training examples (log scale), one line per
    strategy with its 95 % interval as a band (the mean over seeds; the interval over seeds
    and test examples). Where two bands overlap, the difference may be noise: see
    ``exp.compare(a, b)`` for the paired interval."""
    table = _table(exp)
    fig = go.Figure()
    for i, (label, rows) in enumerate(table.groupby("strategy", sort=False)):
        rows = rows.sort_values("size")
        color = PALETTE[i % len(PALETTE)]
        xs = rows["size"].tolist()
        fig.add_trace(go.Scatter(x=xs + xs[::-1], y=rows["high"].tolist() + rows["low"].tolist()[::-1],
                                 fill="toself", fillcolor=_band(color), line={"width": 0}, hoverinfo="skip",
                                 mode="lines", showlegend=False, legendgroup=label, name=f"{label} 95 % interval"))
        fig.add_trace(go.Scatter(
            x=xs, y=rows["accuracy"], mode="lines+markers", name=label, legendgroup=label,
            line={"color": color, "width": 2}, marker={"size": 8},
            # one size has no band to draw: its interval as an error bar
            error_y=({"type": "data", "symmetric": False, "array": rows["high"] - rows["accuracy"],
                      "arrayminus": rows["accuracy"] - rows["low"], "color": color, "thickness": 1.5}
                     if len(xs) == 1 else None),
            customdata=rows[["low", "high", "seeds"]].to_numpy(),
            hovertemplate=f"{label}<br>%{{x:,}} examples: %{{y:.3f}} [%{{customdata[0]:.3f}}, "
                          "%{customdata[1]:.3f}]<br>%{customdata[2]} seeds<extra></extra>"))
    fig.update_layout(title="Test accuracy vs training examples (bands: 95 % interval)", template="plotly_white",
                      xaxis_title="training examples (log scale)", yaxis_title="test accuracy",
                      legend_title_text="strategy")
    fig.update_xaxes(type="log")
    if table.empty:
        return projector_layout(say_empty(fig, "no cell of the experiment has finished yet"))
    readable_log_axes(fig)
    return projector_layout(fig)


@figure_kind("cost_curves")
def cost_curves(exp: Any, x: str = "seconds") -> go.Figure:
    """Test accuracy against what a cell cost (``x``: ``"seconds"``, ``"memory_mb"`` or
    ``"trainable"``), one line per strategy through its training-set sizes, each point
    labelled with its size, with its 95 % interval as an error bar."""
    if not isinstance(x, str) or x not in COST_X:
        raise ConfigError(f"x must be one of {list(COST_X)} (got {x!r})")
    table = _table(exp)
    fig = go.Figure()
    for i, (label, rows) in enumerate(table.groupby("strategy", sort=False)):
        rows = rows.sort_values("size").dropna(subset=[x])
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(
            x=rows[x], y=rows["accuracy"], mode="lines+markers+text", name=label,
            text=[f"{n:,}" for n in rows["size"]], textposition="top center", cliponaxis=False,
            line={"color": color, "width": 2}, marker={"size": 8},
            error_y={"type": "data", "symmetric": False, "array": rows["high"] - rows["accuracy"],
                     "arrayminus": rows["accuracy"] - rows["low"], "color": color, "thickness": 1},
            hovertemplate=f"{label}<br>%{{text}} examples<br>{COST_X[x]} %{{x:,.3g}}<br>"
                          "test accuracy %{y:.3f}<extra></extra>"))
    log = x in ("seconds", "trainable")
    fig.update_layout(title=f"Test accuracy vs {COST_X[x]} (labels: training examples)", template="plotly_white",
                      xaxis_title=COST_X[x] + (" (log scale)" if log else ""), yaxis_title="test accuracy",
                      legend_title_text="strategy")
    fig.update_xaxes(type="log" if log else "linear")
    if table.empty or table[x].isna().all():
        return projector_layout(say_empty(fig, "no finished cell has this cost measured"))
    readable_log_axes(fig)
    return projector_layout(fig)


__all__ = ["learning_curves", "cost_curves", "COST_X"]
