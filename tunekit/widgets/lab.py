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
import warnings
from typing import Any, Optional

import ipywidgets as W
import traitlets

import tunekit as tk
from tunekit import plots
from tunekit.config import DEFAULT_RUNS_DIR, positive_int
from tunekit.plots.rates import phase_joins
from tunekit.sources import BUILTIN_MODELS
from tunekit.strategies.base import phase_steps
from tunekit.widgets.controls import ModelDiagram, StrategyControls, lr_label
from tunekit.widgets.live import CSS as CURVES_CSS
from tunekit.widgets.live import SMOOTH, LiveCurves  # noqa: F401  (SMOOTH: the lab's smoothing, as before)
from tunekit.widgets.sizer import FitFigures
from tunekit.widgets.views import RunsPanel
from tunekit.widgets.words import clock, end_label, progress_label  # noqa: F401  (the lab's words, as before)

PROJECTOR_SCALE = 1.25
"""The lab's projector switch: its text and its figures' text this many times their size (13 px
JupyterLab text becomes 16 px; figures' 14 px, 17.5)."""

_CSS = ("<style>.tunekit-lab .widget-html-content{white-space:normal}"
        ".tunekit-lab h3{margin:0 16px 0 0}"
        # the projector switch: JupyterLab's font-size variables, inside the lab only (they inherit)
        ".tunekit-projector{--jp-widgets-font-size:16px;--jp-ui-font-size1:16px;--jp-content-font-size1:16px;"
        "font-size:16px}.tunekit-projector .tunekit-legend{font-size:17.5px}"
        ".tunekit-projector .widget-label{min-width:max-content}"
        ".tunekit-samples table{border-collapse:collapse;width:100%;table-layout:fixed}"
        ".tunekit-samples td,.tunekit-samples th{border-top:1px solid #ddd;padding:3px 6px;text-align:left;"
        "vertical-align:top}.tunekit-samples th:last-child,.tunekit-samples td:last-child{width:5em}"
        ".tunekit-samples .tk-src{width:45%;color:#555}</style>" + CURVES_CSS)


def planned_steps(strategy, overrides: dict, data, model) -> int:
    """The optimizer steps a run of ``strategy`` will take with the controls' ``overrides`` on
    ``data``, as the engine counts them (its ``train_start`` event says the same): the batches of
    the ``train_size`` examples, over every phase (its epochs, or its own steps)."""
    examples = min(overrides["train_size"], len(data.train))
    per_epoch = -(-examples // overrides["batch_size"])
    phases = strategy.phases_for(model, per_epoch, overrides["epochs"])
    return max(1, sum(phase_steps(phases, per_epoch, overrides["epochs"])))


TASKS = ("classification", "causal_lm", "sft", "seq2seq")
"""The task picker's choices (tunekit.tasks' registry, in the order a course meets them)."""
PAIR_TASKS = ("sft", "seq2seq")
PAIRS_DATA, CLASSES_DATA = "bbc_headlines", "rotten_tomatoes"  # what a task switch picks when the data cannot serve
SAMPLES_SHOWN = 4  # generated examples shown beside their references after each evaluation
SOURCE_CHARS = 220


def samples_html(samples: list[dict], step: Optional[int] = None, shown: int = SAMPLES_SHOWN) -> str:
    """A text-to-text run's latest evaluation as the lab shows it: the first ``shown`` sources
    (cut to :data:`SOURCE_CHARS` characters), what the model wrote and the reference, with that
    example's ROUGE-L; all text escaped."""
    rows = []
    for s in samples[:shown]:
        source = s.get("source", "")
        source = source if len(source) <= SOURCE_CHARS else source[:SOURCE_CHARS].rsplit(" ", 1)[0] + " ..."
        score = s.get("rougeL")
        written = s.get("generated", "")
        written = (f"<b>{html.escape(written)}</b>" if written.strip() else
                   "<i style='color:#888'>(nothing: its first token was the end token)</i>")
        rows.append(f"<tr><td class='tk-src'>{html.escape(source)}</td><td>{written}"
                    f"</td><td>{html.escape(s.get('reference', ''))}</td>"
                    f"<td>{'' if score is None else f'{score:.2f}'}</td></tr>")
    when = "" if step is None else f" at step {step}"
    return ("<div class='tunekit-samples'><b>What the model wrote" + when + f"</b> (the first {len(rows)} of "
            f"{len(samples)} validation examples it wrote for)<table><thead><tr><th>source</th><th>written</th>"
            "<th>reference</th><th>ROUGE-L</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")


def _summary_of(run) -> dict:
    """A failed run's summary ({} when it has no record, or the record cannot be read)."""
    try:
        return run.summary if run is not None else {}
    except Exception:  # noqa: BLE001 - the progress label falls back to the last step it showed
        return {}


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
        task: ``"classification"`` (a head on the data's labels), ``"causal_lm"`` (next-token
            loss on the data's texts; the second curve shows perplexity), ``"sft"`` (a decoder on
            (source, target) pairs, the loss on the response) or ``"seq2seq"`` (an encoder-decoder
            on pairs); the text-to-text tasks' second curve shows ROUGE-L, and what the model
            wrote at each evaluation is shown beside the references. The task picker switches it
            (to pairs data when the data holds none, and back).
        task_options: a text-to-text task's options (``instruction``, ``chat_template``,
            ``generation``: see :func:`tunekit.load_model`).
        projector: start with the projector switch on (larger text in the lab and its figures).
    """

    status = traitlets.Unicode("")
    running = traitlets.Bool(False)
    last_run = traitlets.Unicode("")
    #: the projector switch: the lab's text and its figures' text :data:`PROJECTOR_SCALE` times larger
    projector = traitlets.Bool(False)

    def __init__(self, model: str = "minilm", data: Any = "rotten_tomatoes", runs_dir: str = DEFAULT_RUNS_DIR,
                 train_size: int = 500, eval_size: int = 300, task: str = "classification", projector: bool = False,
                 task_options: Optional[dict] = None):
        positive_int("train_size", train_size)
        positive_int("eval_size", eval_size)
        if task not in TASKS:
            raise tk.ConfigError(f"task={task!r} is not one the lab trains; choose one of {list(TASKS)}")
        self.task_options = dict(task_options or {})
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
        # the pickers share the title's row with the projector switch: they shrink before anything wraps
        # (bases that add up, with the title, the task picker and the projector switch, to less than the
        # cell's 860 px at 1280x800 with the file browser open: one row)
        picker = W.Layout(width="auto", flex="1 1 190px", max_width="330px")
        self.model_w = W.Dropdown(options=models, value=model, description="model",
                                  style={"description_width": "50px"}, layout=picker)
        self.data_w = W.Dropdown(options=list(self._data_sources), value=data_label, description="data",
                                 style={"description_width": "50px"}, layout=picker)
        self.task_w = W.Dropdown(options=list(TASKS), value=task, description="task",
                                 style={"description_width": "40px"},
                                 layout=W.Layout(width="auto", flex="0 1 180px", max_width="200px"))
        self._picked = (model, data_label, task)  # what is loaded now (a failed pick goes back to it)
        self._holding = False
        for w in (self.model_w, self.data_w, self.task_w):
            w.observe(lambda _c: self._pick(), "value")
        self.train_button = W.Button(description="Train", button_style="primary")
        self.stop_button = W.Button(description="Stop", button_style="warning", disabled=True)
        self.train_button.on_click(lambda _b: self.train())
        self.stop_button.on_click(lambda _b: self.stop())
        self.progress = W.IntProgress(value=0, min=0, max=1, description="",
                                      layout=W.Layout(width="200px", visibility="hidden"))
        self.progress_w = W.Label("", layout=W.Layout(visibility="hidden"))
        # two lines reserved (a longer message scrolls): a message never pushes the curves down
        self.status_w = W.HTML(layout=W.Layout(height="2.8em", overflow="auto"))
        self.metric = tk.metrics.primary(task)  # the second curve: accuracy, perplexity or ROUGE-L
        self.live = LiveCurves(self.metric, len(self.data.label_names) if task == "classification" else None)
        self.samples_w = W.HTML("")  # a text-to-text run's generated examples beside their references
        self.runs = RunsPanel(runs_dir, self.data, str(model), busy=lambda: self.running)
        self._trainer: Optional[tk.Trainer] = None
        self._thread: Optional[threading.Thread] = None
        self._finder: Optional[threading.Thread] = None
        self.finding = False
        self.header = W.HTML()
        self._describe()
        # top to bottom, as a run is set up and watched: the model and data, the model diagram (one
        # row of layers), the strategy's controls (a grid), Train and the status line, both live curves
        # side by side; all of it on one 1280x800 screen with the file browser open. Then the runs.
        self._left = W.VBox([self.diagram, self.controls])
        train_row = W.HBox([self.train_button, self.stop_button, self.progress, self.progress_w],
                           layout=W.Layout(flex_flow="row wrap", align_items="center"))
        self.projector_w = W.ToggleButton(False, description="projector", layout=W.Layout(width="auto"),
                                          tooltip="larger text in the lab and its figures, for a room")
        traitlets.link((self.projector_w, "value"), (self, "projector"))
        title_row = W.HBox([W.HTML("<h3>tunekit lab</h3>"), self.model_w, self.data_w, self.task_w,
                            self.projector_w],
                           layout=W.Layout(flex_flow="row wrap", align_items="center"))
        super().__init__([W.HTML(_CSS), FitFigures(), title_row,
                          self.header, self._left, train_row, self.status_w, self.live, self.samples_w, self.runs])
        self.add_class("tunekit-lab")
        self.observe(lambda c: setattr(self.status_w, "value", c["new"]), "status")
        self._follow(self.controls)
        self.projector = bool(projector)

    @traitlets.observe("projector")
    def _projector_changed(self, change) -> None:
        """The projector switch: the lab's text and every figure's text :data:`PROJECTOR_SCALE`
        times larger (or back). The lab stays one 1280x800 screen with the file browser closed, as
        a room sees it (with it open, the longer lines wrap and the live legend falls below)."""
        on = bool(change["new"])
        (self.add_class if on else self.remove_class)("tunekit-projector")
        self.projector_w.button_style = "info" if on else ""  # pressed, and seen to be
        scale = PROJECTOR_SCALE if on else 1.0
        self.live.set_text_scale(scale)
        self.runs.set_text_scale(scale)

    # ----- the live curves (tunekit.widgets.live), as the lab has always offered them ---------------
    loss_fig = property(lambda self: self.live.loss_fig, doc="The live training-loss FigureWidget.")
    acc_fig = property(lambda self: self.live.acc_fig, doc="The live validation-metric FigureWidget.")
    curve_redraws = property(lambda self: self.live.redraws, doc="Stuck curve figures replaced so far.")

    @property
    def curve_interval(self) -> float:
        """Seconds between curve updates sent to the browser (steps in between are buffered)."""
        return self.live.curve_interval

    @curve_interval.setter
    def curve_interval(self, value: float) -> None:
        self.live.curve_interval = value

    @property
    def stale_after(self) -> float:
        """Seconds a displayed curve may leave an update unacknowledged before it is redrawn."""
        return self.live.stale_after

    @stale_after.setter
    def stale_after(self, value: float) -> None:
        self.live.stale_after = value

    def stale_curves(self) -> list[str]:
        """See :meth:`tunekit.widgets.live.LiveCurves.stale`."""
        return self.live.stale()

    def redraw_stale_curves(self) -> list[str]:
        """See :meth:`tunekit.widgets.live.LiveCurves.redraw_stale`."""
        return self.live.redraw_stale()

    def _follow(self, controls: StrategyControls) -> None:
        """Train is enabled only while the controls are valid; a strategy switch clears an old error."""
        controls.find.on_click(lambda _b: self.find_lr())
        controls.observe(lambda _c: self._enable_train(), "problem")
        controls.observe(lambda _c: self._clear_error(), "kind")
        controls.observe(lambda _c: self._clear_error(refused_only=True), "problem")
        self._enable_train()

    def _enable_train(self) -> None:
        self.train_button.disabled = self.running or self.finding or bool(self.controls.problem)
        self.train_button.tooltip = self.controls.problem
        self.controls.find.disabled = self.running or self.finding or bool(self.controls.problem)

    def _clear_error(self, refused_only: bool = False) -> None:
        if self.running or self._status_kind not in ("error", "warn"):
            return
        if refused_only and "Not started" not in self.status:
            return
        self.status, self._status_kind = "", ""

    def _load(self, source: str, data, seed: int = 0, task: Optional[str] = None):
        task = task or self.task
        return tk.models.load_for(source, data, task, seed, self.task_options if task in PAIR_TASKS else None)

    def _describe(self) -> None:
        d = self.data
        what = (f"{len(d.label_names)} classes: {', '.join(map(str, d.label_names[:6]))}"
                + (" ..." if len(d.label_names) > 6 else "") if self.task == "classification"
                else "(source, target) pairs" if self.task in PAIR_TASKS else "its texts")
        doing = {"classification": f"{self.model.pooling} pooling", "causal_lm": "causal language modelling",
                 "sft": "supervised fine-tuning: the loss on the response, ROUGE on what it writes",
                 "seq2seq": "sequence to sequence: encoder then decoder, ROUGE on what it writes"}[self.task]
        self.header.value = (f"<div>{html.escape(str(self.model_source))}: {self.model.num_blocks} blocks, "
                             + html.escape(doing)
                             + f" · {html.escape(d.name)}: {len(d.train):,} train, {len(d.validation):,} validation "
                             f"examples ({html.escape(what)})</div>")

    # ----- actions ----------------------------------------------------------------------------------
    def select(self, model: Optional[str] = None, data: Optional[str] = None, task: Optional[str] = None) -> bool:
        """Switch to another model, data set and/or task (names as listed in the pickers); True
        if they are what the lab holds now.

        Loads them (a new data set brings new labels, so the model's head is rebuilt too),
        then rebuilds the diagram and controls, keeping the hyper-parameters set so far. A
        text-to-text task on data without pairs takes the built-in headline pairs, and
        classification on pairs the built-in reviews (said in the status line).
        Refused while a run trains; a failure is said in the status line and nothing changes."""
        for value, picker, what in ((model, self.model_w, "model"), (data, self.data_w, "data"),
                                    (task, self.task_w, "task")):
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
            if task is not None:
                self.task_w.value = task
        finally:
            self._holding = False
        self._pick()
        return all(v is None or v == got for v, got in zip((model, data, task), self._picked))

    def _put_back(self) -> None:
        """The pickers show what is loaded again (after a refused or failed pick)."""
        self._holding = True
        try:
            self.model_w.value, self.data_w.value, self.task_w.value = self._picked
        finally:
            self._holding = False

    def _pick(self) -> None:
        model, data_label, task = self.model_w.value, self.data_w.value, self.task_w.value
        if self._holding or (model, data_label, task) == self._picked:
            return
        if self.running or self.runs.experiments.running:
            self._say("A run is training: stop it before switching the model, the data or the task.", "warn")
            self._put_back()
            return
        swapped = ""
        try:
            data = tk.data.load(self._data_sources[data_label])
            pairs = bool(getattr(data, "pairs", False))
            if pairs != (task in PAIR_TASKS) and task != "causal_lm":
                if task != self._picked[2]:  # the task was picked: the data follows it
                    other = PAIRS_DATA if task in PAIR_TASKS else CLASSES_DATA
                    swapped = (f" ({task} {'trains on pairs' if task in PAIR_TASKS else 'needs classes'}: "
                               f"{data.name} {'has none' if task in PAIR_TASKS else 'holds pairs'}, so the data is "
                               f"now {other})")
                    data, data_label = tk.data.load(other), other
                else:  # the data was picked: the task follows it
                    task = "sft" if pairs else "classification"
                    swapped = (f" ({data.name} {'holds (source, target) pairs' if pairs else 'holds classes'}, so the "
                               f"task is now {task})")
            self._say(f"Loading {model} for {task} with {data_label} ...{swapped}"
                      + (" (the first time converts SmolLM2's GGUF file: about half a minute)"
                         if model == "smollm2" else ""), "info")
            loaded = self._load(model, data, task=task)
            diagram = ModelDiagram(loaded)
            controls = StrategyControls(loaded, diagram)
        except Exception as e:  # noqa: BLE001 - a tunekit error in words, anything else named; never raised at a click
            said = str(e) if isinstance(e, tk.TunekitError) else f"{type(e).__name__}: {e}"
            self._say(f"Could not load {model} for {task} with {data_label}: {said}", "error")
            self._put_back()
            return
        controls.take_settings(self.controls)
        self.data, self.model, self.model_source = data, loaded, model
        self.diagram, self.controls = diagram, controls
        self._left.children = (diagram, controls)
        self._follow(controls)
        self.runs.data = data
        self.runs.experiments.model_source = str(model)
        if task != self.task:
            self._set_task(task, data)
        self.live.num_labels = len(data.label_names) if self.task == "classification" else None
        self._picked = (model, data_label, task)
        self._put_back()
        self._describe()
        what = (f"({len(data.label_names)} classes)" if task == "classification"
                else "(its pairs)" if task in PAIR_TASKS else "(its texts)")
        self._say(f"Loaded {model} ({loaded.num_blocks} blocks) for {task} with {data.name} {what}.{swapped}", "ok")

    def _set_task(self, task: str, data) -> None:
        """Another task: its metric on new live curves (a curve of another metric would mislead
        beside them), and no generated examples until its first evaluation."""
        self.task = task
        metric = tk.metrics.primary(task)
        if metric.key != self.metric.key:
            self.metric = metric
            live = LiveCurves(metric, len(data.label_names) if task == "classification" else None)
            live.set_text_scale(PROJECTOR_SCALE if self.projector else 1.0)
            self.live = live
            self.children = tuple(live if isinstance(c, LiveCurves) else c for c in self.children)
        self.samples_w.value = ""

    # ----- the learning-rate finder ----------------------------------------------------------------
    FINDER_STEPS = 100

    def find_lr(self, wait: bool = False) -> bool:
        """The Find button: :func:`tunekit.lr_find` for the strategy the controls describe, on a
        copy of the lab's model, in a worker thread (``wait=True`` joins it); its curve is drawn in
        the learning-rate panel and the rate set to its suggestion. Refused while a run trains."""
        if self.running or self.finding:
            self._say("Wait for the run (or the sweep) to finish: the finder trains too.", "warn")
            return False
        if self.controls.problem:
            return self._refuse(self.controls.problem)
        try:
            strategy = self.controls.strategy()
            settings = {k: v for k, v in self.controls.rate_settings().items()
                        if k in ("lr_decay", "batch_size", "train_size", "seed")}
        except tk.TunekitError as e:
            return self._refuse(str(e))
        self.finding = True
        self._enable_train()
        self._say(f"Finding a learning rate for {strategy.label}: {self.FINDER_STEPS} steps on a copy of the "
                  f"model, the rate growing at each ...", "info")

        def work():
            try:
                found = tk.lr_find(self.model, self.data, strategy, steps=self.FINDER_STEPS, **settings)
                self.controls.show_finder(found)
                if found.suggestion:
                    # one line at 1280 px: how the sweep ended is in its figure's title, above
                    self._say(f"The finder suggests {found.suggestion:.1e} for {strategy.label} (rule: {found.rule}); "
                              f"the rate is set to {lr_label(self.controls.lr.value)}, the nearest on the slider.",
                              "ok")
                else:
                    self._say(f"The finder found no falling stretch to suggest a rate from ({found.stopped}); the "
                              f"rate is unchanged.", "warn")
            except Exception as e:  # noqa: BLE001 - the finder's thread never raises into the kernel
                self._say(f"The finder failed: {e if isinstance(e, tk.TunekitError) else f'{type(e).__name__}: {e}'}",
                          "error")
            finally:
                self.finding = False
                self._enable_train()
        self._finder = threading.Thread(target=work, name="tunekit-lr-find", daemon=True)
        self._finder.start()
        if wait:
            self._finder.join()
        return True

    def train(self, wait: bool = False) -> bool:
        """Start a run in a worker thread (``wait=True`` joins it). Refused while one runs."""
        if self.finding:
            self._say("The finder is sweeping: Train when it is done.", "warn")
            return False
        if self.running:
            self._say("A run is already training: stop it first (a second Train is not queued).", "warn")
            return False
        if self.runs.experiments.running:
            self._say("An experiment is training (Experiments tab): stop it or wait for it; two trainings "
                      "slow each other down.", "warn")
            return False
        if self.controls.problem:
            return self._refuse(self.controls.problem)
        try:
            strategy = self.controls.strategy()
            overrides = self.controls.overrides()
            self._start_progress(planned_steps(strategy, overrides, self.data, self.model))  # before the slow load
            model = self._load(self.model_source, self.data, seed=overrides["seed"])
            trainer = tk.Trainer(model, self.data, strategy, runs_dir=self.runs_dir, progress=False, **overrides)
            for ph in strategy.phases():
                ph.strategy.count(model)
        except Exception as e:  # noqa: BLE001 - the Train button never raises out of its click handler
            return self._refuse(str(e) if isinstance(e, tk.TunekitError) else f"{type(e).__name__}: {e}")
        self._trainer = trainer
        number = plots.next_number(self.runs_dir)  # the number (and so the colour) its record will get
        self.live.start(f"#{number} {strategy.label}", plots.color_of(number))
        trainer.add_callback("train_start", self._on_start)
        trainer.add_callback("step", self._on_step)
        trainer.add_callback("phase_start", self._on_phase)
        self._phases = []
        trainer.add_callback("eval", self._on_eval)
        trainer.add_callback("memory", lambda ev: self.controls.show_measured(ev.payload))
        self.running = True
        self.train_button.disabled, self.stop_button.disabled = True, False
        self.model_w.disabled = self.data_w.disabled = self.task_w.disabled = True
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

    def _start_progress(self, total: int) -> None:
        """A new run's progress: the bar empty over its ``total`` steps, the label at step 0 (nothing
        of the last run's count or time is left)."""
        self.progress.value = 0
        self.progress.max = max(1, total)
        self.progress_w.value = progress_label(0, self.progress.max, 0.0)
        self._show_progress(True)

    def _end_progress(self, status: str, steps: Optional[int] = None, wall_s: Optional[float] = None) -> None:
        """A finished run's progress: where it ended, and no time-left estimate. ``steps``: those the
        run took (default: the last step the bar showed)."""
        steps = self.progress.value if not isinstance(steps, int) else steps
        self.progress.value = min(steps, self.progress.max)
        self.progress_w.value = end_label(status, steps, self.progress.max, wall_s)

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
            name = plots.display_names([run])[run.name]
            if run.status == "completed":
                self._say(f"Run {name} completed{acc} ({steps} steps, {wall}).", kind)
            else:
                self._say(f"Run {name} {run.status} at step {steps} of {total}{acc} ({wall}).", kind)
            self._end_progress(run.status, steps, s.get("wall_time_s"))
            self.live.finished(run.status)
            self.last_run = run.name
        except tk.engine.TrainingError as e:
            self._say(f"Run failed: {e}", "error")
            s = _summary_of(e.run)
            self._end_progress("failed", s.get("steps"), s.get("wall_time_s"))
            self.live.finished("failed")
            self.last_run = e.run.name if e.run is not None else ""
        except Exception as e:  # noqa: BLE001 - show every failure in the app, in words
            self._say(f"Run failed: {type(e).__name__}: {e}", "error")
            self._end_progress("failed")
        finally:
            self.live.flush()
            self.running = False
            self.stop_button.disabled = True
            self._enable_train()
            self.model_w.disabled = self.data_w.disabled = self.task_w.disabled = False
            self.runs.refresh()
            # the browser acknowledges the last update within a moment; check once it had the time
            timer = threading.Timer(self.stale_after + 0.5, self.redraw_stale_curves)
            timer.daemon = True
            timer.start()

    def _on_start(self, ev) -> None:
        try:
            self.live.named(ev.trainer.run_record)
        except Exception as e:  # noqa: BLE001 - naming a curve must never fail the run
            warnings.warn(f"the live curves keep their first names: {type(e).__name__}: {e}", stacklevel=2)
        self.progress.max = max(1, ev.payload["total_steps"])
        self.progress_w.value = progress_label(0, self.progress.max, 0.0)
        p, run = ev.payload["params"], ev.trainer.run_record
        name = plots.display_names([run])[run.name] if run is not None else ev.payload["run"]
        self._say(f"Training {name}: {p['trainable']:,} of {p['total']:,} "
                  f"parameters train ({p['percent']:.3g}%) on {ev.payload['device']}.", "info")

    def _on_phase(self, ev) -> None:
        """A phase began: after the first, its line and words on the loss curve (a group joined)."""
        self._phases.append(ev.payload)
        if ev.payload.get("phase", 0) > 0:
            marks = phase_joins(self._phases)
            if marks:
                self.live.mark(*marks[-1])

    def _on_step(self, ev) -> None:
        step = ev.payload["step"]
        self.progress.value = min(step, self.progress.max)
        self.progress_w.value = progress_label(step, self.progress.max, ev.payload["elapsed_s"])
        self.live.step(step, ev.payload["loss"])

    def _on_eval(self, ev) -> None:
        self.live.evaluated(ev.payload["step"], ev.payload[f"val_{self.metric.key}"])
        if ev.payload.get("generations"):
            self.samples_w.value = samples_html(ev.payload["generations"], ev.payload["step"])

    def _say(self, message: str, kind: str = "info") -> None:
        """Show ``message`` (plain text, escaped here) in the status line."""
        color = {"info": "#333", "ok": "#176f2c", "warn": "#8a5a00", "error": "#b00020"}[kind]
        self._status_kind = kind
        self.status = f'<span class="tunekit-status tunekit-{kind}" style="color:{color}">{html.escape(message)}</span>'
