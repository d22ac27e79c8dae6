"""``tk.Lab()``: freeze layers, pick a rank, train with live curves and Stop, then compare.

Training runs in a worker thread, so the kernel keeps serving widget messages and
the curves grow while it trains. Stop asks the core Trainer to end at the next
step; the partial run is kept (status "stopped"). A second Train while one runs is
refused with a message. Errors (bad input, NaN, out of memory) show in the status
line, in words.
"""
from __future__ import annotations

import html
import threading
import time
import warnings
from typing import Any, Optional

import ipywidgets as W
import plotly.graph_objects as go
import plotly.io as pio
import traitlets

import tunekit as tk
from tunekit import plots
from tunekit.config import DEFAULT_RUNS_DIR
from tunekit.plots.axes import projector_layout, score_title, wrap
from tunekit.plots.runs import ema
from tunekit.sources import BUILTIN_MODELS
from tunekit.widgets.controls import ModelDiagram, StrategyControls
from tunekit.widgets.views import RunsPanel


SMOOTH = 0.6
"""The live loss curve's smoothing (TensorBoard's default, as Compare's training curves)."""


CURVE_HEIGHT = 300
"""px of each live curve; the two sit side by side under Train and the status line, so that
they fit one 1280x800 screen with JupyterLab's file browser open. Each run beyond the first
adds a legend row (22 px), up to four."""

# the two live curves share the right column's width; plotly follows its container (autosize)
_CSS = ("<style>.tunekit-curves{width:100%;gap:4px}.tunekit-curves>*{flex:1 1 0;min-width:0;width:0}"
        ".tunekit-lab-right{min-width:0}.tunekit-lab-right .widget-html-content{white-space:normal}</style>")


def _legend_rows(fig: go.FigureWidget, runs: int) -> None:
    """The legend at the figure's bottom edge, one row per run (a run's name in words takes a
    row of a half-width chart), the x axis and its title above it: the legend never covers
    them, and each run beyond the first adds a row, up to four."""
    rows = min(max(runs, 1), 4)
    fig.layout.height = CURVE_HEIGHT + 22 * (rows - 1)
    fig.layout.margin.b = 64 + 22 * rows
    legend = fig.layout.legend  # (called inside the caller's batch_update: one message)
    legend.yref, legend.y, legend.yanchor, legend.orientation = "container", 0, "bottom", "h"


def _curve(title: str) -> go.FigureWidget:
    fig = go.FigureWidget(layout=dict(title=title, template="plotly_white", xaxis_title="step"))
    return projector_layout(fig, height=CURVE_HEIGHT, title_chars=40, margin={"l": 56, "r": 10, "b": 40})


def clock(seconds: float) -> str:
    """``0:12``, ``12:05``, ``1:02:05``."""
    seconds = int(round(max(0.0, seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def progress_label(step: int, total: int, elapsed_s: float) -> str:
    """``step 12/40 · 0:12 elapsed < 0:28 left`` (the time left from the mean time per step so far)."""
    left = elapsed_s / step * max(0, total - step) if step > 0 else 0.0
    return f"step {step}/{total} · {clock(elapsed_s)} elapsed < {clock(left)} left"


class Lab(W.VBox):
    """The notebook lab.

    The model and data pickers list the built-ins plus what was passed in code (a model
    directory or cached hub id; a DataFrame, CSV path or TextDataset); picking another loads
    it and rebuilds the diagram and controls for it.

    Args:
        model: built-in name, directory or cached hub id (a fresh copy trains each run).
        data: a TextDataset, DataFrame, CSV path or built-in name.
        runs_dir: where run records go (and are listed from, across kernel restarts).
        train_size, eval_size: the starting values of the "train examples" and "eval examples" boxes.
        task: ``"classification"`` (a head on the data's labels) or ``"causal_lm"`` (next-token
            loss on the data's texts; the second curve shows perplexity).
    """

    status = traitlets.Unicode("")
    running = traitlets.Bool(False)
    last_run = traitlets.Unicode("")
    #: seconds between curve updates sent to the browser (steps in between are buffered)
    curve_interval = traitlets.Float(0.25)
    #: seconds a displayed curve may leave an update unacknowledged before it is redrawn
    stale_after = traitlets.Float(4.0)

    def __init__(self, model: str = "minilm", data: Any = "rotten_tomatoes", runs_dir: str = DEFAULT_RUNS_DIR,
                 train_size: int = 500, eval_size: int = 300, task: str = "classification"):
        from tunekit.config import positive_int
        positive_int("train_size", train_size)
        positive_int("eval_size", eval_size)
        self.data = tk.data.load(data)
        self.model_source = model
        self.runs_dir = runs_dir
        self.task = task
        self.model = self._load(model, self.data)
        self.diagram = ModelDiagram(self.model)
        self.controls = StrategyControls(self.model, self.diagram)
        self.controls.train_size.value, self.controls.eval_size.value = train_size, eval_size
        self._status_kind = ""
        # pickers: the built-ins plus what was given in code (kept as given, loaded on demand)
        self._data_sources = {name: name for name in tk.data.BUILTIN}
        data_label = data if isinstance(data, str) else f"{self.data.name} (given in code)"
        self._data_sources[data_label] = data
        model = str(model)  # a Path works too
        models = list(BUILTIN_MODELS) + ([] if model in BUILTIN_MODELS else [model])
        self.model_w = W.Dropdown(options=models, value=model, description="model",
                                  style={"description_width": "50px"}, layout=W.Layout(width="330px"))
        self.data_w = W.Dropdown(options=list(self._data_sources), value=data_label, description="data",
                                 style={"description_width": "50px"}, layout=W.Layout(width="330px"))
        self._picked = (model, data_label)  # what is loaded now (a failed pick goes back to it)
        self._holding = False
        self.model_w.observe(lambda _c: self._pick(), "value")
        self.data_w.observe(lambda _c: self._pick(), "value")
        self.train_button = W.Button(description="Train", button_style="primary")
        self.stop_button = W.Button(description="Stop", button_style="warning", disabled=True)
        self.train_button.on_click(lambda _b: self.train())
        self.stop_button.on_click(lambda _b: self.stop())
        self.progress = W.IntProgress(value=0, min=0, max=1, description="",
                                      layout=W.Layout(width="300px", visibility="hidden"))
        self.progress_w = W.Label("", layout=W.Layout(visibility="hidden"))
        # two lines reserved (a longer message scrolls): a message never pushes the curves down
        self.status_w = W.HTML(layout=W.Layout(height="3em", overflow="auto"))
        self.loss_fig = self._watched(_curve(f"training loss (smoothed {SMOOTH:g}; raw faint)"))
        self.metric = tk.metrics.primary(task)  # the second curve: accuracy, or perplexity for a causal LM
        self.acc_fig = self._watched(_curve(f"validation {self.metric.title}"))
        self.runs = RunsPanel(runs_dir, self.data)
        self._trainer: Optional[tk.Trainer] = None
        self._lab_runs: list = []  # (run record, index of its curve) for every run drawn here
        self._thread: Optional[threading.Thread] = None
        self._pending: list[tuple[int, float]] = []  # (step, loss) not yet drawn
        self._drawn_at = 0.0
        self._curve_lock = threading.RLock()  # the worker, a timer and the kernel all touch the curves
        self.curve_redraws = 0  # stuck figures replaced so far (see redraw_stale_curves)
        self.header = W.HTML()
        self._describe()
        # Train, the status line and both curves side by side first (one 1280x800 screen with the
        # file browser open holds them), then the model diagram and the strategy's controls side by side
        self._left = left = W.HBox([self.diagram, self.controls], layout=W.Layout(flex_flow="row wrap",
                                                                                  gap="16px"))
        self._curves = W.HBox([self.loss_fig, self.acc_fig])
        self._curves.add_class("tunekit-curves")
        right = W.VBox([W.HBox([self.train_button, self.stop_button, self.progress, self.progress_w],
                               layout=W.Layout(flex_flow="row wrap")), self.status_w,
                        self._curves], layout=W.Layout(width="100%", min_width="0"))
        right.add_class("tunekit-lab-right")
        super().__init__([W.HTML(_CSS + "<h3>tunekit lab</h3>"), W.HBox([self.model_w, self.data_w]), self.header,
                          right, left, self.runs])
        self.observe(lambda c: setattr(self.status_w, "value", c["new"]), "status")
        self._follow(self.controls)

    def _follow(self, controls: StrategyControls) -> None:
        """Train is enabled only while the controls are valid; a strategy switch clears an old error."""
        controls.observe(lambda _c: self._enable_train(), "problem")
        controls.observe(lambda _c: self._clear_error(), "kind")
        controls.observe(lambda _c: self._clear_error(refused_only=True), "problem")
        self._enable_train()

    def _enable_train(self) -> None:
        self.train_button.disabled = self.running or bool(self.controls.problem)
        self.train_button.tooltip = self.controls.problem

    def _clear_error(self, refused_only: bool = False) -> None:
        if self.running or self._status_kind not in ("error", "warn"):
            return
        if refused_only and "Not started" not in self.status:
            return
        self.status, self._status_kind = "", ""

    def _load(self, source: str, data, seed: int = 0):
        return tk.models.load_for(source, data, self.task, seed)

    def _describe(self) -> None:
        self.header.value = (f"<p>{html.escape(repr(self.data))}<br>model: {html.escape(str(self.model_source))} "
                             f"({self.model.num_blocks} blocks, "
                             + (f"pooling {self.model.pooling})</p>" if self.task == "classification"
                                else "causal language modelling)</p>"))

    # ----- actions ----------------------------------------------------------------------------------
    def select(self, model: Optional[str] = None, data: Optional[str] = None) -> bool:
        """Switch to another model and/or data set (names as listed in the pickers); True if
        they are what the lab holds now.

        Loads them (a new data set brings new labels, so the model's head is rebuilt too),
        then rebuilds the diagram and controls, keeping the hyper-parameters set so far.
        Refused while a run trains; a failure is said in the status line and nothing changes."""
        wanted = (model if model is not None else self._picked[0], data if data is not None else self._picked[1])
        for value, picker, what in ((model, self.model_w, "model"), (data, self.data_w, "data")):
            if value is not None and value not in picker.options:
                self._say(f"Unknown {what} {value!r}: this lab offers {list(picker.options)} "
                          f"(tk.Lab({what}=...) opens another).", "error")
                return False
        self._holding = True  # one load for both changes
        try:
            if model is not None:
                self.model_w.value = model
            if data is not None:
                self.data_w.value = data
        finally:
            self._holding = False
        self._pick()
        return self._picked == wanted

    def _pick(self) -> None:
        model, data_label = self.model_w.value, self.data_w.value
        if self._holding or (model, data_label) == self._picked:
            return
        if self.running:
            self._say("A run is training: stop it before switching the model or the data.", "warn")
            self.model_w.value, self.data_w.value = self._picked
            return
        self._say(f"Loading {model} with {data_label} ..."
                  + (" (the first time converts SmolLM2's GGUF file: about half a minute)"
                     if model == "smollm2" else ""), "info")
        try:
            data = tk.data.load(self._data_sources[data_label])
            loaded = self._load(model, data)
            diagram = ModelDiagram(loaded)
            controls = StrategyControls(loaded, diagram)
        except Exception as e:  # noqa: BLE001 - a tunekit error in words, anything else named; never raised at a click
            said = str(e) if isinstance(e, tk.TunekitError) else f"{type(e).__name__}: {e}"
            self._say(f"Could not load {model} with {data_label}: {said}", "error")
            self.model_w.value, self.data_w.value = self._picked
            return
        controls.take_settings(self.controls)
        self.data, self.model, self.model_source = data, loaded, model
        self.diagram, self.controls = diagram, controls
        self._left.children = (diagram, controls)
        self._follow(controls)
        self.runs.data = data
        self._picked = (model, data_label)
        self._describe()
        self._say(f"Loaded {model} ({loaded.num_blocks} blocks) with {data.name} "
                  + (f"({len(data.label_names)} classes)." if self.task == "classification" else "(its texts)."),
                  "ok")

    def train(self, wait: bool = False) -> bool:
        """Start a run in a worker thread (``wait=True`` joins it). Refused while one runs."""
        if self.running:
            self._say("A run is already training: stop it first (a second Train is not queued).", "warn")
            return False
        if self.controls.problem:
            return self._refuse(self.controls.problem)
        try:
            strategy = self.controls.strategy()
            overrides = self.controls.overrides()
            model = self._load(self.model_source, self.data, seed=overrides["seed"])
            trainer = tk.Trainer(model, self.data, strategy, runs_dir=self.runs_dir, progress=False, **overrides)
            for ph in strategy.phases():
                ph.strategy.count(model)
        except Exception as e:  # noqa: BLE001 - the Train button never raises out of its click handler
            return self._refuse(str(e) if isinstance(e, tk.TunekitError) else f"{type(e).__name__}: {e}")
        self._trainer = trainer
        self._start_curves(strategy.label)
        trainer.add_callback("train_start", self._on_start)
        trainer.add_callback("step", self._on_step)
        trainer.add_callback("eval", self._on_eval)
        trainer.add_callback("memory", lambda ev: self.controls.show_measured(ev.payload))
        self.running = True
        self.train_button.disabled, self.stop_button.disabled = True, False
        self.model_w.disabled = self.data_w.disabled = True
        self._say(f"Training {strategy.label} ...", "info")
        self._thread = threading.Thread(target=self._work, name="tunekit-train", daemon=True)
        self._thread.start()
        if wait:
            self.wait()
        return True

    def _refuse(self, said: str) -> bool:
        """Say why a Train did not start; the last run's progress goes away with it."""
        self._show_progress(False)
        self._say(f"Not started: {said}", "error")
        return False

    def _show_progress(self, shown: bool) -> None:
        if not shown:
            self.progress.value, self.progress_w.value = 0, ""
        self.progress.layout.visibility = self.progress_w.layout.visibility = "visible" if shown else "hidden"

    def stop(self) -> None:
        """Ask the running run to stop at its next step (its partial record is kept)."""
        if self._trainer is not None and self.running:
            self._trainer.stop()
            self._say("Stopping at the next step ...", "info")

    def wait(self, timeout: Optional[float] = None) -> None:
        """Block until the current run has finished (for scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)

    # ----- worker thread ----------------------------------------------------------------------------
    def _work(self) -> None:
        trainer = self._trainer
        try:
            run = trainer.run()
            s = run.summary
            acc = s.get(f"val_{self.metric.key}")
            acc = f", validation {self.metric.title} {acc:{self.metric.fmt}}" if isinstance(acc, float) else ""
            kind = "ok" if run.status == "completed" else "warn"
            wall = s.get("wall_time_s")
            wall = (f"{wall:.1f} s" if wall < 60 else clock(wall)) if isinstance(wall, (int, float)) else "? s"
            steps, total = s.get("steps"), self.progress.max
            if run.status == "completed":
                self._say(f"Run {run.name} completed{acc} ({steps} steps, {wall}).", kind)
            else:
                self._say(f"Run {run.name} {run.status} at step {steps} of {total}{acc} ({wall}).", kind)
            self.last_run = run.name
        except tk.engine.TrainingError as e:
            self._say(f"Run failed: {e}", "error")
            self.last_run = e.run.name if e.run is not None else ""
        except Exception as e:  # noqa: BLE001 - show every failure in the app, in words
            self._say(f"Run failed: {type(e).__name__}: {e}", "error")
        finally:
            self._draw_pending()
            self.running = False
            self.stop_button.disabled = True
            self._enable_train()
            self.model_w.disabled = self.data_w.disabled = False
            self.runs.refresh()
            # the browser acknowledges the last update within a moment; check once it had the time
            timer = threading.Timer(self.stale_after + 0.5, self.redraw_stale_curves)
            timer.daemon = True
            timer.start()

    def _start_curves(self, label: str) -> None:
        n = len(self.acc_fig.data)  # runs trained in this lab so far
        label = f"{label} #{n + 1}"
        colorway = pio.templates["plotly_white"].layout.colorway
        color = colorway[n % len(colorway)]
        self.redraw_stale_curves()
        with self._curve_lock:
            with self.loss_fig.batch_update():  # the raw loss faint behind its smoothed line, as in Compare
                _legend_rows(self.loss_fig, n + 1)
                self.loss_fig.add_scatter(x=[], y=[], mode="lines", name=label, legendgroup=label, showlegend=False,
                                          opacity=0.25, hoverinfo="skip", line={"color": color, "width": 1})
                self.loss_fig.add_scatter(x=[], y=[], mode="lines", name=label, legendgroup=label,
                                          line={"color": color, "width": 2})
            with self.acc_fig.batch_update():
                _legend_rows(self.acc_fig, n + 1)
                self.acc_fig.add_scatter(x=[], y=[], mode="lines+markers", name=label, line={"color": color})
            self._sent(self.loss_fig)
            self._sent(self.acc_fig)
        self._show_progress(False)
        self._show_progress(True)
        self._pending, self._drawn_at = [], 0.0

    def _on_start(self, ev) -> None:
        try:
            self._name_curves(ev.trainer.run_record)
        except Exception as e:  # noqa: BLE001 - naming a curve must never fail the run
            warnings.warn(f"the live curves keep their first names: {type(e).__name__}: {e}")
        self.progress.max = max(1, ev.payload["total_steps"])
        self.progress_w.value = progress_label(0, self.progress.max, 0.0)
        p = ev.payload["params"]
        self._say(f"Training {ev.payload['run']}: {p['trainable']:,} of {p['total']:,} "
                  f"parameters train ({p['percent']:.3g}%) on {ev.payload['device']}.", "info")

    def _name_curves(self, run) -> None:
        """The new run's live curves take the name and colour it has in every other view (its
        record exists once training starts); earlier curves of look-alikes are renamed too."""
        if run is None:
            return
        self._lab_runs.append((run, len(self.acc_fig.data) - 1))  # its curves are the newest
        names = plots.display_names([r for r, _ in self._lab_runs])
        with self._curve_lock:
            with self.loss_fig.batch_update():
                for r, i in self._lab_runs:  # two loss traces per curve: raw (faint) and smoothed
                    for t in self.loss_fig.data[2 * i:2 * i + 2]:
                        t.name, t.legendgroup, t.line.color = names[r.name], r.name, plots.run_color(r)
            with self.acc_fig.batch_update():
                for r, i in self._lab_runs:
                    t = self.acc_fig.data[i]
                    t.name, t.legendgroup, t.line.color = names[r.name], r.name, plots.run_color(r)
            if self.metric.key in ("accuracy", "macro_f1"):  # not in batch_update: add_hline fails there
                n = run.config.get("data", {}).get("validation_used")
                plots.score_axis(self.acc_fig, self.metric.key, num_labels=len(self.data.label_names), n=n)
                # a narrow chart: the evaluation-set size goes to the title, the axis keeps a short name
                title = score_title(self.metric.key, [n] if isinstance(n, int) else [])
                self.acc_fig.layout.title.text = wrap(title, 30)
                self.acc_fig.layout.yaxis.title.text = f"{self.metric.title} (dashed: chance)"
                lines = self.acc_fig.layout.title.text.count("<br>") + 1
                self.acc_fig.layout.margin.t = 30 + 26 * lines
                self.acc_fig.layout.title.pad.t = 8 + 13 * (lines - 1)  # as projector_layout places it

    def _on_step(self, ev) -> None:
        step = ev.payload["step"]
        self.progress.value = min(step, self.progress.max)
        self.progress_w.value = progress_label(step, self.progress.max, ev.payload["elapsed_s"])
        self._pending.append((step, ev.payload["loss"]))
        if time.monotonic() - self._drawn_at >= self.curve_interval:
            self._draw_pending()

    def _draw_pending(self) -> None:
        """Send the buffered steps to the loss curve in one update (at most every
        ``curve_interval`` seconds: a long GPU run does not flood the browser with one
        message, and one copy of the whole trace, per step)."""
        pending, self._pending = self._pending, []
        self._drawn_at = time.monotonic()
        if not pending or not self.loss_fig.data:
            return
        steps, losses = zip(*pending)
        self._extend("loss_fig", steps, losses)

    def _extend(self, name: str, xs: tuple, ys: tuple) -> None:
        """Append points to the newest run of curve figure ``name`` in one browser update (the
        loss: to its raw trace, and its smoothed trace redrawn from the raw one)."""
        with self._curve_lock:  # the figure object may be replaced (redraw_stale_curves): look it up here
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

    def stale_curves(self) -> list[str]:
        """Names of the curve figures ("loss_fig", "acc_fig") that a displayed view has left
        with an update unacknowledged for over ``stale_after`` seconds."""
        now = time.monotonic()
        return [name for name in ("loss_fig", "acc_fig")
                if (getattr(self, name)._view_count or 0) > 0
                and getattr(self, name)._tunekit_unacked_since is not None
                and now - getattr(self, name)._tunekit_unacked_since > self.stale_after]

    def redraw_stale_curves(self) -> list[str]:
        """Replace each stuck curve figure by a fresh FigureWidget with the same data and layout;
        returns the names replaced (called at each evaluation and after each run)."""
        with self._curve_lock:
            stale = self.stale_curves()
            for name in stale:
                old = getattr(self, name)
                new = self._watched(go.FigureWidget(old))
                setattr(self, name, new)
                self._curves.children = tuple(new if c is old else c for c in self._curves.children)
                old.close()
                self.curve_redraws += 1
        return stale

    def _on_eval(self, ev) -> None:
        self.redraw_stale_curves()
        self._draw_pending()
        self._extend("acc_fig", (ev.payload["step"],), (ev.payload[f"val_{self.metric.key}"],))

    def _say(self, message: str, kind: str = "info") -> None:
        """Show ``message`` (plain text, escaped here) in the status line."""
        color = {"info": "#333", "ok": "#176f2c", "warn": "#8a5a00", "error": "#b00020"}[kind]
        self._status_kind = kind
        self.status = f'<span class="tunekit-status tunekit-{kind}" style="color:{color}">{html.escape(message)}</span>'
