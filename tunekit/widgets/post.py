"""The lab's post-training tab: pick a run and an operation, set its slider, apply.

A thin view over :mod:`tunekit.post`: the operation runs in a worker thread (the kernel
keeps serving the widgets), writes its record beside the run, and the runs table and
the views pick it up like any training run. Runs are named as everywhere else in the lab
(:func:`tunekit.plots.display_names`: ``#5 prune 50 % of #1``), in the picker and in the
status line. A distillation trains: it shows a progress bar, and Stop ends it at its next
step (its partial record is kept, marked stopped). Errors show in the status line, in words.
"""
from __future__ import annotations

import html
import threading
from typing import Optional

import ipywidgets as W

import tunekit as tk
from tunekit import plots

OPERATIONS = {
    "prune: smallest weights": ("prune", "sparsity"),
    "prune: attention heads": ("heads", "heads"),
    "prune: FFN neurons": ("neurons", "neurons"),
    "quantize (torchao)": ("quantize", "bits"),
    "distil into fewer blocks": ("distil", "temperature"),
}


def progress_words(step: int, total: int, elapsed_s: float) -> str:
    """``step 12/40 · 8 s``: how far a distillation has come."""
    return f"step {step}/{total} · {elapsed_s:.0f} s"


class PostPanel(W.VBox):
    """Run picker, operation picker, one slider per operation, Apply, Stop (a distillation),
    a progress bar and a status line."""

    running = False

    def __init__(self, runs_panel):
        self.runs_panel = runs_panel
        wide = {"description_width": "110px"}
        self.run_w = W.Dropdown(options=[], description="run", style=wide, layout=W.Layout(width="520px"))
        self.op_w = W.Dropdown(options=list(OPERATIONS), description="operation", style=wide,
                               layout=W.Layout(width="520px"))
        self.sliders = {
            "sparsity": W.FloatSlider(value=0.5, min=0.0, max=0.95, step=0.05, description="sparsity", style=wide,
                                      readout_format=".0%"),
            "heads": W.IntSlider(value=2, min=1, max=11, description="heads / block", style=wide),
            "neurons": W.FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05, description="neurons removed",
                                     style=wide, readout_format=".0%"),
            "bits": W.IntSlider(value=8, min=2, max=8, description="weight bits", style=wide),
            "temperature": W.FloatSlider(value=2.0, min=0.5, max=8.0, step=0.5, description="temperature",
                                         style=wide),
        }
        self.student_w = W.Text(value="0,2,4", description="student blocks", style=wide)
        self.apply_button = W.Button(description="Apply", button_style="primary")
        self.apply_button.on_click(lambda _b: self.apply())
        self.stop_button = W.Button(description="Stop", button_style="warning", disabled=True,
                                    tooltip="end the distillation at its next step (its record is kept, stopped)")
        self.stop_button.on_click(lambda _b: self.stop())
        self.progress = W.IntProgress(value=0, min=0, max=1, layout=W.Layout(width="200px", visibility="hidden"))
        self.progress_w = W.Label("", layout=W.Layout(visibility="hidden"))
        self.status = W.HTML()
        self.controls = W.VBox()
        self.op_w.observe(lambda _c: self._show_controls(), "value")
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()  # Stop was pressed for the distillation now running
        self._trainer: Optional[tk.Trainer] = None  # the distillation's trainer, once it started
        buttons = W.HBox([self.apply_button, self.stop_button, self.progress, self.progress_w],
                         layout=W.Layout(flex_flow="row wrap", align_items="center"))
        super().__init__([self.run_w, self.op_w, self.controls, buttons, self.status])
        self._show_controls()

    def refresh(self, runs: list) -> None:
        """List the runs with weights by their one name (``#3 full · 200 ex · 1 ep``), the
        choice kept (else the newest)."""
        usable = [r for r in runs if r.has_weights and r.status in ("completed", "stopped")]
        current = self.run_w.value
        names = plots.display_names(usable)
        self.run_w.options = [(names[r.name] + ("" if r.status == "completed" else f"  [{r.status}]"), r.name)
                              for r in usable]
        if usable:
            self.run_w.value = current if current in names else usable[-1].name  # else the newest

    def _show_controls(self) -> None:
        kind, slider = OPERATIONS[self.op_w.value]
        extra = [self.student_w] if kind == "distil" else []
        self.controls.children = [self.sliders[slider], *extra]

    def _say(self, text: str, kind: str = "info") -> None:
        color = {"ok": "#1b5e20", "warn": "#8a5a00", "error": "#b00020", "info": "#333"}[kind]
        self.status.value = f'<span style="color:{color}">{html.escape(text)}</span>'

    def apply(self, wait: bool = False) -> bool:
        """Run the chosen operation on the chosen run (``wait=True`` joins the worker)."""
        if self.running:
            self._say("An operation is already running.", "error")
            return False
        if not self.run_w.value:
            self._say("Pick a run with weights first (train one above).", "error")
            return False
        try:
            run = tk.load_run(f"{self.runs_panel.runs_dir}/{self.run_w.value}")
            data = self.runs_panel.data_for([run])
        except Exception as e:  # noqa: BLE001 - a record that cannot be read, or trained on other data
            self._say(f"Not done: {e if isinstance(e, tk.TunekitError) else f'{type(e).__name__}: {e}'}", "error")
            return False
        kind, slider = OPERATIONS[self.op_w.value]
        blocks = None
        if kind == "distil":
            try:
                blocks = [int(x) for x in self.student_w.value.split(",") if x.strip()]
            except ValueError:
                self._say(f"Not done: student blocks must be block numbers separated by commas, such as 0, 2, 4 "
                          f"(got {self.student_w.value!r})", "error")
                return False
        value = self.sliders[slider].value
        self._start(kind, run, lambda: self._operate(kind, run, value, data, blocks))
        if wait:
            self._thread.join()
        return True

    def _start(self, kind: str, run, operate) -> None:
        """Run ``operate`` in a worker thread; a distillation gets its progress bar and Stop."""
        self.running = True
        self.apply_button.disabled = True
        self._stop.clear()
        self._trainer = None
        trains = kind == "distil"
        self.stop_button.disabled = not trains
        self._show_progress(trains)
        self._say(f"{self.op_w.value} on {plots.display_names([run])[run.name]} …")
        self._thread = threading.Thread(target=self._work, args=(run, operate), name="tunekit-post", daemon=True)
        self._thread.start()

    def _operate(self, kind: str, run, value, data, blocks):
        """The post-training call itself; returns the new record."""
        if kind == "prune":
            return tk.prune(run, sparsity=value, data=data)
        if kind in ("heads", "neurons"):
            return tk.prune(run, method=kind, amount=value, data=data)
        if kind == "quantize":
            return tk.quantize(run, method="int8-dynamic" if value == 8 else "intx-dynamic",
                               bits=None if value == 8 else value, data=data)
        return tk.distil(run, student=blocks, temperature=value, data=data, progress=False,
                         callbacks={"train_start": self._on_start, "step": self._on_step})

    def _work(self, run, operate) -> None:
        """The worker: do it, then say what came of it (or why not) in the status line."""
        try:
            self._report(run, operate())
        except tk.TunekitError as e:  # bad input, in words
            self._say(f"Not done: {e}", "error")
        except Exception as e:  # noqa: BLE001 - every failure in words, in the app
            self._say(f"Failed: {type(e).__name__}: {e}", "error")
        finally:
            self.running = False
            self._trainer = None
            self.apply_button.disabled = False
            self.stop_button.disabled = True
            self._show_progress(False)
            self.runs_panel.refresh()

    def _report(self, run, out) -> None:
        """The new record by its one name, its metric beside its source's, and what its size and
        speed mean in words (:func:`tunekit.post.in_words`: the paired latency ratio with its
        spread, not milliseconds that wander with the machine's load)."""
        s = out.summary
        metric = tk.metrics.primary(out.task).key
        before = s.get("before") or s.get("teacher") or {}
        name = plots.display_names([out])[out.name]
        stopped = out.status != "completed"
        done = f" {out.status} at step {s.get('steps')} of {self.progress.max}" if stopped else ""
        was = before.get("val_" + metric, run.summary.get("val_" + metric, float("nan")))
        said = tk.post.in_words(out)
        if not said and s.get("size_mb") is not None:  # no ratio or reason to give: the sizes, rounded
            said = f"{s['size_mb']:,.1f} MB (was {before.get('size_mb', float('nan')):,.1f})."
        self._say(f"{name}{done}: {metric} {s.get('val_' + metric, float('nan')):.3f} (was {was:.3f}). {said}",
                  "warn" if stopped else "ok")

    # ----- a distillation's progress and Stop --------------------------------------------------------
    def stop(self) -> None:
        """Ask the running distillation to stop at its next step (its partial record is kept)."""
        if not self.running or self.stop_button.disabled:
            return
        self._stop.set()
        if self._trainer is not None:
            self._trainer.stop()
        self._say("Stopping at the next step …")

    def _on_start(self, ev) -> None:
        """The student's training started: size the progress bar (and stop it if Stop came first)."""
        self._trainer = ev.trainer
        if self._stop.is_set():
            ev.trainer.stop()
        self.progress.max = max(1, ev.payload["total_steps"])
        self.progress.value = 0
        self.progress_w.value = progress_words(0, self.progress.max, 0.0)

    def _on_step(self, ev) -> None:
        step = ev.payload["step"]
        self.progress.value = min(step, self.progress.max)
        self.progress_w.value = progress_words(step, self.progress.max, ev.payload["elapsed_s"])

    def _show_progress(self, shown: bool) -> None:
        if shown:
            self.progress.value, self.progress.max, self.progress_w.value = 0, 1, "loading the teacher …"
        self.progress.layout.visibility = self.progress_w.layout.visibility = "visible" if shown else "hidden"
