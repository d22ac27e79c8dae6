"""The lab's controls tell the truth (issue 12): the diagram shows what the strategy trains,
the learning rate and LoRA alpha shown are the ones the run uses, errors are said in words
beside their control with Train disabled, and progress says steps, elapsed and remaining time.
Without a browser: set traits, click, read widget values and figure data."""
import math

import pytest

import tunekit as tk

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")


def _adapted_by_plan(model, strategy) -> dict:
    """{block group: sorted module labels} the strategy's own targets select."""
    out: dict = {}
    for name in strategy.targets(model):
        group, _, label = model.backbone.locate(name + ".weight")
        out.setdefault(group, set()).add(label)
    return {g: sorted(v) for g, v in out.items()}


@pytest.mark.parametrize("kind", ["lora", "ia3", "probe", "full"])
def test_the_diagram_shows_what_the_strategy_trains(lab, kind):
    c, d, model = lab.controls, lab.diagram, lab.model
    d.set(["embeddings", "head"])  # the user's own freeze choice, which the strategy must not keep showing
    c.kind_w.value = kind
    strategy = c.strategy()
    plan = strategy.plan(model)
    assert d.locked and all(t.disabled for t in d.toggles.values()), "the strategy decides: toggles locked"
    assert sum(d.params.values()) == strategy.count(model)["trainable"]
    if plan.adapter is not None:
        full = sorted({model.group_of(m + ".weight") for m in plan.adapter.modules_to_save or []})
        assert sorted(d.trainable) == full == ["head"]
        assert {g: sorted(v) for g, v in d.adapted.items()} == _adapted_by_plan(model, strategy)
        assert set(d.adapted) == {f"block.{i}" for i in range(model.num_blocks)}
        for g, labels in d.adapted.items():
            assert d.toggles[g].button_style == "info" and not d.toggles[g].value
            assert ", ".join(labels) in d.notes[g].value
    else:
        assert d.trainable == list(plan.train) and d.adapted == {}
        assert [g for g, t in d.toggles.items() if t.value] == list(plan.train)
    assert d.toggles["head"].value and d.toggles["head"].button_style == "success"
    assert d.toggles["embeddings"].value == (kind == "full"), "the user's toggles are not what is shown"
    c.kind_w.value = "freeze"  # back to the user's toggles, unlocked
    assert not d.locked and d.chosen == ["embeddings", "head"]
    assert [g for g, t in d.toggles.items() if t.value] == ["embeddings", "head"] and d.adapted == {}
    assert sum(d.params.values()) == c.strategy().count(model)["trainable"]


def test_the_lr_shown_is_the_lr_the_run_uses(lab):
    c = lab.controls
    for kind in ("freeze", "lora", "ia3", "full", "probe"):
        c.kind_w.value = kind
        assert c.lr.value == pytest.approx(type(c.strategy()).default_lr) and c.default_lr.value
    c.kind_w.value = "freeze"
    lab.diagram.presets["probe"].click()  # head only under Freeze: a probe runs, with the probe's lr
    assert isinstance(c.strategy(), tk.Probe) and c.lr.value == pytest.approx(tk.Probe.default_lr)
    c.kind_w.value = "lora"
    shown = c.lr.value
    assert shown == pytest.approx(tk.LoRA.default_lr)
    assert lab.train(wait=True)
    run = tk.load_run(f"{lab.runs_dir}/{lab.last_run}")
    assert run.history("phase_start")["lr"].tolist() == [pytest.approx(shown)]
    c.lr.value = 5e-3  # the user's value: kept across a strategy switch, and used
    assert not c.default_lr.value
    c.kind_w.value = "full"
    assert c.lr.value == 5e-3
    assert lab.train(wait=True)
    run = tk.load_run(f"{lab.runs_dir}/{lab.last_run}")
    assert run.config["train"]["lr"] == pytest.approx(c.lr.value)
    assert run.history("phase_start")["lr"].tolist() == [pytest.approx(c.lr.value)]
    c.default_lr.value = True  # back to the default: shown, and what the run will use
    assert c.lr.value == pytest.approx(tk.Full.default_lr) and "lr" not in c.overrides()


def _from_browser(widget, **state) -> None:
    """Apply a state update as the front end sends it (ipywidgets' comm handler calls set_state)."""
    widget.set_state(state)


def _browser_echo(slider) -> dict:
    """What the front end sends back once it has drawn ``slider``: a selection slider its position;
    a log slider the value snapped to its step (as ipywidgets' FloatLogSlider view does)."""
    if "index" in slider.keys:
        return {"index": slider.index}
    exponent = slider.min + round((math.log(slider.value, slider.base) - slider.min) / slider.step) * slider.step
    return {"value": slider.base ** exponent}


def test_the_browser_echo_of_the_lr_is_no_edit_and_every_default_is_shown_exactly(lab):
    """Issue 20: the log slider (step 0.25) snapped Freeze's 2e-4 to 10^-3.75 in the browser, whose echo
    unticked the default and every run trained at 1.8e-4."""
    from tunekit.run_names import lr_words
    from tunekit.widgets.controls import lab_strategies
    c = lab.controls
    _from_browser(c.lr, **_browser_echo(c.lr))
    assert c.default_lr.value and c.lr.value == tk.Freeze.default_lr and "lr" not in c.overrides()
    assert lab.train(wait=True)
    run = tk.load_run(f"{lab.runs_dir}/{lab.last_run}")
    assert run.history("phase_start")["lr"].tolist() == [tk.Freeze.default_lr]
    assert "0.00018" not in tk.plots.display_names([run])[run.name]
    for _label, kind in lab_strategies():  # every strategy's default, exactly, and its echo changes nothing
        c.kind_w.value = kind
        default = tk.strategies.REGISTRY[kind].default_lr
        assert c.lr.value == default and float(c.lr.label) == default and c.lr.label == lr_words(default)
        _from_browser(c.lr, **_browser_echo(c.lr))
        assert c.default_lr.value and c.lr.value == default and "lr" not in c.overrides()
    c.kind_w.value = "lora"
    _from_browser(c.lr, index=c.lr.index + 1)  # a person moves it one notch: theirs, used exactly as shown
    assert not c.default_lr.value and c.lr.value == 2e-3 and c.lr.label == "0.002"
    assert c.overrides()["lr"] == c.lr.value == float(c.lr.label)
    c.kind_w.value = "full"  # kept across a switch, and a later echo of it changes nothing
    _from_browser(c.lr, **_browser_echo(c.lr))
    assert c.lr.value == 2e-3 and not c.default_lr.value and c.overrides()["lr"] == 2e-3


def test_take_settings_keeps_a_followed_default_and_copies_a_chosen_lr(lab):
    from tunekit.widgets.controls import ModelDiagram, StrategyControls
    c = lab.controls
    c.kind_w.value = "lora"

    def fresh():
        other = StrategyControls(lab.model, ModelDiagram(lab.model))
        other.take_settings(c)
        return other
    other = fresh()
    assert other.kind_w.value == "lora" and other.default_lr.value and other.lr.value == tk.LoRA.default_lr
    _from_browser(c.lr, index=c.lr.index + 1)
    _from_browser(c.lr, index=c.lr.index - 1)  # moved away and back: the user's 1e-3, no longer the default
    assert not c.default_lr.value and c.lr.value == tk.LoRA.default_lr
    other = fresh()
    assert not other.default_lr.value and other.overrides()["lr"] == tk.LoRA.default_lr
    other.kind_w.value = "full"
    assert other.lr.value == tk.LoRA.default_lr, "the user's rate does not follow the strategy"


def _choices_in_view(w) -> tuple[list, list]:
    """(the choices a person sees without scrolling, those of them shown as chosen)."""
    if hasattr(w, "toggles"):  # a toggle per choice, all shown
        seen = [name for name, t in w.toggles.items() if t.layout.display != "none"]
        return seen, [name for name in seen if w.toggles[name].value]
    seen = list(w.options[:w.rows])  # a SelectMultiple's first rows
    return seen, [o for o in seen if o in w.value]


def test_the_lora_targets_show_what_is_chosen(lab):
    c = lab.controls
    c.kind_w.value = "lora"
    assert c.targets.value == ("query", "value") == tuple(c.strategy().target_modules)
    seen, chosen = _choices_in_view(c.targets)
    assert chosen == list(c.targets.value), "the chosen targets are in view, marked chosen"
    assert seen == list(c.targets.options) == ["dense", "key", "query", "value"], "every choice in view"
    assert [c.targets.toggles[n].button_style for n in seen] == ["", "", "success", "success"]
    c.targets.toggles["key"].value = True  # a press: the value, the strategy and the diagram follow
    assert c.targets.value == ("key", "query", "value") and tuple(c.strategy().target_modules) == c.targets.value
    assert "key" in ", ".join(lab.diagram.adapted["block.0"])
    c.targets.value = ("dense",)  # set from code: the toggles follow
    assert _choices_in_view(c.targets)[1] == ["dense"] and c.targets.toggles["dense"].icon == "check"
    c.targets.toggles["dense"].value = False
    assert c.targets.value == () and c.problem == "Pick at least one layer for LoRA to adapt."
    with pytest.raises(Exception, match="not among the options"):
        c.targets.value = ("nope",)


def test_the_progress_label_starts_at_zero_and_keeps_no_time_left_after_a_run(lab, monkeypatch):
    """Issue 20: the label kept "step 4/4" when the next Train started, and "< 0:06 left" after a Stop."""
    from tunekit.engine import Trainer
    c = lab.controls
    c.kind_w.value = "full"
    c.train_size.value = 64  # 4 steps of 16
    assert lab.train(wait=True)
    assert lab.progress_w.value.startswith("completed: step 4 of 4 · ") and "left" not in lab.progress_w.value
    assert lab.progress.value == lab.progress.max == 4

    class StoppedAtTwo(Trainer):  # a person presses Stop during step 2
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.add_callback("step", lambda ev: lab.stop() if ev.payload["step"] == 2 else None)
    monkeypatch.setattr(tk, "Trainer", StoppedAtTwo)
    c.train_size.value = 96  # 6 steps: the new run's total, from the moment Train is pressed
    labels, bar = [], []
    lab.progress_w.observe(lambda ch: labels.append(ch["new"]), "value")
    lab.progress.observe(lambda ch: bar.append(ch["new"]), "value")
    assert lab.train(wait=True)
    assert labels[0] == "step 0/6 · starting" and bar[0] == 0, "the last run's count is gone at once"
    assert lab.progress_w.value.startswith("stopped at step 2 of 6 · ") and "elapsed" in lab.progress_w.value
    assert "left" not in lab.progress_w.value and lab.progress.value == 2
    assert "stopped at step 2 of 6" in lab.status

    def fails(self):
        raise RuntimeError("the disk is gone")
    monkeypatch.setattr(StoppedAtTwo, "run", fails)
    assert lab.train(wait=True)
    assert lab.progress_w.value == "failed at step 0 of 6" and "the disk is gone" in lab.status


def test_alpha_follows_twice_the_rank_until_edited_and_the_label_shows_it(lab):
    c = lab.controls
    c.kind_w.value = "lora"
    for r in (4, 16, 1):
        c.rank.value = r
        assert c.alpha.value == 2 * r and c.strategy().alpha == 2 * r and c.strategy().label == f"lora-r{r}"
    c.alpha.value = 32
    for r in (4, 8):
        c.rank.value = r
        assert c.alpha.value == 32 and c.strategy().alpha == 32 and c.strategy().label == f"lora-r{r}-a32"
    assert "set by you" in c.alpha_note.value
    c.alpha.value = 2 * c.rank.value  # the default again: it follows the rank again
    c.rank.value = 4
    assert c.alpha.value == 8 and c.strategy().label == "lora-r4" and "set by you" not in c.alpha_note.value
    assert tk.LoRA(rank=8, alpha=16).label == "lora-r8" and tk.LoRA(rank=8, alpha=8.5).label == "lora-r8-a8.5"


def test_errors_are_in_words_beside_their_control_and_disable_train(tiny_dir, small, tmp_path):
    from tunekit.widgets.controls import ModelDiagram, StrategyControls
    model = tk.load_model(tiny_dir, label_names=small.label_names, pooling="mean")  # the pooler is unused
    d = ModelDiagram(model)
    c = StrategyControls(model, d)
    for t in d.toggles.values():
        t.value = False
    said = d.error.value
    assert c.problem and c.problem in said.replace("&gt;", ">")
    assert "block 0, block 1" in said and "head" in said
    assert "pooler" not in said and "freeze-" not in said and "block.0" not in said
    assert c.counts.value == "", "no count while nothing trains"
    d.toggles["head"].value = True
    assert c.problem == "" and d.error.value == ""
    c.kind_w.value = "lora"
    c.alpha.value = 0
    assert c.problem.startswith("Alpha must be") and c.errors["alpha"].value and not c.errors["kind"].value
    assert "LoRA.alpha" not in c.problem and "(got" not in c.problem
    c.alpha.value = 8
    assert c.problem == "" and not c.errors["alpha"].value


def test_train_is_disabled_while_invalid_and_an_old_error_goes(lab):
    d, c = lab.diagram, lab.controls
    assert not lab.train_button.disabled
    assert lab.train(wait=True)
    assert lab.progress.layout.visibility == "visible" and lab.progress.value == 2
    for t in d.toggles.values():
        t.value = False
    assert lab.train_button.disabled and lab.train_button.tooltip == c.problem
    assert not lab.train() and "Not started: Nothing trains" in lab.status
    assert lab.progress.value == 0 and lab.progress_w.value == "", "the last run's progress goes with it"
    assert lab.progress.layout.visibility == "hidden" and lab.status_w.layout.height == "2.8em"
    d.toggles["head"].value = True
    assert not lab.train_button.disabled and lab.status == "", "fixed: the refusal is gone"
    lab._say("Run failed: something", "error")
    c.kind_w.value = "full"
    assert lab.status == "", "a strategy switch clears an old error"


def test_progress_label_and_a_stopped_run_says_of_how_many(lab, monkeypatch):
    from tunekit.engine import StopTraining, Trainer
    from tunekit.widgets.lab import progress_label
    assert progress_label(10, 40, 12.0) == "step 10/40 · 0:12 elapsed < 0:36 left"
    assert progress_label(40, 40, 75.0) == "step 40/40 · 1:15 elapsed < 0:00 left"
    labels = []
    lab.progress_w.observe(lambda ch: labels.append(ch["new"]), "value")
    lab.controls.kind_w.value = "full"
    lab.controls.train_size.value = 64  # 4 steps of 16
    assert lab.train(wait=True)
    steps = [x for x in labels if x.startswith("step ") and not x.startswith("step 0/")]
    assert [x.split(" · ")[0] for x in steps] == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
    assert steps[-1].endswith("< 0:00 left") and "elapsed" in steps[0]
    assert "completed" in lab.status and "(4 steps, " in lab.status

    class StopsAtTwo(Trainer):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)

            def stop(ev):
                if ev.payload["step"] == 2:
                    raise StopTraining()
            self.add_callback("step", stop)
    monkeypatch.setattr(tk, "Trainer", StopsAtTwo)
    assert lab.train(wait=True)
    assert "stopped at step 2 of 4" in lab.status and " s)." in lab.status, lab.status


def test_the_live_loss_is_smoothed_with_the_raw_loss_faint_behind(lab):
    from tunekit.plots.runs import ema
    lab.controls.kind_w.value = "full"
    lab.controls.train_size.value = 96  # 6 steps
    assert lab.train(wait=True)
    raw, smooth = lab.loss_fig.data[-2], lab.loss_fig.data[-1]
    run = tk.load_run(f"{lab.runs_dir}/{lab.last_run}")
    assert list(raw.y) == pytest.approx(run.history("step")["loss"].tolist()) and list(raw.x) == list(smooth.x)
    assert list(smooth.y) == pytest.approx(ema(list(raw.y), 0.6)) and list(smooth.y) != list(raw.y)
    assert raw.opacity == 0.25 and raw.showlegend is False and smooth.showlegend is not False
    assert raw.line.color == smooth.line.color == lab.acc_fig.data[-1].line.color
    assert "smoothed 0.6" in lab.loss_fig.layout.title.text


def test_live_curves_carry_the_run_name_and_colour_of_every_view(lab):
    from tunekit import plots
    lab.controls.kind_w.value = "probe"
    lab.train(wait=True)
    lab.train(wait=True)  # a look-alike: the names must still tell them apart
    runs = [r for r, _ in lab.live.runs]
    names = plots.display_names(runs)
    assert len(set(names.values())) == 2
    for i, run in enumerate(runs):
        assert lab.acc_fig.data[i].name == names[run.name]
        assert lab.acc_fig.data[i].line.color == plots.run_color(run)
        assert {t.line.color for t in lab.loss_fig.data[2 * i:2 * i + 2]} == {plots.run_color(run)}
    assert "chance" in lab.acc_fig.layout.yaxis.title.text


def test_a_run_has_its_colour_from_the_moment_train_is_pressed(lab, monkeypatch):
    """The live curve starts in the colour of the number the record will get, under that number; the
    name in words follows at train_start, and the legend under both curves says the same."""
    from tunekit import plots
    seen = {}
    real_named = lab.live.named

    def named(run):  # the provisional curve, as it was before the record existed
        seen["name"], seen["color"] = lab.acc_fig.data[-1].name, lab.acc_fig.data[-1].line.color
        real_named(run)
    monkeypatch.setattr(lab.live, "named", named)
    lab.controls.kind_w.value = "probe"
    assert lab.train(wait=True)
    run = tk.load_run(f"{lab.runs_dir}/{lab.last_run}")
    assert seen["color"] == plots.run_color(run) == lab.acc_fig.data[-1].line.color
    assert seen["name"].startswith(f"#{run.config['number']} ")
    name = plots.display_names([run])[run.name]
    assert lab.acc_fig.data[-1].name == name and name.startswith(f"#{run.config['number']} probe")
    assert name in lab.status and run.name not in lab.status  # the status line names it as every view does
    legend = lab.live.legend.value
    assert name in legend and f"background:{plots.run_color(run)}" in legend


def test_empty_live_curves_say_what_will_appear_instead_of_empty_axes(lab):
    for fig in (lab.loss_fig, lab.acc_fig):
        assert not fig.data and "appears here" in fig.layout.annotations[0].text
        assert fig.layout.xaxis.visible is False and fig.layout.yaxis.visible is False
    lab.controls.train_size.value = 32
    assert lab.train(wait=True)
    for fig in (lab.loss_fig, lab.acc_fig):
        assert fig.layout.xaxis.visible and fig.layout.yaxis.visible
        assert not any("appears here" in (a.text or "") for a in fig.layout.annotations)


def test_figures_follow_their_container(lab, tiny_dir, small, tmp_path):
    """plotly's FigureWidget draws at its element's width once, when made (700 px off the page): the
    lab's and the views' figures are responsive, and a FitFigures in the lab and in the runs panel
    tells them when their cell changes size (the real-browser test measures the result)."""
    from tunekit.widgets.sizer import FitFigures
    from tunekit.widgets.views import _as_widget

    def tree(w):
        yield w
        for c in getattr(w, "children", ()):
            yield from tree(c)
    assert sum(isinstance(w, FitFigures) for w in tree(lab)) == 2  # the lab's, the runs panel's (shown alone too)
    assert sum(isinstance(w, FitFigures) for w in tree(lab.runs)) == 1
    assert lab.loss_fig._config["responsive"] and lab.acc_fig._config["responsive"]
    assert _as_widget(tk.plots.training_curves([]))._config["responsive"]
    assert "ResizeObserver" in FitFigures._esm and "resize" in FitFigures._esm


def test_the_projector_switch_scales_the_lab_text_and_every_figure_together_and_back(lab):
    """Issue 20: 13 px text in a room. One switch: the lab's text (a CSS class that sets
    JupyterLab's font sizes inside the lab) and the text of the live curves and of every view's
    figures, shown now or drawn later, 1.25 times larger; off again, everything as it was (the
    one-screen layout at that size: tests/test_browser.py)."""
    from tunekit.widgets.lab import PROJECTOR_SCALE
    assert lab.train(wait=True)
    runs = lab.runs
    runs.show("Compare", wait=True)
    figs = lambda: [w for w in runs.panes["Compare"].children if type(w).__name__ == "FigureWidget"]  # noqa: E731
    before = [(f.layout.font.size, f.layout.title.font.size) for f in figs()]
    curve = (lab.loss_fig.layout.font.size, lab.loss_fig.layout.title.font.size, lab.acc_fig.layout.margin.t)
    assert before and curve[0] == 14 and "tunekit-projector" not in lab._dom_classes
    assert lab.projector_w.description == "projector" and not lab.projector_w.value

    lab.projector_w.value = True  # the button, as a person presses it
    assert lab.projector and "tunekit-projector" in lab._dom_classes
    assert lab.loss_fig.layout.font.size == pytest.approx(14 * PROJECTOR_SCALE)
    assert lab.loss_fig.layout.title.font.size == pytest.approx(curve[1] * PROJECTOR_SCALE)
    assert lab.acc_fig.layout.margin.t > curve[2]  # the title's room grows with it
    from tunekit.widgets.live import CURVE_HEIGHT  # not the height: plotly.js would fix the width with it
    assert lab.loss_fig.layout.height == lab.acc_fig.layout.height == CURVE_HEIGHT
    assert lab.loss_fig.layout.width is None and lab.loss_fig.layout.autosize
    assert [(f.layout.font.size, f.layout.title.font.size) for f in figs()] == \
        [pytest.approx((a * PROJECTOR_SCALE, b * PROJECTOR_SCALE)) for a, b in before]
    assert all(a.font.size >= 14 * PROJECTOR_SCALE for f in figs() for a in f.layout.annotations)
    runs.show("Compare", wait=True)  # drawn again while it is on: as large
    assert [f.layout.font.size for f in figs()] == pytest.approx([a * PROJECTOR_SCALE for a, _ in before])
    assert lab.train(wait=True)  # a run's chance line, added while it is on, as large as the rest
    chance = [a for a in lab.acc_fig.layout.annotations if "chance" in (a.text or "")]
    assert chance and chance[0].font.size == pytest.approx(14 * PROJECTOR_SCALE)

    lab.projector = False  # from code too; and back to the sizes of before
    assert not lab.projector_w.value and "tunekit-projector" not in lab._dom_classes
    assert (lab.loss_fig.layout.font.size, lab.loss_fig.layout.title.font.size) == pytest.approx(curve[:2])
    assert lab.loss_fig.layout.height == CURVE_HEIGHT
    runs.show("Compare", wait=True)
    assert [(f.layout.font.size, f.layout.title.font.size) for f in figs()] == [pytest.approx(b) for b in before]


def test_the_projector_switch_can_start_on(tiny_dir, small, tmp_path):
    from tunekit.widgets import Lab
    lab = Lab(model=tiny_dir, data=small, runs_dir=str(tmp_path / "runs"), projector=True)
    assert lab.projector_w.value and "tunekit-projector" in lab._dom_classes
    assert lab.loss_fig.layout.font.size > 14


def test_lora_and_dora_start_and_rslora_are_set_in_the_lab(tiny, tmp_path):
    """PiSSA, OLoRA, a Gaussian start and rsLoRA are reachable from the lab: one line under the rank,
    shown for LoRA and DoRA only; the strategy read out carries them, and a start peft cannot use on
    the model (OLoRA on GPT-2's Conv1D) is said beside the rank and disables Train."""
    from tunekit.widgets.controls import ModelDiagram, StrategyControls
    c = StrategyControls(tiny, ModelDiagram(tiny))
    c.kind_w.value = "lora"
    assert c.start_row.layout.display == "" and c.strategy() == tk.LoRA(rank=8, target_modules=c.strategy().target_modules)
    c.start.value, c.rslora.value = "pissa", True
    s = c.strategy()
    assert (type(s), s.init, s.rslora) == (tk.LoRA, "pissa", True) and c.problem == ""
    c.kind_w.value = "dora"
    s = c.strategy()
    assert (type(s), s.init, s.rslora) == (tk.DoRA, "pissa", True)
    c.kind_w.value = "vera"
    assert c.start_row.layout.display == "none" and not hasattr(c.strategy(), "init")
    gpt2 = tk.load_model(str(tk.make_tiny("gpt2", tmp_path / "gpt2")), label_names=["neg", "pos"])
    g = StrategyControls(gpt2, ModelDiagram(gpt2))
    g.kind_w.value = "lora"
    g.start.value = "olora"
    assert g.problem.startswith("The start is not available for 'gpt2' models: peft's OLoRA start")
    assert g.errors["rank"].value and not g.errors["kind"].value and g.counts.value == ""
    g.start.value = "default"
    assert g.problem == ""
