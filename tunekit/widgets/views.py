"""The lower half of the lab: every run in the runs directory, and the views over a selection.

Each view is one call into :mod:`tunekit.inspect` and :mod:`tunekit.plots`; figures are
shown as plotly FigureWidgets, tables and attributions as escaped HTML. A run has one name
(:func:`tunekit.plots.display_names`) and one colour (:func:`tunekit.plots.run_color`) in the
table, the picker and every view.
"""
from __future__ import annotations

import dataclasses
import html
import threading
from typing import Callable

import ipywidgets as W
import plotly.graph_objects as go

import tunekit as tk
from tunekit import inspect, plots
from tunekit.inspect.views import DEFAULT_SENTENCE
from tunekit.report import runs_table_html

VIEWS = ("Compare", "Weights", "Representations", "Attribution")


def _as_widget(item) -> W.Widget:
    if isinstance(item, str):
        return W.HTML(item)
    return go.FigureWidget(item)


class RunsPanel(W.VBox):
    """A table of the runs on disk, a selection, and the Compare / Weights /
    Representations / Attribution views of the selected runs."""

    def __init__(self, runs_dir: str, data: tk.TextDataset):
        self.runs_dir, self.data = runs_dir, data
        self.table = W.HTML()
        self.select = W.SelectMultiple(options=[], rows=6, description="compare", layout=W.Layout(width="520px"))
        self.refresh_button = W.Button(description="Refresh runs")
        self.refresh_button.on_click(lambda _b: self.refresh())
        self.sentence = W.Text(value=DEFAULT_SENTENCE, description="sentence", layout=W.Layout(width="620px"))
        self.message = W.HTML()
        self.panes = {name: W.VBox() for name in VIEWS}
        self.buttons = {}
        tabs = []
        for name in VIEWS:
            b = W.Button(description=f"Show {name.lower()}", button_style="info")
            b.on_click(lambda _b, n=name: self.show(n))
            self.buttons[name] = b
            extra = [self.sentence] if name == "Attribution" else []
            tabs.append(W.VBox([*extra, b, self.panes[name]]))
        from tunekit.widgets.post import PostPanel
        self.post = PostPanel(self)
        self.tabs = W.Tab(children=tabs + [self.post])
        for i, name in enumerate(VIEWS + ("Post-training",)):
            self.tabs.set_title(i, name)
        super().__init__([W.HTML("<b>Runs</b> (in " + html.escape(str(runs_dir)) + ")"), self.table,
                          W.HBox([self.select, self.refresh_button]), self.message, self.tabs])
        self.refresh()

    def runs(self) -> list:
        return tk.list_runs(self.runs_dir)

    def selected(self) -> list:
        names = set(self.select.value)
        return [r for r in self.runs() if r.name in names]

    def refresh(self) -> None:
        """Re-read the runs directory (it survives kernel restarts); select the newest runs."""
        runs = self.runs()
        self.table.value = runs_table_html(runs) if runs else "<i>No runs yet: press Train.</i>"
        before, known = set(self.select.value), {v for _, v in self.select.options}
        names = plots.display_names(runs)
        self.select.options = [(f"{names[r.name]}  [{r.status}]", r.name) for r in runs]
        # keep the selection, and add runs that appeared since (the one just trained)
        chosen = [r.name for r in runs if r.name in before or (known and r.name not in known)]
        self.select.value = tuple(chosen or [r.name for r in runs[-4:]])
        if hasattr(self, "post"):
            self.post.refresh(runs)

    def show(self, view: str, wait: bool = False) -> None:
        """Compute a view for the selected runs (in a thread: the kernel stays responsive)."""
        runs = self.selected()
        if not runs:
            self.message.value = "<i>Select one or more runs first.</i>"
            return
        builders: dict[str, Callable[[list], list]] = {
            "Compare": self._view_compare, "Weights": self._view_weights,
            "Representations": self._view_representations, "Attribution": self._view_attribution}
        self.message.value = f"<i>Computing {html.escape(view.lower())} for {len(runs)} run(s) ...</i>"

        def work():
            try:
                self.panes[view].children = [_as_widget(x) for x in builders[view](runs)]
                self.message.value = ""
            except Exception as e:  # noqa: BLE001 - say it in the app, in words
                said = str(e) if isinstance(e, tk.TunekitError) else f"{type(e).__name__}: {e}"
                self.message.value = (f'<span style="color:#b00020">{html.escape(view)} failed: '
                                      f"{html.escape(said)}</span>")
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        if wait:
            thread.join()

    def _view_compare(self, runs: list) -> list:
        trained = [r for r in runs if r.kind != "prune" and r.kind != "quantize"] or runs
        out = [plots.training_curves(trained), plots.eval_curves(trained),
               plots.pareto(trained, "trainable_params"), plots.pareto(trained, "peak_memory_mb"),
               plots.pareto(trained, "wall_time_s")]
        if any(r.summary.get("size_mb") is not None for r in runs):  # post-training records: what they cost to run
            out += [plots.pareto(runs, "size_mb"), plots.pareto(runs, "latency_ms")]
        return out

    def _usable(self, runs: list) -> list:
        ok = [r for r in runs if r.status in ("completed", "stopped") and r.has_weights
              and ((r.summary.get("steps") or 0) > 0 or r.kind != "train")]
        if not ok:
            raise ValueError("none of the selected runs has trained weights to inspect")
        return ok

    def _view_weights(self, runs: list) -> list:
        runs = self._usable(runs)
        colours = plots.colors(runs)
        wc = plots.named(inspect.weight_change(runs), runs)
        sp = inspect.update_spectra(runs)
        plots.named(sp.table, runs)
        out = [plots.weight_change_heatmap(wc), plots.head_change_bar(wc, colors=colours)]
        if len(runs) >= 2:
            out.append(plots.weight_change_difference(wc, runs[-1].name, runs[0].name))
        moved = sp.table[(sp.table["delta_norm"] > 0) & sp.table["block"].notna()]
        if len(moved):
            out.append(plots.rank_by_block(sp.table, colors=colours))
            # the spectrum of the matrix that moved most, for every run that changed it
            out.append(plots.spectrum(sp, moved.loc[moved["delta_norm"].idxmax(), "name"], colors=colours))
        return out

    def _data_for(self, runs: list) -> tk.TextDataset:
        """The examples to compare representations on: the data the runs were trained on (the
        lab's current data, or that built-in set if the runs came from another)."""
        names = {r.config.get("data", {}).get("name") for r in runs}
        if names <= {self.data.name}:
            return self.data
        if len(names) == 1 and next(iter(names)) in tk.data.BUILTIN:
            return tk.data.load(next(iter(names)))
        raise tk.ConfigError(f"the selected runs were trained on {', '.join(sorted(map(str, names)))}; "
                         f"select runs of one data set (the lab holds {self.data.name})")

    def _view_representations(self, runs: list) -> list:
        runs = self._usable(runs)
        data = self._data_for(runs)
        drift = plots.named(inspect.representation_drift(runs, data=data, n=128), runs)
        return [plots.cka_by_layer(drift, colors=plots.colors(runs)),
                plots.pca_scatter(plots.named(inspect.pca_features(runs, data, n=128), runs))]

    def _view_attribution(self, runs: list) -> list:
        runs = self._usable(runs)
        names = plots.display_names(runs)
        attrs = [a if a.run not in names else dataclasses.replace(a, label=names[a.run])
                 for a in inspect.attribute_runs(runs, self.sentence.value)]
        return [plots.attribution_html(attrs), plots.attribution_view(attrs, difference=True)]
