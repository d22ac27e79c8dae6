"""Figures that follow their container's width.

plotly's FigureWidget (an anywidget) draws its figure once, when its view is made, at the width
its element has then: an element not yet on the page has none, so plotly takes its 700 px
fallback, and it never looks again (the widget has no resize listener of its own). Two parts
fix that:

- :func:`figure_widget` makes FigureWidgets with plotly.js's ``responsive`` option, which
  redraws a figure at its container's width on every window ``resize`` event;
- :class:`FitFigures`, an invisible widget, watches the size of the output cell it is shown in
  (a view's figures added, the file browser opened or closed, the window resized) and then
  sends one ``resize`` event, so those figures take their container's width.
"""
from __future__ import annotations

import anywidget
import plotly.graph_objects as go

_ESM = """
export default {
  render({ el }) {
    el.style.display = "none";
    el.classList.add("tunekit-fit-figures");
    let timer = null, observer = null, stopped = false, last = "";
    const fire = () => {
      clearTimeout(timer);
      timer = setTimeout(() => window.dispatchEvent(new Event("resize")), 150);
    };
    const start = () => {
      if (stopped) return;
      const area = el.isConnected && (el.closest(".jp-OutputArea-output") || el.parentElement);
      if (!area) { requestAnimationFrame(start); return; }
      observer = new ResizeObserver(entries => {
        const r = entries[entries.length - 1].contentRect, size = `${Math.round(r.width)}x${Math.round(r.height)}`;
        if (size !== last) { last = size; fire(); }
      });
      observer.observe(area);
    };
    start();
    return () => { stopped = true; if (observer) observer.disconnect(); clearTimeout(timer); };
  }
};
"""


class FitFigures(anywidget.AnyWidget):
    """Invisible; keeps the responsive plotly figures of its output cell as wide as their
    containers (see the module's docstring). One per lab or runs panel."""

    _esm = _ESM


def figure_widget(fig) -> go.FigureWidget:
    """``fig`` as a FigureWidget that redraws at its container's width (plotly.js ``responsive``)."""
    widget = fig if isinstance(fig, go.FigureWidget) else go.FigureWidget(fig)
    widget._config = {**(widget._config or {}), "responsive": True}
    return widget
