"""Figures laid out for a room (issue 12): no fixed width (they follow their container),
text of at least 14 px, the legend in rows below the plot, titles wrapped rather than cut,
and subplot titles that never overlap. No browser: the layout dicts are read."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import pytest

from test_plots_report_cli import make_run
from tunekit import plots
from tunekit.plots.attribution import attribution_view
from tunekit.plots.axes import FONT, projector_layout, wrap
from tunekit.plots.post import forgetting_map, sparsity_curve
from tunekit.plots.representations import cka_by_layer, pca_scatter
from tunekit.runs import Run, RunWriter

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
        **_weight_figures(),
    }


def _weight_frame(n_runs: int = 4) -> pd.DataFrame:
    """inspect.weight_change's columns: every block x module, and the parts outside the blocks, per run."""
    rows = []
    for r in range(n_runs):
        for b in range(6):
            for k, m in enumerate(("query", "key", "value", "attn_out", "attn_norm", "intermediate", "output",
                                   "out_norm")):
                rows.append(dict(run=f"run{r}", label=f"{LONG} #{r}", group=f"block.{b}", block=b, module=m,
                                 name=f"bert.encoder.layer.{b}.{m}.weight", rel_change=0.001 * (b + k + r),
                                 delta_norm=0.01 * (b + k)))
        for g in ("embeddings", "head"):
            rows.append(dict(run=f"run{r}", label=f"{LONG} #{r}", group=g, block=None, module=g, name=f"{g}.weight",
                             rel_change=0.01 * r, delta_norm=0.1))
    return pd.DataFrame(rows)


def _weight_figures() -> dict:
    wc = _weight_frame()
    table = wc[wc["block"].notna()].assign(effective_rank=3.0)
    return {"weight_change_heatmap": plots.weight_change_heatmap(wc),
            "weight_change_difference": plots.weight_change_difference(wc, "run1", "run0"),
            "head_change_bar": plots.head_change_bar(wc), "rank_by_block": plots.rank_by_block(table),
            "magnitude_direction": plots.magnitude_direction(
                table.assign(delta_m=table["rel_change"], delta_d=table["rel_change"] ** 2)),
            "adapter_ranks": plots.adapter_ranks(
                table.assign(rank=table["block"] % 3 + 1, init_rank=4, method="ADALORA"))}


LEGEND_FREE = {"forgetting_map", "attribution_view", "weight_change_heatmap",  # text labels / a colour bar
               "weight_change_difference", "magnitude_direction", "adapter_ranks"}  # a panel per run, no legend


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


def test_every_figure_is_tagged_with_its_kind_so_its_caption_never_hangs_on_its_title(runs, tmp_path):
    from tunekit.plots import captions
    for name, fig in _figures(runs, tmp_path).items():
        kind = name.split(" (")[0]
        assert fig.layout.meta["tunekit_kind"] == kind, name
        fig.layout.title.text = "a title the plot function never gave it"  # a later rename keeps the caption
        assert captions.caption_for(fig) == captions.caption(kind) != "", name
        assert captions.caption_for(go.FigureWidget(fig)) == captions.caption(kind), name


def test_the_weight_maps_name_the_parts_of_a_block_in_words_and_wrap_their_panel_titles():
    wc = _weight_frame(4)
    heat = plots.weight_change_heatmap(wc)
    assert list(heat.data[0].x) == ["query", "key", "value", "attention out", "attention norm", "MLP in",
                                    "MLP out", "MLP norm"]
    assert list(plots.weight_change_difference(wc, "run1", "run0").data[0].x) == list(heat.data[0].x)
    panels = [a for a in heat.layout.annotations if a.yanchor == "bottom"]
    assert len(panels) == 4 and all(len(line) <= 21 for a in panels for line in a.text.split("<br>"))
    lines = max(a.text.count("<br>") + 1 for a in panels)  # the top margin holds the title and the panel titles
    assert heat.layout.margin.t >= 30 + 26 + 22 * lines


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
        for (dx0, dx1), (dy0, _dy1) in domains:
            if dy0 > y0 and not (x1 <= dx0 or dx1 <= x0):
                assert y1 <= dy0 - 40 / (fig.layout.height - fig.layout.margin.t - fig.layout.margin.b), \
                    (text, "runs into the row above (its x axis title)")
    # the main title is wrapped, not cut ("(128 exam")
    assert "(128 examples)" in fig.layout.title.text
    assert fig.layout.margin.t >= 26 * (fig.layout.title.text.count("<br>") + 1)


def test_the_weight_map_labels_every_part_and_narrow_panels_say_the_run_number():
    """Issue 20: the heatmap labelled 4 of its 8 columns and its panel titles ran into each other."""
    heat = plots.weight_change_heatmap(_weight_frame(4))
    axes = [heat.layout[k] for k in heat.layout if k.startswith("xaxis")]
    assert len(axes) == 4 and all(list(a.tickvals) == list(heat.data[0].x) and a.tickmode == "array" for a in axes)
    assert all(a.tickangle == -90 for a in axes)
    nine = _weight_frame(9)
    nine["label"] = ["#" + str(int(r[3:]) + 1) + " LoRA r8 α16 · 200 ex · 1 ep" for r in nine["run"]]  # as the lab names
    many = plots.weight_change_heatmap(nine)
    panels = [a.text for a in many.layout.annotations if a.yanchor == "bottom"]
    assert len(panels) == 9 and all(len(line) <= 84 // 9 for t in panels for line in t.split("<br>")), panels
