"""`tunekit export`: notebooks as HTML pages whose figures and widgets draw with no kernel, offline.

Fast tests check parameters, the plotly HTML fallback and the files an export writes. The slow
ones run a notebook on a real kernel, export it, and open the page in headless Chromium with
the network cut off (tests/static_page.py).
"""
from __future__ import annotations

import re

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbconvert")

import static_page  # noqa: E402  (tests/ is on sys.path)
from tunekit import cli  # noqa: E402
from tunekit.export import (  # noqa: E402
    ExportError,
    add_plotly_html,
    export_html,
    parameter_names,
    parse_parameter,
    run_notebook,
    with_parameters,
)

PLOTLY = "application/vnd.plotly.v1+json"


def _notebook(*sources: str, params: str = "N = 3\nTITLE = 'one'"):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_markdown_cell("# test"),
                nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
                *[nbformat.v4.new_code_cell(s) for s in sources]]
    return nb


def _figure_output(title: str, html: str = ""):
    data = {PLOTLY: {"data": [{"type": "scatter", "x": [1, 2], "y": [2, 1]}], "layout": {"title": {"text": title}}},
            "text/plain": "Figure"}
    if html:
        data["text/html"] = html
    return nbformat.v4.new_output("display_data", data=data)


# ----- parameters --------------------------------------------------------------------------------
def test_parse_parameter_reads_literals_else_strings():
    assert parse_parameter("TRAIN_SIZE=200") == ("TRAIN_SIZE", 200)
    assert parse_parameter("RANKS=[1, 4]") == ("RANKS", [1, 4])
    assert parse_parameter("ALPHA=None") == ("ALPHA", None)
    assert parse_parameter("MODEL=minilm") == ("MODEL", "minilm")
    assert parse_parameter("RUNS_DIR=runs/a=b") == ("RUNS_DIR", "runs/a=b")
    for bad in ("TRAIN_SIZE", "=3", "2X=1"):
        with pytest.raises(ExportError, match="NAME=VALUE"):
            parse_parameter(bad)


def test_parameters_are_injected_after_the_parameters_cell_and_checked():
    nb = _notebook("print(N)")
    assert parameter_names(nb) == ["N", "TITLE"]
    out = with_parameters(nb, {"N": 5})
    assert len(out.cells) == len(nb.cells) + 1, "the original is not modified"
    assert out.cells[2].metadata["tags"] == ["injected-parameters"] and "N = 5" in out.cells[2].source
    with pytest.raises(ExportError, match=r"'SIZE' not in the notebook's parameters cell \(allowed: N, TITLE\)"):
        with_parameters(nb, {"SIZE": 1})
    no_params = _notebook()
    no_params.cells[1].metadata = {}
    with pytest.raises(ExportError, match="exactly one code cell tagged 'parameters'"):
        parameter_names(no_params)


# ----- plotly fallback ---------------------------------------------------------------------------
def test_plotly_figures_gain_html_with_plotlyjs_inlined_once():
    nb = _notebook("a", "b")
    nb.cells[2].outputs = [_figure_output("first")]
    nb.cells[3].outputs = [_figure_output("second"), _figure_output("kept", html="<div>mine</div>")]
    assert add_plotly_html(nb) == 2
    first, second = nb.cells[2].outputs[0].data["text/html"], nb.cells[3].outputs[0].data["text/html"]
    assert len(first) > 1_000_000 and "plotly.js v" in first, "plotly.js is inlined in the first figure"
    assert len(second) < 50_000 and "Plotly.newPlot" in second and "second" in second
    assert nb.cells[3].outputs[1].data["text/html"] == "<div>mine</div>"


def test_plotlyjs_already_saved_by_the_notebook_renderer_is_not_inlined_again():
    import plotly.offline

    nb = _notebook("a")
    bundle = nbformat.v4.new_output("display_data", data={"text/html": f"<script>{plotly.offline.get_plotlyjs()}</script>"})
    nb.cells[2].outputs = [bundle, _figure_output("only")]
    assert add_plotly_html(nb) == 1
    assert len(nb.cells[2].outputs[1].data["text/html"]) < 50_000


# ----- export_html -------------------------------------------------------------------------------
def test_export_refuses_a_notebook_without_outputs(tmp_path):
    with pytest.raises(ExportError, match="has no outputs; run it first"):
        export_html(_notebook("1 + 1"), tmp_path)


def test_export_writes_the_page_and_the_widget_javascript(tmp_path):
    nb = _notebook("fig")
    nb.cells[2].outputs = [_figure_output("exported")]
    page = export_html(nb, tmp_path / "site" / "page.html")
    assert page == tmp_path / "site" / "page.html"
    for name in ("embed-amd.js", "require.js", "anywidget.js"):
        assert (page.parent / name).stat().st_size > 10_000, name
    html = page.read_text()
    assert "exported" in html and 'src="require.js"' in html
    remote = re.findall(r'<script src="(http[^"]*)"', html)
    assert all("mathjax" in url for url in remote), f"only MathJax (for LaTeX in markdown) may load remotely: {remote}"
    assert "text/html" not in nb.cells[2].outputs[0].data, "the export works on a copy"
    cdn = export_html(nb, tmp_path / "cdn", cdn=True)
    assert cdn == tmp_path / "cdn" / "notebook.html" and not (cdn.parent / "require.js").exists()
    assert '<script src="https://cdnjs' in cdn.read_text()


def test_ipynb_for_nbviewer_carries_html_figures_and_never_overwrites_its_source(tmp_path, capsys):
    nb = _notebook("fig")
    nb.cells[2].outputs = [_figure_output("for nbviewer")]
    src = tmp_path / "n.ipynb"
    nbformat.write(nb, str(src))
    assert cli.main(["export", str(src), "--ipynb", "--out", str(tmp_path / "site")]) == 0
    saved = nbformat.read(str(tmp_path / "site" / "n.ipynb"), as_version=4)
    html = saved.cells[2].outputs[0].data["text/html"]
    assert "for nbviewer" in html and "plotly.js v" in html
    assert "text/html" not in nbformat.read(str(src), as_version=4).cells[2].outputs[0].data, "source untouched"
    assert cli.main(["export", str(src), "--ipynb", "--out", str(tmp_path)]) == 2
    assert "argument --out: writing the notebook would overwrite its source" in capsys.readouterr().err


def test_cli_export_errors_name_the_option(tmp_path, capsys):
    nb = tmp_path / "n.ipynb"
    nbformat.write(_notebook("1"), str(nb))
    assert cli.main(["export", str(nb), "-p", "N=2", "--out", str(tmp_path / "o")]) == 2
    assert "argument --param: parameters only apply when the notebook is run" in capsys.readouterr().err
    assert cli.main(["export", str(nb), "--execute", "-p", "SIZE=2"]) == 2
    assert "argument --param: SIZE is in no notebook's parameters cell" in capsys.readouterr().err
    assert cli.main(["export", str(nb), "--execute", "-p", "N"]) == 2
    assert "argument --param: expected NAME=VALUE" in capsys.readouterr().err
    assert cli.main(["export", str(tmp_path / "missing.ipynb")]) == 2
    assert "argument NOTEBOOK: no such file" in capsys.readouterr().err


# ----- real kernel, real browser -----------------------------------------------------------------
@pytest.mark.slow
def test_run_notebook_names_the_failing_cell(python3_kernel, tmp_path):
    with pytest.raises(ExportError, match="ZeroDivisionError"):
        run_notebook(_notebook("N / 0"), cwd=tmp_path, kernel_name=python3_kernel)


@pytest.mark.slow
def test_exported_page_draws_figures_and_widgets_offline(python3_kernel, tmp_path, request):
    nb = _notebook(
        "import plotly.graph_objects as go, ipywidgets as W",
        "go.Figure(go.Bar(x=list(range(N)), y=list(range(N))), layout=dict(title=TITLE))",  # JSON only
        "W.VBox([W.IntSlider(N, description='slider'), W.Button(description='Press'),\n"
        "        go.FigureWidget(go.Scatter(x=[1, 2], y=[2, 1]), layout=dict(title='widget figure'))])")
    nbformat.write(nb, str(tmp_path / "demo.ipynb"))
    assert cli.main(["export", str(tmp_path / "demo.ipynb"), "--execute", "-p", "TITLE=from the command line",
                     "-p", "N=4", "--out", str(tmp_path / "site"), "--ipynb"]) == 0
    page = tmp_path / "site" / "demo.html"
    saved = nbformat.read(str(tmp_path / "site" / "demo.ipynb"), as_version=4)
    assert "application/vnd.jupyter.widget-state+json" in saved.metadata["widgets"]
    assert all("text/html" in o.data for c in saved.cells for o in c.get("outputs", []) if PLOTLY in o.get("data", {}))
    request.getfixturevalue("chromium")  # skipped without a browser; a failure in CI
    state = static_page.check_page(page, expect_plots=2, expect_widgets=True, screenshot=tmp_path / "demo.png")
    assert state["plots"] == 2, state
    assert "from the command line" in state["titles"] and "widget figure" in state["titles"], state
    assert "Press" in state["buttons"] and state["error_widgets"] == 0 and not state["text"], state
    assert not state["console_errors"], state
