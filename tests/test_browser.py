"""A real browser: JupyterLab on 127.0.0.1 with a token, headless Chromium driven by Playwright.

Opens notebook 01, runs all cells, checks that every widget of the lab (as the kernel counts
them) has a view and no view is an error, clicks Train and waits until the loss curve has points
and the runs table has a row, then trains a longer second run, clicks Stop and checks it is marked stopped;
then opens the Post-training tab, presses Apply and waits for the prune record in the table.
Throughout, no cell may raise and the page may log no console error, page error, failed request
or HTTP error.
Screenshots go to $TUNEKIT_SCREENSHOTS (default: the test's tmp dir).
"""
from __future__ import annotations

import json
import os
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
pytest.importorskip("jupyterlab")

import jupyter_browser as jb  # noqa: E402  (tests/ is on sys.path under pytest's rootdir conftest)

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_quickstart.ipynb"
# The lab's widget tree as the kernel holds it, written by a cell added to the notebook's copy: the
# page must show a view of every one of them.
CENSUS = """import ipywidgets as _W, json as _json
def _tree(w):
    yield w
    for c in getattr(w, "children", ()):
        yield from _tree(c)
_all = list(_tree(lab))
with open({path!r}, "w") as _f:
    _json.dump({{"widgets": len(_all), "figures": sum(type(w).__name__ == "FigureWidget" for w in _all),
                "buttons": sorted(w.description for w in _all if isinstance(w, _W.Button))}}, _f)"""
# ipywidgets' views carry .jupyter-widgets; a plotly FigureWidget (an anywidget) is a .js-plotly-plot
JS_VIEWS = """() => {
  const q = s => [...document.querySelectorAll('.jp-OutputArea-output ' + s)];
  return {views: q('.jupyter-widgets').length + q('.js-plotly-plot').length, figures: q('.js-plotly-plot').length,
          buttons: q('.widget-button').map(b => b.textContent.trim())}; }"""

JS_LOSS_POINTS = """() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  const loss = plots.find(p => (p.layout && p.layout.title && (p.layout.title.text || p.layout.title) + '').includes('training loss'));
  if (!loss || !loss.data) return -1;
  return loss.data.reduce((n, t) => n + ((t.x && t.x.length) || 0), 0);
}"""
JS_STATE = """() => ({
  status: (document.querySelector('.tunekit-status') || {}).textContent || '',
  rows: document.querySelectorAll('table.tunekit-runs tbody tr').length,
  table: (document.querySelector('table.tunekit-runs') || {}).textContent || ''})"""

# per figure title: drawn SVG (lines with a path, marker points) and the traces plotly holds
JS_DRAWN = """() => {
  const r = {empty: []};
  for (const p of document.querySelectorAll('.js-plotly-plot')) {
    const t = ((p.layout && p.layout.title && (p.layout.title.text || p.layout.title)) || '') + '';
    const lines = [...p.querySelectorAll('.scatterlayer path.js-line')];
    r[t] = {traces: (p.data || []).length,
            lines: lines.filter(l => (l.getAttribute('d') || '').length > 2).length,
            points: p.querySelectorAll('.scatterlayer .points path.point').length};
    if (!r[t].traces) r.empty.push(t);
  }
  return r; }"""



def _curves_drawn(d: dict) -> bool:
    return d.get("training loss", {}).get("lines", 0) >= 1 and d.get("validation accuracy", {}).get("points", 0) >= 1


def _notebook_copy(tmp_path: Path, census: Path | None = None) -> Path:
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cell["source"] = (f'MODEL = "minilm"\nDATA = "rotten_tomatoes"\nRUNS_DIR = {str(tmp_path / "runs")!r}\n'
                              "TRAIN_SIZE = 48\nEVAL_SIZE = 32")
    if census is not None:
        nb["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                            "source": CENSUS.format(path=str(census))})
    out = tmp_path / "nb" / NOTEBOOK.name
    out.parent.mkdir()
    out.write_text(json.dumps(nb))
    return out


def _fill(page, label: str, value: str) -> None:
    box = page.locator(".widget-inline-hbox", has=page.locator(".widget-label", has_text=label)).locator("input")
    box.first.fill(value)
    box.first.press("Enter")


def _watch(page, seen: list[str]) -> None:
    """Collect console errors, uncaught page errors, failed requests and HTTP errors in ``seen``.
    Nothing is ignored: the lab page loads everything from the server, offline."""
    page.on("console", lambda m: m.type == "error" and seen.append(f"console: {m.text} ({(m.location or {}).get('url')})"))
    page.on("pageerror", lambda e: seen.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: seen.append(f"requestfailed: {r.url.split('?')[0]} {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and seen.append(f"HTTP {r.status}: {r.url.split('?')[0]}"))


def test_lab_in_a_real_browser(tmp_path, chromium):
    from playwright.sync_api import sync_playwright
    shots = Path(os.environ.get("TUNEKIT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    census_path = tmp_path / "census.json"
    nb = _notebook_copy(tmp_path, census=census_path)
    args = Namespace(timeout=240, run_via="command")
    report: dict = {}
    problems: list[str] = []
    srv = jb.Server("lab", nb, nb.parent, sys.executable, args.timeout)
    try:
        srv.start()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=jb.CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            _watch(page, problems)
            page.goto(srv.url(), wait_until="domcontentloaded", timeout=args.timeout * 1000)
            jb.run_lab(page, args, report)
            assert report["cells_executed"] == report["cells_total"], report
            census = json.loads(census_path.read_text())
            seen: list = []

            def all_rendered(v):  # a view for every widget of the lab, and the DOM stable ~1 s
                seen.append(json.dumps(v, sort_keys=True))
                return v["views"] >= census["widgets"] and len(seen) >= 4 and len(set(seen[-4:])) == 1
            try:
                views = jb.poll(page, JS_VIEWS, all_rendered, 120, "a view of every widget of the lab")
            except TimeoutError:
                views = page.evaluate(JS_VIEWS)
            assert (views["views"], views["figures"]) == (census["widgets"], census["figures"]), (views, census)
            assert sorted(views["buttons"]) == census["buttons"], (views["buttons"], census["buttons"])
            ws = page.evaluate(jb.JS_WIDGET_STATE, jb.BAD_TEXTS)
            assert ws["error_widgets"] == 0 and not ws["bad"] and ws["errors"] == 0, ws
            outputs = page.locator(".jp-OutputArea")
            outputs.get_by_role("button", name="Train", exact=True).click()
            jb.poll(page, JS_LOSS_POINTS, lambda n: n > 0, 180, "the loss curve to gain points")
            state = jb.poll(page, JS_STATE, lambda s: "completed" in s["status"] and s["rows"] == 1, 240,
                            "the first run to complete and appear in the runs table")
            jb.poll(page, JS_DRAWN, _curves_drawn, 60, "the loss line and the accuracy points")
            page.screenshot(path=str(shots / "lab-trained.png"), full_page=True)

            _fill(page, "train examples", "4000")
            _fill(page, "epochs", "3")
            before = page.evaluate(JS_LOSS_POINTS)
            outputs.get_by_role("button", name="Train", exact=True).click()
            jb.poll(page, JS_LOSS_POINTS, lambda n: n > before, 180, "the second run's curve to start")
            outputs.get_by_role("button", name="Stop", exact=True).click()
            state = jb.poll(page, JS_STATE, lambda s: "stopped" in s["status"] and s["rows"] == 2, 180,
                            "the stopped run to be recorded")
            assert "stopped" in state["table"]
            page.screenshot(path=str(shots / "lab-stopped.png"), full_page=True)

            # the Post-training tab: prune the newest run at the default 50 %; the record joins the table
            page.locator(".lm-TabBar-tab", has_text="Post-training").first.click()
            outputs.get_by_role("button", name="Apply", exact=True).click()
            state = jb.poll(page, JS_STATE, lambda s: s["rows"] == 3 and "prune50" in s["table"], 240,
                            "the prune record to join the runs table")
            page.screenshot(path=str(shots / "lab-post.png"), full_page=True)
            ws = page.evaluate(jb.JS_WIDGET_STATE, jb.BAD_TEXTS)
            assert ws["error_widgets"] == 0 and not ws["bad"] and ws["errors"] == 0, ws
            browser.close()
    finally:
        srv.stop()
    assert not problems, problems
    from tunekit.runs import list_runs
    statuses = sorted(r.status for r in list_runs(tmp_path / "runs"))
    assert statuses == ["completed", "completed", "stopped"]
    assert sorted(r.kind for r in list_runs(tmp_path / "runs")) == ["prune", "train", "train"]
    print(f"screenshots in {shots} ({time.strftime('%H:%M:%S')})")
