"""The notebooks are documentation that the tests execute.

Static checks (fast): every committed notebook is saved without outputs, carries a
kernelspec, opens with a markdown title, has a cell tagged ``parameters`` and holds no
library logic (no ``def`` / ``class`` in code cells).

Execution (slow): each notebook runs top to bottom with nbclient on a real kernel, its
parameters cell replaced by tiny sizes and a temporary runs directory, and its outputs
are checked (table rows, plotly figures, attribution HTML).
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))
PLOTLY = "application/vnd.plotly.v1+json"


def _read(path: Path):
    return nbformat.read(str(path), as_version=4)


def _params_cell(nb):
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected exactly one cell tagged 'parameters' (got {len(cells)})"
    return cells[0]


def _assigned(source: str) -> set[str]:
    return {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


# ----- static checks ------------------------------------------------------------------------------
def test_notebooks_exist():
    names = {p.name for p in ALL}
    assert {"02_transfer_vs_finetune.ipynb", "03_lora_rank.ipynb", "04_attributions.ipynb"} <= names


@pytest.mark.parametrize("path", ALL, ids=[p.name for p in ALL])
def test_committed_notebook_is_clean(path):
    nb = _read(path)
    nbformat.validate(nb)
    spec = nb.metadata.get("kernelspec", {})
    assert spec.get("name") == "python3" and spec.get("display_name") == "Python 3", spec
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "start with a markdown title"
    _params_cell(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [] and cell.execution_count is None, f"cell {i} has saved outputs"
        bad = [line for line in cell.source.splitlines() if re.match(r"(def|async def|class)\s", line)]
        assert not bad, f"cell {i} defines {bad}: library logic belongs in tunekit, not in a notebook"


# ----- execution ---------------------------------------------------------------------------------
def _uses_this_python(spec) -> bool:
    exe = spec.argv[0] if spec.argv else ""
    if exe in ("python", f"python{sys.version_info[0]}", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
        return True  # jupyter_client replaces a bare "python" with sys.executable
    return os.path.abspath(exe) == os.path.abspath(sys.executable)  # not resolved: venvs symlink one python


@pytest.fixture(scope="session")
def python3_kernel(tmp_path_factory):
    """A ``python3`` kernelspec that runs this interpreter (so the kernel sees tunekit).

    A fresh venv with ipykernel usually has one; otherwise (or when the ``python3`` found
    first belongs to another interpreter) one is installed under a temporary prefix and
    put first on JUPYTER_PATH for the session."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel, find_kernel_specs

    try:
        ok = "python3" in find_kernel_specs() and _uses_this_python(KernelSpecManager().get_kernel_spec("python3"))
    except NoSuchKernel:
        ok = False
    if ok:
        yield "python3"
        return
    prefix = tmp_path_factory.mktemp("kernel-prefix")
    subprocess.run([sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix), "--name", "python3"],
                   check=True, capture_output=True)
    mp = pytest.MonkeyPatch()
    paths = [str(prefix / "share" / "jupyter")] + [p for p in [os.environ.get("JUPYTER_PATH")] if p]
    mp.setenv("JUPYTER_PATH", os.pathsep.join(paths))
    assert _uses_this_python(KernelSpecManager().get_kernel_spec("python3"))
    yield "python3"
    mp.undo()


def _execute(name: str, params: str, workdir: Path, kernel: str):
    """Run notebook ``name`` with its parameters cell replaced by ``params``; return it executed."""
    from nbclient import NotebookClient

    nb = _read(NOTEBOOKS / name)
    cell = _params_cell(nb)
    missing = _assigned(cell.source) - _assigned(params)
    assert not missing, f"the test parameters lack {sorted(missing)} (set in the notebook's parameters cell)"
    cell.source = params
    NotebookClient(nb, timeout=600, kernel_name=kernel, resources={"metadata": {"path": str(workdir)}},
                   store_widget_state=False).execute()
    for i, c in enumerate(nb.cells):
        errors = [o for o in c.get("outputs", []) if o.output_type == "error"]
        assert not errors, f"cell {i} raised {errors[0].ename}: {errors[0].evalue}"
    return nb


def _tagged(nb, tag: str):
    return next(c for c in nb.cells if tag in c.metadata.get("tags", []))


def _results(cell) -> list[dict]:
    return [o.data for o in cell.outputs if o.output_type in ("execute_result", "display_data")]


def _table_rows(cell) -> int:
    """Rows of the DataFrame a cell returned (from its HTML, which pandas never truncates
    at these sizes)."""
    (html,) = [d["text/html"] for d in _results(cell) if "text/html" in d]
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return body.count("<tr")


def _figures(nb) -> list[dict]:
    return [d[PLOTLY] for c in nb.cells if c.cell_type == "code" for d in _results(c) if PLOTLY in d]


def _attribution_html(nb) -> list[str]:
    return [d["text/html"] for c in nb.cells if c.cell_type == "code" for d in _results(c)
            if "tunekit-attribution" in d.get("text/html", "")]


def _runs_dir(tmp_path: Path) -> str:
    return json.dumps(str(tmp_path / "runs"))


@pytest.mark.slow
def test_02_transfer_vs_finetune_runs(python3_kernel, tmp_path):
    params = f"""
TRAIN_SIZE = 48
EVAL_SIZE = 32
EPOCHS = 1
SEED = 0
N_INSPECT = 16
SENTENCE = "A charming, funny film."
N_STEPS = 8
RUNS_DIR = {_runs_dir(tmp_path)}
"""
    nb = _execute("02_transfer_vs_finetune.ipynb", params, tmp_path, python3_kernel)
    assert _table_rows(_tagged(nb, "comparison-table")) == 4
    figures = _figures(nb)
    titles = " | ".join(str(f.get("layout", {}).get("title", {}).get("text", "")) for f in figures)
    assert len(figures) >= 12, titles
    for words in ("Training loss", "Validation accuracy", "Accuracy vs trainable parameters", "per block"):
        assert words in titles, f"no figure titled {words!r} in: {titles}"
    (html,) = _attribution_html(nb)
    assert html.count("<tr>") == 5  # base, probe, freeze, LoRA, full
    assert len(list((tmp_path / "runs").iterdir())) == 4


@pytest.mark.slow
def test_03_lora_rank_runs(python3_kernel, tmp_path):
    params = f"""
RANKS = [1, 4]
ALPHA = None
TRAIN_SIZE = 48
EVAL_SIZE = 32
EPOCHS = 1
SEED = 0
RUNS_DIR = {_runs_dir(tmp_path)}
"""
    nb = _execute("03_lora_rank.ipynb", params, tmp_path, python3_kernel)
    cell = _tagged(nb, "rank-table")
    assert _table_rows(cell) == 2
    (html,) = [d["text/html"] for d in _results(cell) if "text/html" in d]
    assert "mean_effective_rank" in html and "trainable_params" in html
    assert len(_figures(nb)) >= 5


@pytest.mark.slow
def test_04_attributions_runs(python3_kernel, tmp_path):
    params = f"""
TRAIN_SIZE = 48
EVAL_SIZE = 32
EPOCHS = 1
SEED = 0
SENTENCES = ["A charming, funny film.", "Dull and far too long."]
N_STEPS = 8
STEPS = [5, 10]
RUNS_DIR = {_runs_dir(tmp_path)}
"""
    nb = _execute("04_attributions.ipynb", params, tmp_path, python3_kernel)
    htmls = _attribution_html(nb)
    assert len(htmls) == 2 and all(h.count("<tr>") == 4 for h in htmls)  # base, probe, LoRA, full
    assert _table_rows(_tagged(nb, "gap-table")) == 2
    assert len(_figures(nb)) >= 2
