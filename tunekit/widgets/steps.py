"""The Weights view at each point a run kept during training (``snapshots=k``): a slider from the
start to the end over the weight change map and the spectrum of the update that moved most."""
from __future__ import annotations

import math
from typing import Optional

import ipywidgets as W

from tunekit import inspect, plots
from tunekit.plots import captions
from tunekit.plots.captions import param_label
from tunekit.widgets.sizer import figure_widget
from tunekit.widgets.words import note


class StepSlider(W.VBox):
    """The weight change map at each point that runs kept with ``snapshots=k``: a slider from
    the start to the end, one panel per run, on the end's colour scale (so that the change is
    seen growing); with ``spectrum`` (a matrix's name), that matrix's update spectrum at the same
    point below it, on the end's axes. Runs with another number of points take their nearest point."""

    def __init__(self, pairs: list, runs: list, zmax: float, text_scale: float = 1.0,
                 spectrum: Optional[str] = None, colors: Optional[dict] = None):
        # a run without snapshots is its end at every point
        self._points = {p.run.name: inspect.snapshot_pairs(p) for p in pairs}
        self._runs, self._zmax, self._scale = runs, zmax, text_scale
        self._spectrum, self._colors, self._range = spectrum, colors, None
        most = max(len(v) for v in self._points.values())
        self.slider = W.SelectionSlider(options=[(self._words(i, most), i) for i in range(most)], value=most - 1,
                                        description="point", continuous_update=False,
                                        layout=W.Layout(width="min(640px, 100%)"),
                                        style={"description_width": "60px"})
        self._most = most
        self.slider.observe(lambda change: self.draw(change["new"]), "value")
        super().__init__([self.slider, W.HTML()])
        self._tunekit_kind = None  # it holds its own captions, each under its figure
        self.draw(most - 1)

    def _words(self, i: int, most: int) -> str:
        steps = sorted({pairs[self._index(i, most, len(pairs))].step for pairs in self._points.values()
                        if len(pairs) > 1})
        at = "the start" if i == 0 else "the end" if i == most - 1 else f"{round(100 * i / (most - 1))} %"
        return f"{at} (step {', '.join(map(str, steps))})"

    @staticmethod
    def _index(i: int, most: int, n: int) -> int:
        return round(i * (n - 1) / (most - 1)) if most > 1 else n - 1

    def chosen(self, i: int) -> list:
        """The pair of each run at point ``i`` of the slider."""
        return [pairs[self._index(i, self._most, len(pairs))] for pairs in self._points.values()]

    def draw(self, i: int) -> None:
        at = self.slider.label.split(" (")[0]
        pairs = self.chosen(i)
        wc = plots.named(inspect.weight_change(pairs), self._runs)
        fig = plots.weight_change_heatmap(wc, zmax=self._zmax)
        fig.layout.title.text = f"Weight change per module at {at}"
        shown = [self.slider, figure_widget(plots.axes.scale_text(fig, self._scale)),
                 W.HTML(captions.caption_html(captions.caption_for(fig, "weight_change_heatmap")))]
        if self._spectrum is not None:
            shown += self._spectrum_at(pairs, at)
        self.children = tuple(shown)

    def _spectrum_at(self, pairs: list, at: str) -> list:
        """The spectrum of the chosen matrix's update at this point, on the axes of the end's (drawn
        first), with its caption; at the start, in words (nothing has moved yet)."""
        sp = inspect.update_spectra(pairs, names=[self._spectrum])  # the one matrix drawn, not every SVD
        plots.named(sp.table, self._runs)
        moved = sp.table[(sp.table["name"] == self._spectrum) & (sp.table["delta_norm"] > 0)]
        if moved.empty:
            return [W.HTML(note(f"No spectrum at {at}: {param_label(self._spectrum)} has not moved yet."))]
        fig = plots.spectrum(sp, self._spectrum, colors=self._colors)
        if self._range is None:  # the end's, so that the spectrum is seen growing too
            values = [v for k, s in sp.singular_values.items() if k[1] == self._spectrum for v in s if v > 0]
            values += [v for k, s in sp.noise.items() if k[1] == self._spectrum for v in s if v > 0]
            self._range = [math.log10(min(values)) - 0.1, math.log10(max(values)) + 0.1]
        fig.update_yaxes(range=self._range, autorange=False)
        fig.layout.title.text = f"{fig.layout.title.text} at {at}"
        fig._tunekit_kind = "spectrum"
        text = captions.caption_for(fig, "spectrum")
        shown = [figure_widget(plots.axes.scale_text(fig, self._scale))]
        return shown + ([W.HTML(captions.caption_html(text))] if text else [])

    def set_text_scale(self, scale: float, factor: float) -> None:
        """The lab's projector switch: the figures shown now, and those drawn later."""
        self._scale = scale
        for w in self.children[1:]:
            if not isinstance(w, W.HTML):
                plots.axes.scale_text(w, factor)
