"""Figures of post-training: a metric against sparsity, and learned against forgotten.

    tk.plots.sparsity_curve(tk.prune(run, sparsity=[0.3, 0.5, 0.7, 0.9]))
    tk.plots.forgetting_map(tk.forgetting([tk.Probe(), tk.LoRA(), tk.Full()]))

No torch here: both read records (or the forgetting DataFrame) only.
"""
from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from tunekit.config import ConfigError
from tunekit.metrics import METRICS, primary
from tunekit.plots.axes import projector_layout
from tunekit.plots.captions import figure_kind
from tunekit.plots.identity import PALETTE, as_runs, literal_text, run_color
from tunekit.runs import RunRecordError


@figure_kind("sparsity_curve")
def sparsity_curve(runs: Any, metric: str | None = None) -> go.Figure:
    """The task's metric of each ``prune`` record against its sparsity (the share of block
    weights that are zero), with the unpruned parent at 0; one line per parent, in the
    parent's colour and under its name in words."""
    runs = [r for r in as_runs(runs) if r.kind == "prune" and r.summary.get("sparsity") is not None]
    if not runs:
        raise ConfigError("sparsity_curve needs prune records of method='magnitude' (tk.prune(run, sparsity=[...]))")
    key = metric or primary(runs[0].task).key
    if not isinstance(key, str) or key not in METRICS:
        raise ConfigError(f"metric must be one of {sorted(METRICS)} (got {metric!r})")
    fig = go.Figure()
    by_parent: dict[str, list] = {}
    for r in runs:
        by_parent.setdefault((r.parent or {}).get("name", "?"), []).append(r)
    for i, (parent, group) in enumerate(by_parent.items()):
        try:
            found = group[0].parent_run()
        except RunRecordError:
            found = None
        color = run_color(found) if found is not None else PALETTE[i % len(PALETTE)]
        parent = literal_text(found.display_name if found is not None else parent)
        first = group[0].summary.get("before", {})
        points = sorted({0.0: first.get(f"val_{key}"), **{r.summary["sparsity"]: r.summary.get(f"val_{key}")
                                                          for r in group}}.items())
        fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines+markers",
                                 name=parent, line={"color": color},
                                 hovertemplate=f"sparsity %{{x:.0%}}<br>{key} %{{y:.4f}}<extra>{parent}</extra>"))
    m = METRICS[key]
    fig.update_layout(title=f"{m.title[0].upper() + m.title[1:]} as more weights are zeroed",
                      xaxis_title="share of block weights set to zero", yaxis_title="validation " + m.title,
                      template="plotly_white", legend_title_text="pruned from")
    fig.update_xaxes(tickformat=".0%", range=[-0.02, 1.0])
    return projector_layout(fig)


@figure_kind("forgetting_map")
def forgetting_map(df: pd.DataFrame, x: str = "forgot") -> go.Figure:
    """Learned (gain on task B) against forgotten (``x="forgot"``: the loss on task A; or
    ``"drift"``: how far A's sentence embeddings moved) per strategy, from
    :func:`tunekit.forgetting`. Up and to the left is better: learn much, forget little."""
    if not isinstance(df, pd.DataFrame) or not {"strategy", "learned", x} <= set(df.columns):
        raise ConfigError(f"forgetting_map takes the DataFrame of tk.forgetting(...) (with 'strategy', 'learned' "
                          f"and {x!r} columns)")
    if x not in ("forgot", "drift", "drift_from_base"):
        raise ConfigError(f"x must be 'forgot', 'drift' or 'drift_from_base' (got {x!r})")
    metric = METRICS.get(df.attrs.get("metric", "accuracy"), METRICS["accuracy"])
    fig = go.Figure()
    for i, r in enumerate(df.to_dict("records")):
        fig.add_trace(go.Scatter(
            x=[r[x]], y=[r["learned"]], mode="markers+text", text=[r["strategy"]], textposition="top center",
            name=r["strategy"], marker={"size": 14, "color": PALETTE[i % len(PALETTE)]},
            hovertemplate=(f"{r['strategy']}<br>task A {metric.title}: {r['a_before']:.3f} -> {r['a_after']:.3f}"
                           f"<br>task B {metric.title}: {r['b_before']:.3f} -> {r['b_after']:.3f}"
                           f"<br>embedding drift {r.get('drift', float('nan')):.3f}<extra></extra>")))
    first, then = df.attrs.get("first", "task A"), df.attrs.get("then", "task B")
    x_title = {"forgot": f"forgotten: {metric.title} lost on {first} ({df.attrs.get('split', 'test')} split)",
               "drift": f"drift: 1 - CKA of {first}'s sentence embeddings before and after {then}",
               "drift_from_base": "drift from the pretrained model: 1 - CKA of the sentence embeddings"}[x]
    sign = "" if metric.higher_is_better else " (perplexity: lower is better, so gains are drops)"
    fig.update_layout(title=f"What learning {then} cost {first}{sign}", xaxis_title=x_title,
                      yaxis_title=f"learned: {metric.title} gained on {then}", template="plotly_white",
                      showlegend=False)
    fig.add_vline(x=0, line={"color": "lightgrey", "dash": "dot"})
    return projector_layout(fig, legend=False)
