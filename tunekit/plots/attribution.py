"""Token attributions of several models for one sentence, stacked so they can be compared.

    rows = tk.inspect.attribute_runs([probe, lora, full], "a gorgeous, witty film")
    tk.plots.attribution_html(rows)                     # coloured tokens, one row per model
    tk.plots.attribution_view(rows)                     # heatmap: models x token positions
    tk.plots.attribution_view(rows, difference=True)    # each run minus the base

Red pushes the explained class up, blue pushes it down. Both functions take
:class:`~tunekit.inspect.attribution.Attribution` objects, their ``to_dict()``
dicts, or their ``to_frame()`` DataFrames (one, a list, or ``pd.concat`` of
several); nothing here imports torch. Every token, label and sentence is
HTML-escaped before it is rendered.
"""
from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from tunekit.config import ConfigError
from tunekit.plots.axes import FONT, projector_layout
from tunekit.plots.captions import share_in_words, tag
from tunekit.plots.identity import short_name

NORMALIZE = ("row", "global", "none")
POSITIVE = (214, 39, 40)
"""RGB of a positive score (red)."""
NEGATIVE = (31, 119, 180)
"""RGB of a negative score (blue)."""
COLORSCALE = [[0.0, "rgb(31,119,180)"], [0.5, "rgb(255,255,255)"], [1.0, "rgb(214,39,40)"]]
_FIELDS = ("text", "tokens", "scores", "target", "target_label", "prediction", "probabilities",
           "delta", "gap_relative", "run", "label")


# ----- input -------------------------------------------------------------------------------------
def _from_frame(df: pd.DataFrame) -> list[dict]:
    missing = {"token", "score"} - set(df.columns)
    if missing:
        raise ConfigError(f"an attribution DataFrame needs the columns token and score (missing {sorted(missing)})")
    keys = [k for k in ("run", "label") if k in df.columns]
    groups = df.groupby(keys, sort=False) if keys else [((), df)]
    out = []
    for _, g in groups:
        g = g.sort_values("position") if "position" in g.columns else g
        first = g.iloc[0]
        rec = {k: first[k] for k in _FIELDS if k in g.columns and k not in ("tokens", "scores")}
        rec["tokens"], rec["scores"] = g["token"].tolist(), g["score"].tolist()
        out.append(rec)
    return out


def _one(x: Any) -> list[dict]:
    if isinstance(x, pd.DataFrame):
        return _from_frame(x)
    if isinstance(x, dict):
        rec = dict(x)
    elif hasattr(x, "tokens") and hasattr(x, "scores"):  # an Attribution, by duck typing
        rec = {k: getattr(x, k) for k in _FIELDS if hasattr(x, k)}
    else:
        raise ConfigError(f"attributions must be Attribution objects, their dicts or DataFrames "
                          f"(got {type(x).__name__})")
    if "tokens" not in rec or "scores" not in rec:
        raise ConfigError(f"an attribution needs tokens and scores (got the keys {sorted(rec)})")
    if len(rec["tokens"]) != len(rec["scores"]):
        raise ConfigError(f"an attribution needs one score per token (got {len(rec['tokens'])} tokens "
                          f"and {len(rec['scores'])} scores)")
    return [rec]


def as_records(attributions: Any) -> list[dict]:
    """Plain dicts (tokens, scores, label, run, prediction, ...) from Attribution objects,
    dicts or DataFrames, one or many."""
    if isinstance(attributions, (pd.DataFrame, dict)) or hasattr(attributions, "tokens"):
        items = [attributions]
    else:
        try:
            items = list(attributions)
        except TypeError:
            raise ConfigError(f"attributions must be Attribution objects, their dicts or DataFrames "
                              f"(got {type(attributions).__name__})") from None
    recs = [r for x in items for r in _one(x)]
    if not recs:
        raise ConfigError("attributions is empty: pass at least one attribution")
    for r in recs:
        r["scores"] = [float(s) for s in r["scores"]]
        r["tokens"] = [str(t) for t in r["tokens"]]
    return recs


def row_names(recs: list[dict]) -> list[str]:
    """Each row's name: its strategy label, plus the run name where two rows share a label."""
    labels = [str(r.get("label") or r.get("run") or f"#{i}") for i, r in enumerate(recs)]
    return [f"{lab} ({r.get('run')})" if labels.count(lab) > 1 and r.get("run") not in (None, lab) else lab
            for lab, r in zip(labels, recs)]


def _base_index(recs: list[dict]) -> int:
    for i, r in enumerate(recs):
        if r.get("run") == "base" or r.get("label") == "base":
            return i
    return 0


def _check_normalize(normalize: str) -> None:
    if not isinstance(normalize, str) or normalize not in NORMALIZE:
        raise ConfigError(f"normalize must be one of {NORMALIZE} (got {normalize!r})")


def _scaled(rows: list[list[float]], normalize: str) -> list[list[float]]:
    """Scores divided by the largest |score| of their row ("row"), of all rows ("global"),
    or left as they are ("none")."""
    if normalize == "none":
        return [list(r) for r in rows]
    if normalize == "global":
        m = max((abs(s) for r in rows for s in r), default=0.0)
        return [[s / m if m > 0 else 0.0 for s in r] for r in rows]
    out = []
    for r in rows:
        m = max((abs(s) for s in r), default=0.0)
        out.append([s / m if m > 0 else 0.0 for s in r])
    return out


def _differences(recs: list[dict], values: list[list[float]]) -> tuple[list[dict], list[list[float]]]:
    b = _base_index(recs)
    base = recs[b]
    for r in recs:
        if r["tokens"] != base["tokens"]:
            raise ConfigError(f"difference=True needs the same tokens in every row; {row_names([r])[0]!r} "
                              f"has {len(r['tokens'])} tokens that differ from the base's {len(base['tokens'])}")
    keep = [i for i in range(len(recs)) if i != b]
    if not keep:
        raise ConfigError("difference=True needs at least one run besides the base")
    return [recs[i] for i in keep], [[v - w for v, w in zip(values[i], values[b])] for i in keep]


def _matrix(attributions: Any, normalize: str, difference: bool) -> tuple[list[dict], list, list]:
    """(rows, values to colour, values to show on hover). Without ``difference`` the colours
    are the scaled scores and hover shows the raw ones; with it, both are the run-minus-base
    differences of the scaled scores ("row") or of the raw scores."""
    _check_normalize(normalize)
    recs = as_records(attributions)
    raw = [r["scores"] for r in recs]
    if not difference:
        return recs, _scaled(raw, normalize), raw
    recs, diff = _differences(recs, _scaled(raw, "row") if normalize == "row" else raw)
    return recs, diff, diff


def _fmt_prob(r: dict) -> str:
    p = (r.get("probabilities") or {}).get(r.get("prediction"))
    pred = str(r.get("prediction", "?"))
    return f"{pred} ({p:.2f})" if isinstance(p, (int, float)) else pred


def _fmt_delta(r: dict) -> str:
    d, g = r.get("delta"), r.get("gap_relative")
    if not isinstance(d, (int, float)):
        return ""
    if isinstance(g, (int, float)) and math.isfinite(g):  # in words: how closely the scores add up
        return f"scores add up to the output within {share_in_words(g)}"
    return f"scores add up to the output within {abs(d):.2g}"


# ----- HTML --------------------------------------------------------------------------------------
def _color(v: float) -> str:
    """Background for a scaled score in [-1, 1]: red for positive, blue for negative."""
    v = max(-1.0, min(1.0, v)) if math.isfinite(v) else 0.0
    r, g, b = POSITIVE if v >= 0 else NEGATIVE
    return f"rgba({r},{g},{b},{abs(v) * 0.85:.3f})"


def attribution_html(attributions: Any, normalize: str = "row", difference: bool = False) -> str:
    """A self-contained HTML snippet (inline styles, no scripts) stacking the models' token
    attributions: one row per model with its label, prediction and probability, the
    tokens as coloured cells (aligned by position across rows; hover for the score) and
    the convergence delta (relative gap in brackets).

    Args:
        normalize: colour intensity relative to the largest |score| of each row
            (``"row"``), of all rows (``"global"``), or the raw score clipped to 1 (``"none"``).
        difference: show each run minus the base (the row labelled ``base``, else the first)
            instead of the scores themselves; needs the same tokens in every row.
    """
    recs, values, raw = _matrix(attributions, normalize, difference)
    if difference and normalize != "none":
        values = _scaled(values, "global")
    names = row_names(recs)
    esc = html.escape
    td = "padding:2px 4px;border:1px solid #eee;white-space:nowrap;"
    head = "font-weight:600;text-align:left;padding:2px 8px;white-space:nowrap;"
    pinned = "position:sticky;left:0;z-index:1;background:#fff;"  # the run's name stays while tokens scroll
    rows = []
    for name, r, vals, rv in zip(names, recs, values, raw):
        cells = "".join(
            f'<td style="{td}background:{_color(v)}" title="{esc(tok)}: {s:+.4g}">{esc(tok)}</td>'
            for tok, v, s in zip(r["tokens"], vals, rv))
        target = r.get("target_label")
        explains = f'<br><span style="color:#666;font-weight:400">explains {esc(str(target))}</span>' \
            if target is not None else ""
        rows.append(f'<tr><th style="{head}{pinned}">{esc(name)}{explains}</th>'
                    f'<td style="{head}font-weight:400">{esc(_fmt_prob(r))}</td>{cells}'
                    f'<td style="{head}font-weight:400;color:#666">{esc(_fmt_delta(r))}</td></tr>')
    text = recs[0].get("text")
    what = "each run minus the base" if difference else "red pushes the explained class up, blue down"
    caption = (f'<div style="margin-bottom:4px"><b>{esc(str(text))}</b></div>' if text else "") + \
        f'<div style="color:#666;margin-bottom:4px">Token attributions ({esc(what)}; colour ' \
        f'normalised: {esc(normalize)}).</div>'
    return (f'<div class="tunekit-attribution" style="font-family:sans-serif;font-size:13px;overflow-x:auto;'
            f'max-width:100%;width:100%;min-width:0;overscroll-behavior-x:contain">'
            f'{caption}<table style="border-collapse:collapse">{"".join(rows)}</table></div>')


# ----- heatmap -----------------------------------------------------------------------------------
def attribution_view(attributions: Any, difference: bool = False, normalize: str = "row") -> go.Figure:
    """A heatmap with one row per model and one column per token position (token text as
    tick labels), on a diverging scale centred at 0 (red up, blue down).

    Args:
        difference: each run minus the base (rows scaled first when ``normalize="row"``).
        normalize: divide by each row's largest |score| (``"row"``), by the largest of
            all rows (``"global"``), or show raw scores (``"none"``). Hover shows the raw score.
    """
    recs, values, raw = _matrix(attributions, normalize, difference)
    names = [html.escape(n) for n in row_names(recs)]
    # the axis says the run's number and its probability, so long names never squeeze the heatmap
    ylabels = [f"{html.escape(short_name(n))}: {html.escape(_fmt_prob(r))}" for n, r in zip(row_names(recs), recs)]
    width = max(len(r["tokens"]) for r in recs)
    z = [list(v) + [None] * (width - len(v)) for v in values]
    kind = "difference" if difference else "score"
    hover = []
    for n, r, s in zip(names, recs, raw):
        row = [f"{n}<br>{i}: {html.escape(t)}<br>{kind} {x:+.4g}" for i, (t, x) in enumerate(zip(r["tokens"], s))]
        hover.append(row + [""] * (width - len(row)))
    ticks = max(recs, key=lambda r: len(r["tokens"]))["tokens"]
    zmax = max((abs(v) for row in values for v in row), default=0.0) or 1.0
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(width)), y=list(range(len(recs))), text=hover, hoverinfo="text", colorscale=COLORSCALE,
        zmid=0.0, zmin=-zmax, zmax=zmax, xgap=1, ygap=1,
        colorbar={"title": {"text": "difference" if difference else ("score" if normalize == "none"
                                                                       else "score / max")}}))
    text = recs[0].get("text")
    title = ("Attribution: each run minus the base" if difference else "Token attributions")
    if text:
        t = str(text)
        title += f"<br><span style='font-size:{FONT}px'>{html.escape(t if len(t) <= 70 else t[:67] + '...')}</span>"
    fig.update_layout(
        title={"text": title}, template="plotly_white", height=230 + 44 * len(recs),
        xaxis={"tickmode": "array", "tickvals": list(range(width)), "ticktext": [html.escape(t) for t in ticks],
               "tickangle": -45, "title": {"text": "token"}},
        yaxis={"tickmode": "array", "tickvals": list(range(len(recs))), "ticktext": ylabels,
               "autorange": "reversed"})
    # the colour bar is the legend here; long token ticks and run names push the margins (automargin)
    projector_layout(fig, legend=False, title_chars=200, margin={"l": 10, "r": 10, "b": 10})
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return tag(fig, "attribution_difference" if difference else "attribution_view")


# ----- what a text-to-text model wrote --------------------------------------------------------------
_GEN_FIELDS = ("source", "tokens", "output", "positions", "scores", "logprobs", "baseline_logprobs", "delta",
               "target", "generated", "run", "label")


def _generation_records(attributions: Any) -> list[dict]:
    items = attributions if isinstance(attributions, (list, tuple)) else [attributions]
    recs = []
    for a in items:
        r = a if isinstance(a, dict) else a.to_dict() if hasattr(a, "to_dict") else None
        if r is None or not {"tokens", "output", "scores"} <= set(r):
            raise ConfigError("give GenerationAttribution objects (tk.inspect.attribute_generation) or their "
                              f"to_dict() dicts (got {type(a).__name__})")
        recs.append({k: r.get(k) for k in _GEN_FIELDS})
    if not recs:
        raise ConfigError("no attributions to draw (got an empty list)")
    return recs


def _output_index(r: dict, token: Any) -> int:
    """The row of ``r``'s scores for ``token``: an index into its explained output tokens
    (negative counts from the end), or the output token's text (its first occurrence)."""
    out = r["output"]
    if isinstance(token, str):
        if token in out:
            return out.index(token)
        raise ConfigError(f"token {token!r} is not among {r['label']}'s output tokens {out}")
    if isinstance(token, int) and not isinstance(token, bool) and -len(out) <= token < len(out):
        return token % len(out)
    raise ConfigError(f"token must be an index in {-len(out)} .. {len(out) - 1} or one of the output tokens {out} "
                      f"(got {token!r})")


def generation_attribution_html(attributions: Any, token: Any = 0) -> str:
    """One row per model: what it explains (the output tokens, the chosen one boxed), then the
    source's tokens coloured by their attribution for that output token (red raised its
    log-probability, blue lowered it; each row scaled to its largest |score|), the token's
    log-probability with and without the source, and how closely the scores add up.

    ``token``: the output token to explain, by index into each row's explained tokens or by its
    text (with the same ``target`` for every model, index ``i`` is the same token in each row)."""
    recs = _generation_records(attributions)
    esc = html.escape
    td = "padding:1px 3px;border:1px solid #eee;"
    head = "font-weight:600;text-align:left;padding:2px 8px;vertical-align:top;white-space:nowrap;"
    rows = []
    for name, r in zip(row_names(recs), recs):
        i = _output_index(r, token)
        scores = r["scores"][i]
        top = max((abs(s) for s in scores), default=0.0) or 1.0
        cells = "".join(f'<span style="{td}display:inline-block;margin:1px;background:{_color(s / top)}" '
                        f'title="{esc(t)}: {s:+.4g}">{esc(t)}</span>' for t, s in zip(r["tokens"], scores))
        outs = "".join(f'<span style="padding:0 2px;{"outline:2px solid #333;font-weight:600;" if j == i else ""}">'
                       f"{esc(o)}</span>" for j, o in enumerate(r["output"]))
        lp, blp = r["logprobs"][i], r["baseline_logprobs"][i]
        delta = r["delta"][i]
        said = (f"log p {lp:.2f} with the source, {blp:.2f} with it blanked; the scores add up to the "
                f"difference within {abs(delta):.2g}")
        wrote = "wrote" if r.get("generated") else "explains"
        rows.append(f'<tr><th style="{head}">{esc(name)}</th><td style="padding:2px 8px">'
                    f'<div><span style="color:#666">{wrote}:</span> {outs}</div>'
                    f'<div style="line-height:1.9">{cells}</div>'
                    f'<div style="color:#666">{esc(said)}</div></td></tr>')
    source = str(recs[0].get("source") or "")
    caption = (f'<div style="color:#666;margin-bottom:4px">Which source tokens the boxed output token came from '
               f'(integrated gradients; red raised its probability, blue lowered it; each row scaled to its '
               f'largest score). Source: {esc(source if len(source) <= 120 else source[:117] + "...")}</div>')
    return (f'<div class="tunekit-attribution tunekit-generation-attribution" style="font-family:sans-serif;'
            f'font-size:13px;max-width:100%">{caption}<table style="border-collapse:collapse">{"".join(rows)}'
            f"</table></div>")


def generation_attribution_view(attribution: Any, normalize: str = "row") -> go.Figure:
    """One model's attributions as a heatmap: a row per output token, a column per source
    token (diverging scale centred at 0; ``normalize="row"`` scales each output token's row
    to its largest |score|, ``"global"`` all by the largest, ``"none"`` shows raw scores)."""
    [r] = _generation_records([attribution] if not isinstance(attribution, (list, tuple)) else attribution[:1])
    _check_normalize(normalize)
    values = _scaled(r["scores"], normalize)
    hover = [[f"{html.escape(o)} ← {html.escape(t)}<br>score {s:+.4g}" for t, s in zip(r["tokens"], row)]
             for o, row in zip(r["output"], r["scores"])]
    zmax = max((abs(v) for row in values for v in row), default=0.0) or 1.0
    fig = go.Figure(go.Heatmap(
        z=values, x=list(range(len(r["tokens"]))), y=list(range(len(r["output"]))), text=hover, hoverinfo="text",
        colorscale=COLORSCALE, zmid=0.0, zmin=-zmax, zmax=zmax, xgap=1, ygap=1,
        colorbar={"title": {"text": "score" if normalize == "none" else "score / max"}}))
    title = f"Where each output token came from: {html.escape(str(r.get('label') or 'base'))}"
    fig.update_layout(
        title={"text": title}, template="plotly_white", height=220 + 22 * len(r["output"]),
        xaxis={"tickmode": "array", "tickvals": list(range(len(r["tokens"]))),
               "ticktext": [html.escape(t) for t in r["tokens"]], "tickangle": -60, "title": {"text": "source token"}},
        yaxis={"tickmode": "array", "tickvals": list(range(len(r["output"]))),
               "ticktext": [html.escape(o) for o in r["output"]], "autorange": "reversed",
               "title": {"text": "output token"}})
    projector_layout(fig, legend=False, title_chars=200, margin={"l": 10, "r": 10, "b": 10})
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return tag(fig, "generation_attribution_view")
