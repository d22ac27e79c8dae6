"""The lab's learning rates (issue 24): Find runs the finder for the chosen strategy and sets the
rate to its suggestion; the planned rate of every layer group is drawn from the settings, equal to
what ``tk.learning_rates`` gives (and so to what the run takes); the layer decay reaches the run."""
import math

import plotly.graph_objects as go
import pytest

import tunekit as tk


def test_find_sets_the_rate_to_the_suggestion_of_the_chosen_strategy(lab):
    c = lab.controls
    c.kind_w.value = "lora"
    assert c.default_lr.value and not c.show_rates.value and c.rates_panel.layout.display == "none"  # until asked
    lab.FINDER_STEPS = 40
    assert lab.find_lr(wait=True)
    assert not lab.finding and not lab.train_button.disabled and not c.find.disabled
    [fig] = c.finder_box.children
    assert isinstance(fig, go.FigureWidget) and fig.layout.title.text.startswith("Learning-rate finder: lora-r8")
    suggested = float(fig.layout.title.text.split("suggests ")[1].split(" ")[0])
    choices = [v for _, v in tk.widgets.controls.lr_choices()]
    nearest = min(choices, key=lambda v: abs(math.log(v / suggested)))
    assert c.lr.value == nearest and not c.default_lr.value  # the user's rate from now on
    assert c.overrides()["lr"] == nearest
    assert "The finder suggests" in lab.status and "rule: valley" in lab.status
    assert c.show_rates.value and c.rates_panel.layout.display is None  # opened ...
    assert len(c.rates_box.children) == 1 and c.show_rates.description == "hide the rates"  # ... planned rates drawn


def test_the_planned_rates_drawn_are_those_of_tk_learning_rates(lab):
    c = lab.controls
    c.kind_w.value = "full"
    c.show_rates.value = True
    c.schedule.value = "one_cycle"
    c.lr_decay.value = 0.5
    c.batch_size.value = 8  # 32 examples: 4 steps
    [fig] = c.rates_box.children
    want = tk.learning_rates(lab.model, tk.Full(), steps=4, lr_decay=0.5, schedule="one_cycle")
    drawn = {t.name: list(t.y) for t in fig.data}
    assert set(drawn) == {"embeddings (planned)", "block.0 (planned)", "block.1 (planned)",
                          "pooler … head (2) (planned)"}
    for group, name in (("embeddings", "embeddings (planned)"), ("head", "pooler … head (2) (planned)")):
        assert drawn[name] == pytest.approx(want[want["group"] == group]["lr"].tolist())
    c.lr_decay.value = None  # one rate for all: one line
    assert [t.name for t in c.rates_box.children[0].data] == ["every group (5) (planned)"]


def test_the_layer_decay_and_the_schedule_reach_the_run(lab):
    c = lab.controls
    c.kind_w.value = "full"
    c.lr_decay.value = 0.8
    c.schedule.value = "slanted_triangular"
    assert lab.train(wait=True)
    run = tk.load_run(f"{lab.runs_dir}/{lab.last_run}")
    assert run.config["train"]["lr_decay"] == 0.8 and run.config["train"]["schedule"] == "slanted_triangular"
    peaks = run.summary["rates"][0]
    assert peaks["block.1"] == pytest.approx(tk.Full.default_lr * 0.8)
    assert peaks["embeddings"] == pytest.approx(tk.Full.default_lr * 0.8 ** 3)


def test_find_is_refused_while_invalid_and_train_waits_for_it(lab):
    c = lab.controls
    c.kind_w.value = "freeze"
    c.diagram.chosen = ()
    assert c.problem and c.find.disabled
    assert not lab.find_lr() and "Nothing trains" in lab.status
    lab.finding = True  # a sweep in progress: Train waits
    assert not lab.train() and "finder is sweeping" in lab.status
    lab.finding = False


def test_gradual_unfreezing_in_the_lab_says_its_stages(lab):
    c = lab.controls
    c.kind_w.value = "gradual"
    assert isinstance(c.strategy(), tk.GradualUnfreeze) and c.lr.value == tk.GradualUnfreeze.default_lr
    assert "4 stages, one group more in each" in c.counts.value
    assert "pooler + head &rarr; block 1 &rarr; block 0 &rarr; embeddings" in c.counts.value
    stage = {g: note.value.split("<b>stage ")[1].split("<")[0] for g, note in c.diagram.notes.items()}
    assert stage == {"embeddings": "4", "block.0": "3", "block.1": "2", "pooler": "1", "head": "1"}  # each cell
    assert "stage k: joins at the k-th stage" in c.diagram.title.value
    c.kind_w.value = "full"
    assert all("stage" not in note.value for note in c.diagram.notes.values())
    c.kind_w.value = "gradual"
    assert not lab.train() and "the run has 2 steps, fewer than its 4 stages" in lab.status  # 32 reviews, batch 16
    c.batch_size.value = 8
    assert lab.train(wait=True)
    run = tk.load_run(f"{lab.runs_dir}/{lab.last_run}")
    assert len(run.config["phases"]) == 4 and run.status == "completed"
    assert lab.progress.max == run.summary["steps"]  # the bar counted the stages' steps
    # the live loss curve marks where each group joined, at the steps the record says
    marks = [(round(sh.x0 - 0.5), a.text) for sh, a in zip(lab.loss_fig.layout.shapes, lab.loss_fig.layout.annotations)]
    assert marks == tk.plots.rates.joins(run) and [w for _, w in marks] == ["block.1 joins", "block.0 joins",
                                                                              "embeddings joins"]
    c.kind_w.value = "full"
    assert lab.train(wait=True) and not lab.loss_fig.layout.shapes  # the next run's curve: no marks of the last
