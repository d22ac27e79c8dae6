"""Notebooks as pages that need no kernel: run one with parameters, export it to HTML.

    tunekit export notebooks/02_transfer_vs_finetune.ipynb --execute -p TRAIN_SIZE=500 --out site
    from tunekit.export import run_notebook, export_html

An exported page shows every plotly figure and every saved widget (the lab, its
FigureWidgets, progress bars), read-only, from a file with no kernel and no internet:

* plotly figures shown with plotly's default renderer carry only their JSON, which
  nbconvert cannot draw. Each such figure gets an HTML rendering, with plotly.js inlined
  once per page (the tunekit notebooks already save one: they use the
  ``plotly_mimetype+notebook`` renderer, so plain ``jupyter nbconvert`` and nbviewer work too);
* saved widget state (nbclient saves it when it executes) is drawn by the ipywidgets 8
  static widget manager, ``require.js`` and anywidget's AMD build, written next to the
  page. The first two are vendored in ``tunekit/static`` (npm packages, see its README);
  nbconvert's default loads them from a CDN, which leaves the widgets blank offline.

MathJax still comes from nbconvert's CDN: offline, LaTeX in markdown shows as source
(the tunekit notebooks use none).

Needs nbformat, nbclient and nbconvert (``pip install tunekit[notebook]``).
"""
from __future__ import annotations

import ast
import copy
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from tunekit.config import TunekitError

STATIC = Path(__file__).resolve().parent / "static"
# file written next to the page -> (where it comes from, what it is)
WIDGET_JS = {"embed-amd.js": "@jupyter-widgets/html-manager@1.0.15 (vendored)",
             "require.js": "requirejs@2.3.8 (vendored)",
             "anywidget.js": "the installed anywidget package's AMD build"}
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_STATE_MIME = "application/vnd.jupyter.widget-state+json"
INJECTED_TAG = "injected-parameters"


class ExportError(TunekitError):
    """A notebook that cannot be run or exported, said in words."""


def _need(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"{module} is not installed: pip install 'tunekit[notebook]' "
                          f"(or pip install nbformat nbclient nbconvert)") from None


def read_notebook(path: Union[str, Path]):
    nbformat = _need("nbformat")
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"notebook: no such file {str(path)!r}")
    try:
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
    except Exception as e:  # noqa: BLE001 - not JSON, not a notebook, a newer format ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ExportError(f"notebook: {str(path)!r} is not a Jupyter notebook nbformat can read ({first})") from None
    return nb


# ----- parameters --------------------------------------------------------------------------------
def parameter_names(nb) -> list[str]:
    """The names the notebook's ``parameters`` cell assigns, in order."""
    cell = _parameters_cell(nb)
    try:
        body = ast.parse(cell.source).body
    except SyntaxError as e:
        raise ExportError(f"notebook: its parameters cell is not valid Python (line {e.lineno}: {e.msg})") from None
    return [t.id for node in body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)]


def _parameters_cell(nb):
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ExportError(f"params: the notebook needs exactly one code cell tagged 'parameters' "
                          f"(it has {len(cells)})")
    return cells[0]


def with_parameters(nb, params: Optional[Mapping[str, Any]]):
    """A copy of ``nb`` with a cell tagged ``injected-parameters`` after its parameters cell
    (as papermill does). Every name must be one the parameters cell assigns."""
    nb = copy.deepcopy(nb)
    if not params:
        return nb
    allowed = parameter_names(nb)
    unknown = [k for k in params if k not in allowed]
    if unknown:
        raise ExportError(f"params: {', '.join(map(repr, unknown))} not in the notebook's parameters cell "
                          f"(allowed: {', '.join(allowed)})")
    nbformat = _need("nbformat")
    lines = ["# Parameters injected by tunekit.export"] + [f"{k} = {v!r}" for k, v in params.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": [INJECTED_TAG]})
    at = nb.cells.index(_parameters_cell(nb)) + 1
    nb.cells.insert(at, cell)
    return nb


def parse_parameter(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from the command line: VALUE is a Python literal, else a string."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip().isidentifier():
        raise ExportError(f"-p: expected NAME=VALUE, e.g. TRAIN_SIZE=500 (got {text!r})")
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value
    return name.strip(), parsed


# ----- execution ---------------------------------------------------------------------------------
def run_notebook(nb_or_path, params: Optional[Mapping[str, Any]] = None, cwd: Union[str, Path, None] = None,
                 timeout: int = 1800, kernel_name: str = "python3", store_widget_state: bool = True,
                 allow_errors: bool = False):
    """Execute a notebook top to bottom on a fresh kernel and return it with its outputs.

    Args:
        nb_or_path: a notebook path or an ``nbformat`` notebook.
        params: values for names of the ``parameters`` cell (e.g. ``{"TRAIN_SIZE": 200}``).
        cwd: the kernel's working directory (default: the notebook's folder, else the current one).
        timeout: seconds any one cell may run.
        store_widget_state: save the widgets' state in the notebook, so exported pages draw them.
        allow_errors: keep going past a failing cell. Otherwise the first error raises
            :class:`ExportError` naming the cell.
    """
    if timeout < 1:
        raise ExportError(f"timeout must be >= 1 second (got {timeout})")
    nbclient = _need("nbclient")
    if isinstance(nb_or_path, (str, Path)):
        path = Path(nb_or_path)
        nb = read_notebook(path)
        cwd = cwd if cwd is not None else path.resolve().parent
    else:
        nb = nb_or_path
    nb = with_parameters(nb, params)
    cwd = Path(cwd if cwd is not None else ".").resolve()
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name=kernel_name, allow_errors=allow_errors,
                                     store_widget_state=store_widget_state,
                                     resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        raise ExportError(f"a cell failed while running the notebook: {e.ename}: {e.evalue}") from e
    return nb


# ----- HTML --------------------------------------------------------------------------------------
def _has_plotlyjs(html: str) -> bool:
    return len(html) > 1_000_000 and "plotly.js v" in html  # the inlined bundle, not a figure


def add_plotly_html(nb) -> int:
    """Give each plotly figure that has only its JSON an HTML rendering (in place).

    plotly.js is inlined once, in the first figure that needs it, unless an earlier output
    (plotly's ``notebook`` renderer) already carries it. Returns how many figures gained HTML.
    """
    import plotly.io as pio

    have_js, added = False, 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            html = data.get("text/html", "")
            if isinstance(html, list):
                html = "".join(html)
            if html and _has_plotlyjs(html):
                have_js = True
            elif PLOTLY_MIME in data and not html:
                data["text/html"] = pio.to_html(data[PLOTLY_MIME], full_html=False, validate=False,
                                                include_plotlyjs=not have_js, include_mathjax=False)
                have_js, added = True, added + 1
    return added


def writable_dir(folder: Path) -> Path:
    """``folder``, made if needed, after checking a file can be written in it; an
    :class:`ExportError` about ``out`` otherwise (never an OSError's traceback)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".tunekit-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ExportError(f"out: cannot write into {str(folder)!r}: {e.strerror or e}") from None
    return folder


def widget_js_files() -> dict[str, Path]:
    """Where each file the static widget manager needs comes from (checked to exist)."""
    import anywidget

    files = {"embed-amd.js": STATIC / "embed-amd.js", "require.js": STATIC / "require.js",
             "anywidget.js": Path(anywidget.__file__).resolve().parent / "nbextension" / "index.js"}
    missing = [f"{name} ({src})" for name, src in files.items() if not src.is_file()]
    if missing:
        raise ExportError("widget JavaScript missing from this install: " + ", ".join(missing)
                          + "; reinstall tunekit and anywidget, or export with cdn=True")
    return files


def export_html(nb_or_path, out: Union[str, Path], cdn: bool = False, title: Optional[str] = None) -> Path:
    """Write the notebook as an HTML page that draws its figures and saved widgets offline.

    Args:
        nb_or_path: an executed notebook (or its path). Run it with :func:`run_notebook` first
            if it has no outputs; widgets only render where their state was saved.
        out: an ``.html`` file, or a folder (the page is named after the notebook).
        cdn: load the widget manager and require.js from a CDN instead of writing local copies
            next to the page (smaller folder; the page then needs internet for its widgets).
        title: the page title (default: the notebook's name).

    Returns the page's path. ``embed-amd.js``, ``require.js`` and ``anywidget.js`` are written
    next to it unless ``cdn``.
    """
    _need("nbconvert")
    from nbconvert import HTMLExporter

    name = "notebook"
    if isinstance(nb_or_path, (str, Path)):
        name = Path(nb_or_path).stem
        nb = read_notebook(nb_or_path)
    else:
        nb = copy.deepcopy(nb_or_path)
    out = Path(out)
    page = out if out.suffix.lower() in (".html", ".htm") else out / f"{name}.html"
    writable_dir(page.parent)
    if not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
        raise ExportError(f"{name}: the notebook has no outputs; run it first (run_notebook, or --execute)")
    add_plotly_html(nb)
    exporter = HTMLExporter(template_name="lab")
    try:
        if not cdn:
            for target, src in widget_js_files().items():
                shutil.copyfile(src, page.parent / target)
            exporter.widget_renderer_url = "embed-amd.js"
            exporter.require_js_url = "require.js"
        body, _resources = exporter.from_notebook_node(nb, resources={"metadata": {"name": title or name}})
        page.write_text(body, encoding="utf-8")
    except OSError as e:  # e.g. the disk filled
        raise ExportError(f"out: writing {str(page)!r} failed: {e.strerror or e}") from None
    return page


def export_notebooks(paths: Iterable[Union[str, Path]], out: Union[str, Path], execute: bool = False,
                     params: Optional[Mapping[str, Any]] = None, cdn: bool = False, timeout: int = 1800,
                     ipynb: bool = False, progress=print) -> list[Path]:
    """Export several notebooks into folder ``out`` (running each first when ``execute``).

    ``params`` go to every notebook whose parameters cell has the name; a name no notebook
    knows is an error. With ``ipynb``, each notebook is also written to ``out`` as it was
    exported (outputs, saved widget state, an HTML rendering for every plotly figure): the
    file to publish for nbviewer."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ExportError("notebooks: give at least one .ipynb file")
    writable_dir(Path(out))  # before any notebook runs for minutes
    params = dict(params or {})
    if params and not execute:
        raise ExportError("params: parameters only apply when the notebook is run (add --execute)")
    known: set[str] = set()
    notebooks = []
    for p in paths:
        if ipynb and (Path(out) / f"{p.stem}.ipynb").resolve() == p.resolve():  # before any notebook runs
            raise ExportError(f"out: writing the notebook would overwrite its source {str(p)!r}")
        nb = read_notebook(p)
        names = set(parameter_names(nb)) if params else set()
        known |= names
        notebooks.append((p, {k: v for k, v in params.items() if k in names}))
    unknown = sorted(set(params) - known)
    if unknown:
        raise ExportError(f"params: {', '.join(unknown)} is in no notebook's parameters cell")
    pages = []
    for p, own in notebooks:
        if execute:
            progress(f"running {p.name} ...")
            nb = run_notebook(p, params=own, timeout=timeout)
        else:
            nb = read_notebook(p)
        if ipynb:  # the figures' HTML once, for both files (export_html then finds nothing to add)
            add_plotly_html(nb)
        page = export_html(nb, Path(out) / f"{p.stem}.html", cdn=cdn)
        progress(f"wrote {page} ({page.stat().st_size / 1e6:.1f} MB)")
        pages.append(page)
        if ipynb:
            target = Path(out) / f"{p.stem}.ipynb"
            _need("nbformat").write(nb, str(target))
            progress(f"wrote {target}")
    return pages
