"""The lab's Experiments tab: which strategy wins at which data size, trained live.

A thin view over :func:`tunekit.experiment`: the grid is set in words (the strategies as
``tunekit experiment --strategies`` takes them, the sizes, the seeds, the learning rate), Run
trains it in a worker thread (the kernel keeps serving the widgets), and as each cell ends the
grid of cells (done / running / queued), the learning curves with their 95 % bands and the
"what to choose" sentences are drawn again from the experiment's record. Stop ends the cell in
training at its next step; every finished cell is kept, and Run resumes the rest. Picking an
experiment already on disk shows it and sets the controls to its grid (Run resumes it).
"""
from __future__ import annotations

import argparse
import html
import threading
import time
import warnings
from typing import Any, Callable, Optional

import ipywidgets as W
import plotly.graph_objects as go

import tunekit as tk
from tunekit import plots
from tunekit.arguments import InputError, parse_strategies, strategy_text
from tunekit.arguments import sizes as parse_sizes
from tunekit.experiments import Experiment, list_experiments
from tunekit.experiments.record import split_key
from tunekit.widgets.sizer import figure_widget
from tunekit.widgets.words import cells_label, clock

NEW = "(a new experiment)"
MARKS = {"done": "●", "running": "◐", "queued": "○", "failed": "✕", "stopped": "✕"}
"""One mark per seed in a grid cell: its state at a glance (the legend under the grid says them)."""
COLORS = {"done": "#176f2c", "running": "#1f5fbf", "queued": "#888", "failed": "#b00020", "stopped": "#8a5a00"}


def grid_html(exp: Optional[Experiment], running: tuple = (), table=None) -> str:
    """The grid as an HTML table: a row per strategy, a column per size; in each cell one mark
    per seed (done, running, queued, failed or stopped) and, once a seed is done, the mean test
    accuracy with its 95 % interval."""
    if exp is None:
        return "<i>No experiment yet: set the grid and press Run.</i>"
    g, states = exp.grid, exp.states(running)
    table = exp.table() if table is None else table
    rows = {(r["strategy"], r["size"]): r for _, r in table.iterrows()}
    head = "".join(f"<th>{size:,} examples</th>" for size in g["sizes"])
    body = []
    for label in g["strategies"]:
        tds = []
        for size in g["sizes"]:
            marks = "".join(
                f'<span title="seed {seed}: {states[f"{label}|{size}|{seed}"]}" style="color:'
                f'{COLORS[states[f"{label}|{size}|{seed}"]]}">{MARKS[states[f"{label}|{size}|{seed}"]]}</span>'
                for seed in range(g["seeds"]))
            r = rows.get((label, size))
            said = (f' {r["accuracy"]:.3f} <span style="color:#555">[{r["low"]:.3f}, {r["high"]:.3f}]</span>'
                    if r is not None else "")
            kinds = {states[f"{label}|{size}|{seed}"] for seed in range(g["seeds"])}
            tds.append(f'<td data-states="{" ".join(sorted(kinds))}">{marks}{said}</td>')
        body.append(f"<tr><th style='text-align:left'>{html.escape(label)}</th>{''.join(tds)}</tr>")
    legend = " · ".join(f'<span style="color:{COLORS[k]}">{MARKS[k]}</span> {k}'
                        for k in ("done", "running", "queued", "failed"))
    return ('<table class="tunekit-exp-grid" style="border-collapse:collapse">'
            f"<tr><th></th>{head}</tr>{''.join(body)}</table>"
            f'<div style="color:#555;font-size:90%">one mark per seed: {legend} (failed or stopped cells are '
            "trained again by Run) · test accuracy: mean over seeds [95 % interval over seeds and test "
            "examples]</div>")


class ExperimentsPanel(W.VBox):
    """The grid's controls, Run / Stop, progress over cells, the grid, the learning curves and
    what to choose.

    Args:
        runs_dir: where the experiments' records (and their cells' runs) go.
        data: the TextDataset every cell trains on (the lab's).
        model: the model every cell starts from (the lab's, as a name or directory).
        busy: says whether the lab trains a run now (Run is refused meanwhile: two trainings on
            one machine slow each other down).
        finished: called after an experiment's call returns (the lab refreshes its runs table).
    """

    def __init__(self, runs_dir: str, data: tk.TextDataset, model: str = "minilm",
                 busy: Callable[[], bool] = lambda: False, finished: Callable[[], Any] = lambda: None):
        self.runs_dir, self.data, self.model_source = runs_dir, data, str(model)
        self.busy, self.finished = busy, finished
        wide, box = {"description_width": "100px"}, W.Layout(width="370px")
        self.pick_w = W.Dropdown(options=[NEW], value=NEW, description="experiment", style=wide, layout=box)
        self.name_w = W.Text(value="transfer-or-finetune", description="name", style=wide, layout=box)
        self.strategies_w = W.Text(value="probe, freeze:2, lora:8, full", description="strategies", style=wide,
                                   layout=box, tooltip="as `tunekit experiment --strategies` takes them")
        self.sizes_w = W.Text(value="100, 300", description="sizes", style=wide, layout=box,
                              tooltip="training examples per cell, nested per seed")
        self.seeds_w = W.BoundedIntText(value=2, min=1, max=20, description="seeds", style=wide,
                                        layout=W.Layout(width="180px"))
        rates = [("each strategy's default", "default"), ("tuned per strategy and size", "tune")]
        self.lr_w = W.Dropdown(options=rates,
                               value="default", description="learning rate", style=wide, layout=box)
        self.epochs_w = W.BoundedIntText(value=1, min=1, max=100, description="epochs", style=wide,
                                         layout=W.Layout(width="180px"))
        self.test_w = W.BoundedIntText(value=500, min=10, max=1_000_000, description="test examples", style=wide,
                                       layout=W.Layout(width="180px"))
        self.run_button = W.Button(description="Run", button_style="primary",
                                   tooltip="train every cell not done yet (a grid already on disk resumes)")
        self.stop_button = W.Button(description="Stop", button_style="warning", disabled=True,
                                    tooltip="end the cell in training at its next step; finished cells are kept")
        self.run_button.on_click(lambda _b: self.run())
        self.stop_button.on_click(lambda _b: self.stop())
        self.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="200px", visibility="hidden"))
        self.progress_w = W.Label("", layout=W.Layout(visibility="hidden"))
        self.status_w = W.HTML(layout=W.Layout(min_height="1.6em"))
        self.grid_w = W.HTML(grid_html(None))
        self.figure_box = W.VBox()
        self.choose_w = W.HTML()
        self.exp: Optional[Experiment] = None
        self.running = False
        self.text_scale = 1.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()  # one redraw at a time
        self._current: Optional[str] = None  # the cell in training
        self._started = 0.0
        self._said_step = 0.0
        self._holding = False
        self._began = False  # an event came: something trained (an error is then "not finished")
        self._shown_specs: tuple[str, list] = ("", [])  # the strategies text shown for a picked grid, its specs
        self._shown_grid: tuple[str, dict, dict] = ("", {}, {})  # a picked grid's name, grid, values shown
        self.pick_w.observe(lambda _c: self._picked(), "value")
        buttons = W.HBox([self.run_button, self.stop_button, self.progress, self.progress_w],
                         layout=W.Layout(flex_flow="row wrap", align_items="center"))
        form = W.HBox([W.VBox([self.pick_w, self.name_w, self.strategies_w, self.sizes_w]),
                       W.VBox([self.lr_w, W.HBox([self.seeds_w, self.epochs_w]), self.test_w])],
                      layout=W.Layout(flex_flow="row wrap"))
        super().__init__([form, buttons, self.status_w, self.grid_w, self.figure_box, self.choose_w])
        self.add_class("tunekit-experiments")
        self.refresh()

    # ----- what is on disk -----------------------------------------------------------------------
    def refresh(self) -> None:
        """List the experiments on disk in the picker (the choice kept)."""
        with warnings.catch_warnings():  # a damaged record is left out of the list, not shouted about
            warnings.simplefilter("ignore")
            names = [e.name for e in list_experiments(self.runs_dir)]
        current = self.pick_w.value
        self.pick_w.options = [NEW] + names
        self.pick_w.value = current if current in self.pick_w.options else NEW

    def _picked(self) -> None:
        """An experiment on disk was picked: show it, and set the controls to its grid."""
        name = self.pick_w.value
        if name == NEW or self.running or self._holding:
            return
        try:
            exp = next(e for e in list_experiments(self.runs_dir) if e.name == name)
        except StopIteration:
            return
        g = exp.grid
        texts = [strategy_text(spec) for spec in g["specs"]]
        shown = ", ".join(t if t is not None else label for t, label in zip(texts, g["strategies"]))
        self._shown_specs = (shown, list(g["specs"]))
        self.name_w.value, self.strategies_w.value = exp.name, shown
        self.sizes_w.value = ", ".join(str(n) for n in g["sizes"])
        self.seeds_w.value = g["seeds"]
        self.lr_w.value = "tune" if g["lr"] == "tune" else "default"
        self.epochs_w.value = int(g["overrides"].get("epochs", self.epochs_w.value))
        self.test_w.value = int(g.get("test_size") or len(self.data.test))
        self._shown_grid = (exp.name, g, {"test": self.test_w.value, "epochs": self.epochs_w.value})
        self.exp = exp
        done, total = len(exp.done()), len(exp.keys())
        if g["data"] != self.data.name or g["model"] != self.model_source:
            self._say(f"{exp.name} was trained on {g['data']} with {g['model']}; this lab holds {self.data.name} "
                      f"with {self.model_source}: pick those above to resume it.", "warn")
        else:
            self._say(f"{exp.name}: {done} of {total} cells done" + (" (Run resumes the rest)." if done < total
                                                                   else "."), "info")
        self._redraw()

    # ----- actions -------------------------------------------------------------------------------
    def grid_arguments(self) -> dict:
        """The arguments of :func:`tunekit.experiment` the controls say. Raises ValueError naming
        the control."""
        text = self.strategies_w.value.strip()
        try:
            if self._shown_specs[0] and text == self._shown_specs[0]:
                strategies = [tk.strategies.get_strategy(spec) for spec in self._shown_specs[1]]
            else:
                strategies = parse_strategies(text)
        except InputError as e:
            raise ValueError(f"strategies: {e}") from None
        try:
            sizes = parse_sizes(self.sizes_w.value.replace(" ", ""))
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"sizes: {e}") from None
        name = self.name_w.value.strip()
        if not name:
            raise ValueError("name: give the experiment a name (its folder in the runs directory)")
        test, epochs = int(self.test_w.value), int(self.epochs_w.value)
        overrides = {"eval_size": min(300, len(self.data.validation)), "epochs": epochs}
        test_size = test if test < len(self.data.test) else None
        picked, grid, shown = self._shown_grid
        if name == picked:  # the grid on disk: what the controls still show of it is taken as recorded
            overrides = dict(grid["overrides"])
            if epochs != shown["epochs"]:
                overrides["epochs"] = epochs
            test_size = grid.get("test_size") if test == shown["test"] else test_size
        return {"strategies": strategies, "sizes": sizes, "seeds": int(self.seeds_w.value), "name": name,
                "lr": "tune" if self.lr_w.value == "tune" else None, "test_size": test_size, **overrides}

    def run(self, wait: bool = False) -> bool:
        """Train the grid's cells not done yet, in a worker thread (``wait=True`` joins it)."""
        if self.running:
            self._say("The experiment is training: Stop it first.", "warn")
            return False
        if self.busy():
            self._say("A lab run is training: wait for it or stop it (two trainings slow each other down).", "warn")
            return False
        try:
            kwargs = self.grid_arguments()
        except ValueError as e:
            self._say(f"Not started: {e}", "error")
            return False
        self._stop = threading.Event()
        self.running = True
        self.run_button.disabled, self.stop_button.disabled = True, False
        self.pick_w.disabled = True
        self._current, self._started, self._began = None, time.monotonic(), False
        self._say(f"Checking the grid of {kwargs['name']} ...", "info")
        self._thread = threading.Thread(target=self._work, args=(kwargs,), name="tunekit-experiment", daemon=True)
        self._thread.start()
        if wait:
            self.wait()
        return True

    def stop(self) -> None:
        """End the cell in training at its next step; the finished cells are kept."""
        if self.running:
            self._stop.set()
            self._say("Stopping at the next step; every finished cell is kept ...", "info")

    def wait(self, timeout: Optional[float] = None) -> None:
        """Block until the experiment's call has returned (scripts and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def set_text_scale(self, scale: float) -> None:
        """The figures' text ``scale`` times its size (the lab's projector switch)."""
        factor, self.text_scale = scale / self.text_scale, scale
        for w in self.figure_box.children:
            if isinstance(w, go.FigureWidget):
                plots.axes.scale_text(w, factor)

    # ----- the worker thread ------------------------------------------------------------------------
    def _work(self, kwargs: dict) -> None:
        strategies = kwargs.pop("strategies")
        try:
            exp = tk.experiment(strategies, self.data, model=self.model_source, runs_dir=self.runs_dir,
                                progress=False, stop=self._stop, callback=self._on_event, **kwargs)
            self.exp = exp
            done, total = len(exp.done()), len(exp.keys())
            if self._stop.is_set():
                self._say(f"Stopped: {done} of {total} cells finished and kept; Run resumes the rest.", "warn")
            elif done < total:
                self._say(f"{done} of {total} cells finished; the others failed (their runs say why). "
                          "Run tries them again.", "warn")
            else:
                self._say(f"{exp.name}: all {total} cells finished "
                          f"({clock(time.monotonic() - self._started)}).", "ok")
        except Exception as e:  # noqa: BLE001 - said in the tab, in words; never raised out of a click
            said = str(e) if isinstance(e, tk.TunekitError) else f"{type(e).__name__}: {e}"
            self._say(f"{'Not finished' if self._began else 'Not started'}: {said}", "error")
        finally:
            self._current = None
            self.running = False
            self.run_button.disabled, self.stop_button.disabled = False, True
            self.pick_w.disabled = False
            if self.exp is not None:
                self._redraw(final=True)
            self.refresh()
            if self.exp is not None and self.exp.name in self.pick_w.options:
                self._holding = True  # listed as picked; what it says stays
                try:
                    self.pick_w.value = self.exp.name
                finally:
                    self._holding = False
            self.finished()

    def _on_event(self, event: dict) -> None:
        """The experiment's callback (the training thread): the grid, progress and curves follow."""
        kind = event["event"]
        self._began = True
        if self.exp is None or str(self.exp.path) != event.get("path"):
            self.exp = Experiment.load(event["path"])
        if kind == "tuning":
            self._say(f"Tuning the learning rate of {event['strategy']} at {event['size']:,} examples: trial "
                      f"{event['trial']} of {event['trials']} (on the validation split; the test split reports).",
                      "info")
        elif kind == "cell_start":
            self._current = event["key"]
            self._say(f"Training {event['strategy']}, {event['size']:,} examples, seed {event['seed']} ...", "info")
            self._redraw()
        elif kind == "step" and time.monotonic() - self._said_step > 0.5:
            self._said_step = time.monotonic()
            label, size, seed = split_key(event["key"])
            total = event.get("total") or "?"
            self._say(f"Training {label}, {size:,} examples, seed {seed}: step {event['step']} of {total}", "info")
        elif kind == "cell_end":
            self._current = None
            self._redraw()

    def _redraw(self, final: bool = False) -> None:
        """The progress, the grid, the learning curves and what to choose, from the record."""
        exp = self.exp
        if exp is None:
            return
        with self._lock:
            table = exp.table()
            running = (self._current,) if self._current else ()
            self.grid_w.value = grid_html(exp, running, table)
            states = exp.states(running)
            left = [k for k, s in states.items() if s != "done"]
            done, total = len(states) - len(left), len(states)
            self.progress.max, self.progress.value = max(1, total), done
            elapsed = time.monotonic() - self._started if self.running else 0.0
            if self.running:
                self.progress_w.value = cells_label(done, total, elapsed, exp.time_left(left))
            else:
                self.progress_w.value = f"{done} of {total} cells done"
            self.progress.layout.visibility = self.progress_w.layout.visibility = "visible"
            fig = figure_widget(plots.learning_curves(table))
            if self.text_scale != 1.0:
                plots.axes.scale_text(fig, self.text_scale)
            self.figure_box.children = (fig,)
            said = exp.choose()["said"].tolist() if not table.empty else []
            self.choose_w.value = ("<b>What to choose</b> (best, and the cheapest as good within the noise, by "
                                   "wall time per cell)<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in said)
                                   + "</ul>") if said else ""

    def _say(self, message: str, kind: str = "info") -> None:
        color = {"info": "#333", "ok": "#176f2c", "warn": "#8a5a00", "error": "#b00020"}[kind]
        self.status_w.value = (f'<span class="tunekit-status tunekit-{kind}" style="color:{color}">'
                               f"{html.escape(message)}</span>")


__all__ = ["ExperimentsPanel", "grid_html"]
