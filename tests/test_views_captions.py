"""The lab's views compute when their tab opens, say when they are out of date, and put one
line under every chart saying how to read it; parameter names read as "block 5 · value"
(issue 12, items 4 and 6). No browser: the widgets' state is read in Python."""
from __future__ import annotations

import re
import shutil

import pytest

import tunekit as tk
from tunekit.plots import captions

pytest.importorskip("ipywidgets")

from tunekit.widgets.views import VIEWS, RunsPanel  # noqa: E402


@pytest.fixture(scope="module")
def trained(tiny_dir, small, tmp_path_factory):
    """A probe and a LoRA run of the tiny model, trained once through the lab (the lab
    fixture's settings) for the whole module."""
    from tunekit.widgets import Lab
    lab = Lab(model=tiny_dir, data=small, runs_dir=str(tmp_path_factory.mktemp("views") / "runs"))
    lab.controls.train_size.value = 32
    lab.controls.eval_size.value = 16
    lab.controls.kind_w.value = "probe"
    assert lab.train(wait=True)
    lab.controls.kind_w.value = "lora"
    assert lab.train(wait=True)
    lab.runs.wait()
    runs = tk.list_runs(lab.runs_dir)
    assert [r.kind for r in runs] == ["train", "train"] and len(runs) == 2
    return lab.runs_dir


def _panel(trained, small) -> RunsPanel:
    panel = RunsPanel(trained, small)
    panel.wait()
    return panel


def _figures(panel, view):
    return [w for w in panel.panes[view].children if type(w).__name__ == "FigureWidget"]


def _open(panel, view):
    panel.tabs.selected_index = VIEWS.index(view)
    panel.wait()


def test_opening_a_tab_computes_its_view_with_a_progress_line(trained, small):
    panel = _panel(trained, small)
    assert not panel.panes["Weights"].children and panel.state["Weights"] == "empty"
    seen = []
    panel.status["Weights"].observe(lambda c: seen.append(c["new"]), names="value")
    _open(panel, "Weights")
    assert panel.state["Weights"] == "drawn", panel.status["Weights"].value
    assert _figures(panel, "Weights"), "opening the tab drew the figures, no button needed"
    assert any("Computing the weight change for 2 runs" in s for s in seen), seen  # inside the tab, in words
    assert panel.progress["Weights"].layout.display == "none"  # the progress bar goes once it is done
    labels = [b.description for b in panel.buttons.values()]
    assert all(len(lab) <= 12 and "..." not in lab for lab in labels), labels  # nothing to cut


def test_the_lab_computes_the_open_tab_and_marks_or_recomputes_after_a_selection_change(lab, trained):
    shutil.copytree(trained, lab.runs_dir, dirs_exist_ok=True)
    lab.runs.refresh()
    runs = lab.runs
    names = [r.name for r in runs.runs()]
    runs.select.value = tuple(names)
    _open(runs, "Weights")
    assert runs.state["Weights"] == "drawn" and runs.drawn_for["Weights"] == tuple(names)
    _open(runs, "Compare")
    assert runs.state["Compare"] == "drawn"
    # Weights is drawn but hidden: a new selection marks it out of date, in a banner inside its tab
    runs.select.value = (names[-1],)
    runs.wait()
    assert runs.state["Weights"] == "stale"
    assert "Out of date: the selection changed" in runs.status["Weights"].value
    assert "font-size:1em" in runs.status["Weights"].value  # normal-size text, not small italics
    # the open view (Compare) was recomputed for the new selection
    assert runs.state["Compare"] == "drawn" and runs.drawn_for["Compare"] == (names[-1],)
    # opening Weights recomputes it
    _open(runs, "Weights")
    assert runs.state["Weights"] == "drawn" and runs.drawn_for["Weights"] == (names[-1],)
    assert "Out of date" not in runs.status["Weights"].value


def test_an_error_is_said_inside_the_tab(trained, small, monkeypatch):
    panel = _panel(trained, small)
    _open(panel, "Weights")  # drawn for the selection first: its figures must not stay under the error
    assert panel.state["Weights"] == "drawn" and panel.panes["Weights"].children
    monkeypatch.setattr(panel, "_view_weights", lambda runs, step: (_ for _ in ()).throw(
        tk.ConfigError("the weights could not be read")))
    panel.show("Weights", wait=True)  # Recompute
    assert panel.state["Weights"] == "error"
    assert "Could not draw this view: the weights could not be read" in panel.status["Weights"].value
    assert panel.panes["Weights"].children == ()  # the older figures went with the error (issue 20)


def test_every_figure_in_every_view_has_a_caption_line_under_it(trained, small):
    panel = _panel(trained, small)
    for view in VIEWS:
        panel.show(view, wait=True)
        kids = list(panel.panes[view].children)
        assert kids, view
        for i, w in enumerate(kids):
            chart = type(w).__name__ == "FigureWidget" or "tunekit-attribution" in getattr(w, "value", "")
            if chart:
                nxt = kids[i + 1] if i + 1 < len(kids) else None
                assert nxt is not None and "tunekit-caption" in getattr(nxt, "value", ""), (view, i)
                text = re.sub("<[^>]+>", "", nxt.value)
                assert 40 < len(text) < 320, text  # one line in words
    weights = re.sub("<[^>]+>", "", " ".join(getattr(w, "value", "") for w in panel.panes["Weights"].children))
    assert "probe" in weights.lower()
    # the probe changed no block: no "lora minus probe" map (all zero by construction); why is said instead
    titles = [w.layout.title.text or "" for w in _figures(panel, "Weights")]
    assert not any(" minus " in t for t in titles), titles
    assert "No difference map" in weights and "changes no weight inside the blocks" in weights
    attribution = panel.panes["Attribution"].children[0].value
    assert "scores add up to the output within" in attribution and "\u03b4 =" not in attribution


def test_the_same_caption_is_under_each_figure_of_the_report(trained):
    runs = tk.list_runs(trained)
    page = tk.report.render_report(runs)
    for kind in ("training_curves", "eval_curves", "pareto"):
        assert captions.caption_html(captions.caption(kind)) in page, kind
    assert page.count('class="tunekit-caption"') >= 4


def test_parameter_names_in_words():
    p = captions.param_label
    assert p("bert.encoder.layer.5.attention.self.value.weight") == "block 5 · value"
    assert p("distilbert.transformer.layer.0.attention.q_lin.weight") == "block 0 · query"
    assert p("model.layers.3.self_attn.o_proj.weight") == "block 3 · attention out"
    assert p("bert.encoder.layer.2.output.dense.weight") == "block 2 · MLP out"
    assert p("bert.embeddings.word_embeddings.weight") == "embeddings · word"
    assert p("classifier.weight") == "head"
    assert captions.share_in_words(-1.79e-06 / 0.267) == "0.00067 %"


def test_no_internal_names_in_the_views_titles_axes_or_legends(trained, small):
    panel = _panel(trained, small)
    dotted = re.compile(r"\b[a-z_]+(\.[a-z_0-9]+){2,}\b")
    for view in ("Weights", "Representations"):
        panel.show(view, wait=True)
        for fig in _figures(panel, view):
            layout = fig.layout
            texts = [layout.title.text or ""]
            texts += [getattr(getattr(layout, ax).title, "text", "") or "" for ax in ("xaxis", "yaxis")]
            if layout.coloraxis and layout.coloraxis.colorbar and layout.coloraxis.colorbar.title:
                texts.append(layout.coloraxis.colorbar.title.text or "")
            texts += [t.name or "" for t in fig.data] + [str(t.hovertemplate or "") for t in fig.data]
            for t in texts:
                assert "rel_change" not in t and "noise, " not in t, t
                assert not dotted.search(t), t
            for ax in ("xaxis", "yaxis"):
                assert getattr(layout, ax).exponentformat in (None, "e", "none", "power"), ax
    spectrum = [f for f in _figures(panel, "Weights") if "Spectrum" in (f.layout.title.text or "")]
    assert spectrum and re.search(r"block \d+ · \w+", spectrum[0].layout.title.text), spectrum
