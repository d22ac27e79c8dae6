#!/usr/bin/env python3
"""(Copied from the workshop's shared/browser_check.py, a tested example; used by test_browser.py.)

End-to-end browser check for a Jupyter notebook with ipywidgets / plotly.

Starts JupyterLab (or Voila) on a free 127.0.0.1 port with a random token,
opens NOTEBOOK in headless Chromium via Playwright, runs all cells, waits for
widget outputs to render, optionally clicks a widget button (by its
description) and checks that the notebook's outputs change, saves a
screenshot, reports JS console errors and "Error displaying widget" text, and
shuts the server (and its kernels) down.

Requirements (same env that runs this script, unless --python is given):
    pip install jupyterlab ipywidgets plotly anywidget playwright [voila]
    apt-get install chromium          # browser downloads do not work offline

Exit status: 0 = all checks passed, 1 = a check failed, 2 = setup error.
A JSON report is printed to stdout (and written to --report if given).

Example:
    python browser_check.py demo.ipynb --click Apply --expect-text "clicked:"
        --wait-selector .js-plotly-plot --screenshot /tmp/shot.png [--server voila]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-dev-shm-usage",
]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
BAD_TEXTS = ["Error displaying widget", "Failed to load model class",
             "Loading widget...", "Failed to create view", "Click to show javascript error"]


def log(*a):
    print("[browser_check]", *a, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[int]:
    """All descendant PIDs of pid (kernels run in their own session, so
    killing the server's process group would miss them)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # zombie?
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Server:
    """JupyterLab or Voila bound to 127.0.0.1 with a random token."""

    def __init__(self, kind: str, notebook: Path, root: Path, python: str, timeout: float):
        self.kind, self.nb, self.root, self.python = kind, notebook, root, python
        self.port, self.token = free_port(), secrets.token_hex(24)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bc-{kind}-"))
        self.log_path = self.tmp / "server.log"
        self.timeout = timeout
        self.proc: subprocess.Popen | None = None
        self.base = f"http://127.0.0.1:{self.port}"

    def _lab_settings(self) -> Path:
        """Hermetic settings: all cells attached to the DOM (no virtual
        scrolling), no news/update checks (no network here)."""
        d = self.tmp / "app-settings"
        d.mkdir()
        overrides = {
            "@jupyterlab/notebook-extension:tracker": {"windowingMode": "none"},
            "@jupyterlab/apputils-extension:notification": {
                "fetchNews": "false", "checkForUpdates": False},
        }
        # keep page_config.json / overrides.json of the env, if any
        try:
            out = subprocess.run([self.python, "-c",
                                  "from jupyterlab.commands import get_app_dir;print(get_app_dir())"],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
            src = Path(out) / "settings"
            if (src / "page_config.json").exists():
                shutil.copy(src / "page_config.json", d)
            if (src / "overrides.json").exists():
                base = json.loads((src / "overrides.json").read_text())
                for k, v in overrides.items():
                    base.setdefault(k, {}).update(v)
                overrides = base
        except Exception as e:  # noqa: BLE001
            log("could not read env lab settings:", e)
        (d / "overrides.json").write_text(json.dumps(overrides, indent=1))
        return d

    def start(self):
        env = dict(os.environ)
        env["JUPYTER_RUNTIME_DIR"] = str(self.tmp / "runtime")
        env.pop("JUPYTER_TOKEN", None)
        if self.kind == "lab":
            cmd = [self.python, "-m", "jupyterlab", "--no-browser",
                   "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
                   "--ServerApp.port_retries=0",
                   f"--IdentityProvider.token={self.token}",
                   f"--ServerApp.root_dir={self.root}",
                   "--allow-root",
                   "--LabApp.expose_app_in_browser=True",
                   f"--LabApp.app_settings_dir={self._lab_settings()}",
                   f"--LabApp.user_settings_dir={self.tmp / 'user-settings'}",
                   f"--LabApp.workspaces_dir={self.tmp / 'workspaces'}"]
        else:
            cmd = [self.python, "-m", "voila", str(self.nb), "--no-browser",
                   "--Voila.ip=127.0.0.1", f"--port={self.port}",
                   f"--token={self.token}", f"--Voila.root_dir={self.root}"]
        log("starting:", " ".join(c if self.token not in c else c.replace(self.token, "***") for c in cmd))
        self.logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self.logf,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early ({self.proc.returncode}):\n{self.tail()}")
            try:
                if self.kind == "lab":
                    req = urllib.request.Request(f"{self.base}/api/status",
                                                 headers={"Authorization": f"token {self.token}"})
                    with urllib.request.urlopen(req, timeout=2) as r:
                        if r.status == 200:
                            return
                else:  # GET / on voila would execute the notebook: only probe the socket
                    with socket.create_connection(("127.0.0.1", self.port), timeout=2):
                        return
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not up after {self.timeout}s:\n{self.tail()}")

    def url(self) -> str:
        if self.kind == "lab":
            rel = urllib.parse.quote(self.nb.relative_to(self.root).as_posix())
            return f"{self.base}/lab/tree/{rel}?token={self.token}"
        return f"{self.base}/?token={self.token}"

    def tail(self, n=40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-n:]
            return "\n".join(lines).replace(self.token, "***")
        except OSError:
            return ""

    def stop(self) -> dict:
        info = {"clean": True}
        if not self.proc:
            return info
        pids = descendants(self.proc.pid)  # kernels etc.
        if self.proc.poll() is None and self.kind == "lab":
            try:  # shuts kernels down too
                req = urllib.request.Request(f"{self.base}/api/shutdown", method="POST",
                                             headers={"Authorization": f"token {self.token}"})
                urllib.request.urlopen(req, timeout=10).read()
            except Exception as e:  # noqa: BLE001
                log("api/shutdown failed:", e)
        elif self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            info["clean"] = False
            self.proc.kill()
            self.proc.wait(timeout=10)
        # anything left (e.g. kernels of voila) -> by PID only
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = [p for p in pids if alive(p)]
            if not left:
                break
            info["clean"] = False
            info.setdefault("killed", []).extend(left)
            for p in left:
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
            time.sleep(2)
        self.logf.close()
        info["returncode"] = self.proc.returncode
        return info


# ---------------------------------------------------------------- browser

JS_COUNT_ERRORS = """function countErrors() {
  // error outputs: from the notebook model if window.jupyterapp is exposed, else a DOM heuristic
  const app = window.jupyterapp, nb = app && app.shell.currentWidget && app.shell.currentWidget.content;
  if (nb && nb.widgets) {
    let n = 0;
    for (const c of nb.widgets) {
      if (c.model.type !== 'code') continue;
      const o = c.model.outputs;
      for (let i = 0; i < o.length; i++) if (o.get(i).type === 'error') n++;
    }
    return n;
  }
  return [...document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]')]
    .filter(e => /Traceback \\(most recent call last\\)|There was an error when executing cell/.test(e.innerText)).length;
}
"""

JS_CELL_STATE = """() => {
  COUNT_ERRORS_PLACEHOLDER
  const cells = [...document.querySelectorAll('.jp-Notebook .jp-CodeCell')];
  let pending = 0, total = 0;
  for (const c of cells) {
    const src = (c.querySelector('.cm-content')?.innerText || '').trim();
    if (!src) continue;
    total++;
    const p = (c.querySelector('.jp-InputPrompt')?.innerText || '');
    if (!/\\[\\d+\\]/.test(p)) pending++;
  }
  const ind = document.querySelector('.jp-Notebook-ExecutionIndicator');
  const errors = countErrors();
  // kernel actually connected? (model when the app is exposed, else the status bar text)
  const app = window.jupyterapp, w = app && app.shell.currentWidget, sc = w && w.sessionContext;
  const ready = sc ? !!(sc.isReady && sc.session && sc.session.kernel &&
                        sc.session.kernel.connectionStatus === 'connected')
                   : /\\| Idle/.test(document.querySelector('#jp-main-statusbar')?.innerText || '');
  return {total, pending, errors, ready, kernel: ind ? ind.getAttribute('data-status') : null};
}"""

JS_WIDGET_STATE = """(bad) => {
  COUNT_ERRORS_PLACEHOLDER
  // expected = widget-view outputs in the notebook model (JupyterLab with the app exposed)
  let expected = null;
  const app = window.jupyterapp, nb = app && app.shell.currentWidget && app.shell.currentWidget.content;
  if (nb && nb.widgets) {
    expected = 0;
    for (const c of nb.widgets) {
      if (c.model.type !== 'code') continue;
      const o = c.model.outputs;
      for (let i = 0; i < o.length; i++) if (o.get(i).data && o.get(i).data['%s']) expected++;
    }
  }
  const outs = [...document.querySelectorAll('.jp-OutputArea-output')];
  const rendered = outs.filter(o => o.firstElementChild &&
                               o.firstElementChild.classList.contains('jupyter-widgets')).length;
  const text = document.body.innerText;
  return {expected, rendered, outputs: outs.length, bad: bad.filter(b => text.includes(b)),
          error_widgets: document.querySelectorAll('.jupyter-widgets-error-widget').length,
          plotly: document.querySelectorAll('.js-plotly-plot').length, errors: countErrors()};
}""" % WIDGET_MIME
JS_CELL_STATE = JS_CELL_STATE.replace("COUNT_ERRORS_PLACEHOLDER", JS_COUNT_ERRORS)
JS_WIDGET_STATE = JS_WIDGET_STATE.replace("COUNT_ERRORS_PLACEHOLDER", JS_COUNT_ERRORS)

JS_OUTPUT_TEXT = """() => {
  const sel = document.querySelectorAll('.widget-output');
  const nodes = sel.length ? sel : document.querySelectorAll('.jp-OutputArea');
  return [...nodes].map(n => n.innerText).join('\\n---\\n');
}"""


JS_FULL_HEIGHT = """() => {
  const outer = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');
  const cells = outer ? outer.querySelectorAll('.jp-Cell') : [];
  if (!cells.length) return window.innerHeight;
  const last = cells[cells.length - 1].getBoundingClientRect().bottom;
  const need = last - outer.getBoundingClientRect().top + outer.scrollTop + 40;
  return Math.ceil(window.innerHeight + Math.max(0, need - outer.clientHeight));
}"""


def poll(page, fn, cond, timeout, what, arg=None):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = page.evaluate(fn, arg) if arg is not None else page.evaluate(fn)
        if cond(last):
            return last
        page.wait_for_timeout(250)
    raise TimeoutError(f"timed out waiting for {what}; last state: {last}")


def accept_dialog(page, report) -> bool:
    """'Select Kernel' (notebook without kernelspec) etc.: accept the default.
    Returns False so it can be chained in a poll condition."""
    d = page.locator(".jp-Dialog")
    if d.count():
        report.setdefault("dialogs", []).append(d.first.inner_text()[:80].replace("\n", " | "))
        d.locator(".jp-mod-accept").first.click()
    return False


def run_lab(page, args, report):
    page.wait_for_selector(".jp-NotebookPanel", timeout=args.timeout * 1000)
    poll(page, JS_CELL_STATE,
         lambda s: accept_dialog(page, report) or (s["ready"] and s["kernel"] == "idle"),
         args.timeout, "kernel ready")
    t0 = time.time()
    via = args.run_via
    if via == "auto":
        via = "command" if page.evaluate("() => !!window.jupyterapp") else "menu"
    # clear saved outputs/execution counts first, else a notebook saved with "[1]" prompts
    # would look finished before anything ran
    if via == "command":
        page.evaluate("""async () => {
            const app = window.jupyterapp;
            const w = app.shell.currentWidget; if (w) app.shell.activateById(w.id);
            await app.commands.execute('notebook:clear-all-cell-outputs');
            app.commands.execute('notebook:run-all-cells'); }""")  # not awaited: may wait on a dialog
    else:  # menu bar: Edit > Clear Outputs of All Cells, Run > Run All Cells
        for menu, item in (("Edit", "Clear Outputs of All Cells"), ("Run", "Run All Cells")):
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{menu}$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{item}$")).click()
    report["run_via"] = via
    if via == "command" and getattr(args, "file_browser", False):  # as a user sees it: the file browser open
        page.evaluate("() => { window.jupyterapp.shell.expandLeft(); window.jupyterapp.shell.activateById('filebrowser'); }")
    elif via == "command":  # more room for the notebook in the screenshot
        page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    # done = every non-empty code cell has a number and the kernel is idle; after an
    # exception JupyterLab aborts the remaining cells, so "error + idle" (twice) also ends it
    idle_err = [0]

    def done(s):
        accept_dialog(page, report)
        if s["kernel"] != "idle":
            idle_err[0] = 0
            return False
        idle_err[0] += bool(s["errors"])
        return s["pending"] == 0 or idle_err[0] >= 3
    st = poll(page, JS_CELL_STATE, done, args.timeout, "cells to finish")
    report["cells_executed"] = st["total"] - st["pending"]
    report["cells_total"] = st["total"]
    report["run_all_s"] = round(time.time() - t0, 2)


def run_voila(page, args, report):
    # voila 0.5 executes the notebook server-side while streaming the page, so the
    # 'load' event (see goto) means "executed"; widgets are then rendered client-side
    page.wait_for_load_state("load", timeout=args.timeout * 1000)
    try:
        page.wait_for_selector(".jp-OutputArea-output", timeout=args.timeout * 1000)
    except Exception:  # noqa: BLE001
        report.setdefault("notes", []).append("no output area found")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebook", type=Path)
    ap.add_argument("--server", choices=["lab", "voila"], default="lab")
    ap.add_argument("--root-dir", type=Path, help="server root (default: notebook's folder)")
    ap.add_argument("--python", default=sys.executable, help="interpreter that runs the server")
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--click", metavar="DESCRIPTION", help="click the widget button with this text")
    ap.add_argument("--expect-text", help="after the click, wait until outputs contain this text")
    ap.add_argument("--wait-selector", action="append", default=[],
                    help="CSS selector that must appear (repeatable), e.g. .js-plotly-plot")
    ap.add_argument("--screenshot", type=Path, default=Path("notebook.png"))
    ap.add_argument("--full", action="store_true", help="grow viewport to the whole notebook")
    ap.add_argument("--viewport", default="1400x1100")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per waiting step")
    ap.add_argument("--run-via", choices=["auto", "command", "menu"], default="auto")
    ap.add_argument("--ignore-console", action="append", default=[],
                    help="regex of console errors to ignore (repeatable)")
    ap.add_argument("--fail-on-console-error", action="store_true")
    ap.add_argument("--report", type=Path, help="also write the JSON report here")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright  # after argparse: --help works without it

    nb = args.notebook.resolve()
    root = (args.root_dir or nb.parent).resolve()
    if not nb.exists():
        log("no such notebook:", nb)
        return 2
    report: dict = {"notebook": str(nb), "server": args.server, "failures": []}
    fail = report["failures"].append
    console: list[str] = []
    t_start = time.time()
    srv = Server(args.server, nb, root, args.python, args.timeout)
    try:
        srv.start()
        report["server_start_s"] = round(time.time() - t_start, 2)
        w, h = (int(x) for x in args.viewport.split("x"))
        with sync_playwright() as p:
            # Playwright adds --headless and a fresh temporary --user-data-dir itself
            browser = p.chromium.launch(executable_path=args.chromium, headless=True,
                                        args=CHROMIUM_FLAGS)
            report["browser"] = browser.version
            page = browser.new_page(viewport={"width": w, "height": h})
            page.on("console", lambda m: m.type == "error" and console.append(f"console: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.on("requestfailed", lambda r: console.append(
                f"requestfailed: {r.url.split('?')[0]} {r.failure}"))
            try:
                t0 = time.time()
                resp = page.goto(srv.url(), wait_until="domcontentloaded" if args.server == "lab"
                                 else "load", timeout=args.timeout * 1000)
                if resp is not None and resp.status >= 400:
                    raise RuntimeError(f"HTTP {resp.status} for the notebook page "
                                       f"(see server_log_tail)")
                (run_lab if args.server == "lab" else run_voila)(page, args, report)
                report["page_to_executed_s"] = round(time.time() - t0, 2)

                # widgets rendered?
                t1 = time.time()
                seen = []

                def rendered(s):  # all widget views attached, no placeholder, DOM stable ~1 s
                    ok = ((s["expected"] is None or s["rendered"] >= s["expected"])
                          and "Loading widget..." not in s["bad"])
                    seen.append(json.dumps(s, sort_keys=True) if ok else None)
                    return ok and len(seen) >= 4 and len(set(seen[-4:])) == 1
                try:
                    ws = poll(page, JS_WIDGET_STATE, rendered, args.timeout, "widgets to render",
                              BAD_TEXTS)
                except TimeoutError as e:
                    fail(str(e))
                    ws = page.evaluate(JS_WIDGET_STATE, BAD_TEXTS)
                for sel in args.wait_selector:
                    try:
                        page.wait_for_selector(sel, state="visible", timeout=args.timeout * 1000)
                    except Exception:  # noqa: BLE001
                        fail(f"selector never visible: {sel}")
                report["widgets"] = ws
                report["widgets_render_s"] = round(time.time() - t1, 2)
                if ws["bad"] or ws["error_widgets"]:
                    fail(f"widget errors: {ws['error_widgets']} error view(s), text {ws['bad']}")
                if ws["errors"]:
                    fail(f"{ws['errors']} cell(s) raised an exception")

                if args.click:
                    before = page.evaluate(JS_OUTPUT_TEXT)
                    btn = page.locator(".jp-OutputArea").get_by_role("button", name=args.click, exact=True)
                    if btn.count() == 0:
                        fail(f"no widget button named {args.click!r}")
                    else:
                        btn.first.click()
                        try:
                            if args.expect_text:
                                poll(page, JS_OUTPUT_TEXT, lambda t: args.expect_text in t,
                                     args.timeout, f"text {args.expect_text!r}")
                            else:
                                poll(page, JS_OUTPUT_TEXT, lambda t: t != before, args.timeout,
                                     "output to change")
                        except TimeoutError as e:
                            fail(str(e)[:300])
                        page.wait_for_timeout(500)  # let plotly finish its relayout
                        after = page.evaluate(JS_OUTPUT_TEXT)
                        report["click"] = {"button": args.click, "changed": after != before,
                                           "before": before[-300:], "after": after[-300:]}
                if args.full and args.server == "lab":  # lab scrolls inside the notebook panel
                    need = page.evaluate(JS_FULL_HEIGHT)
                    if need > h:
                        page.set_viewport_size({"width": w, "height": min(need, 10000)})
                        page.wait_for_timeout(700)
                args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.screenshot),
                                full_page=args.full and args.server == "voila")
                report["screenshot"] = str(args.screenshot.resolve())
            except Exception as e:  # noqa: BLE001
                fail(f"{type(e).__name__}: {str(e)[:500]}")
                try:
                    page.screenshot(path=str(args.screenshot))
                    report["screenshot"] = str(args.screenshot.resolve())
                except Exception:  # noqa: BLE001
                    pass
            finally:
                browser.close()
    except Exception as e:  # noqa: BLE001
        fail(f"setup: {type(e).__name__}: {e}")
        report["server_log_tail"] = srv.tail()
    finally:
        report["shutdown"] = srv.stop()
        if report["failures"] and "server_log_tail" not in report:
            report["server_log_tail"] = srv.tail(25)
        shutil.rmtree(srv.tmp, ignore_errors=True)

    ign = [re.compile(x) for x in args.ignore_console]
    report["console_errors"] = [c for c in console if not any(r.search(c) for r in ign)]
    if args.fail_on_console_error and report["console_errors"]:
        fail(f"{len(report['console_errors'])} console error(s)")
    report["total_s"] = round(time.time() - t_start, 2)
    report["ok"] = not report["failures"]
    text = json.dumps(report, indent=2)
    print(text)
    if args.report:
        args.report.write_text(text)
    if any(f.startswith("setup:") for f in report["failures"]):
        return 2
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
