"""Post-training in the lab's words (issue 20): a derived record says what was done to which
record (``#5 prune 50 % of #1``); the Post-training tab names runs as the rest of the lab does;
a distillation shows its progress and can be stopped; the default selection keeps a training
run with what was made from it; the training-loss axis names each run's loss.

Records are written with RunWriter (milliseconds); the widget tests train on the tiny BERT."""
from __future__ import annotations

import pytest

import tunekit as tk
from tunekit import plots
from tunekit.runs import Run, RunWriter

FULL = {"name": "full"}
PRUNE50 = {"name": "prune", "method": "magnitude", "sparsity": 0.5, "scope": "global"}
INT8 = {"name": "quantize", "method": "int8-dynamic"}
DISTIL = {"name": "distil", "loss": {"response": 1.0}, "hard": 1.0, "temperature": 2.0}


def record(runs_dir, name, strategy, *, kind="train", parent=None, extra=None) -> Run:
    """A completed record as the engine and tunekit.post write it (a few steps, one evaluation)."""
    config = {"kind": kind, "parent": parent, "task": "classification", "strategy": strategy,
              "strategy_label": strategy["name"], "model": {"source": "tiny", "label_names": ["neg", "pos"]},
              "data": {"name": "rt", "label_names": ["neg", "pos"], "train_used": 200, "validation_used": 100},
              "train": {"epochs": 1, "seed": 0, "batch_size": 16, "train_size": 200}, **(extra or {})}
    w = RunWriter(runs_dir, name, config)
    for s in (1, 2, 3):
        w.log("step", {"step": s, "loss": 0.7 - 0.05 * s, "samples": 16 * s, "epoch": s / 3, "elapsed_s": s / 10})
    w.log("eval", {"step": 3, "val_accuracy": 0.7, "val_loss": 0.6})
    w.finish("completed", None, steps=3, wall_time_s=1.0, val_accuracy=0.7, val_loss=0.6)
    return Run(w.path)


def ref(run: Run) -> dict:
    return {"name": run.name, "path": str(run.path.resolve())}


def distilled(runs_dir, name, teacher: Run, blocks=(0, 2, 4), hard=1.0) -> Run:
    """A distil record as tk.distil writes it: its parent is the teacher (a block subset), its teacher too."""
    return record(runs_dir, name, DISTIL, kind="distil", parent=ref(teacher),
                  extra={"teacher": ref(teacher), "distillation": {"loss": {"response": 1.0}, "hard": hard,
                                                                   "temperature": 2.0,
                                                                   "matched_teacher_blocks": list(blocks)}})


# ----- names ------------------------------------------------------------------------------------------
def test_a_derived_record_says_what_was_done_to_which_record(tmp_path):
    d = tmp_path / "runs"
    full = record(d, "01-full", FULL)
    pruned = record(d, "02-full-prune50", PRUNE50, kind="prune", parent=ref(full))
    quantized = record(d, "03-int8", INT8, kind="quantize", parent=ref(pruned))
    student = distilled(d, "04-distil-response", full)
    names = plots.display_names([full, pruned, quantized, student])
    assert names == {"01-full": "#1 full · 200 ex · 1 ep", "02-full-prune50": "#2 prune 50 % of #1",
                     "03-int8": "#3 int8 dynamic of #2", "04-distil-response": "#4 distil of #1, 3 blocks"}
    gone = record(tmp_path / "other", "pruned", PRUNE50, kind="prune",
                  parent={"name": "gone-run", "path": str(tmp_path / "gone-run")})
    assert gone.display_name == "prune 50 % of gone-run"  # its source's record is gone: by its name
    pretrained = record(tmp_path / "other", "pruned-base", PRUNE50, kind="prune")
    assert pretrained.display_name == "prune 50 % of the pretrained model"


# ----- the training-loss axis ---------------------------------------------------------------------------
def test_the_loss_axis_names_each_runs_loss(tmp_path):
    d = tmp_path / "runs"
    full = record(d, "01-full", FULL)
    student = distilled(d, "02-distil", full)
    alone = distilled(d, "03-distil-soft", full, hard=0.0)
    assert plots.training_curves([full]).layout.yaxis.title.text == "cross-entropy loss"
    assert plots.training_curves([alone]).layout.yaxis.title.text == "distillation loss (response)"
    fig = plots.training_curves([full, student], smooth=0)
    assert fig.layout.yaxis.title.text == "loss: cross-entropy loss / distillation loss (response + cross-entropy)"
    hovers = {t.legendgroup: t.hovertemplate for t in fig.data}
    assert "distillation loss (response + cross-entropy) at step" in hovers["02-distil"]
    assert "cross-entropy loss at step" in hovers["01-full"]


# ----- the default selection ------------------------------------------------------------------------------
def test_the_default_selection_keeps_training_runs_with_their_derived_records(tmp_path, small):
    pytest.importorskip("ipywidgets")
    from tunekit.widgets.views import RunsPanel
    d = tmp_path / "runs"
    older = record(d, "01-full", FULL)
    newer = record(d, "02-full", FULL)
    derived = [record(d, "03-prune", PRUNE50, kind="prune", parent=ref(newer)),
               record(d, "04-prune-old", PRUNE50, kind="prune", parent=ref(older)),
               distilled(d, "05-distil", newer)]
    derived.append(record(d, "06-int8-of-distil", INT8, kind="quantize", parent=ref(derived[-1])))
    panel = RunsPanel(str(d), small)  # as after a kernel restart: nothing selected yet
    panel.wait()
    assert panel.select.value == ("02-full", "03-prune", "05-distil", "06-int8-of-distil")  # not four derived
    from tunekit.widgets.views import default_selection
    runs = tk.list_runs(d)
    assert default_selection(runs, 6) == [r.name for r in runs]  # both families fit
    assert default_selection(runs, 5) == ["02-full", "03-prune", "05-distil", "06-int8-of-distil"]
    assert default_selection(runs, 2) == ["02-full", "06-int8-of-distil"]  # its training run and the newest


# ----- the Post-training tab --------------------------------------------------------------------------------
def test_the_post_tab_names_runs_as_the_lab_does(lab):
    lab.controls.kind_w.value = "full"
    assert lab.train(wait=True)
    post = lab.runs.post
    trained = tk.load_run(f"{lab.runs_dir}/{lab.last_run}")
    name = plots.display_names([trained])[trained.name]
    assert dict(post.run_w.options) == {name: trained.name} and name.startswith("#1 full")
    post.op_w.value = "prune: smallest weights"
    post.sliders["sparsity"].value = 0.5
    seen = []
    post.status.observe(lambda c: seen.append(c["new"]), names="value")
    assert post.apply(wait=True)
    assert f"on {name} …" in seen[0], seen  # what it works on, by its one name
    assert "#2 prune 50 % of #1: accuracy" in post.status.value, post.status.value
    assert "#2 prune 50 % of #1" in [label for label, _ in post.run_w.options]
    assert trained.name not in post.status.value and "prune50" not in post.status.value
    # size and speed in words: why a magnitude prune is no smaller, and the paired latency ratio, not ms
    assert "still stored and multiplied as dense matrices" in post.status.value, post.status.value
    assert "x the time of the model before" in post.status.value and " ms" not in post.status.value


def test_distillation_shows_its_progress_and_stop_keeps_a_stopped_record(lab, monkeypatch):
    lab.controls.kind_w.value = "full"
    assert lab.train(wait=True)
    post = lab.runs.post
    post.op_w.value = "distil into fewer blocks"
    post.student_w.value = "0"
    bars = []
    on_step = post._on_step

    def step_then_stop(ev):  # the user presses Stop once the first step is shown
        on_step(ev)
        bars.append((post.progress.value, post.progress.max, post.progress.layout.visibility,
                     post.progress_w.value, post.stop_button.disabled))
        if len(bars) == 1:
            post.stop_button.click()

    monkeypatch.setattr(post, "_on_step", step_then_stop)
    assert post.apply(wait=True)
    assert bars and bars[0][0] == 1 and bars[0][1] > 1 and bars[0][2] == "visible", bars
    assert bars[0][3].startswith(f"step 1/{bars[0][1]}") and bars[0][4] is False  # Stop is live while it trains
    runs = tk.list_runs(lab.runs_dir)
    [student] = [r for r in runs if r.kind == "distil"]
    assert student.status == "stopped", student.status
    assert student.summary["steps"] == 1 and student.has_weights  # the partial record is kept
    assert "#2 distil of #1, 1 block stopped at step 1" in post.status.value, post.status.value
    assert post.stop_button.disabled and post.progress.layout.visibility == "hidden" and not post.running
    post.op_w.value = "prune: smallest weights"
    post.run_w.value = lab.last_run
    assert post.apply(wait=True) and "prune 50 % of #1" in post.status.value
    assert post.stop_button.disabled  # nothing to stop in a prune
