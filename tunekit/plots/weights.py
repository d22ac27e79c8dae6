"""Figures of what training did to the weights (from :mod:`tunekit.inspect.weights` data).

    wc = tk.inspect.weight_change(runs)
    tk.plots.weight_change_heatmap(wc)          # blocks x modules, one panel per run, one colour scale
    tk.plots.weight_change_difference(wc, a, b) # run a minus run b, diverging scale
    tk.plots.head_change_bar(wc)                # embeddings / pooler / head, apart from the blocks
    sp = tk.inspect.update_spectra(runs)
    tk.plots.spectrum(sp, name="bert.encoder.layer.5.attention.self.query.weight")
    tk.plots.rank_by_block(sp.table)            # effective rank per block, one line per run
    tk.plots.adapter_ranks(tk.inspect.adapter_ranks(runs))  # where each adapter put its rank (AdaLoRA)
    tk.plots.virtual_tokens(tk.inspect.virtual_tokens(runs))  # what prompt tuning learned

No torch import: these take DataFrames (and the ``Spectra`` object by duck typing).
``colors=tk.plots.colors(runs)`` draws each run in its own colour, as every figure of its
records does (the lab's Weights view passes it).
"""
from __future__ import annotations

import html
from typing import Optional, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tunekit.architectures import LABEL_ORDER
from tunekit.config import ConfigError, finite_number, require
from tunekit.metrics import correlation_interval
from tunekit.plots.axes import projector_layout, readable_log_axes, wrap
from tunekit.plots.captions import figure_kind, module_words, param_label
from tunekit.plots.runs import PALETTE

MODULE_ORDER = list(LABEL_ORDER)
VALUE_WORDS = {"rel_change": "relative change ‖ΔW‖/‖W‖", "delta_norm": "size of the change ‖ΔW‖"}
BAR_WORDS = {"rel_change": "relative change<br>‖ΔW‖/‖W‖", "delta_norm": "size of the<br>change ‖ΔW‖"}
"""Axis and colour-bar titles of the two measures of weight change."""
OUTSIDE = ["embeddings", "pooler", "norm", "head"]


def _palette(names: Sequence[str], colors: Optional[dict] = None) -> dict[str, str]:
    """``colors`` (``{run: colour}``, e.g. ``tk.plots.colors(runs)``: each run's own colour, as
    in every figure of its records); runs not in it get the i-th palette colour."""
    return {n: (colors or {}).get(n, PALETTE[i % len(PALETTE)]) for i, n in enumerate(names)}


def _runs_in(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(run, label) pairs in first-seen order."""
    seen = dict.fromkeys(zip(df["run"], df["label"]))
    return list(seen)


def _runs_labels_palette(table: pd.DataFrame, colors: Optional[dict]) -> tuple[list, list, dict]:
    """The runs of ``table`` in order (name, label), their labels, and a colour per run."""
    runs = _runs_in(table)
    return runs, [lab for _, lab in runs], _palette([r for r, _ in runs], colors)


def _title(run: str, label: str, labels: list[str]) -> str:
    return html.escape(label if labels.count(label) == 1 else f"{label} ({run})")


def _panel_title(run: str, label: str, labels: list[str], chars: int) -> str:
    """A panel's title wrapped to its share of the width (``chars`` characters a line); where
    that share is too narrow for words (many panels), the run's number alone ("#3"), which the
    hover and the runs table expand."""
    if chars < 12 and label.startswith("#"):
        return html.escape(label.split(" ", 1)[0])
    return wrap(_title(run, label, labels), max(chars, 8))


def _ticks(value: str, top: float) -> dict:
    """Readable ticks for a change axis: percent for relative changes of 0.1 % and up, else
    scientific notation with 2 significant digits (never SI prefixes such as µ)."""
    if value == "rel_change" and abs(top or 0) >= 1e-3:
        return dict(tickformat=".2~%")
    return dict(tickformat=".2~e", exponentformat="e")


def _hover_number(value: str) -> str:
    return "%{z:.2~%}" if value == "rel_change" else "%{z:.2~e}"


def _grid(df: pd.DataFrame, run: str, value: str, modules: list[str], blocks: list[int]) -> list[list]:
    d = df[(df["run"] == run) & df["block"].notna()]
    table = d.pivot_table(index="block", columns="module", values=value, aggfunc="first")
    return [[(None if pd.isna(table.at[b, m]) else float(table.at[b, m]))
             if b in table.index and m in table.columns else None for m in modules] for b in blocks]


def _axes(df: pd.DataFrame, modules: Optional[Sequence[str]]) -> tuple[list[str], list[int]]:
    if isinstance(modules, str):
        modules = [modules]
    require(modules is None or (isinstance(modules, (list, tuple)) and all(isinstance(m, str) for m in modules)),
            "modules", "None or a list of module names such as ['query', 'value']", modules)
    blocks = sorted(int(b) for b in df["block"].dropna().unique())
    present = set(df.loc[df["block"].notna(), "module"])
    mods = [m for m in (modules or MODULE_ORDER) if m in present]
    mods += sorted(present - set(mods)) if modules is None else []
    return mods, blocks


@figure_kind("weight_change_heatmap")
def weight_change_heatmap(wc: pd.DataFrame, value: str = "rel_change",
                          modules: Optional[Sequence[str]] = None, zmax: Optional[float] = None) -> go.Figure:
    """Blocks (rows, block 0 at the bottom) x modules (columns), one panel per run, all on
    one colour scale so panels compare directly. ``value``: ``rel_change`` (||dW||/||W0||)
    or ``delta_norm`` (||dW||). Frozen modules show as 0."""
    if value not in ("rel_change", "delta_norm"):
        raise ConfigError(f"value must be 'rel_change' or 'delta_norm' (got {value!r})")
    if wc.empty:
        raise ConfigError("no weight-change rows to draw (did the runs have any trained modules?)")
    runs = _runs_in(wc)
    labels = [lab for _, lab in runs]
    mods, blocks = _axes(wc, modules)
    require(zmax is None or (finite_number(zmax) and zmax > 0), "zmax", "None or a finite number > 0", zmax)
    if zmax is None:
        zmax = float(wc.loc[wc["block"].notna(), value].max() or 1.0) or 1.0
    n = len(runs)
    titles = [_panel_title(r, lab, labels, 84 // n) for r, lab in runs]  # a panel's share of ~84 characters
    sub_lines = max(t.count("<br>") + 1 for t in titles)
    fig = make_subplots(rows=1, cols=n, shared_yaxes=True, horizontal_spacing=0.03, subplot_titles=titles)
    words = [module_words(m) for m in mods]
    for i, (run, _) in enumerate(runs, start=1):
        z = _grid(wc, run, value, mods, blocks)
        fig.add_trace(go.Heatmap(
            z=z, x=words, y=[f"block {b}" for b in blocks], zmin=0, zmax=zmax, coloraxis="coloraxis",
            hovertemplate="%{y} · %{x}<br>" + VALUE_WORDS[value] + " = " + _hover_number(value)
            + "<extra>" + html.escape(run) + "</extra>"),
            row=1, col=i)
    name = VALUE_WORDS[value]
    title = wrap(f"Weight change per module ({name})", 60)
    fig.update_layout(title=title, template="plotly_white",
                      coloraxis=dict(colorscale="Viridis", cmin=0, cmax=zmax,
                                     colorbar=dict(title=BAR_WORDS[value], **_ticks(value, zmax))))
    # every part of a block labelled under every panel (plotly drops labels it finds crowded), upright
    fig.update_xaxes(tickmode="array", tickvals=words, ticktext=words, tickangle=-90, automargin=True)
    top = 30 + 26 * (title.count("<br>") + 1) + 22 * sub_lines  # the title, then the panels' titles
    return projector_layout(fig, height=top + 130 + 36 * len(blocks), legend=False,
                            margin={"t": top, "b": 20, "r": 20})


@figure_kind("weight_change_difference")
def weight_change_difference(wc: pd.DataFrame, run_a: str, run_b: str, value: str = "rel_change",
                             modules: Optional[Sequence[str]] = None) -> go.Figure:
    """Run a minus run b per block x module, on a diverging scale centred at 0."""
    names = dict(_runs_in(wc))
    for r in (run_a, run_b):
        if r not in names:
            raise ConfigError(f"run {r!r} is not in the data; runs: {list(names)}")
    mods, blocks = _axes(wc, modules)
    a, b = _grid(wc, run_a, value, mods, blocks), _grid(wc, run_b, value, mods, blocks)
    z = [[(x - y) if x is not None and y is not None else None for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]
    span = max([abs(v) for row in z for v in row if v is not None] or [1.0]) or 1.0
    fig = go.Figure(go.Heatmap(z=z, x=[module_words(m) for m in mods], y=[f"block {b}" for b in blocks], zmid=0,
                               zmin=-span, zmax=span,
                               colorscale="RdBu_r", colorbar=dict(title="difference", **_ticks(value, span)),
                               hovertemplate="%{y} · %{x}<br>difference = " + _hover_number(value)
                               + "<extra></extra>"))
    what = VALUE_WORDS.get(value, value).split(" ‖")[0]
    fig.update_layout(title=html.escape(f"{names[run_a]} minus {names[run_b]} ({what})"), template="plotly_white")
    fig.update_xaxes(tickangle=-45)
    return projector_layout(fig, height=220 + 36 * len(blocks), legend=False)


@figure_kind("head_change_bar")
def head_change_bar(wc: pd.DataFrame, value: str = "rel_change", colors: Optional[dict] = None) -> go.Figure:
    """The groups outside the blocks (embeddings, pooler / norm, head), one bar per run each:
    the new head moves far more than anything else, so it gets its own axis. ``colors``:
    ``{run: colour}`` (``tk.plots.colors(runs)``)."""
    d = wc[wc["block"].isna() & wc["group"].isin(OUTSIDE)]
    runs = _runs_in(wc)
    labels = [lab for _, lab in runs]
    palette = _palette([r for r, _ in runs], colors)
    fig = go.Figure()
    for run, label in runs:
        r = d[d["run"] == run].set_index("group").reindex([g for g in OUTSIDE if g in set(d["group"])])
        fig.add_trace(go.Bar(x=list(r.index), y=r[value].tolist(), name=_title(run, label, labels),
                             marker_color=palette.get(run),
                             hovertemplate="%{x}<br>" + VALUE_WORDS[value] + " = "
                             + _hover_number(value).replace("z:", "y:") + "<extra></extra>"))
    top = float(d[value].max()) if len(d) and pd.notna(d[value].max()) else 0.0
    fig.update_layout(barmode="group", template="plotly_white", title="Change outside the blocks", height=380,
                      yaxis_title=BAR_WORDS[value])
    fig.update_yaxes(**_ticks(value, top))
    return projector_layout(fig)


@figure_kind("spectrum")
def spectrum(spectra, name: str, runs: Optional[Sequence[str]] = None, log: bool = True,
             colors: Optional[dict] = None) -> go.Figure:
    """Singular values of one matrix's update per run (solid), with Gaussian noise of the same
    shape and Frobenius norm (dotted): an update that hugs its noise line is unstructured.
    ``colors``: ``{run: colour}`` (``tk.plots.colors(runs)``)."""
    keys = [k for k in spectra.singular_values if k[1] == name and (runs is None or k[0] in runs)]
    if not keys:
        known = sorted({k[1] for k in spectra.singular_values})[:6]
        raise ConfigError(f"no spectrum for {name!r}; matrices include {known} ...")
    table = spectra.table.set_index(["run", "name"])
    run_names = [k[0] for k in keys]
    palette = _palette(run_names, colors)
    labels = [table.loc[k, "label"] for k in keys]
    fig = go.Figure()
    for key, label in zip(keys, labels):
        s = [v for v in spectra.singular_values[key] if v > 0]
        title = _title(key[0], label, labels)
        fig.add_trace(go.Scatter(x=list(range(1, len(s) + 1)), y=s, mode="lines+markers", name=title,
                                 line=dict(color=palette[key[0]]), marker=dict(size=4)))
        if key in spectra.noise:
            n = spectra.noise[key]
            fig.add_trace(go.Scatter(x=list(range(1, len(n) + 1)), y=n, mode="lines",
                                     name=f"random noise of the same size ({title})",
                                     line=dict(color=palette[key[0]], dash="dot", width=1), opacity=0.6))
    rows = spectra.table[spectra.table["name"] == name]
    where = param_label(name)
    if len(rows) and "block" in rows and pd.notna(rows["block"].iloc[0]) and "module" in rows:
        where = f"block {int(rows['block'].iloc[0])} · {module_words(rows['module'].iloc[0])}"
    fig.update_layout(title=html.escape(f"Spectrum of the update ΔW: {where}"), template="plotly_white",
                      xaxis_title="direction (largest first)", yaxis_title="singular value (strength)",
                      yaxis_type="log" if log else "linear", xaxis_type="log" if log else "linear", height=420)
    if log:  # 1, 2 and 5 of each decade, whole: plotly's small digits ran into each other on a short axis
        readable_log_axes(fig)
    return projector_layout(fig)


@figure_kind("rank_by_block")
def rank_by_block(table: pd.DataFrame, metric: str = "effective_rank",
                  modules: Optional[Sequence[str]] = None, colors: Optional[dict] = None) -> go.Figure:
    """A rank measure of the updates per block (mean over the block's updated matrices, or
    only the given ``modules``; a matrix that did not move has no rank to speak of), one
    line per run. ``metric``: effective_rank, stable_rank, energy90 or intruders.
    ``colors``: ``{run: colour}`` (``tk.plots.colors(runs)``)."""
    if metric not in ("effective_rank", "stable_rank", "energy90", "intruders"):
        raise ConfigError(f"metric must be effective_rank, stable_rank, energy90 or intruders (got {metric!r})")
    d = table[table["block"].notna()]
    if "delta_norm" in d.columns:
        d = d[d["delta_norm"] > 0]
    if modules:
        d = d[d["module"].isin(modules)]
    runs, labels, palette = _runs_labels_palette(table, colors)
    fig = go.Figure()
    for run, label in runs:
        g = d[d["run"] == run].groupby("block")[metric].mean()
        fig.add_trace(go.Scatter(x=[int(b) for b in g.index], y=g.tolist(), mode="lines+markers",
                                 name=_title(run, label, labels), line=dict(color=palette[run])))
    fig.update_layout(title=f"{metric.replace('_', ' ')} of the update per block", template="plotly_white",
                      xaxis_title="block", yaxis_title=metric.replace("_", " "), xaxis=dict(dtick=1), height=380)
    return projector_layout(fig)


@figure_kind("magnitude_direction")
def magnitude_direction(table: pd.DataFrame, colors: Optional[dict] = None) -> go.Figure:
    """One panel per run: each dot a block matrix, its change of direction ΔD (across) against
    its change of magnitude ΔM (up), from :func:`tunekit.inspect.magnitude_direction`. Each
    panel's title gives the correlation of the two with its 95 % interval, or says it is too
    few points to tell; an interval that holds 0 is no finding. A table made with
    ``steps=True`` from runs with snapshots colours each dot by its step (the correlation is
    the end's)."""
    require(isinstance(table, pd.DataFrame), "table", "the DataFrame of tk.inspect.magnitude_direction", table)
    if table.empty:
        raise ConfigError("no changed block matrices to draw: the runs (a probe, LayerNorm tuning, frozen "
                          "blocks) changed no weight matrix inside the blocks")
    runs, labels, palette = _runs_labels_palette(table, colors)
    by_step = "step" in table and table.groupby("run")["step"].nunique().max() > 1  # snapshots: colour by step
    titles = []
    for run, label in runs:
        rows = table[table["run"] == run]
        end = rows[rows["step"] == rows["step"].max()] if by_step else rows  # the end, as without snapshots
        c = correlation_interval(end["delta_d"], end["delta_m"])
        words = (f"r = {c[0]:.2f} [{c[1]:.2f}, {c[2]:.2f}]" if c else f"{len(end)} matrices: too few to correlate")
        titles.append(_panel_title(run, label, labels, 84 // len(runs)) + "<br>" + words
                      + (" at the end" if by_step else ""))
    fig = make_subplots(rows=1, cols=len(runs), horizontal_spacing=0.08, subplot_titles=titles)
    for i, (run, _) in enumerate(runs, start=1):
        rows = table[table["run"] == run]
        marker = dict(color=palette[run], size=8)
        if by_step:
            marker = dict(size=8, color=rows["step"], coloraxis="coloraxis")
        at = [f" · step {s}" for s in rows["step"]] if by_step else [""] * len(rows)
        fig.add_trace(go.Scatter(
            x=rows["delta_d"], y=rows["delta_m"], mode="markers", marker=marker, showlegend=False,
            text=[f"block {b} · {module_words(m)}{s}" for b, m, s in zip(rows["block"], rows["module"], at)],
            hovertemplate="%{text}<br>ΔD = %{x:.3g}<br>ΔM = %{y:.3g}<extra>" + html.escape(run) + "</extra>"),
            row=1, col=i)
    if by_step:
        fig.update_layout(coloraxis=dict(colorscale="Viridis", colorbar=dict(title="step")))
    title = wrap("Magnitude and direction of each update (ΔM against ΔD)", 60)
    fig.update_layout(title=title, template="plotly_white")
    fig.update_xaxes(title_text="ΔD (1 − cosine)", tickformat=".2g")
    fig.update_yaxes(tickformat=".2g")
    fig.update_yaxes(title_text="ΔM (|Δ norm|)", row=1, col=1)  # once: each panel keeps its own scale
    top = 30 + 26 * (title.count("<br>") + 1) + 22 * max(t.count("<br>") + 1 for t in titles)
    return projector_layout(fig, height=top + 380, legend=False, margin={"t": top, "b": 20, "r": 20})


@figure_kind("adapter_ranks")
def adapter_ranks(table: pd.DataFrame, modules: Optional[Sequence[str]] = None) -> go.Figure:
    """Where each adapter put its rank: blocks (rows) x adapted matrices (columns), one panel
    per run, the number in each cell its rank at the end, one colour scale from 0 to the
    largest starting rank (from :func:`tunekit.inspect.adapter_ranks`). LoRA's panel is
    uniform by construction; AdaLoRA's shows which matrices kept their rank and which gave
    it up. Each panel's title gives its mean rank against its starting rank."""
    require(isinstance(table, pd.DataFrame), "table", "the DataFrame of tk.inspect.adapter_ranks", table)
    if table.empty:
        raise ConfigError("no adapted matrices with a rank to draw: the runs hold no LoRA-like adapter (LoRA, "
                          "DoRA, AdaLoRA, LoHa, LoKr, VeRA)")
    runs = _runs_in(table)
    labels = [lab for _, lab in runs]
    mods, blocks = _axes(table, modules)
    top_rank = int(table["init_rank"].max())
    titles = []
    for run, label in runs:
        rows = table[table["run"] == run]
        titles.append(_panel_title(run, label, labels, 84 // len(runs))
                      + f"<br>mean rank {rows['rank'].mean():.3g} of {rows['init_rank'].mean():.3g}")
    fig = make_subplots(rows=1, cols=len(runs), shared_yaxes=True, horizontal_spacing=0.03, subplot_titles=titles)
    words = [module_words(m) for m in mods]
    for i, (run, _) in enumerate(runs, start=1):
        z = _grid(table, run, "rank", mods, blocks)
        fig.add_trace(go.Heatmap(
            z=z, x=words, y=[f"block {b}" for b in blocks], zmin=0, zmax=top_rank, coloraxis="coloraxis",
            text=[["" if v is None else f"{v:g}" for v in row] for row in z], texttemplate="%{text}",
            hovertemplate="%{y} · %{x}<br>rank %{z}<extra>" + html.escape(run) + "</extra>"), row=1, col=i)
    title = wrap("Where each adapter put its rank (rank per block matrix at the end)", 60)
    fig.update_layout(title=title, template="plotly_white",
                      coloraxis=dict(colorscale="Viridis", cmin=0, cmax=top_rank, colorbar=dict(title="rank")))
    fig.update_xaxes(tickmode="array", tickvals=words, ticktext=words, tickangle=-90, automargin=True)
    top = 30 + 26 * (title.count("<br>") + 1) + 22 * max(t.count("<br>") + 1 for t in titles)
    return projector_layout(fig, height=top + 130 + 36 * len(blocks), legend=False,
                            margin={"t": top, "b": 20, "r": 20})


@figure_kind("virtual_tokens")
def virtual_tokens(table: pd.DataFrame, colors: Optional[dict] = None) -> go.Figure:
    """What prompt tuning learned (from :func:`tunekit.inspect.virtual_tokens`): one panel per
    run, a bar per virtual token (its length, in the order the model reads them), labelled with
    the vocabulary token nearest to it; the dotted line is the median length of the model's
    word embeddings. Hover lists the nearest tokens with their cosine."""
    require(isinstance(table, pd.DataFrame), "table", "the DataFrame of tk.inspect.virtual_tokens", table)
    if table.empty:
        raise ConfigError("no virtual tokens to draw: none of the runs is prompt tuning")
    runs, labels, palette = _runs_labels_palette(table, colors)
    titles = [_panel_title(r, lab, labels, 84 // len(runs)) for r, lab in runs]
    fig = make_subplots(rows=1, cols=len(runs), horizontal_spacing=0.06, subplot_titles=titles)
    for i, (run, _) in enumerate(runs, start=1):
        rows = table[table["run"] == run]
        near = [", ".join(f"{html.escape(str(t))} ({c:.2f})" for t, c in zip(ts, cs))
                for ts, cs in zip(rows["nearest"], rows["cosine"])]
        fig.add_trace(go.Bar(
            x=[f"v{t + 1}" for t in rows["token"]], y=rows["norm"], marker_color=palette[run], showlegend=False,
            text=[html.escape(str(ts[0])) if len(ts) else "" for ts in rows["nearest"]], textposition="outside",
            customdata=near, hovertemplate="%{x}: length %{y:.3g}<br>nearest: %{customdata}<extra>"
            + html.escape(run) + "</extra>"), row=1, col=i)
        fig.add_hline(y=float(rows["vocab_norm"].iloc[0]), line_dash="dot", line_color="#555", row=1, col=i)
    title = wrap("Learned virtual tokens: length of each, and the nearest word", 60)
    fig.update_layout(title=title, template="plotly_white")
    fig.update_yaxes(title_text="length ‖v‖", row=1, col=1)
    top = 30 + 26 * (title.count("<br>") + 1) + 22 * max(t.count("<br>") + 1 for t in titles)
    return projector_layout(fig, height=top + 360, legend=False, margin={"t": top, "b": 20, "r": 20})


@figure_kind("prefix_layers")
def prefix_layers(table: pd.DataFrame, colors: Optional[dict] = None) -> go.Figure:
    """What prefix tuning learned (from :func:`tunekit.inspect.prefix_layers`): for each layer, how
    long its virtual tokens' keys (solid) and values (dotted) are against the model's own for a
    sentence (1, the grey line: as long). A line per run and part; hover gives both lengths."""
    require(isinstance(table, pd.DataFrame), "table", "the DataFrame of tk.inspect.prefix_layers", table)
    if table.empty:
        raise ConfigError("no prefix to draw: none of the runs is prefix tuning")
    runs, labels, palette = _runs_labels_palette(table, colors)
    fig = go.Figure()
    for run, label in runs:
        for part, dash in (("keys", "solid"), ("values", "dot")):
            rows = table[(table["run"] == run) & (table["part"] == part)]
            fig.add_trace(go.Scatter(
                x=rows["layer"], y=rows["ratio"], mode="lines+markers", line=dict(color=palette[run], dash=dash),
                name=f"{_title(run, label, labels)}: {part}", customdata=list(zip(rows["norm"], rows["text_norm"])),
                hovertemplate="layer %{x}: %{y:.2f}× (prefix %{customdata[0]:.3g}, text %{customdata[1]:.3g})"
                              "<extra></extra>"))
    fig.add_hline(y=1.0, line_dash="dash", line_color="#999")
    fig.update_layout(title=wrap("Learned prefix: length of its keys and values in each layer, against the "
                                 "model's own", 60), template="plotly_white",
                      xaxis_title="layer", yaxis_title="length ÷ the text's own", height=420)
    fig.update_xaxes(dtick=1)
    return projector_layout(fig)
