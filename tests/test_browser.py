"""A real browser: JupyterLab on 127.0.0.1 with a token, headless Chromium driven by Playwright.

Opens notebook 01, runs all cells, checks every widget rendered with no error views and no
console errors, clicks Train and waits until the loss curve has points and the runs table
has a row, then trains a longer second run, clicks Stop and checks it is marked stopped;
then opens the Post-training tab, presses Apply and waits for the prune record in the table.
Screenshots go to $TUNEKIT_SCREENSHOTS (default: the test's tmp dir).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from argparse import Namespace
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("jupyterlab")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():  # scripts/setup.sh --dev installs it (Debian's chromium)
    pytest.skip("Debian chromium is not installed (bash scripts/setup.sh --dev installs it)", allow_module_level=True)

import jupyter_browser as jb  # noqa: E402  (tests/ is on sys.path under pytest's rootdir conftest)

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_quickstart.ipynb"
IGNORED_CONSOLE = ("favicon", "Failed to load resource", "fonts.googleapis", "net::ERR")

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


def _notebook_copy(tmp_path: Path) -> Path:
    nb = json.loads(NOTEBOOK.read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cell["source"] = (f'MODEL = "minilm"\nDATA = "rotten_tomatoes"\nRUNS_DIR = {str(tmp_path / "runs")!r}\n'
                              "TRAIN_SIZE = 48\nEVAL_SIZE = 32")
    out = tmp_path / "nb" / NOTEBOOK.name
    out.parent.mkdir()
    out.write_text(json.dumps(nb))
    return out


def _fill(page, label: str, value: str) -> None:
    box = page.locator(".widget-inline-hbox", has=page.locator(".widget-label", has_text=label)).locator("input")
    box.first.fill(value)
    box.first.press("Enter")


def test_lab_in_a_real_browser(tmp_path):
    shots = Path(os.environ.get("TUNEKIT_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    nb = _notebook_copy(tmp_path)
    args = Namespace(timeout=240, run_via="command")
    report: dict = {}
    console: list[str] = []
    srv = jb.Server("lab", nb, nb.parent, sys.executable, args.timeout)
    try:
        srv.start()
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=jb.CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 2400})
            page.on("console", lambda m: m.type == "error" and console.append(m.text))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(srv.url(), wait_until="domcontentloaded", timeout=args.timeout * 1000)
            jb.run_lab(page, args, report)
            assert report["cells_executed"] == report["cells_total"], report
            ws = jb.poll(page, jb.JS_WIDGET_STATE, lambda s: s["rendered"] >= 1 and not s["bad"], 120,
                         "widgets to render", jb.BAD_TEXTS)
            assert ws["error_widgets"] == 0 and not ws["bad"], ws
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
            browser.close()
    finally:
        srv.stop()
    errors = [c for c in console if not any(s in c for s in IGNORED_CONSOLE)]
    assert not errors, errors
    from tunekit.runs import list_runs
    statuses = sorted(r.status for r in list_runs(tmp_path / "runs"))
    assert statuses == ["completed", "completed", "stopped"]
    assert sorted(r.kind for r in list_runs(tmp_path / "runs")) == ["prune", "train", "train"]
    print(f"screenshots in {shots} ({time.strftime('%H:%M:%S')})")
