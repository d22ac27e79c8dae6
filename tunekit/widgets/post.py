"""The lab's post-training tab: pick a run and an operation, set its slider, apply.

A thin view over :mod:`tunekit.post`: the operation runs in a worker thread (the kernel
keeps serving the widgets), writes its record beside the run, and the runs table and
the views pick it up like any training run. Errors show in the status line, in words.
"""
from __future__ import annotations

import html
import threading
from typing import Optional

import ipywidgets as W

import tunekit as tk

OPERATIONS = {
    "prune: smallest weights": ("prune", "sparsity"),
    "prune: attention heads": ("heads", "heads"),
    "prune: FFN neurons": ("neurons", "neurons"),
    "quantize (torchao)": ("quantize", "bits"),
    "distil into fewer blocks": ("distil", "temperature"),
}


class PostPanel(W.VBox):
    """Run picker, operation picker, one slider per operation, Apply and a status line."""

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
        self.status = W.HTML()
        self.controls = W.VBox()
        self.op_w.observe(lambda _c: self._show_controls(), "value")
        self._thread: Optional[threading.Thread] = None
        super().__init__([self.run_w, self.op_w, self.controls, self.apply_button, self.status])
        self._show_controls()

    def refresh(self, runs: list) -> None:
        usable = [r for r in runs if r.has_weights and r.status in ("completed", "stopped")]
        current = self.run_w.value
        self.run_w.options = [(f"{r.label}  {r.name}", r.name) for r in usable]
        names = [r.name for r in usable]
        if names:
            self.run_w.value = current if current in names else names[-1]  # else the newest

    def _show_controls(self) -> None:
        kind, slider = OPERATIONS[self.op_w.value]
        extra = [self.student_w] if kind == "distil" else []
        self.controls.children = [self.sliders[slider], *extra]

    def _say(self, text: str, kind: str = "info") -> None:
        color = {"ok": "#1b5e20", "error": "#b00020", "info": "#333"}[kind]
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
        if self.op_w.value and OPERATIONS[self.op_w.value][0] == "distil":
            try:
                blocks = [int(x) for x in self.student_w.value.split(",") if x.strip()]
            except ValueError:
                self._say(f"Not done: student blocks must be block numbers separated by commas, such as 0, 2, 4 "
                          f"(got {self.student_w.value!r})", "error")
                return False
        kind, slider = OPERATIONS[self.op_w.value]
        value = self.sliders[slider].value

        def work():
            try:
                if kind == "prune":
                    out = tk.prune(run, sparsity=value, data=data)
                elif kind in ("heads", "neurons"):
                    out = tk.prune(run, method=kind, amount=value, data=data)
                elif kind == "quantize":
                    out = tk.quantize(run, method="int8-dynamic" if value == 8 else "intx-dynamic",
                                      bits=None if value == 8 else value, data=data)
                else:
                    out = tk.distil(run, student=blocks, temperature=value, data=data, progress=False)
                s = out.summary
                metric = tk.metrics.primary(out.task).key
                before = s.get("before") or s.get("teacher") or {}
                self._say(f"{out.name}: {metric} {s.get('val_' + metric, float('nan')):.3f} "
                          f"(was {before.get('val_' + metric, run.summary.get('val_' + metric, float('nan'))):.3f}), "
                          f"{s.get('size_mb')} MB (was {before.get('size_mb')}), "
                          f"{s.get('latency_ms')} ms on this CPU (was {before.get('latency_ms')})", "ok")
            except tk.TunekitError as e:  # bad input, in words
                self._say(f"Not done: {e}", "error")
            except Exception as e:  # noqa: BLE001 - every failure in words, in the app
                self._say(f"Failed: {type(e).__name__}: {e}", "error")
            finally:
                self.running = False
                self.apply_button.disabled = False
                self.runs_panel.refresh()

        self.running = True
        self.apply_button.disabled = True
        self._say(f"{self.op_w.value} on {run.name} ...")
        self._thread = threading.Thread(target=work, name="tunekit-post", daemon=True)
        self._thread.start()
        if wait:
            self._thread.join()
        return True
