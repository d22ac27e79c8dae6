"""The lab's Experiments tab (issue 21): the grid fills live as cells finish, Stop keeps every
finished cell, Run resumes, an experiment on disk can be picked and resumed, bad input is said in
words. The tab is also looked at in a real browser (tests/test_browser.py)."""
from __future__ import annotations

import html
import threading

import plotly.graph_objects as go
import pytest

import tunekit as tk

pytest.importorskip("ipywidgets")


def table(panel) -> str:
    """The grid's table, without its legend."""
    return panel.grid_w.value.split("one mark")[0]


@pytest.fixture
def panel(lab):
    p = lab.runs.experiments
    p.name_w.value = "tab grid"
    p.strategies_w.value = "probe, full"
    p.sizes_w.value = "16, 32"
    p.seeds_w.value = 2
    p.test_w.value = 24
    return p


def test_the_tab_trains_a_grid_and_draws_it_as_cells_finish(lab, panel, monkeypatch):
    """Every cell's end redraws the grid, the curves (one band per strategy) and the progress;
    the grid says each seed's state; the cells' runs appear in the lab's runs table."""
    seen = []
    real = panel._redraw

    def spy(final=False):
        real(final)
        seen.append((panel.progress.value, table(panel).count("●"), panel.progress_w.value))
    monkeypatch.setattr(panel, "_redraw", spy)
    assert lab.runs.tabs.get_title(len(lab.runs.tabs.children) - 1) == "Experiments"
    assert panel.run(wait=True)
    exp = panel.exp
    assert len(exp.done()) == 8, panel.status_w.value
    assert "all 8 cells finished" in panel.status_w.value
    done_counts = [s[0] for s in seen]
    assert done_counts == sorted(done_counts) and 8 in done_counts and len(set(done_counts)) >= 8  # one per cell
    assert any(" left" in s[2] for s in seen if 0 < s[0] < 8)  # an estimate once a cell is done
    assert [s[1] for s in seen] == [s[0] for s in seen]  # a done mark per finished cell, as they finish
    assert table(panel).count("●") == 8 and "○" not in table(panel)
    fig = panel.figure_box.children[0]
    assert isinstance(fig, go.FigureWidget) and fig._config["responsive"]  # drawn at its place's width
    assert [t.name for t in fig.data if t.showlegend is not False] == ["probe", "full"]
    assert sum(1 for t in fig.data if t.fill == "toself") == 2  # a 95 % band per strategy
    assert "What to choose" in panel.choose_w.value and "16 examples" in panel.choose_w.value
    assert panel.pick_w.value == "tab grid" and not panel.running
    names = {r.name for r in tk.list_runs(lab.runs_dir)}
    assert {c["run"] for c in exp.done()} <= names


def test_the_grid_marks_running_and_queued_cells(lab, panel):
    """While a cell trains its seed shows as running, the cells not started as queued."""
    marks = []
    real = panel._on_event

    def spy(event):
        real(event)
        if event["event"] == "cell_start" and not marks:
            marks.append(table(panel))
    panel._on_event = spy
    panel.sizes_w.value, panel.seeds_w.value = "16", 1
    assert panel.run(wait=True)
    first = marks[0]
    assert first.count("◐") == 1 and first.count("○") == 1 and "running" in first


def test_stop_keeps_finished_cells_and_run_resumes_the_rest(lab, panel):
    """Stop mid-cell: the finished cells are kept, the stopped one is marked and retried; Run
    again trains only what is left."""
    panel.strategies_w.value, panel.seeds_w.value, panel.epochs_w.value = "full", 1, 30
    first_cell_done, stepping = threading.Event(), threading.Event()
    real = panel._on_event

    def spy(event):
        real(event)
        if event["event"] == "cell_end":
            first_cell_done.set()
        if event["event"] == "step" and first_cell_done.is_set():
            stepping.set()
    panel._on_event = spy
    assert panel.run()
    assert stepping.wait(240), panel.status_w.value
    panel.stop()
    panel.wait(240)
    assert not panel.running
    exp = panel.exp
    states = exp.states()
    assert states == {"full|16|0": "done", "full|32|0": "stopped"}, states
    assert "Stopped: 1 of 2 cells finished and kept" in panel.status_w.value
    assert "✕" in table(panel) and table(panel).count("●") == 1
    stopped = tk.load_run(exp.path.parent / exp.cells["full|32|0"]["run"])
    assert stopped.status == "stopped"
    panel.epochs_w.value = 30  # the same grid: Run resumes it
    panel._on_event = real
    assert panel.run(wait=True)
    assert panel.exp.states() == {"full|16|0": "done", "full|32|0": "done"}, panel.status_w.value


def test_picking_an_experiment_on_disk_shows_it_and_resumes_it(lab, panel, tiny_dir, small):
    """An experiment trained elsewhere (a script, the CLI) is listed; picking it sets the
    controls to its grid and draws it; Run resumes it with its own strategies."""
    runs = lab.runs_dir
    tk.experiment([tk.LoRA(rank=4, alpha=32), tk.Probe()], small, sizes=[16], seeds=1, model=tiny_dir,
                  name="from a script", runs_dir=runs, eval_size=16, batch_size=16, test_size=24, progress=False)
    panel.refresh()
    assert "from a script" in panel.pick_w.options
    panel.pick_w.value = "from a script"
    assert panel.name_w.value == "from a script" and panel.sizes_w.value == "16" and panel.seeds_w.value == 1
    assert panel.strategies_w.value == "lora-r4-a32, probe"  # no spec says alpha 32: its label is shown
    assert "2 of 2 cells done" in panel.status_w.value and table(panel).count("●") == 2
    assert panel.figure_box.children and "What to choose" in panel.choose_w.value
    assert panel.run(wait=True)  # the shown strategies resume the grid (nothing left to train)
    assert "all 2 cells finished" in panel.status_w.value, panel.status_w.value


@pytest.mark.parametrize("field,value,said", [
    ("strategies_w", "probe, lorax", "strategies: unknown strategy 'lorax'"),
    ("sizes_w", "16, ten", "sizes: must be positive integers"),
    ("sizes_w", "16, 5000", "sizes: 5,000 is more than the 192 training examples"),
    ("name_w", "  ", "name: give the experiment a name"),
])
def test_bad_input_is_said_in_words_and_nothing_trains(lab, panel, field, value, said):
    getattr(panel, field).value = value
    panel.run(wait=True)
    assert said in html.unescape(panel.status_w.value) and "Not started" in panel.status_w.value, panel.status_w.value
    assert "Traceback" not in panel.status_w.value and not panel.running and not panel.run_button.disabled
    assert tk.list_runs(lab.runs_dir) == []


def test_the_lab_and_the_tab_never_train_at_once(lab, panel):
    lab.running = True  # as while a lab run trains
    assert not panel.run()
    assert "A lab run is training" in panel.status_w.value
    lab.running = False
    panel.running = True
    assert not lab.train()
    assert "An experiment is training" in lab.status
    panel.running = False


def test_the_projector_switch_scales_the_experiment_figures(lab, panel):
    panel.sizes_w.value, panel.seeds_w.value, panel.strategies_w.value = "16", 1, "probe"
    assert panel.run(wait=True)
    size = panel.figure_box.children[0].layout.title.font.size
    lab.projector = True
    assert panel.figure_box.children[0].layout.title.font.size == pytest.approx(size * 1.25)
    panel.run(wait=True)  # drawn again: still scaled
    assert panel.figure_box.children[0].layout.title.font.size == pytest.approx(size * 1.25)
