"""The notebooks are documentation that the tests execute.

Static checks (fast): every committed notebook is saved without outputs, carries a
kernelspec, opens with a markdown title, has a cell tagged ``parameters`` and holds no
library logic (no ``def`` / ``class`` in code cells).

Execution (slow): each notebook runs top to bottom with nbclient on a real kernel, its
parameters cell replaced by tiny sizes and a temporary runs directory, and its outputs
are checked (table rows, plotly figures, attribution HTML).
"""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
import static_page  # noqa: E402  (tests/ is on sys.path)
import tunekit as tk  # noqa: E402
from tunekit.export import add_plotly_html, export_html, parameter_names, run_notebook  # noqa: E402

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
ALL = sorted(NOTEBOOKS.glob("*.ipynb"))
PLOTLY = "application/vnd.plotly.v1+json"


def _read(path: Path):
    return nbformat.read(str(path), as_version=4)


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
    assert parameter_names(nb), "the parameters cell assigns nothing"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [] and cell.execution_count is None, f"cell {i} has saved outputs"
        bad = [line for line in cell.source.splitlines() if re.match(r"(def|async def|class)\s", line)]
        assert not bad, f"cell {i} defines {bad}: library logic belongs in tunekit, not in a notebook"


# ----- execution ---------------------------------------------------------------------------------
def _execute(name: str, params: dict, workdir: Path, kernel: str, store_widget_state: bool = False):
    """Run notebook ``name`` with ``params`` injected after its parameters cell (every name of
    that cell must be given: the defaults are sized for a workshop, not for a test)."""
    nb = _read(NOTEBOOKS / name)
    missing = set(parameter_names(nb)) - set(params)
    assert not missing, f"the test parameters lack {sorted(missing)} (set in the notebook's parameters cell)"
    nb = run_notebook(nb, params=params, cwd=workdir, timeout=600, kernel_name=kernel,
                      store_widget_state=store_widget_state)
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


def _small(tmp_path: Path, **params) -> dict:
    """Test sizes shared by the training notebooks, plus each notebook's own names."""
    return {"TRAIN_SIZE": 48, "EVAL_SIZE": 32, "EPOCHS": 1, "SEED": 0, "RUNS_DIR": str(tmp_path / "runs"), **params}


@pytest.mark.slow
def test_02_transfer_vs_finetune_runs(python3_kernel, tmp_path):
    params = _small(tmp_path, N_INSPECT=16, SENTENCE="A charming, funny film.", N_STEPS=8)
    nb = _execute("02_transfer_vs_finetune.ipynb", params, tmp_path, python3_kernel, store_widget_state=True)
    assert _table_rows(_tagged(nb, "comparison-table")) == 4
    figures = _figures(nb)
    titles = " | ".join(str(f.get("layout", {}).get("title", {}).get("text", "")) for f in figures)
    assert len(figures) >= 12, titles
    for words in ("Training loss", "Validation accuracy", "Accuracy vs trainable parameters", "per block"):
        assert words in titles, f"no figure titled {words!r} in: {titles}"
    (html,) = _attribution_html(nb)
    assert html.count("<tr>") == 5  # base, probe, freeze, LoRA, full
    assert len(list((tmp_path / "runs").iterdir())) == 4
    # every figure was saved with an HTML rendering too (plotly_mimetype+notebook), so plain
    # `jupyter nbconvert --to html` and nbviewer draw them: the export has nothing to add
    assert add_plotly_html(copy.deepcopy(nb)) == 0
    _check_export(nb, tmp_path, expect_plots=len(figures))


def _check_export(nb, tmp_path: Path, expect_plots: int, expect_widgets: bool = False) -> dict:
    """Export the executed notebook and open the page offline in Chromium: every figure draws."""
    page = export_html(nb, tmp_path / "site" / "page.html")
    static_page.require_browser()  # skipped without a browser; a failure in CI
    state = static_page.check_page(page, expect_plots=expect_plots, expect_widgets=expect_widgets,
                                   screenshot=tmp_path / "page.png")
    assert state["plots"] == expect_plots, state
    assert state["error_widgets"] == 0 and not state["text"] and not state["console_errors"], state
    return state


@pytest.mark.slow
def test_01_quickstart_lab_exports_to_a_static_page(python3_kernel, tmp_path):
    params = {"MODEL": "minilm", "DATA": "rotten_tomatoes", "RUNS_DIR": str(tmp_path / "runs"),
              "TRAIN_SIZE": 48, "EVAL_SIZE": 32}
    nb = _execute("01_quickstart.ipynb", params, tmp_path, python3_kernel, store_widget_state=True)
    assert "widgets" in nb.metadata, "nbclient saved the lab's widget state"
    state = _check_export(nb, tmp_path, expect_plots=2, expect_widgets=True)  # loss and accuracy FigureWidgets
    assert {"Train", "Stop", "Recompute"} <= set(state["buttons"]), state["buttons"]
    for title in ("training loss", "validation accuracy"):  # titles go on with what they show (smoothing, n)
        assert any(t.startswith(title) for t in state["titles"]), state["titles"]


@pytest.mark.slow
def test_03_lora_rank_runs(python3_kernel, tmp_path):
    params = _small(tmp_path, RANKS=[1, 4], ALPHA=None)
    nb = _execute("03_lora_rank.ipynb", params, tmp_path, python3_kernel)
    cell = _tagged(nb, "rank-table")
    assert _table_rows(cell) == 2
    (html,) = [d["text/html"] for d in _results(cell) if "text/html" in d]
    assert "mean_effective_rank" in html and "trainable_params" in html
    assert len(_figures(nb)) >= 5


@pytest.mark.slow
def test_04_attributions_runs(python3_kernel, tmp_path):
    params = _small(tmp_path, SENTENCES=["A charming, funny film.", "Dull and far too long."], N_STEPS=8,
                    STEPS=[5, 10])
    nb = _execute("04_attributions.ipynb", params, tmp_path, python3_kernel)
    htmls = _attribution_html(nb)
    assert len(htmls) == 2 and all(h.count("<tr>") == 4 for h in htmls)  # base, probe, LoRA, full
    assert _table_rows(_tagged(nb, "gap-table")) == 2
    assert len(_figures(nb)) >= 2


@pytest.mark.slow
def test_05_decoder_lora_runs_reduced_on_a_cpu(python3_kernel, tmp_path):
    gpu = {"RANK": 4, "TRAIN_SIZE": 16, "EVAL_SIZE": 16, "EPOCHS": 1, "MAX_LENGTH": 24, "BATCH_SIZE": 8,
           "N_STEPS": 4, "N_INSPECT": 8, "SEED": 0, "SENTENCE": "A charming, funny film.",
           "RUNS_DIR": str(tmp_path / "runs")}
    cpu = {"CPU_TRAIN_SIZE": 16, "CPU_EVAL_SIZE": 16, "CPU_MAX_LENGTH": 24, "CPU_N_STEPS": 4, "CPU_N_INSPECT": 8}
    nb = _execute("05_decoder_lora.ipynb", {**gpu, **cpu}, tmp_path, python3_kernel)
    import torch
    said = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.output_type == "stream")
    assert ("No CUDA GPU here" in said) == (not torch.cuda.is_available()), said[:500]
    from tunekit.runs import list_runs
    runs = list_runs(tmp_path / "runs")
    assert sorted(r.status for r in runs) == ["completed", "completed"], [(r.name, r.summary.get("reason")) for r in runs]
    assert all(r.config["train"]["max_length"] == 24 for r in runs)
    assert len(_figures(nb)) >= 5
    (html,) = _attribution_html(nb)
    assert html.count("<tr>") == 3  # base, probe, LoRA


@pytest.mark.slow
def test_06_causal_lm_runs_reduced_on_a_cpu(python3_kernel, tmp_path):
    gpu = {"RANK": 2, "TRAIN_SIZE": 8, "EVAL_SIZE": 8, "EPOCHS": 1, "MAX_LENGTH": 24, "BATCH_SIZE": 4,
           "N_INSPECT": 8, "SEED": 0, "RUNS_DIR": str(tmp_path / "runs")}
    cpu = {"CPU_TRAIN_SIZE": 8, "CPU_EVAL_SIZE": 8, "CPU_MAX_LENGTH": 24, "CPU_N_INSPECT": 8}
    nb = _execute("06_causal_lm.ipynb", {**gpu, **cpu}, tmp_path, python3_kernel)
    from tunekit.runs import list_runs
    runs = list_runs(tmp_path / "runs")
    assert sorted(r.label for r in runs) == ["freeze-top2", "full", "ia3", "lora-r2"]
    assert all(r.status == "completed" and r.task == "causal_lm" for r in runs)
    (html,) = [d["text/html"] for d in _results(_tagged(nb, "perplexity-table")) if "text/html" in d]
    assert "perplexity before" in html and "accuracy" not in html
    assert _table_rows(_tagged(nb, "perplexity-table")) == 4
    assert len(_figures(nb)) >= 5


@pytest.mark.slow
def test_07_post_training_runs(python3_kernel, tmp_path):
    params = {"TRAIN_SIZE": 48, "EVAL_SIZE": 24, "EPOCHS": 1, "SEED": 0, "SPARSITIES": [0.5, 0.9], "HEADS": 6,
              "STUDENT": [0, 5], "FORGET_TRAIN_SIZE": 32, "RUNS_DIR": str(tmp_path / "runs")}
    nb = _execute("07_post_training.ipynb", params, tmp_path, python3_kernel)
    from tunekit.runs import list_runs
    runs = list_runs(tmp_path / "runs")
    kinds = sorted(r.kind for r in runs)
    assert kinds.count("prune") == 3 and kinds.count("quantize") == 2 and kinds.count("distil") == 1
    assert all(r.status == "completed" for r in runs)
    assert _table_rows(_tagged(nb, "post-table")) == 8  # teacher, 2 sparsities, heads, int8, int4, 2 students
    assert _table_rows(_tagged(nb, "forgetting-table")) == 3
    (html,) = [d["text/html"] for d in _results(_tagged(nb, "forgetting-table")) if "text/html" in d]
    assert "a_before" in html and "forgot" in html
    assert len(_figures(nb)) == 4  # sparsity curve, two Pareto views, learned vs forgotten


@pytest.mark.slow
def test_08_transfer_or_finetune_runs(python3_kernel, tmp_path):
    """Issue 21: the experiment notebook at tiny sizes (the CPU grid: 2 sizes x 1 seed x 4 strategies on
    Rotten Tomatoes), its table, figures, paired comparison and the choice printed from the results."""
    params = {"SIZES": [16, 32], "SEEDS": 1, "EPOCHS": 1, "EVAL_SIZE": 16, "TEST_SIZE": 32, "LR": None,
              "TUNE_TRIALS": 2, "DATA_SETS": ["rotten_tomatoes"], "CPU_SIZES": [16, 32], "CPU_SEEDS": 1,
              "RUNS_DIR": str(tmp_path / "runs")}
    nb = _execute("08_transfer_or_finetune.ipynb", params, tmp_path, python3_kernel)
    assert _table_rows(_tagged(nb, "experiment-table")) == 8  # 4 strategies x 2 sizes
    assert _table_rows(_tagged(nb, "compare-table")) == 2
    said = "".join(o.get("text", "") for o in _tagged(nb, "choose").outputs)
    assert "at 16 examples" in said and "at 32 examples" in said
    titles = " | ".join(str(f.get("layout", {}).get("title", {}).get("text", "")) for f in _figures(nb))
    assert len(_figures(nb)) == 3 and "test accuracy vs training examples" in titles, titles
    from tunekit.runs import list_runs
    assert len(list_runs(tmp_path / "runs")) == 8 and all(r.status == "completed" for r in list_runs(tmp_path / "runs"))


@pytest.mark.slow
def test_09_peft_family_runs(python3_kernel, tmp_path):
    """Issue 23: the PEFT family at tiny sizes (1 seed, the CPU version on a CPU): the budget table and the
    accuracy table hold every method, each method is paired with LoRA, every figure is drawn, and the
    sentence about the DoRA paper's pattern agrees with the lines printed above it; the language-model
    part (a tiny random Llama here) gives every method's perplexity with its interval, paired with LoRA's."""
    lm = str(tk.make_tiny("llama", tmp_path / "tiny-llama"))
    params = {"DATA": "rotten_tomatoes", "RANK": 2, "SIZE": 32, "SEEDS": 1, "EPOCHS": 1, "BATCH_SIZE": 8,
              "EVAL_SIZE": 16, "TEST_SIZE": 32, "N_INSPECT": 16, "CPU_SIZE": 32, "CPU_SEEDS": 1, "CPU_BATCH_SIZE": 8,
              "CPU_EVAL_SIZE": 16, "CPU_TEST_SIZE": 32,
              "LM_MODEL": lm, "LM_SIZE": 16, "LM_SEEDS": 1, "LM_MAX_LENGTH": 24, "LM_TEST_SIZE": 8, "CPU_LM_SIZE": 16,
              "CPU_LM_MAX_LENGTH": 24, "CPU_LM_TEST_SIZE": 8, "RUNS_DIR": str(tmp_path / "runs")}
    nb = _execute("09_peft_family.ipynb", params, tmp_path, python3_kernel)
    methods = 13  # probe, top block, full, LoRA, DoRA, PiSSA, AdaLoRA, LoHa, LoKr, VeRA, IA3, LayerNorm tuning, prompt
    assert _table_rows(_tagged(nb, "budget-table")) == methods
    assert _table_rows(_tagged(nb, "experiment-table")) == methods
    assert _table_rows(_tagged(nb, "drift-table")) == methods
    said = "".join(o.get("text", "") for o in _tagged(nb, "compare").outputs).splitlines()
    assert len(said) == methods - 1 and all(" vs lora-r2 at 32 examples: " in s for s in said), said
    lines = "".join(o.get("text", "") for o in _tagged(nb, "pattern").outputs).splitlines()
    verdicts = {}
    for line in lines[:-1]:
        label, rest = line.split(": r = ", 1)
        found = re.search(r"matrices: (negative|positive|inside the noise) \(the paper: (negative|positive)\)", rest)
        assert found, line
        verdicts[label] = found.group(1) == found.group(2)
    assert sorted(verdicts) == ["dora-r2", "full", "lora-r2"], lines
    assert lines[-1].startswith("The paper's pattern"), lines
    assert ("is what these runs show" in lines[-1]) == all(verdicts.values()), lines
    titles = " | ".join(str(f.get("layout", {}).get("title", {}).get("text", "")) for f in _figures(nb))
    for words in ("Weight change per module", "Magnitude and direction", "Where each adapter put its rank", "CKA",
                  "Learned prefix"):
        assert words in titles, f"no figure titled {words!r} in: {titles}"
    lm_methods = 4  # the CPU version: LoRA, DoRA, IA3, prefix tuning
    assert _table_rows(_tagged(nb, "lm-budget-table")) == lm_methods
    assert _table_rows(_tagged(nb, "lm-table")) == lm_methods + 1  # and the model before training
    said = "".join(o.get("text", "") for o in _tagged(nb, "lm-compare").outputs).splitlines()
    assert len(said) == lm_methods - 1 and all(" vs lora-r2: perplexity x" in s and "over 8 texts" in s
                                               for s in said), said
    from tunekit.runs import list_runs
    runs = list_runs(tmp_path / "runs")
    assert len(runs) == methods + lm_methods and all(r.status == "completed" for r in runs), \
        [(r.label, r.status) for r in runs]


@pytest.mark.slow
def test_10_learning_rates_runs(python3_kernel, tmp_path):
    """Issue 24: a sweep per strategy with its suggestion, the planned rates, and one rate for all against
    discriminative rates and gradual unfreezing in one experiment, each paired with full fine-tuning."""
    params = {"MODEL": "minilm", "DATA": "rotten_tomatoes", "LR": 1e-4, "DECAY": 0.8, "TRAIN_SIZE": 64, "SEEDS": 1,
              "EPOCHS": 1, "BATCH_SIZE": 8, "EVAL_SIZE": 16, "TEST_SIZE": 32, "FIND_STEPS": 20, "CPU_TRAIN_SIZE": 64,
              "CPU_SEEDS": 1, "CPU_EPOCHS": 1, "RUNS_DIR": str(tmp_path / "runs")}
    nb = _execute("10_learning_rates.ipynb", params, tmp_path, python3_kernel)
    assert _table_rows(_tagged(nb, "suggestions")) == 3
    assert _table_rows(_tagged(nb, "experiment-table")) == 4
    said = "".join(o.get("text", "") for o in _tagged(nb, "compare").outputs).splitlines()
    assert len(said) == 3 and all(" vs full at 64 examples: " in s for s in said), said
    titles = [str(f.get("layout", {}).get("title", {}).get("text", "")) for f in _figures(nb)]
    assert sum(t.startswith("Learning-rate finder") for t in titles) == 3, titles
    assert sum(t.startswith("Learning rate per layer group") for t in titles) == 5, titles
    from tunekit.runs import list_runs
    runs = list_runs(tmp_path / "runs")
    assert len(runs) == 4 and all(r.status == "completed" for r in runs), [(r.label, r.status) for r in runs]


@pytest.mark.slow
def test_11_headlines_runs(python3_kernel, tmp_path):
    """Issue 25: the built-in decoder writes headlines before training, four strategies are trained on the
    BBC pairs with task='sft', each is paired with the untrained model example by example, what each wrote
    stands beside the real headline, and the weight-change and drift views are drawn."""
    params = {"MODEL": "smollm2", "DATA": "bbc_headlines", "INSTRUCTION": "Write a headline for this article.",
              "TRAIN_SIZE": 16, "EPOCHS": 1, "BATCH_SIZE": 8, "MAX_LENGTH": 96, "EVAL_SIZE": 4, "MAX_NEW_TOKENS": 8,
              "LORA_RANK": 2, "TOP_BLOCKS": 1, "CPU_TRAIN_SIZE": 16, "CPU_EPOCHS": 1, "CPU_EVAL_SIZE": 4,
              "CPU_MAX_LENGTH": 96, "ATTR_STEPS": 4, "CPU_ATTR_STEPS": 4, "ATTR_TOKENS": 3, "CPU_ATTR_TOKENS": 3, "SEED": 0, "RUNS_DIR": str(tmp_path / "runs")}
    nb = _execute("11_headlines.ipynb", params, tmp_path, python3_kernel)
    assert _table_rows(_tagged(nb, "before")) == 7  # loss, perplexity, ROUGE-1/2/L, BLEU, chrF
    assert _table_rows(_tagged(nb, "table")) == 4
    said = "".join(o.get("text", "") for o in _tagged(nb, "paired").outputs).splitlines()
    assert len(said) == 4 and all(" vs before: ROUGE-L " in s and "over 4 examples" in s for s in said), said
    assert _table_rows(_tagged(nb, "side-by-side")) == 4
    assert _table_rows(_tagged(nb, "drift-table")) == 4
    titles = " | ".join(str(f.get("layout", {}).get("title", {}).get("text", "")) for f in _figures(nb))
    for words in ("Weight change", "CKA"):
        assert words in titles, f"no figure titled {words!r} in: {titles}"
    from tunekit.runs import list_runs
    runs = list_runs(tmp_path / "runs")
    assert len(runs) == 4 and all(r.status == "completed" for r in runs), [(r.label, r.status) for r in runs]
    assert all(r.generations() for r in runs)
    said = "".join(o.get("text", "") for o in _tagged(nb, "attribution").outputs).splitlines()
    assert [s.split(":")[0] for s in said] == ["base", "lora-r2", "full"] and all("most from [(" in s for s in said), said
    (page,) = [d["text/html"] for d in _results(_tagged(nb, "attribution-html")) if "text/html" in d]
    assert "tunekit-generation-attribution" in page and page.count("<tr>") == 3
