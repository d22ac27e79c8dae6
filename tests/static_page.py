"""Open an exported HTML page in headless Chromium with the network cut off, and report what drew.

Used by tests/test_export.py and tests/test_notebooks.py. Every http(s) request is aborted, so a
page that needs a CDN shows it here (as blank widgets), not only on a workshop's offline laptop.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from jupyter_browser import CHROMIUM_FLAGS as FLAGS  # tests/ is on sys.path

REQUIRE_BROWSER = "TUNEKIT_REQUIRE_BROWSER"


def chromium_path() -> str:
    """``$TUNEKIT_CHROMIUM``, else ``chromium`` on PATH, else Debian's /usr/bin/chromium."""
    return os.environ.get("TUNEKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def require_browser() -> str:
    """The Chromium that Playwright drives (Playwright cannot download browsers here).

    Without it, or without Playwright, the calling test is skipped; with
    ``TUNEKIT_REQUIRE_BROWSER=1`` (.ci/run sets it) it fails instead, so CI cannot pass a
    browser test that never ran. Every real-browser test goes through here."""
    path = chromium_path()
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("Playwright (bash scripts/setup.sh --dev)")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        missing.append(f"Chromium, not found at {path} (sudo apt-get install chromium)")
    if not missing:
        return path
    why = "the browser tests need " + " and ".join(missing)
    if os.environ.get(REQUIRE_BROWSER) == "1":
        pytest.fail(f"{why}; {REQUIRE_BROWSER}=1 makes this a failure, not a skip", pytrace=False)
    pytest.skip(why)
JS_STATE = """() => ({
  plots: [...document.querySelectorAll('.js-plotly-plot')].filter(p => p._fullLayout).length,
  titles: [...document.querySelectorAll('.js-plotly-plot')].map(p => (p.layout && p.layout.title &&
          (p.layout.title.text || p.layout.title)) + ''),
  widget_outputs: document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length,
  widgets: document.querySelectorAll('.jupyter-widgets').length,
  buttons: [...document.querySelectorAll('.widget-button, button.jupyter-button')].map(b => b.textContent.trim()),
  error_widgets: document.querySelectorAll('.jupyter-widgets-error-widget').length,
  text: document.body.innerText.includes('Error displaying widget')})"""


def check_page(page_path: Path, expect_plots: int = 0, expect_widgets: bool = False, screenshot: Path | None = None,
               timeout: float = 90) -> dict:
    """Load ``page_path`` offline; wait until ``expect_plots`` figures have drawn (and, with
    ``expect_widgets``, until widget views exist); return the state plus console errors."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=require_browser(), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1600})
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
            page.route("http*://**", lambda route: route.abort())  # offline
            page.goto(Path(page_path).resolve().as_uri(), wait_until="load", timeout=timeout * 1000)
            deadline = time.monotonic() + timeout
            while True:
                state = page.evaluate(JS_STATE)
                done = state["plots"] >= expect_plots and (not expect_widgets or state["widgets"] > 0)
                if done or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            time.sleep(1.0)  # let late views finish
            state = page.evaluate(JS_STATE)
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    # Aborted requests (fonts, MathJax from a CDN) are expected offline. anywidget rejects a
    # model's "ready" promise when its ESM (plotly's ~5 MB bundle) takes over 2 s to load, which
    # a page with several FigureWidgets does on 2 busy cores; the figure still draws (callers
    # count drawn plots), so that message is not an error here.
    expected = ("net::ERR_FAILED", "Failed to load resource", "[anywidget] Failed to initialize model.")
    state["console_errors"] = [e for e in errors if not any(x in e for x in expected)]
    return state
