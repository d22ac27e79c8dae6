"""The lab's live curves: the training loss and the validation metric of each run trained in
the lab, side by side, with one legend under both.

A run's curves take its name and colour of every other view (:func:`tunekit.plots.display_names`,
:func:`tunekit.plots.run_color`) from the moment Train is pressed: its colour is that of the number
its record will get (:func:`tunekit.plots.next_number`), and its name in words replaces the
provisional one once the record exists (the engine's ``train_start``).

Steps are buffered and sent to the browser at most every ``curve_interval`` seconds, and a
figure the browser stopped following is replaced (see :meth:`LiveCurves.redraw_stale`).
"""
from __future__ import annotations

import html
import threading
import time

import ipywidgets as W
import plotly.graph_objects as go
import traitlets

from tunekit import plots
from tunekit.plots.axes import FONT, projector_layout, say_empty, scale_text, score_title, wrap
from tunekit.plots.runs import ema
from tunekit.widgets.sizer import figure_widget

SMOOTH = 0.6
"""The live loss curve's smoothing (TensorBoard's default, as Compare's training curves)."""

CURVE_HEIGHT = 240
"""px of each live curve; the two sit side by side, their legend in words under both, so that
the lab's controls, Train and both curves fit one 1280x800 screen with the file browser open."""

# the two curves share the width; plotly follows its container (autosize). The lab puts these rules
# first on its page as well: a figure drawn before them would take plotly's 700 px fallback width.
CSS = ("<style>.tunekit-curves{width:100%;gap:4px}.tunekit-curves>*{flex:1 1 0;min-width:0;width:0}"
        # the entries are the children of the HTML widget's content box: that box lays them out, apart
        f".tunekit-legend{{font-size:{FONT}px;line-height:1.4;max-height:4.4em;overflow-y:auto}}"
        ".tunekit-legend .widget-html-content{display:flex;flex-wrap:wrap;gap:2px 18px;white-space:normal}</style>")


def _curve(title: str, empty: str) -> go.FigureWidget:
    # (ticks in at most 4 significant digits: one flat point gave a tick of 20 digits wider than the margin)
    fig = figure_widget(go.Figure(layout=dict(title=title, template="plotly_white", xaxis_title="step",
                                              showlegend=False, yaxis={"tickformat": ".4~g"})))
    say_empty(fig, empty)
    return projector_layout(fig, height=CURVE_HEIGHT, legend=False, title_chars=40,
                            margin={"l": 56, "r": 10, "b": 40})


class LiveCurves(W.VBox):
    """Two FigureWidgets (``loss_fig``, ``acc_fig``: one trace per run, two for the loss: raw
    faint, smoothed on top) and a legend under both: each run's swatch and name."""

    #: seconds between curve updates sent to the browser (steps in between are buffered)
    curve_interval = traitlets.Float(0.25)
    #: seconds a displayed curve may leave an update unacknowledged before it is redrawn
    stale_after = traitlets.Float(4.0)

    def __init__(self, metric, num_labels: int | None = None):
        self.metric, self.num_labels = metric, num_labels
        self.loss_fig = self._watched(_curve(f"training loss (smoothed {SMOOTH:g}; raw faint)",
                                             "each step's loss<br>appears here when you press Train"))
        self.acc_fig = self._watched(_curve(f"validation {metric.title}",
                                            f"the validation {metric.title}<br>appears here after each evaluation"))
        self.box = W.HBox([self.loss_fig, self.acc_fig])
        self.box.add_class("tunekit-curves")
        self.legend = W.HTML()
        self.legend.add_class("tunekit-legend")
        self.runs: list = []  # (run record, index of its curve) for every run drawn here
        self._entries: list[tuple[str, str, str]] = []  # (name, colour, status) per curve
        self.redraws = 0  # stuck figures replaced so far (see redraw_stale)
        self._pending: list[tuple[int, float]] = []  # (step, loss) not yet drawn
        self._drawn_at = 0.0
        self._lock = threading.RLock()  # the worker, a timer and the kernel all touch the curves
        self.text_scale = 1.0  # the lab's projector switch: the curves' text this many times its size
        super().__init__([W.HTML(CSS), self.box, self.legend])

    # ----- a run's curves ------------------------------------------------------------------------
    def start(self, name: str, color: str) -> None:
        """New curves for a run about to train, under a provisional ``name`` in ``color``."""
        self.redraw_stale()
        with self._lock:
            first = not self.acc_fig.data  # the first run: the "appears here" notes go, the axes come
            if not first:  # the last run's phase marks go with it
                self.loss_fig.layout.shapes, self.loss_fig.layout.annotations = (), ()
            with self.loss_fig.batch_update():  # the raw loss faint behind its smoothed line, as in Compare
                if first:
                    self._show_axes(self.loss_fig)
                self.loss_fig.add_scatter(x=[], y=[], mode="lines", name=name, legendgroup=name, opacity=0.25,
                                          showlegend=False, hoverinfo="skip", line={"color": color, "width": 1})
                self.loss_fig.add_scatter(x=[], y=[], mode="lines", name=name, legendgroup=name,
                                          line={"color": color, "width": 2})
            with self.acc_fig.batch_update():
                if first:
                    self._show_axes(self.acc_fig)
                self.acc_fig.add_scatter(x=[], y=[], mode="lines+markers", name=name, line={"color": color})
            self._sent(self.loss_fig)
            self._sent(self.acc_fig)
            self._entries.append((name, color, "training"))
            self._draw_legend()
        self._pending, self._drawn_at = [], 0.0

    def mark(self, step: int, words: str) -> None:
        """A dotted line on the loss curve where a phase began after ``step`` steps, and what
        it changed (``"block.5 joins"``): the newest run's, cleared when the next one starts."""
        with self._lock:
            fig = self.loss_fig  # (add_vline fails inside batch_update)
            fig.add_vline(x=step + 0.5, line={"color": "#888", "dash": "dot", "width": 1})
            fig.add_annotation(x=step + 0.5, y=1.0, yref="paper", text=words, showarrow=False, xanchor="left",
                               yanchor="top", textangle=-90, font={"size": round(10 * self.text_scale, 2),
                                                                   "color": "#555"})
            self._sent(fig)

    @staticmethod
    def _show_axes(fig: go.FigureWidget) -> None:
        fig.layout.annotations = ()
        fig.layout.xaxis.visible = fig.layout.yaxis.visible = True

    def named(self, run) -> None:
        """The newest curves take ``run``'s name and colour of every other view (its record
        exists once training starts)."""
        if run is None:
            return
        self.runs.append((run, len(self.acc_fig.data) - 1))
        names = plots.display_names([r for r, _ in self.runs])
        with self._lock:
            i = len(self.acc_fig.data) - 1
            name, color = names[run.name], plots.run_color(run)
            with self.loss_fig.batch_update():  # two loss traces per curve: raw (faint) and smoothed
                for t in self.loss_fig.data[2 * i:2 * i + 2]:
                    t.name, t.legendgroup, t.line.color = name, run.name, color
            with self.acc_fig.batch_update():
                t = self.acc_fig.data[i]
                t.name, t.legendgroup, t.line.color = name, run.name, color
            self._entries[i] = (name, color, "training")
            self._draw_legend()
            if self.metric.key in ("accuracy", "macro_f1"):  # not in batch_update: add_hline fails there
                n = run.config.get("data", {}).get("validation_used")
                plots.score_axis(self.acc_fig, self.metric.key, num_labels=self.num_labels, n=n)
                # a narrow chart: the evaluation-set size goes to the title, the axis keeps a short name
                title = score_title(self.metric.key, [n] if isinstance(n, int) else [])
                self.acc_fig.layout.title.text = wrap(title, 30)
                # two short lines: one long line ran past the short plot at a projector's text size
                self.acc_fig.layout.yaxis.title.text = f"{self.metric.title}<br>(dashed: chance)"
                lines = self.acc_fig.layout.title.text.count("<br>") + 1
                k = self.text_scale  # (the chance line's text and the title's room as large as the rest)
                self.acc_fig.layout.margin.t = round((30 + 26 * lines) * k)
                self.acc_fig.layout.title.pad.t = round((8 + 13 * (lines - 1)) * k)  # as projector_layout places it
                for a in self.acc_fig.layout.annotations:
                    if a.font.size == FONT:
                        a.font.size = round(FONT * k, 2)

    def set_text_scale(self, scale: float) -> None:
        """The curves' text ``scale`` times its size (the lab's projector switch: 1.25 on, 1 off).
        Their height stays: a height set on a drawn figure makes plotly.js fix its width as well
        (``relayout`` turns ``autosize`` off), and the curve would no longer follow its place."""
        with self._lock:
            for fig in (self.loss_fig, self.acc_fig):
                scale_text(fig, scale / self.text_scale)
            self.text_scale = scale

    def finished(self, status: str) -> None:
        """The newest run ended with ``status`` (said in the legend unless it completed)."""
        if self._entries:
            name, color, _ = self._entries[-1]
            self._entries[-1] = (name, color, status)
            self._draw_legend()

    def _draw_legend(self) -> None:
        items = []
        for name, color, status in self._entries:
            note = "" if status == "completed" else f" [{status}]"
            items.append(f'<span style="white-space:nowrap"><span style="display:inline-block;width:22px;height:4px;'
                         f'vertical-align:middle;margin-right:6px;background:{color}"></span>'
                         f"{html.escape(name + note)}</span>")
        self.legend.value = "".join(items)

    # ----- points ----------------------------------------------------------------------------------
    def step(self, step: int, loss: float) -> None:
        self._pending.append((step, loss))
        if time.monotonic() - self._drawn_at >= self.curve_interval:
            self.flush()

    def flush(self) -> None:
        """Send the buffered steps to the loss curve in one update (at most every
        ``curve_interval`` seconds: a long GPU run does not flood the browser with one
        message, and one copy of the whole trace, per step)."""
        pending, self._pending = self._pending, []
        self._drawn_at = time.monotonic()
        if not pending or not self.loss_fig.data:
            return
        steps, losses = zip(*pending)
        self._extend("loss_fig", steps, losses)

    def evaluated(self, step: int, value: float) -> None:
        self.redraw_stale()
        self.flush()
        self._extend("acc_fig", (step,), (value,))

    def _extend(self, name: str, xs: tuple, ys: tuple) -> None:
        """Append points to the newest run of curve figure ``name`` in one browser update (the
        loss: to its raw trace, and its smoothed trace redrawn from the raw one)."""
        with self._lock:  # the figure object may be replaced (redraw_stale): look it up here
            fig = getattr(self, name)
            trace = fig.data[-1]
            raw = fig.data[-2] if name == "loss_fig" else trace
            x, y = tuple(raw.x or ()) + tuple(xs), tuple(raw.y or ()) + tuple(ys)
            with fig.batch_update():  # (inside it a trace reads back its old values: computed above)
                raw.x, raw.y = x, y
                if raw is not trace:
                    trace.x, trace.y = x, tuple(ema(y, SMOOTH))
            self._sent(fig)

    # ----- curves the browser stopped following ----------------------------------------------------
    # plotly's FigureWidget is an anywidget. anywidget's frontend gives a new model 2 s to load its
    # JavaScript (plotly's ~5 MB bundle); a model that misses that window (a busy machine, Voila
    # creating every model at once) silently drops every later update, and its figure stays as it
    # was. The browser acknowledges each update it draws (plotly sends "trace deltas" back), so an
    # update left unacknowledged while a view is displayed means the figure is stuck: it is then
    # replaced by a new FigureWidget holding the same traces, which draws them from its own state.
    def _watched(self, fig: go.FigureWidget) -> go.FigureWidget:
        fig._tunekit_unacked_since = None
        fig.observe(lambda _c: setattr(fig, "_tunekit_unacked_since", None), names="_js2py_traceDeltas")
        return fig

    @staticmethod
    def _sent(fig: go.FigureWidget) -> None:
        if fig._tunekit_unacked_since is None:
            fig._tunekit_unacked_since = time.monotonic()

    def stale(self) -> list[str]:
        """Names of the curve figures ("loss_fig", "acc_fig") that a displayed view has left
        with an update unacknowledged for over ``stale_after`` seconds."""
        now = time.monotonic()
        return [name for name in ("loss_fig", "acc_fig")
                if (getattr(self, name)._view_count or 0) > 0
                and getattr(self, name)._tunekit_unacked_since is not None
                and now - getattr(self, name)._tunekit_unacked_since > self.stale_after]

    def redraw_stale(self) -> list[str]:
        """Replace each stuck curve figure by a fresh FigureWidget with the same data and layout;
        returns the names replaced (called at each evaluation and after each run)."""
        with self._lock:
            stale = self.stale()
            for name in stale:
                old = getattr(self, name)
                new = self._watched(figure_widget(go.FigureWidget(old)))
                setattr(self, name, new)
                self.box.children = tuple(new if c is old else c for c in self.box.children)
                old.close()
                self.redraws += 1
        return stale
