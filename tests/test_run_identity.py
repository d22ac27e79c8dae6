"""A run has one name and one colour everywhere (issue 12): legends, the runs table, the
picker, the views and the report; accuracy axes from chance to 1 with the evaluation-set
size; empty charts that say so; memory that is each run's own measured figure, never RSS.

Most records are written with RunWriter as the engine writes them (milliseconds); one test
trains two real runs on the tiny BERT.
"""
from __future__ import annotations

from html.parser import HTMLParser

import pytest

import tunekit as tk
from tunekit import plots
from tunekit.report import render_report, runs_table_html
from tunekit.runs import Run, RunWriter


def record(runs_dir, name, strategy, *, label=None, examples=200, epochs=1, lr=None, seed=0, batch=16,
           accuracy=0.7, memory=(300.0, "measured_tensors"), labels=("neg", "pos"), validation=300, kind="train",
           parent=None, config_extra=None, status="completed"):
    """A completed record with the fields the engine writes (``strategy``: its describe())."""
    config = {"kind": kind, "parent": parent, "task": "classification",
              "strategy": strategy, "strategy_label": label or strategy["name"],
              "model": {"source": "tiny", "label_names": list(labels)},
              "data": {"name": "rt", "label_names": list(labels), "train_used": examples,
                       "validation_used": validation},
              "train": {"epochs": epochs, "lr": lr, "seed": seed, "batch_size": batch, "max_length": 64,
                        "train_size": examples},
              "params": {"trainable": 1000, "total": 10_000, "percent": 10.0}, **(config_extra or {})}
    w = RunWriter(runs_dir, name, config)
    for s in (1, 2, 3):
        w.log("step", {"step": s, "loss": 0.7 - 0.05 * s, "samples": 16 * s, "epoch": s / 3, "elapsed_s": s / 10})
    w.log("eval", {"step": 3, "val_accuracy": accuracy, "val_macro_f1": accuracy - 0.05, "val_loss": 0.6})
    mb, how = memory
    w.finish(status, None, steps=3, wall_time_s=1.0, val_accuracy=accuracy, val_macro_f1=accuracy - 0.05,
             val_loss=0.6, peak_memory_mb=mb, memory_kind=how)
    return Run(w.path)


LORA8 = {"name": "lora", "rank": 8, "alpha": 16, "dropout": 0.05}
LORA4 = {"name": "lora", "rank": 4, "alpha": 8, "dropout": 0.05}


@pytest.fixture
def five(tmp_path):
    d = tmp_path / "runs"
    return [record(d, "lora-r8-20261201-202739", LORA8, label="lora-r8", examples=200, epochs=1),
            record(d, "lora-r8-20261201-203012", LORA8, label="lora-r8", examples=500, epochs=2),
            record(d, "probe-20261201-203300", {"name": "probe", "pooling": None}, label="probe"),
            record(d, "full-20261201-203500", {"name": "full"}, label="full", examples=500, epochs=2),
            record(d, "lora-r4-20261201-204000", LORA4, label="lora-r4")]


def _trace_colours(fig) -> dict[str, str]:
    """{legend group (the run's name): colour} of a figure's run traces."""
    out = {}
    for t in fig.data:
        if t.legendgroup:
            out[t.legendgroup] = t.marker.color if t.mode == "markers+text" else t.line.color
    return out


# ----- names ------------------------------------------------------------------------------------------
def test_the_name_says_what_distinguishes_runs(five, tmp_path):
    assert [r.display_name for r in five] == [
        "LoRA r8 α16 · 200 ex · 1 ep", "LoRA r8 α16 · 500 ex · 2 ep", "probe · 200 ex · 1 ep",
        "full · 500 ex · 2 ep", "LoRA r4 α8 · 200 ex · 1 ep"]
    assert [r.label for r in five][:2] == ["lora-r8", "lora-r8"]  # the label and the name stay as they were
    pruned = record(tmp_path / "runs", "full-prune50", {"name": "prune", "method": "magnitude", "sparsity": 0.5,
                                                          "scope": "global"}, label="prune50", kind="prune",
                    parent={"name": five[3].name, "path": str(five[3].path)})
    assert pruned.display_name == "prune 50 % of #4"  # what was done to which record (issue 20)
    lpft = record(tmp_path / "runs", "lpft", {"name": "lpft", "probe_epochs": 1},
                  config_extra={"phases": [{"epochs": 1, "lr": 1e-2}, {"epochs": 2, "lr": None}]})
    assert lpft.display_name == "LP-FT · 200 ex · 1+2 ep"


def test_old_records_get_a_sensible_name(tmp_path):
    bare = RunWriter(tmp_path, "old-run", {"strategy_label": "lora-r8"})
    bare.finish("completed", None, val_accuracy=0.6)
    nothing = RunWriter(tmp_path, "older", {})
    nothing.finish("completed", None)
    assert Run(bare.path).display_name == "LoRA r8"
    assert Run(nothing.path).display_name == "?"
    orphan = record(tmp_path, "pruned", {"name": "prune", "method": "magnitude", "sparsity": 0.3},
                    kind="prune", parent={"name": "gone-run", "path": str(tmp_path / "gone-run")})
    assert orphan.display_name == "prune 30 % of gone-run"  # its parent's record is gone: by its name
    assert plots.comparison_table([Run(bare.path), Run(nothing.path)])["run"].tolist() == ["#1 LoRA r8", "#2 ?"]


def test_a_run_has_one_name_whichever_runs_are_shown_beside_it(tmp_path):
    d = tmp_path / "runs"
    a = record(d, "a", LORA8, label="lora-r8")
    b = record(d, "b", LORA8, label="lora-r8")
    c = record(d, "c", LORA8, label="lora-r8", lr=1e-4, seed=3, batch=8)
    names = plots.display_names([a, b, c])  # its number in the folder, then what it is, and what was asked
    assert names == {"a": "#1 LoRA r8 α16 · 200 ex · 1 ep", "b": "#2 LoRA r8 α16 · 200 ex · 1 ep",
                     "c": "#3 LoRA r8 α16 · 200 ex · 1 ep · lr 0.0001 · batch 8 · seed 3"}
    for chosen in ([b, a], [b], [c, a], [a, b, c][::-1]):  # the same name in every selection
        assert plots.display_names(chosen) == {r.name: names[r.name] for r in chosen}
    fig = plots.eval_curves([c, b, a])
    assert [t.name for t in fig.data] == [names[r.name] for r in (c, b, a)]
    assert plots.comparison_table([a, b, c])["run"].tolist() == [names[r.name] for r in (a, b, c)]
    assert [Run(r.path).config["number"] for r in (a, b, c)] == [1, 2, 3]  # kept in the record


def test_a_number_is_never_moved_by_deleting_a_record(tmp_path):
    import shutil
    d = tmp_path / "runs"
    a, b, c = (record(d, n, LORA8, label="lora-r8") for n in "abc")
    colour = plots.run_color(c)
    shutil.rmtree(a.path)  # the oldest record goes: the others keep their number and colour
    assert plots.display_names([Run(b.path), Run(c.path)]) == {"b": "#2 LoRA r8 α16 · 200 ex · 1 ep",
                                                               "c": "#3 LoRA r8 α16 · 200 ex · 1 ep"}
    assert plots.run_color(Run(c.path)) == colour
    assert plots.next_number(d) == 4 and Run(record(d, "d", LORA4, label="lora-r4").path).config["number"] == 4


def test_old_records_without_a_number_get_their_place(tmp_path):
    import json
    d = tmp_path / "runs"
    old = [record(d, n, LORA8, label="lora-r8") for n in ("old-a", "old-b")]
    for r in old:  # as records made before numbers were kept
        config = json.loads((r.path / "config.json").read_text())
        del config["number"]
        (r.path / "config.json").write_text(json.dumps(config))
    new = record(d, "new", LORA4, label="lora-r4")  # after the old ones, whatever they are
    assert plots.display_names([Run(p.path) for p in (*old, new)]) == {
        "old-a": "#1 LoRA r8 α16 · 200 ex · 1 ep", "old-b": "#2 LoRA r8 α16 · 200 ex · 1 ep",
        "new": "#3 LoRA r4 α8 · 200 ex · 1 ep"}


# ----- colours ----------------------------------------------------------------------------------------
def test_a_run_keeps_its_colour_across_selections(five):
    own = {r.name: plots.run_color(r) for r in five}
    assert len(set(own.values())) == 5  # five records made one after the other: five colours
    selections = [five, five[::-1], five[2:], [five[4], five[0]], [five[3]]]
    for chosen in selections:
        for fig in (plots.training_curves(chosen), plots.eval_curves(chosen), plots.pareto(chosen),
                    plots.pareto(chosen, "peak_memory_mb")):
            shown = _trace_colours(fig)
            assert shown == {r.name: own[r.name] for r in chosen}, fig.layout.title.text
        assert plots.colors(chosen) == {r.name: own[r.name] for r in chosen}
    later = record(five[0].path.parent, "a-later-run", {"name": "full"})  # a new run changes no old colour
    assert {r.name: plots.run_color(r) for r in five} == own
    assert plots.run_color(later) not in (own[five[-1].name],)  # and differs from the run made just before
    assert len(set(plots.PALETTE)) == len(plots.PALETTE) == 12  # twelve runs in a row, twelve colours
    assert [plots.color_of(n) for n in (1, 12, 13)] == [plots.PALETTE[0], plots.PALETTE[11], plots.PALETTE[0]]


def _srgb(hex_colour: str) -> list[float]:
    c = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    return [v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4 for v in c]


def _contrast_on_white(hex_colour: str) -> float:
    r, g, b = _srgb(hex_colour)
    return 1.05 / (0.2126 * r + 0.7152 * g + 0.0722 * b + 0.05)


def _lab(hex_colour: str) -> tuple[float, float, float]:
    r, g, b = _srgb(hex_colour)
    x, y, z = ((0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047, 0.2126 * r + 0.7152 * g + 0.0722 * b,
               (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883)
    f = [t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in (x, y, z)]
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def test_run_colours_are_told_apart_on_a_projector():
    """Issue 20: #1 blue and #4 purple were too close, cyan, light green and pink too faint on
    white. Every colour stands out on white at least 3:1 and any two differ by Delta E >= 24."""
    import math
    faint = {c: round(_contrast_on_white(c), 2) for c in plots.PALETTE if _contrast_on_white(c) < 3}
    assert not faint, faint
    close = [(a, b) for i, a in enumerate(plots.PALETTE) for b in plots.PALETTE[i + 1:]
             if math.dist(_lab(a), _lab(b)) < 24]
    assert not close, close
    old = ["#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3"]  # what the checks catch
    assert _contrast_on_white("#19D3F3") < 3 and math.dist(_lab(old[0]), _lab(old[3])) < 24


def test_the_views_draw_each_run_in_its_colour(five, small):
    from tunekit.widgets.views import RunsPanel
    panel = RunsPanel(str(five[0].path.parent), small)
    own = {r.name: plots.run_color(r) for r in five}
    for chosen in (five[:3], five[1:4][::-1]):
        for fig in panel._view_compare(chosen):
            assert _trace_colours(fig) == {r.name: own[r.name] for r in chosen}
    names = plots.display_names(five)
    listed = panel.runs()  # oldest first (these five started in one second: by name)
    assert [label for label, _ in panel.select.options] == [f"{names[r.name]}  [completed]" for r in listed]
    for r in five:
        assert f"background:{own[r.name]}" in panel.table.value and names[r.name] in panel.table.value


# ----- the runs table ---------------------------------------------------------------------------------
class _Table(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.swatches, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr":
            self.rows.append([])
        elif tag in ("th", "td"):
            self._cell = [tag, a.get("style", ""), ""]
            self.rows[-1].append(self._cell)
        elif tag == "span" and "swatch" in a.get("class", ""):
            self.swatches.append(a["style"].split("background:")[1])

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[2] += data


def test_the_runs_table_has_settings_swatches_and_aligned_headers(five):
    page = _Table()
    page.feed(runs_table_html(five))
    head, *body = page.rows
    columns = [text for _, _, text in head]
    assert all(tag == "th" for tag, _, _ in head) and all(tag == "td" for row in body for tag, _, _ in row)
    assert len(body) == 5 and all(len(row) == len(head) for row in body)  # one cell under every header
    for key in ("run", "strategy", "rank", "alpha", "lr", "epochs", "train examples", "batch size", "seed",
                "accuracy", "memory MB", "status", "record"):
        assert key in columns, key
    for row in body:  # a header is aligned as its cells are: text left, numbers right
        for (_, h_style, name), (_, c_style, _) in zip(head, row):
            side = "left" if name in ("run", "strategy", "status", "record") else "right"
            assert f"text-align:{side}" in h_style and f"text-align:{side}" in c_style, name
    cell = {name: [row[i][2] for row in body] for i, name in enumerate(columns)}
    assert cell["run"] == [plots.display_names(five)[r.name] for r in five]
    assert cell["rank"] == ["8", "8", "-", "-", "4"] and cell["alpha"] == ["16", "16", "-", "-", "8"]
    assert cell["train examples"] == ["200", "500", "200", "500", "200"] and cell["epochs"][1] == "2"
    assert page.swatches == [plots.run_color(r) for r in five]


# ----- axes -------------------------------------------------------------------------------------------
def _chance_lines(fig) -> list[float]:
    return [s.y0 for s in fig.layout.shapes if s.line.dash == "dash"]


@pytest.mark.parametrize("metric", ["val_accuracy", "val_macro_f1"])
def test_score_axes_run_from_chance_to_one(five, tmp_path, metric):
    fig = plots.eval_curves(five, metric)
    assert list(fig.layout.yaxis.autorangeoptions.include) == [0.5, 1.0] and _chance_lines(fig) == [0.5]
    title = fig.layout.yaxis.title.text
    assert "n=300; one example = 0.0033" in title and "chance, 1 in 2 classes" in title
    three = [record(tmp_path / "three", f"r{i}", {"name": "full"}, labels=("a", "b", "c"), validation=50)
             for i in range(2)]
    fig = plots.pareto(three, y=metric[4:])
    assert _chance_lines(fig) == [pytest.approx(1 / 3)] and "n=50; one example = 0.02" in fig.layout.yaxis.title.text
    assert _chance_lines(plots.eval_curves(five, "val_loss")) == []  # a loss has no chance level
    plots.score_axis(fig, metric[4:], num_labels=4, n=100)  # again (the lab's live chart): one line, replaced
    assert _chance_lines(fig) == [0.25] and [a.text for a in fig.layout.annotations] == ["chance 0.25"]


def test_empty_charts_say_so(five, tmp_path):
    for fig in (plots.training_curves([]), plots.eval_curves([]), plots.pareto([])):
        assert [a.text for a in fig.layout.annotations] == ["no runs selected"]
        assert fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False
    w = RunWriter(tmp_path, "just-started", {"strategy": {"name": "full"}})
    fig = plots.training_curves([Run(w.path)])
    assert "no training steps logged yet" in [a.text for a in fig.layout.annotations]
    assert fig.layout.yaxis.visible is False
    assert plots.training_curves(five).layout.yaxis.visible is not False


def test_memory_is_the_measured_figure_never_rss(tmp_path):
    d = tmp_path / "runs"
    runs = [record(d, "a", {"name": "full"}, memory=(744.0, "process_rss")),
            record(d, "b", LORA8, memory=(1102.0, "process_rss")),
            record(d, "c", {"name": "probe"}, memory=(42.5, "measured_tensors")),
            record(d, "d", LORA4, memory=(120.0, "measured_tensors"))]
    fig = plots.pareto(runs, "peak_memory_mb")
    assert sorted(t.x[0] for t in fig.data if t.name != "Pareto front") == [42.5, 120.0]
    assert fig.layout.xaxis.title.text.startswith("training memory per run (MB")
    assert "process RSS" in fig.layout.annotations[0].text
    assert plots.comparison_table(runs)["memory MB"].tolist()[2:] == [42.5, 120.0]
    assert plots.comparison_table(runs)["memory MB"].isna().tolist()[:2] == [True, True]
    cuda = [record(tmp_path / "gpu", "g", {"name": "full"}, memory=(2026.0, "cuda_max_allocated"))]
    assert "GPU memory allocated per run" in plots.pareto(cuda, "peak_memory_mb").layout.xaxis.title.text


# ----- the report, and real records -------------------------------------------------------------------
def test_the_report_names_and_colours_runs_as_the_lab_does(five):
    text = render_report(five)
    for r in five:
        assert r.display_name in text and f"background:{plots.run_color(r)}" in text


def test_real_runs(tiny, small, fast):
    lora = tk.train(tiny, small, tk.LoRA(rank=2), **fast)
    probe = tk.train(tk.load_model(tiny.source, label_names=small.label_names), small, tk.Probe(), **fast)
    assert lora.display_name == "LoRA r2 α4 · 64 ex · 1 ep" and probe.display_name == "probe · 64 ex · 1 ep"
    table = plots.comparison_table([lora, probe])
    assert table["lr"].tolist() == [pytest.approx(1e-3), pytest.approx(1e-2)]  # the strategies' defaults
    assert table["rank"].tolist()[0] == 2 and table["batch size"].tolist() == [16, 16]
    fig = plots.pareto([lora, probe], "peak_memory_mb")
    assert len([t for t in fig.data if t.name != "Pareto front"]) == 2
    assert lora.summary["memory_kind"] in ("measured_tensors", "cuda_max_allocated")
    validation = lora.config["data"]["validation_used"]
    assert f"n={validation};" in plots.eval_curves([lora, probe]).layout.yaxis.title.text
    from tunekit.widgets.views import RunsPanel
    panel = RunsPanel(fast["runs_dir"], small)
    bars = panel._view_weights([probe, lora])[1]  # the change outside the blocks, one bar per run
    assert [t.marker.color for t in bars.data] == [plots.run_color(probe), plots.run_color(lora)]
    assert [t.name for t in bars.data] == [plots.display_names([r])[r.name] for r in (probe, lora)]
    stacked = panel._view_attribution([lora, probe])[0]
    assert lora.display_name in stacked and probe.display_name in stacked


def test_numbering_a_record_reads_only_the_records_it_has_not_read(tmp_path, monkeypatch):
    """A run's start numbers its record: in a folder of many records that is one stat per record
    and one read of each config.json not read before (not one read of every record per run)."""
    import builtins

    from tunekit import run_names
    d = tmp_path / "runs"
    for i in range(30):
        RunWriter(d, f"r{i}", {"strategy_label": "probe"}).finish("completed", None)
    assert run_names.next_number(d) == 31
    RunWriter(d, "new", {"strategy_label": "probe"}).finish("completed", None)
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    assert run_names.next_number(d) == 32
    assert opened == [str(d / "new" / "config.json")]


def test_the_runs_table_puts_what_a_room_reads_first_and_keeps_the_name_in_view(five):
    """Issue 20: at 848 px the accuracy and status were off-screen behind 2,000 px of settings."""
    page = _Table()
    page.feed(runs_table_html(five))
    head = page.rows[0]
    columns = [text for _, _, text in head]
    assert columns[:5] == ["run", "accuracy", "macro-F1", "status", "trainable %"]
    assert "position:sticky;left:0" in head[0][1] and all("position:sticky" in row[0][1] for row in page.rows)
    assert not any("position:sticky" in style for _, style, _ in head[1:])
    html = runs_table_html(five)
    assert html.startswith('<div class="tunekit-table-scroll" style="overflow-x:auto;max-width:100%')
