"""The lab under Voila, in a real browser: Voila on 127.0.0.1 with a token, headless Chromium.

Voila executes notebook 01 (a copy with a small parameters cell) server-side and renders its
widgets; the test checks every widget view rendered with no error views, clicks Train once, waits
until the run is completed and listed in the runs table and both curves are drawn, and checks the
console. Screenshots (before and after training, the whole page) go to $TUNEKIT_SCREENSHOTS
(default: the test's tmp dir).

It also forces the frontend race the lab recovers from (see ANYWIDGET_TIMEOUT): the page is told
that both curve figures missed anywidget's init window, as happens on a busy machine, so they drop
every update; the lab must notice and redraw them. The test asserts that the miss happened (both
2 s windows were cut short and expired) and that the curves drawn at the end are new figures, not
the stuck ones shown first.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("voila")
# test_browser skips this module too when JupyterLab is missing
import jupyter_browser as jb  # noqa: E402
from test_browser import JS_DRAWN, JS_LOSS_POINTS, JS_STATE, _curves_drawn, _notebook_copy  # noqa: E402

# The only failures expected offline: Voila's page links Font Awesome from a CDN (the icons fall
# back to the bundled JupyterLab ones). Anything else in the console fails the test.
IGNORED_URLS = ("cdn.jsdelivr.net/npm/@fortawesome/",)

# anywidget's frontend gives each model 2 s (AbortSignal.timeout(2000) in its Runtime, anywidget
# 0.9-0.11) to import its ESM. Voila creates all widget models at once after executing the notebook,
# and each plotly FigureWidget imports plotly's ~5 MB bundle; on a busy 2-core machine a figure misses
# the window (25-50 % of runs at load 3-4), its `ready` promise rejects, and AnyModel then drops every
# later comm message for it, silently (this page error shows only sometimes). The lab notices the
# missing acknowledgements and replaces the figure (Lab.redraw_stale_curves).
ANYWIDGET_TIMEOUT = "[anywidget] Failed to initialize model."
# Make the first two 2-second windows (the two curve figures) expire at once: a deterministic miss.
# The page counts the windows it shortened and those that expired (window.__tunekitForcedMisses).
FORCE_MISSED_INIT = """(() => { const timeout = AbortSignal.timeout.bind(AbortSignal);
  const forced = window.__tunekitForcedMisses = {shortened: 0, expired: 0};
  AbortSignal.timeout = (ms) => {
    if (ms !== 2000 || forced.shortened >= 2) return timeout(ms);
    forced.shortened++;
    const signal = timeout(1);
    signal.addEventListener('abort', () => { forced.expired++; });
    return signal; }; })()"""
JS_FORCED = "() => window.__tunekitForcedMisses || null"
# Mark the figure elements shown before training; the lab's redraw replaces the stuck ones by new views.
JS_MARK_FIGURES = """() => { const plots = [...document.querySelectorAll('.js-plotly-plot')];
  plots.forEach(p => { p.dataset.tunekitFirst = '1'; }); return plots.length; }"""
JS_FIGURES = """() => [...document.querySelectorAll('.js-plotly-plot')].map(p => ({
  title: ((p.layout && p.layout.title && (p.layout.title.text || p.layout.title)) || '') + '',
  first: p.dataset.tunekitFirst === '1'}))"""
CURVE_TITLES = ("training loss", "validation accuracy")

# Voila's page does not scroll: #rendered_cells does, so grow the viewport to show all of it
JS_PAGE_HEIGHT = """() => { const c = document.getElementById('rendered_cells');
  return Math.ceil(c ? c.getBoundingClientRect().top + c.scrollHeight : document.documentElement.scrollHeight); }"""


def _screenshot(page, path: Path) -> None:
    size = page.viewport_size
    need = page.evaluate(JS_PAGE_HEIGHT) + 20
    if need > size["height"]:
        page.set_viewport_size({"width": size["width"], "height": min(need, 8000)})
        page.wait_for_timeout(500)  # plotly relayout
    page.screenshot(path=str(path), full_page=True)


def test_lab_under_voila(tmp_path, chromium):
    from playwright.sync_api import sync_playwright
    shots = Path(os.environ.get("TUNEKIT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    nb = _notebook_copy(tmp_path)
    timeout = 240
    errors: list[str] = []
    t0 = time.time()
    srv = jb.Server("voila", nb, nb.parent, sys.executable, timeout)
    try:
        srv.start()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=jb.CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.add_init_script(FORCE_MISSED_INIT)

            def on_console(m):
                url = (m.location or {}).get("url", "")
                if m.type == "error" and not any(u in url for u in IGNORED_URLS):
                    errors.append(f"console: {m.text} ({url})")
            page.on("console", on_console)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.on("requestfailed", lambda r: any(u in r.url for u in IGNORED_URLS) or errors.append(
                f"requestfailed: {r.url.split('?')[0]} {r.failure}"))

            # Voila 0.5 executes the notebook while it streams the page: 'load' means executed
            resp = page.goto(srv.url(), wait_until="load", timeout=timeout * 1000)
            assert resp is not None and resp.status == 200, (resp and resp.status, srv.tail())
            seen: list = []

            def rendered(s):  # the lab's views attached, both figures, no error view, stable ~1 s
                ok = s["rendered"] >= 1 and s["plotly"] >= 2 and not s["bad"] and not s["error_widgets"]
                seen.append(repr(s) if ok else None)
                return ok and len(seen) >= 4 and len(set(seen[-4:])) == 1
            ws = jb.poll(page, jb.JS_WIDGET_STATE, rendered, 120, "the widgets to render", jb.BAD_TEXTS)
            assert ws["errors"] == 0, f"a cell raised: {ws}"
            assert page.locator(".widget-label", has_text="train examples").count(), "no strategy controls"
            _screenshot(page, shots / "voila-rendered.png")
            # the miss really happened: anywidget asked for both figures' 2 s windows, they expired
            assert page.evaluate(JS_FORCED) == {"shortened": 2, "expired": 2}, page.evaluate(JS_FORCED)
            assert page.evaluate(JS_MARK_FIGURES) >= 2

            page.locator(".jp-OutputArea").get_by_role("button", name="Train", exact=True).click()
            # status and runs table are plain ipywidgets; the curves are plotly FigureWidgets (anywidget)
            state = jb.poll(page, JS_STATE, lambda s: "completed" in s["status"] and s["rows"] == 1, 240,
                            "the run to complete and appear in the runs table")
            assert "completed" in state["table"], state
            # both figures dropped every update; the lab redraws them (at the latest ~5 s after the run)
            drawn = jb.poll(page, JS_DRAWN, _curves_drawn, 60, "both curves redrawn")
            loss_points = page.evaluate(JS_LOSS_POINTS)
            # ... and what is drawn are the lab's new figures: the stuck ones shown at first are gone
            figures = page.evaluate(JS_FIGURES)
            curves = [f for f in figures if f["title"].startswith(CURVE_TITLES)]
            assert len(curves) == 2 and not any(f["first"] for f in curves), figures
            ws = page.evaluate(jb.JS_WIDGET_STATE, jb.BAD_TEXTS)
            assert not ws["bad"] and not ws["error_widgets"] and not ws["errors"], ws
            _screenshot(page, shots / "voila-trained.png")
            browser.close()
    finally:
        stopped = srv.stop()
    from tunekit.runs import list_runs
    assert [r.status for r in list_runs(tmp_path / "runs")] == ["completed"]
    forced = [e for e in errors if ANYWIDGET_TIMEOUT in e]  # the misses this test forced
    assert not [e for e in errors if e not in forced], errors
    print(f"voila: curves {drawn}, loss points {loss_points}, {state['status']!r}; shutdown {stopped}; "
          f"{time.time() - t0:.1f} s; screenshots in {shots}")
    assert _curves_drawn(drawn) and loss_points > 0
