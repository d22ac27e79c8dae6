"""Figures that follow their container's width.

plotly's FigureWidget (an anywidget) draws its figure once, when its view is made, at the width
its element has then: an element not yet on the page has none, so plotly takes its 700 px
fallback, and it never looks again. Two parts fix that:

- :func:`figure_widget` makes FigureWidgets with plotly.js's ``responsive`` option, which gives
  each drawn figure its own resize handler (and redraws on a window ``resize`` event);
- :class:`FitFigures`, an invisible widget, watches every plotly figure of the output cell it is
  shown in: each figure's place and its drawing (a ``ResizeObserver`` on both), the cell's size,
  and figures added later (a view's figures, a live curve redrawn). When a figure's drawing is not as wide as
  its place (the file browser opened or closed, a tab shown, the window resized, a figure drawn
  before it had a place), that figure's own resize handler runs; no window event is relied on.
"""
from __future__ import annotations

import anywidget
import plotly.graph_objects as go

_ESM = """
export default {
  render({ el }) {
    el.style.display = "none";
    el.classList.add("tunekit-fit-figures");
    let area = null, timer = null, stopped = false;
    const watched = new WeakSet();
    // a figure drawn at another width than its place's: redraw it (its own handler, else a resize event)
    const misfit = p => {
      const svg = p.querySelector("svg.main-svg"), w = p.getBoundingClientRect().width;
      return svg && w > 0 && Math.abs(svg.getBoundingClientRect().width - w) > 2;
    };
    const fit = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (stopped || !area) return;
        let fallback = false;
        for (const p of area.querySelectorAll(".js-plotly-plot")) {
          if (!misfit(p)) continue;
          if (typeof p._responsiveChartHandler === "function") p._responsiveChartHandler();
          else fallback = true;
        }
        if (fallback) window.dispatchEvent(new Event("resize"));
      }, 120);
    };
    const sizes = new ResizeObserver(fit);
    // each figure's place and its drawing: a drawing made (or remade) at the wrong width is seen too
    const watch = () => {
      for (const p of area.querySelectorAll(".js-plotly-plot, .js-plotly-plot svg.main-svg")) {
        if (!watched.has(p)) { watched.add(p); sizes.observe(p); }
      }
      fit();
    };
    const added = new MutationObserver(watch);
    const start = () => {
      if (stopped) return;
      area = el.isConnected && (el.closest(".jp-OutputArea-output") || el.parentElement);
      if (!area) { requestAnimationFrame(start); return; }
      sizes.observe(area);
      added.observe(area, { childList: true, subtree: true });
      watch();
    };
    start();
    return () => { stopped = true; sizes.disconnect(); added.disconnect(); clearTimeout(timer); };
  }
};
"""


class FitFigures(anywidget.AnyWidget):
    """Invisible; keeps every responsive plotly figure of its output cell drawn at its place's
    width (see the module's docstring). One per lab or runs panel."""

    _esm = _ESM


def figure_widget(fig) -> go.FigureWidget:
    """``fig`` as a FigureWidget that redraws at its container's width (plotly.js ``responsive``)."""
    widget = fig if isinstance(fig, go.FigureWidget) else go.FigureWidget(fig)
    widget._config = {**(widget._config or {}), "responsive": True}
    return widget
