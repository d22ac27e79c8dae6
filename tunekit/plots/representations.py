"""Figures of representation drift: CKA by layer, and the head's features before and after.

    drift = tk.inspect.representation_drift(runs, data=data)
    tk.plots.cka_by_layer(drift)                  # one line per run, 1 = unchanged
    tk.plots.pca_scatter(tk.inspect.pca_features(runs, data))

Pure functions from the DataFrames of :mod:`tunekit.inspect.representations` to
plotly figures. No torch here (nor in what this imports). ``cka_by_layer(drift,
colors=tk.plots.colors(runs))`` draws each run in its own colour, as every figure of its
records does; without ``colors`` the i-th run in the frame gets the i-th palette colour.
"""
from __future__ import annotations

import html
import math
import textwrap
from typing import Optional

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from tunekit.config import ConfigError
from tunekit.plots.axes import FONT, projector_layout, wrap
from tunekit.plots.captions import figure_kind
from tunekit.plots.runs import PALETTE

METRICS = {"cka": "linear CKA", "debiased_cka": "debiased linear CKA"}
CLASS_PALETTE = qualitative.D3
"""Class colours in the PCA scatter (the run colours tell runs apart in other figures)."""


def _need(df: pd.DataFrame, columns: list[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(f"{what} takes the DataFrame of tunekit.inspect (got {type(df).__name__})")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ConfigError(f"{what} needs the columns {columns}; missing {missing}")


def _runs(df: pd.DataFrame, colors: Optional[dict]) -> list[tuple[str, str, str]]:
    """(run, legend text, colour) in order of first appearance; the label, plus the run
    name where labels repeat."""
    firsts = df.drop_duplicates("run")
    counts = firsts["label"].value_counts()
    out = []
    for i, (run, label) in enumerate(zip(firsts["run"], firsts["label"])):
        text = label if counts[label] == 1 or label == run else f"{label} ({run})"
        color = (colors or {}).get(run, PALETTE[i % len(PALETTE)])
        out.append((run, html.escape(str(text), quote=False), color))
    return out


def _layer_names(layers: list[int]) -> list[str]:
    return ["embeddings" if k == 0 else f"block {k - 1}" for k in layers]


@figure_kind("cka_by_layer")
def cka_by_layer(df: pd.DataFrame, metric: str = "cka", colors: Optional[dict] = None) -> go.Figure:
    """CKA between the base and the tuned model at every layer, one line per run.

    ``df`` is :func:`tunekit.inspect.representation_drift`'s frame; ``metric`` is ``"cka"``
    or ``"debiased_cka"``; ``colors`` (``{run: colour}``, e.g. ``tk.plots.colors(runs)``)
    overrides the default order. x: layer (0 = the embeddings' output, k = block k-1's
    output); y: similarity in [0, 1], 1 = the geometry did not change.
    """
    if not isinstance(metric, str) or metric not in METRICS:
        raise ConfigError(f"metric must be one of {list(METRICS)} (got {metric!r})")
    _need(df, ["run", "label", "layer", metric], "cka_by_layer")
    fig = go.Figure()
    for run, name, color in _runs(df, colors):
        rows = df[df["run"] == run].sort_values("layer")
        layers = [int(k) for k in rows["layer"]]
        fig.add_trace(go.Scatter(x=layers, y=rows[metric].tolist(), mode="lines+markers", name=name,
                                 legendgroup=run, line={"color": color, "width": 2},
                                 customdata=_layer_names(layers),
                                 hovertemplate=f"{METRICS[metric]} %{{y:.4f}} at %{{customdata}}"
                                               f"<extra>{name}</extra>"))
    layers = sorted({int(k) for k in df["layer"]})
    low = min([0.0] + [v for v in df[metric].tolist() if isinstance(v, (int, float)) and math.isfinite(v)])
    n = df.attrs.get("n")
    title = f"Representation drift: {METRICS[metric]} of base vs tuned, by layer"
    fig.update_layout(title=title + (f" ({n} examples)" if n else ""), template="plotly_white",
                      xaxis_title="layer (mean-pooled hidden state)", yaxis_title=f"{METRICS[metric]} (1 = unchanged)",
                      legend_title_text="run", hovermode="closest")
    fig.update_xaxes(tickvals=layers, ticktext=_layer_names(layers))
    fig.update_yaxes(range=[low - 0.02 if low < 0 else 0.0, 1.02])
    return projector_layout(fig)


def _hover(text: str, width: int = 60, limit: int = 300) -> str:
    """A text for plotly's hover box: shortened, wrapped, and HTML-escaped (only our <br>)."""
    text = " ".join(str(text).split())
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    return "<br>".join(html.escape(line, quote=False) for line in textwrap.wrap(text, width) or [""])


@figure_kind("pca_scatter")
def pca_scatter(df: pd.DataFrame, columns: int = 2, colors: Optional[dict] = None) -> go.Figure:
    """The head's features before (faint) and after (solid) training, on the base's two PCs.

    ``df`` is :func:`tunekit.inspect.pca_features`'s frame. One subplot per run (at most
    ``columns`` per row), points coloured by class; hovering shows the example's text.
    ``colors`` (``{class: colour}``) overrides the class colours.
    """
    _need(df, ["run", "label", "stage", "x", "y", "class", "text"], "pca_scatter")
    if not isinstance(columns, int) or columns < 1:
        raise ConfigError(f"columns must be a positive integer (got {columns!r})")
    runs = _runs(df, None)
    classes = list(dict.fromkeys(df["class"].tolist()))
    class_color = {c: (colors or {}).get(c, CLASS_PALETTE[i % len(CLASS_PALETTE)]) for i, c in enumerate(classes)}
    explained = df.attrs.get("explained_variance", {})
    ncols = min(columns, len(runs))
    nrows = math.ceil(len(runs) / ncols)
    # subplot titles: the run's name and the variance share on its own line, wrapped to the
    # column's width (about 32 characters at 2 columns in a ~900 px output), at most 3 lines
    chars = max(16, 64 // ncols)
    titles = []
    for run, name, _ in runs:
        ev = explained.get(run)
        titles.append(wrap(name, chars) + (f"<br>PCs hold {100 * sum(ev):.0f}% of base variance" if ev else ""))
    lines = max(t.count("<br>") + 1 for t in titles)
    row_h = 340  # px of one row's plot
    gap = 70 + 20 * lines  # px between rows: the x axis title, then the next row's title lines
    height = nrows * row_h + (nrows - 1) * gap
    fig = make_subplots(rows=nrows, cols=ncols, subplot_titles=titles, horizontal_spacing=0.12,
                        vertical_spacing=gap / height if nrows > 1 else 0.0)
    for i, (run, name, _) in enumerate(runs):
        row, col = i // ncols + 1, i % ncols + 1
        for stage, opacity, size in (("before", 0.25, 6), ("after", 0.9, 7)):
            for cls in classes:
                pts = df[(df["run"] == run) & (df["stage"] == stage) & (df["class"] == cls)]
                fig.add_trace(go.Scatter(
                    x=pts["x"].tolist(), y=pts["y"].tolist(), mode="markers",
                    name=f"{html.escape(str(cls), quote=False)} ({stage})",
                    legendgroup=f"{cls}|{stage}", showlegend=i == 0,
                    marker={"color": class_color[cls], "opacity": opacity, "size": size,
                            "line": {"width": 0}},
                    customdata=[_hover(t) for t in pts["text"]],
                    hovertemplate=(f"<b>{html.escape(str(cls), quote=False)}</b>, {stage}<br>"
                                   "%{customdata}<extra>" + name + "</extra>")), row=row, col=col)
        fig.update_xaxes(title_text="PC1 of the base features", row=row, col=col)
        fig.update_yaxes(title_text="PC2" if col == 1 else None, row=row, col=col)
    n = df.attrs.get("n")
    fig.update_layout(title="Head input features, before (faint) and after (solid) training, on the base's PCs"
                            + (f" ({n} examples)" if n else ""),
                      template="plotly_white", legend_title_text="class (stage)")
    for a in fig.layout.annotations:  # subplot titles: FONT px, lines from the bottom up
        a.font.size = FONT
    title_lines = wrap(fig.layout.title.text, 60).count("<br>") + 1
    top = 30 + 26 * title_lines + 20 * lines
    return projector_layout(fig, height=height + top + 40, margin={"t": top, "b": 40})
