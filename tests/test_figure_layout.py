"""Figures laid out for a room (issue 12): no fixed width (they follow their container),
text of at least 14 px, the legend in rows below the plot, titles wrapped rather than cut,
and subplot titles that never overlap. No browser: the layout dicts are read."""
from __future__ import annotations

import pandas as pd
import pytest

from tunekit import plots
from tunekit.plots.attribution import attribution_view
from tunekit.plots.axes import FONT, projector_layout, wrap
from tunekit.plots.post import forgetting_map, sparsity_curve
from tunekit.plots.representations import cka_by_layer, pca_scatter
from tunekit.runs import Run, RunWriter

from test_plots_report_cli import make_run

LONG = "LoRA r8 α16 · 200 ex · 1 ep · a rather long label that goes on"


@pytest.fixture
def runs(tmp_path):
    d = tmp_path / "runs"
    return [make_run(d, "probe-1", "probe", accuracy=0.6), make_run(d, "lora-1", "lora-r8", trainable=1_000),
            make_run(d, "full-1", "full", status="stopped", reason="stopped")]


def _prunes(runs_dir, parent: Run) -> list[Run]:
    out = []
    for s in (0.5, 0.9):
        w = RunWriter(runs_dir, f"prune-{s}", {**parent.config, "kind": "prune",
                                                "parent": {"name": parent.name, "path": str(parent.path)}})
        w.finish("completed", None, sparsity=s, val_accuracy=0.8 - s / 2, before={"val_accuracy": 0.8})
        out.append(Run(w.path))
    return out


def _pca_frame(n_runs: int, name: str = LONG) -> pd.DataFrame:
    rows = [dict(run=f"run{r}", label=f"{name} #{r}", stage=st, x=k, y=k, text="a film", **{"class": c})
            for r in range(n_runs) for st in ("before", "after") for c in ("neg", "pos") for k in range(3)]
    df = pd.DataFrame(rows)
    df.attrs.update(explained_variance={f"run{r}": [0.3, 0.2] for r in range(n_runs)}, n=128)
    return df


def _figures(runs, tmp_path):
    drift = pd.DataFrame([dict(run=f"r{i}", label=f"{LONG} {i}", layer=k, cka=1 - 0.1 * k)
                          for i in range(4) for k in range(4)])
    forget = pd.DataFrame([dict(strategy=s, learned=0.2, forgot=0.1, drift=0.1, a_before=0.8, a_after=0.7,
                                b_before=0.5, b_after=0.7) for s in ("probe", "full")])
    att = {"text": "a film", "tokens": ["[CLS]", "a", "film", "[SEP]"], "scores": [0.0, 1, -1, 0], "target": 1,
           "target_label": "fresh", "prediction": "fresh", "probabilities": {"rotten": 0.3, "fresh": 0.7},
           "delta": 1e-4, "gap_relative": 1e-3, "run": "lora", "label": "lora"}
    return {
        "training_curves": plots.training_curves(runs),
        "training_curves (none)": plots.training_curves([]),
        "eval_curves": plots.eval_curves(runs),
        "pareto": plots.pareto(runs, "trainable_params"),
        "pareto (memory notes)": plots.pareto(runs, "peak_memory_mb"),
        "cka_by_layer": cka_by_layer(drift),
        "pca_scatter": pca_scatter(_pca_frame(3)),
        "sparsity_curve": sparsity_curve(_prunes(tmp_path / "runs", runs[1])),
        "forgetting_map": forgetting_map(forget),
        "attribution_view": attribution_view([att, {**att, "run": "full", "label": "full"}]),
    }


LEGEND_FREE = {"forgetting_map", "attribution_view"}  # text labels / a colour bar instead of a legend


def test_every_figure_follows_its_container_and_is_readable(runs, tmp_path):
    for name, fig in _figures(runs, tmp_path).items():
        lay = fig.layout
        assert lay.autosize is True and lay.width is None, name
        assert lay.height, name  # else a FigureWidget drawn off screen falls back to 360 px
        # a rotated y title of one line longer than the plot is cut: long ones are broken into lines
        ytitle = lay.yaxis.title.text or ""
        assert all(len(line) <= 40 for line in ytitle.split("<br>")), (name, ytitle)
        assert lay.font.size >= FONT >= 14, name
        assert lay.title.font.size is None or lay.title.font.size >= 14, name
        for a in lay.annotations:  # subplot titles, the chance note, the 'not plotted' notes
            assert a.font.size is not None and a.font.size >= 14, (name, a.text)
        if name not in LEGEND_FREE:
            assert lay.legend.orientation == "h" and lay.legend.yanchor == "top" and lay.legend.y < 0, name
        # the title is wrapped (no line longer than 60 characters but a word) and the top margin holds its lines
        title = lay.title.text or ""
        lines = title.split("<br>") if title else []
        limit = 200 if name == "attribution_view" else 60
        assert all(len(line) <= limit or " " not in line for line in lines), (name, title)
        assert lay.margin.t >= 26 * len(lines), (name, lay.margin.t, title)


def test_wrap_breaks_at_spaces_and_keeps_breaks():
    assert wrap("Head input features before and after training", 20) == "Head input features<br>before and after<br>training"
    assert wrap("a<br>b c", 1) == "a<br>b<br>c"


def test_projector_layout_undoes_a_fixed_width():
    import plotly.graph_objects as go
    fig = projector_layout(go.Figure(layout={"width": 700, "title": "t"}))
    assert fig.layout.width is None and fig.layout.autosize is True


def _boxes(fig, width_px: float = 880.0):
    """Each subplot title's box in paper units, at an output ``width_px`` wide: the text's widest line at
    0.6 em per character, its lines at 1.3 em, centred on x and above y (yanchor bottom)."""
    plot_w = width_px - fig.layout.margin.l - fig.layout.margin.r
    plot_h = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
    out = []
    for a in fig.layout.annotations:
        if a.xref != "paper" or a.yanchor != "bottom" or a.y is None or a.y < 0:
            continue
        lines = a.text.split("<br>")
        w = max(len(line) for line in lines) * 0.6 * a.font.size / plot_w
        h = len(lines) * 1.3 * a.font.size / plot_h
        out.append((a.text, a.x - w / 2, a.x + w / 2, a.y, a.y + h))
    return out


@pytest.mark.parametrize("n_runs", [2, 3, 4, 5])
def test_pca_subplot_titles_never_overlap_and_clear_the_plots(n_runs):
    fig = pca_scatter(_pca_frame(n_runs))
    boxes = _boxes(fig)
    assert len(boxes) == n_runs
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            apart = a[2] <= b[1] or b[2] <= a[1] or a[4] <= b[3] or b[4] <= a[3]
            assert apart, (a, b)
    # no title runs into the row above it (the domain of any axis above the title's baseline)
    domains = [(fig.layout[k].domain, fig.layout["yaxis" + k[5:]].domain) for k in fig.layout
               if k.startswith("xaxis")]
    for text, x0, x1, y0, y1 in boxes:
        assert 0 <= x0 and x1 <= 1, text
        for (dx0, dx1), (dy0, dy1) in domains:
            if dy0 > y0 and not (x1 <= dx0 or dx1 <= x0):
                assert y1 <= dy0 - 40 / (fig.layout.height - fig.layout.margin.t - fig.layout.margin.b), \
                    (text, "runs into the row above (its x axis title)")
    # the main title is wrapped, not cut ("(128 exam")
    assert "(128 examples)" in fig.layout.title.text
    assert fig.layout.margin.t >= 26 * (fig.layout.title.text.count("<br>") + 1)
