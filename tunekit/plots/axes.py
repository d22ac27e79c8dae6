"""Axes that say what they show.

    tk.plots.score_axis(fig, "accuracy", num_labels=2, n=300)   # chance (dashed) to 1, n noted
    tk.plots.say_empty(fig, "no runs selected")                  # words, not axes spanning -1..4

An accuracy (or macro-F1) axis runs from the chance level to 1, whatever the runs reached,
so that two charts of the same runs look alike and a gain of 0.01 looks as small as it is:
chance is ``1 / number of classes`` (a uniform guess; the majority-class share is not in
the records) and is drawn as a dashed line. The axis title gives the evaluation-set size
and what one example is worth (``n=300; one example = 0.0033``). The axis still widens to
show a run below chance.
"""
from __future__ import annotations

import math
import numbers
import re
import textwrap
from typing import Iterable, Optional

import plotly.graph_objects as go

from tunekit.runs import Run

SCORES = {"accuracy": "accuracy", "macro_f1": "macro-F1"}
"""Metrics in [0, 1] where higher is better: their axes start at chance."""


def num_labels(runs: Iterable[Run]) -> Optional[int]:
    """The number of classes the (classification) runs were evaluated on, if they agree."""
    counts = set()
    for r in runs:
        if r.task != "classification":
            return None
        names = (r.config.get("data") or {}).get("label_names") or (r.config.get("model") or {}).get("label_names")
        counts.add(len(names) if isinstance(names, list) and names else None)
    return counts.pop() if len(counts) == 1 and None not in counts else None


def eval_sizes(runs: Iterable[Run]) -> list[int]:
    """The distinct numbers of validation examples the runs were evaluated on, smallest first."""
    sizes = {(r.config.get("data") or {}).get("validation_used") for r in runs}
    return sorted(n for n in sizes if isinstance(n, int) and not isinstance(n, bool) and n > 0)


def score_title(metric: str, sizes: Iterable[int] = (), chance: Optional[float] = None,
                prefix: str = "validation ") -> str:
    """``validation accuracy<br>(n=300; one example = 0.0033)``, and where chance is drawn,
    ``dashed: chance, 1 in 2 classes`` on a third line."""
    sizes = sorted(set(sizes))
    title = prefix + SCORES.get(metric, metric)
    # each part on its own line: a rotated axis title longer than the plot's height is cut
    if len(sizes) == 1:
        title += f"<br>(n={sizes[0]:,}; one example = {1 / sizes[0]:.2g})"
    elif sizes:
        title += f"<br>(n={sizes[0]:,} to {sizes[-1]:,}; one example = {1 / sizes[-1]:.2g} to {1 / sizes[0]:.2g})"
    if chance is not None:
        title += f"<br>dashed: chance, 1 in {round(1 / chance)} classes"
    return title


def score_axis(fig: go.Figure, metric: str = "accuracy", num_labels: Optional[int] = None,
               n: Optional[int | Iterable[int]] = None, prefix: str = "validation ", label: bool = True) -> go.Figure:
    """Make ``fig``'s y axis a score axis: from chance (``1 / num_labels``, dashed) to 1,
    titled with the evaluation-set size ``n`` (one size, or the sizes of several runs).
    Without ``num_labels`` the axis starts at 0. Works on a FigureWidget too, and again on
    the same figure (the chance line is replaced): points added later stay inside the range,
    which widens for a run below chance. ``label=False``: the line without its "chance 0.5"
    text (the axis title says what the dashed line is; a chart of labelled points, whose labels
    would fall on that text at the plot's edge)."""
    sizes = [] if n is None else [n] if isinstance(n, int) else list(n)
    chance = 1 / num_labels if isinstance(num_labels, int) and num_labels >= 2 else None
    fig.update_yaxes(title_text=score_title(metric, sizes, chance, prefix), autorange=True,
                     autorangeoptions={"include": [0.0 if chance is None else chance, 1.0]})
    fig.layout.shapes = [s for s in fig.layout.shapes if s.name != _CHANCE]
    fig.layout.annotations = [a for a in fig.layout.annotations if a.name != _CHANCE]
    if chance is not None and not label:
        fig.add_hline(y=chance, line_dash="dash", line_color="#888", line_width=1, name=_CHANCE)
    elif chance is not None:
        fig.add_hline(y=chance, line_dash="dash", line_color="#888", line_width=1, name=_CHANCE,
                      annotation={"text": f"chance {chance:.2g}", "name": _CHANCE,
                                  "font": {"size": FONT, "color": "#666"}},
                      annotation_position="top right")  # above the line: clear of the x tick labels
    return fig


_CHANCE = "tunekit-chance"


def is_empty(fig: go.Figure) -> bool:
    """Whether no trace of ``fig`` has a point to draw."""
    return not any(len([v for v in (getattr(t, "y", None) or ()) if v is not None]) for t in fig.data)


def say_empty(fig: go.Figure, text: str) -> go.Figure:
    """``text`` in the middle of ``fig``, with its axes hidden (plotly draws empty axes
    spanning -1..4 otherwise)."""
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font={"size": FONT, "color": "#666"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


FONT = 14
"""The smallest text size of every figure, in px: readable at a projector."""


def wrap(text: str, width: int) -> str:
    """``text`` broken at spaces into lines of at most ``width`` characters (plotly's ``<br>``);
    existing ``<br>`` are kept, so a title wraps instead of being cut."""
    lines = []
    for part in re.split(r"<br\s*/?>", text or ""):
        lines.extend(textwrap.wrap(part, width, break_long_words=False, break_on_hyphens=False) or [""])
    return "<br>".join(lines)


def projector_layout(fig: go.Figure, height: Optional[int] = None, legend: bool = True,
                     title_chars: int = 60, margin: Optional[dict] = None) -> go.Figure:
    """Lay ``fig`` out for a room: no fixed width (``autosize``: it follows its container, a
    FigureWidget or an HTML page alike), text of at least :data:`FONT` px, the legend in rows
    below the plot (a long legend never squeezes the plot), the title wrapped at
    ``title_chars`` characters and margins that leave it room. Call it last (after
    ``update_layout``); ``height`` in px (None: the figure's own, else 450). Works on a FigureWidget."""
    title = fig.layout.title.text or ""
    if title:
        title = wrap(title, title_chars)
    lines = title.count("<br>") + 1 if title else 0
    fig.update_layout(autosize=True, width=None, font={"size": FONT},
                      title={"text": title or None, "x": 0, "xanchor": "left", "xref": "paper",
                             # plotly lifts a title of several lines by half a line per extra line
                             "y": 1, "yref": "container", "yanchor": "top", "pad": {"t": 8 + 13 * max(0, lines - 1)},
                             "font": {"size": FONT + 4}},
                      margin={"l": 60, "r": 20, "t": 30 + 26 * lines, "b": 40, "autoexpand": True, **(margin or {})},
                      hoverlabel={"font": {"size": FONT}})
    fig.update_yaxes(automargin=True)  # a y title of several lines widens the left margin
    fig.update_xaxes(automargin=True)
    # a height always: a FigureWidget drawn before it is on screen falls back to 360 px otherwise
    fig.update_layout(height=height or fig.layout.height or 450)
    if legend:
        # below the x axis's ticks and title (about 76 px), in rows: the figure grows by the rows it
        # needs (entries of ~8 px a character in ~700 px), so the plot keeps its height
        names = [str(t.name or "") for t in fig.data if t.showlegend is not False and t.name]
        per_row = max(1, 700 // (8 * max((len(n) for n in names), default=10) + 50))
        rows = -(-len(names) // per_row) if len(names) > 1 else 0
        if rows:
            extra = 24 * rows + (26 if fig.layout.legend.title.text else 0)
            fig.update_layout(height=fig.layout.height + extra, margin={"b": fig.layout.margin.b + 76 + extra})
        plot_h = max(100, fig.layout.height - fig.layout.margin.t - fig.layout.margin.b)
        fig.update_layout(legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -min(0.6, 76 / plot_h),
                                  "yanchor": "top",
                                  "yref": "paper", "font": {"size": FONT}, "title": {"side": "top left"}})
    for a in fig.layout.annotations:  # subplot titles and notes: never under FONT px
        if a.font.size is None or a.font.size < FONT:
            a.font.size = FONT
    return fig


def _number_words(v: float) -> str:
    """A tick's value whole and short: ``0.002``, ``50``, ``2,000``, ``20k``, ``5M``."""
    for least, size, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(v) >= least:
            return f"{v / size:g}{suffix}"
    return f"{v:,.0f}" if abs(v) >= 1 and v == int(v) else f"{v:,g}"


def log_ticks(lo: float, hi: float, most: int = 9) -> Optional[tuple[list[float], list[str]]]:
    """Ticks for a log axis over values from ``lo`` to ``hi`` (the axis runs from ``lo / 1.3`` to
    ``hi * 1.3``): 1, 2 and 5 of each decade (only 1 where those are more than ``most``; finer
    steps within less than a decade), each written whole. plotly writes the 2..9 of a decade
    as small digits: three quarters of the text size, 10.5 px at a projector's 14. None for
    values that are not all positive."""
    if not (lo > 0 and hi >= lo):
        return None
    low, high = lo / 1.3, hi * 1.3
    first, last = math.floor(math.log10(low)), math.ceil(math.log10(high))
    wide = hi / lo >= 10
    for steps in ((1, 2, 5), (1,)) if wide else ((1, 1.5, 2, 3, 4, 5, 6, 8), (1, 2, 5),
                                                 tuple(1 + k / 4 for k in range(36))):
        values = [round(m * 10.0 ** e, 12) for e in range(first, last + 1) for m in steps
                  if low <= m * 10.0 ** e <= high]
        if (wide and len(values) <= most) or (not wide and 2 <= len(values) <= most):
            break
    return values, [_number_words(v) for v in values]


def _values(xs) -> list:
    """A trace's x or y as a list (plotly keeps a tuple, or the numpy array it was given)."""
    return [] if xs is None else list(xs.tolist() if hasattr(xs, "tolist") else xs)


def readable_log_axes(fig: go.Figure) -> go.Figure:
    """Every log axis of a one-plot ``fig`` labelled with :func:`log_ticks` over its traces' values
    (whole labels at the figure's text size, not plotly's small digits), from ``lo / 1.3`` to
    ``hi * 1.3``."""
    for letter in ("x", "y"):
        axis = fig.layout[f"{letter}axis"]
        if axis.type != "log":
            continue
        values = [float(v) for t in fig.data for v in _values(getattr(t, letter, None))
                  if isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0 and math.isfinite(v)]
        ticks = log_ticks(min(values), max(values)) if values else None
        if ticks:
            axis.update(tickmode="array", tickvals=ticks[0], ticktext=ticks[1],
                        range=[math.log10(min(values) / 1.3), math.log10(max(values) * 1.3)])
    return fig


def scale_text(fig: go.Figure, factor: float) -> go.Figure:
    """Every text of ``fig`` ``factor`` times its size, and the top margin with its title: the
    lab's projector switch (``1.25``, and ``1 / 1.25`` back). A size left unset counts as
    :func:`projector_layout` sets it (:data:`FONT`, titles ``FONT + 4``). Works on a
    FigureWidget, in one browser update."""
    if factor == 1:
        return fig
    lay = fig.layout

    def grow(font, default) -> None:
        font.size = round((font.size or default) * factor, 2)
    with fig.batch_update():
        for font in (lay.font, lay.legend.font, lay.hoverlabel.font):
            grow(font, FONT)
        grow(lay.title.font, FONT + 4)
        for a in lay.annotations:
            grow(a.font, FONT)
        for axis in [*fig.select_xaxes(), *fig.select_yaxes()]:  # fonts an axis set for itself
            for font in (axis.title.font, axis.tickfont):  # (the others follow layout.font)
                if font.size is not None:
                    grow(font, FONT)
        if lay.margin.t is not None:
            lay.margin.t = round(lay.margin.t * factor)
    return fig


__all__ = ["FONT", "wrap", "projector_layout", "scale_text", "log_ticks", "readable_log_axes", "SCORES", "num_labels",
           "eval_sizes", "score_title", "score_axis", "is_empty", "say_empty"]
