"""The runs panel's "Import…" box: a path, an optional base, Import.

A thin view over :func:`tunekit.import_run`: the import runs in a worker thread (the kernel
keeps serving the widgets), is evaluated on the lab's data when the box says so, and the
runs table picks the new record up like any other. Errors show in the status line, in words.
"""
from __future__ import annotations

import html
import threading
from typing import Optional

import ipywidgets as W

import tunekit as tk
from tunekit import plots


class ImportBox(W.VBox):
    """Folder path, base, "evaluate on the lab's data", Import, and a status line."""

    def __init__(self, runs_panel):
        self.runs_panel = runs_panel
        wide = {"description_width": "60px"}
        self.path = W.Text(placeholder="a peft adapter folder, or a fine-tuned model folder", description="folder",
                           style=wide, layout=W.Layout(width="520px"))
        self.base = W.Text(placeholder="the adapter's own base, or the checkpoint a fine-tune started from",
                           description="base", style=wide, layout=W.Layout(width="520px"))
        self.evaluate = W.Checkbox(value=True, description="evaluate on the lab's data", indent=False)
        self.button = W.Button(description="Import", tooltip="write a run record of it (the folder is only read)")
        self.button.on_click(lambda _b: self.apply())
        self.status = W.HTML()
        self._thread: Optional[threading.Thread] = None
        super().__init__([self.path, self.base, W.HBox([self.button, self.evaluate]), self.status])

    def _say(self, text: str, kind: str = "info") -> None:
        color = {"ok": "#1b5e20", "error": "#b00020", "info": "#333"}[kind]
        self.status.value = f'<span style="color:{color}">{html.escape(text)}</span>'

    def apply(self, wait: bool = False) -> bool:
        """Import the folder in a worker thread (``wait=True`` joins it)."""
        if self._thread is not None and self._thread.is_alive():
            self._say("An import is already running.", "error")
            return False
        if not self.path.value.strip():
            self._say("Give the folder to import first.", "error")
            return False
        self.button.disabled = True
        self._say(f"Importing {self.path.value.strip()} …")
        self._thread = threading.Thread(target=self._work, name="tunekit-import", daemon=True)
        self._thread.start()
        if wait:
            self._thread.join()
        return True

    def _work(self) -> None:
        try:
            run = tk.import_run(self.path.value.strip(), base=self.base.value.strip() or None,
                                data=self.runs_panel.data if self.evaluate.value else None,
                                runs_dir=self.runs_panel.runs_dir)
            self.runs_panel.refresh()
            metrics = ", ".join(f"{k} {v:.3f}" for k, v in run.metrics_summary().items())
            self._say(f"{plots.display_names([run])[run.name]}" + (f": {metrics}" if metrics else ""), "ok")
        except tk.TunekitError as e:  # bad input, in words
            self._say(f"Not imported: {e}", "error")
        except Exception as e:  # noqa: BLE001 - every failure in words, in the app
            self._say(f"Failed: {type(e).__name__}: {e}", "error")
        finally:
            self.button.disabled = False
