"""Learning rates you can see (issue 24): the schedules, a rate per layer group (a layer-wise
decay or one named per group), and the rates drawn before training equal to those the
optimizer took, step by step, for classification and a causal LM."""
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import tunekit as tk
from tunekit.config import SCHEDULES, ConfigError
from tunekit.schedules import rates_over_steps


def rates(schedule, steps=40, peak=1.0, **kw):
    return rates_over_steps({"g": peak}, schedule, steps, **kw)["g"]


# ----- the schedules, against their definitions ---------------------------------------------------
def test_slanted_triangular_is_ulmfits():
    """ULMFiT eq. 3: up from peak/32 to the peak over cut_frac of the steps, then down to peak/32."""
    r = rates("slanted_triangular", steps=41, warmup=0.1)
    assert r[0] == pytest.approx(1 / 32)
    top = max(range(41), key=r.__getitem__)
    assert r[top] == pytest.approx(1.0) and 3 <= top <= 4  # 10 % of 41 steps
    assert r[-1] == pytest.approx(1 / 32)
    up, down = r[:top + 1], r[top:]
    assert all(b > a for a, b in zip(up, up[1:])) and all(b < a for a, b in zip(down, down[1:]))
    slopes = {round(b - a, 9) for a, b in zip(down, down[1:])}
    assert len(slopes) == 1  # a straight line down


def test_one_cycle_rises_and_falls_by_cosines():
    r = rates("one_cycle", steps=100, warmup=0.3, peak=1e-3)
    assert r[0] == pytest.approx(1e-3 / 25)
    assert max(r) == pytest.approx(1e-3) and max(range(100), key=r.__getitem__) == 30
    assert r[-1] == pytest.approx(1e-3 / 25 / 1e4)
    assert r[15] == pytest.approx((1e-3 + 1e-3 / 25) / 2)  # halfway up a cosine
    mid = 30 + (99 - 30) // 2  # halfway down a cosine: half way between the peak and the end
    assert r[mid] == pytest.approx((1e-3 + 1e-3 / 25 / 1e4) / 2, rel=0.05)


@pytest.mark.parametrize("schedule", ["slanted_triangular", "one_cycle"])
def test_a_rise_and_fall_peaks_on_a_whole_step_at_any_length(schedule):
    """torch's own pct_start puts the peak between steps for most lengths and divides by zero below
    four steps; tunekit's rise lands it on step floor(warmup * steps), and a run too short to rise
    and fall takes the peak throughout."""
    from tunekit.schedules import peak_step
    assert rates(schedule, steps=1) == [1.0] and rates(schedule, steps=2) == [1.0, 1.0]
    for steps in range(3, 60):
        for warmup in (0.0, 0.1, 0.25, 0.5, 0.99):
            r = rates(schedule, steps=steps, warmup=warmup)
            top = peak_step(steps, warmup)
            assert 1 <= top <= steps - 2 and max(r) == pytest.approx(1.0) and r[top] == pytest.approx(1.0)
            assert all(math.isfinite(v) and v > 0 for v in r[:-1])


def test_cosine_restarts_come_back_to_the_peak_each_cycle():
    r = rates("cosine_restarts", steps=100, warmup=0.1, cycles=3)
    assert r[0] == 0 and r[10] == pytest.approx(1.0)
    restarts = [i for i in range(11, 100) if r[i] > r[i - 1] + 0.5]
    assert len(restarts) == 2  # three cycles: two jumps back up
    assert all(r[i] == pytest.approx(1.0) for i in restarts)


def test_warmup_stable_decay():
    r = rates("wsd", steps=100, warmup=0.1, cooldown=0.2)
    assert r[0] == 0 and r[5] == pytest.approx(0.5)
    assert all(v == pytest.approx(1.0) for v in r[10:80])  # stable at the peak
    assert r[90] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)), abs=0.01)  # halfway down a cosine
    assert r[-1] < 0.01


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_schedule_keeps_each_groups_peak(schedule):
    both = rates_over_steps({"top": 1e-3, "bottom": 1e-4}, schedule, 30)
    assert len(both["top"]) == 30
    assert [b / t for t, b in zip(both["top"], both["bottom"]) if t] == pytest.approx([0.1] * sum(
        1 for t in both["top"] if t))


# ----- a rate per layer group -----------------------------------------------------------------------
def first_step_rates(run) -> dict:
    table = run.learning_rates()
    first = table[table["step"] == table["step"].min()]
    return dict(zip(first["group"], first["lr"]))


def test_a_layerwise_decay_from_the_top_down(tiny_dir, small, fast):
    run = tk.train(tk.load_model(tiny_dir, label_names=small.label_names), small, tk.Full(), lr=1e-3,
                   lr_decay=0.5, schedule="constant", warmup=0.0, **fast)
    want = {"embeddings": 1e-3 * 0.5 ** 3, "block.0": 1e-3 * 0.5 ** 2, "block.1": 1e-3 * 0.5,
            "pooler": 1e-3, "head": 1e-3}
    assert run.summary["rates"] == [pytest.approx(want)]
    assert first_step_rates(run) == pytest.approx(want)  # what the optimizer took
    assert tk.load_run(run.path).config["train"]["lr_decay"] == 0.5


def test_a_rate_per_named_group_and_the_default_for_the_rest(tiny_dir, small, fast):
    run = tk.train(tk.load_model(tiny_dir, label_names=small.label_names), small, tk.Freeze.top(1),
                   lr={"head": 1e-2, "block.1": 3e-4}, schedule="constant", warmup=0.0, **fast)
    got = run.summary["rates"][0]
    assert got["head"] == 1e-2 and got["block.1"] == 3e-4
    assert set(got) == {"block.1", "pooler", "head"} and got["pooler"] == tk.Freeze.default_lr
    assert first_step_rates(run) == pytest.approx(got)


def test_the_optimizer_holds_the_rates_of_the_config(tiny_dir, small, fast, monkeypatch):
    """Read from the optimizer itself, not from the record."""
    import tunekit.engine as engine
    made = []
    monkeypatch.setattr(engine, "adamw", lambda groups, lr, device: made.append(torch.optim.AdamW(groups, lr=lr))
                        or made[-1])
    run = tk.train(tk.load_model(tiny_dir, label_names=small.label_names), small, tk.LoRA(rank=2), lr=2e-3,
                   lr_decay=0.8, **fast)
    [opt] = made
    peaks = {}
    for g in opt.param_groups:
        peaks.setdefault(g["group"], set()).add(g["initial_lr"])
    want = {"block.0": 2e-3 * 0.8 ** 2, "block.1": 2e-3 * 0.8, "head": 2e-3}
    assert all(len(v) == 1 for v in peaks.values())  # a group's weights and its biases alike
    assert {k: v.pop() for k, v in peaks.items()} == pytest.approx(want)
    assert run.summary["rates"][0] == pytest.approx(want)


def test_one_group_trains_at_the_rate_asked_for(tiny_dir, small, fast):
    run = tk.train(tk.load_model(tiny_dir, label_names=small.label_names), small, tk.Probe(), lr=5e-3,
                   lr_decay=0.5, **fast)
    assert run.summary["rates"] == [{"head": 5e-3}]
    assert set(run.learning_rates()["group"]) == {"head"}


# ----- drawn before training = taken while training --------------------------------------------------
@pytest.mark.parametrize("schedule", ["slanted_triangular", "one_cycle", "cosine_restarts", "wsd", "linear"])
def test_the_drawn_schedule_is_the_logged_one_step_by_step(tiny_dir, small, fast, schedule):
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    settings = dict(lr=1e-3, lr_decay=0.7, schedule=schedule, warmup=0.2, cycles=2, log_every=1)
    drawn = tk.learning_rates(model, tk.LoRA(rank=2), small, **settings, **fast)
    assert sum(p.requires_grad for p in model.hf.parameters()) == sum(1 for _ in model.hf.parameters())  # untouched
    run = tk.train(model, small, tk.LoRA(rank=2), **settings, **fast)
    logged = run.learning_rates()
    assert len(drawn) == len(logged) == 4 * 3  # 64 examples in batches of 16, three groups
    merged = drawn.merge(logged, on=["step", "phase", "group"], suffixes=("_drawn", "_logged"))
    assert len(merged) == len(drawn)
    assert merged["lr_drawn"].tolist() == pytest.approx(merged["lr_logged"].tolist(), rel=1e-12)


def test_two_phases_are_drawn_and_logged_alike(tiny_dir, small, fast):
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    drawn = tk.learning_rates(model, tk.LPFT(), small, lr_decay=0.5, log_every=1, **fast)
    run = tk.train(model, small, tk.LPFT(), lr_decay=0.5, log_every=1, **fast)
    logged = run.learning_rates()
    assert sorted(set(drawn["phase"])) == [0, 1] and set(drawn[drawn["phase"] == 0]["group"]) == {"head"}
    merged = drawn.merge(logged, on=["step", "phase", "group"])
    assert len(merged) == len(drawn) == len(logged)
    assert merged["lr_x"].tolist() == pytest.approx(merged["lr_y"].tolist(), rel=1e-12)


@pytest.fixture(scope="module")
def articles():
    bbc = tk.data.bbc_news()
    return tk.data.from_texts(bbc.train["text"].tolist()[:80], name="bbc-texts", validation_size=16, test_size=8)


@pytest.mark.parametrize("strategy", [tk.LoRA(rank=2), tk.PromptTuning(tokens=4)], ids=["lora", "prompt"])
def test_a_causal_lm_too(tiny_llama, articles, tmp_path, strategy):
    model = tk.load_model(tiny_llama, task="causal_lm")
    settings = dict(lr=2e-3, lr_decay=0.5, schedule="one_cycle", train_size=32, batch_size=8, max_length=32,
                    log_every=1, runs_dir=str(tmp_path), progress=False)
    drawn = tk.learning_rates(model, strategy, articles, **settings)
    run = tk.train(model, articles, strategy, **settings)
    merged = drawn.merge(run.learning_rates(), on=["step", "phase", "group"])
    assert len(merged) == len(drawn) > 0
    assert merged["lr_x"].tolist() == pytest.approx(merged["lr_y"].tolist(), rel=1e-12)
    peaks = run.summary["rates"][0]
    if isinstance(strategy, tk.PromptTuning):
        assert peaks == {"prompt": 2e-3}  # one group: the rate asked for
    else:
        assert peaks["block.1"] == 2e-3 and peaks["block.0"] == 1e-3  # no head trains: the top block leads


# ----- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, words", [
    (dict(lr_decay=0), "lr_decay must be a number in (0, 1]"),
    (dict(lr_decay=1.5), "lr_decay must be a number in (0, 1]"),
    (dict(lr_decay=float("nan")), "lr_decay"),
    (dict(lr={"head": 1e-3}, lr_decay=0.8), "lr_decay must be None when lr gives a rate per group"),
    (dict(lr={"head": -1.0}), "lr['head'] must be a positive number"),
    (dict(lr={}), "naming at least one group"),
    (dict(lr="fast"), "lr must be a positive number, or a dict"),
    (dict(schedule="triangle"), "schedule must be one of"),
    (dict(schedule="wsd", warmup=0.5, cooldown=0.6), "cooldown must be at most 1 - warmup = 0.5"),
    (dict(cycles=0), "cycles must be an integer in 1 .. 1000"),
    (dict(cooldown=0), "cooldown must be in (0, 1]"),
])
def test_bad_settings_are_named(settings, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        tk.TrainConfig(**settings)


def test_a_group_the_model_does_not_have_is_named_with_the_groups_it_has(tiny_dir, small, fast):
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    for call in (lambda: tk.train(model, small, tk.Full(), lr={"block.7": 1e-3}, **fast),
                 lambda: tk.learning_rates(model, tk.Full(), small, lr={"block.7": 1e-3})):
        with pytest.raises(ConfigError, match=r"lr names layer group\(s\) \['block.7'\].*'block.1', 'pooler', 'head'"):
            call()
    runs = Path(fast["runs_dir"])
    assert not runs.exists() or not any(runs.iterdir())  # nothing was written


def test_learning_rates_needs_the_steps(tiny_dir, small):
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    with pytest.raises(ConfigError, match="needs data"):
        tk.learning_rates(model, tk.LoRA())
    table = tk.learning_rates(model, tk.Full(), steps=5, epochs=2)
    assert table["step"].max() == 10 and set(table["group"]) == {"embeddings", "block.0", "block.1", "pooler",
                                                                  "head"}


# ----- the figure ---------------------------------------------------------------------------------------
def test_the_figure_draws_planned_and_logged_above_the_loss(tiny_dir, small, fast):
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    drawn = tk.learning_rates(model, tk.Full(), small, lr_decay=0.5, **fast)
    run = tk.train(model, small, tk.Full(), lr_decay=0.5, log_every=1, **fast)
    fig = tk.plots.learning_rates(run, planned=drawn)
    names = [t.name for t in fig.data]
    assert "pooler … head (2) (planned)" in names and "embeddings (logged)" in names  # same rate: one line
    assert names[-1] == "training loss" and fig.layout.yaxis.type == "log"
    assert fig.data[-1].xaxis == "x2" and fig.layout.xaxis.matches == "x2" or fig.layout.xaxis2.matches == "x"
    assert tk.plots.captions.caption_for(fig).startswith("The learning rate of each layer group")
    one = tk.plots.learning_rates(planned=tk.learning_rates(model, tk.Full(), steps=4))
    assert [t.name for t in one.data] == ["every group (5) (planned)"]
    empty = tk.plots.learning_rates(planned=pd.DataFrame(columns=["step", "phase", "group", "lr"]))
    assert "no learning rates" in empty.layout.annotations[0].text


# ----- the finder ---------------------------------------------------------------------------------------
from tunekit.lr_finder import longest_fall, suggest  # noqa: E402


def test_the_rules_on_a_curve_of_known_shape():
    lrs = np.logspace(-6, 0, 61)
    x = np.log10(lrs)
    loss = 1 + 1 / (1 + np.exp(3 * (x + 3)))  # falls around 1e-3 ...
    loss = loss + np.where(x > -1, 30 * (x + 1) ** 2, 0)  # ... and runs away above 1e-1
    said = suggest(lrs, loss)
    assert said["steepest"] == pytest.approx(1e-3, rel=0.3)  # the sigmoid's steepest point
    low = lrs[int(np.argmin(loss))]
    assert said["minimum/10"] == pytest.approx(low / 10)
    assert 1e-6 < said["valley"] < low and loss[list(lrs).index(said["valley"])] < loss[0]
    assert longest_fall([5, 1, 4, 3, 2, 6, 0]) == [0, 2, 3, 4, 6]
    assert suggest([1e-3, 1e-2], [1.0, 0.5]) == {}  # too short to say


@pytest.mark.parametrize("strategy", [tk.Full(), tk.LoRA(rank=4)], ids=["full", "lora"])
def test_the_suggestion_lands_where_the_loss_falls(tiny_dir, small, strategy):
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    before = {n: p.detach().clone() for n, p in model.hf.named_parameters()}
    grads = {n: p.requires_grad for n, p in model.hf.named_parameters()}
    found = tk.lr_find(model, small, strategy, start=1e-6, end=10, steps=60, smooth=0.9, batch_size=16,
                       train_size=192)
    smoothed, lrs = np.array(found.smoothed), np.array(found.lrs)
    low = int(np.argmin(smoothed))
    at = int(np.argmin(abs(np.log(lrs) - np.log(found.suggestion))))
    assert found.rule == "valley" and found.suggestion == found.suggestions["valley"]
    assert found.suggestion < lrs[low] and smoothed[at] < smoothed[0]  # on the falling part
    assert len(found.lrs) < 60 and "passed 4 x its lowest" in found.stopped  # it ran away, and stopped there
    # the model is as it was: the sweep trained a copy
    assert model.peft is None and {n: p.requires_grad for n, p in model.hf.named_parameters()} == grads
    for n, p in model.hf.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
    fig = found.plot()
    rules = [f"{r}: {v:.1e}" for r, v in found.suggestions.items()]
    assert [t.name for t in fig.data] == ["loss of the step", "smoothed loss", rules[0] + " (suggested)"] + rules[1:]
    assert len(fig.layout.shapes) == len(found.suggestions) and fig.layout.xaxis.type == "log"
    assert tk.plots.captions.caption_for(fig).startswith("A short run whose learning rate grows")
    assert "valley" in repr(found)


def test_each_strategy_its_own_sweep_and_the_groups_at_their_ratios(tiny_dir, small):
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    probe = tk.lr_find(model, small, tk.Probe(), steps=20, train_size=64)
    full = tk.lr_find(model, small, tk.Full(), steps=20, train_size=64, lr_decay=0.5)
    assert probe.strategy == "probe" and probe.ratios == {"head": 1.0}
    assert full.ratios == pytest.approx({"embeddings": 0.125, "block.0": 0.25, "block.1": 0.5, "pooler": 1.0,
                                         "head": 1.0})
    assert probe.losses != full.losses


def test_the_finder_on_a_causal_lm(tiny_llama, articles):
    found = tk.lr_find(tk.load_model(tiny_llama, task="causal_lm"), articles, tk.LoRA(rank=2), steps=30,
                       train_size=32, batch_size=8, max_length=32)
    assert len(found.lrs) >= 5 and found.suggestions and all(v > 0 for v in found.suggestions.values())


@pytest.mark.parametrize("settings, words", [
    (dict(start=1e-3, end=1e-5), "end must be a number greater than start=0.001"),
    (dict(start=1e-3, end=1e-3), "an empty or reversed range"),
    (dict(start=0), "start must be a positive number"),
    (dict(steps=2), "steps must be an integer in 5 .. 10000"),
    (dict(rule="knee"), "rule must be one of"),
    (dict(smooth=1.0), "smooth must be in"),
    (dict(diverge=1), "diverge must be a number > 1"),
    (dict(lr_decay=2.0), "lr_decay must be a number in"),
])
def test_bad_finder_settings_are_named(tiny_dir, small, settings, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        tk.lr_find(tk.load_model(tiny_dir, label_names=small.label_names), small, tk.LoRA(), **settings)


# ----- gradual unfreezing ---------------------------------------------------------------------------------
def test_gradual_unfreezing_joins_one_group_per_stage(tiny_dir, small, fast):
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    gradual = tk.GradualUnfreeze()
    assert gradual.stages(model) == [["pooler", "head"], ["pooler", "head", "block.1"],
                                     ["pooler", "head", "block.1", "block.0"],
                                     ["pooler", "head", "block.1", "block.0", "embeddings"]]
    drawn = tk.learning_rates(model, gradual, small, epochs=2, log_every=1, **fast)
    before = {n: p.detach().clone() for n, p in model.hf.named_parameters()}
    seen = {}

    def watch(ev):  # what changed in each step
        now = {n: p.detach().clone() for n, p in ev.trainer.model.hf.named_parameters()}
        seen[ev.payload["step"]] = {model.group_of(n) for n in now if not torch.equal(now[n], watch.last[n])}
        watch.last = now
    watch.last = before
    run = tk.train(model, small, gradual, epochs=2, log_every=1, callbacks={"step": watch}, **fast)
    assert [p["steps"] for p in run.config["phases"]] == [2, 2, 2, 2]  # 8 steps, four even stages
    assert [sorted(r) for r in run.summary["rates"]] == [sorted(s) for s in gradual.stages(model)]
    assert seen[1] == seen[2] == {"pooler", "head"} and seen[3] == {"pooler", "head", "block.1"}
    assert seen[8] == {"pooler", "head", "block.1", "block.0", "embeddings"}
    logged = run.learning_rates()
    assert logged[logged["group"] == "block.0"]["step"].tolist() == [5, 6, 7, 8]
    merged = drawn.merge(logged, on=["step", "phase", "group"])
    assert len(merged) == len(drawn) == len(logged)
    assert merged["lr_x"].tolist() == pytest.approx(merged["lr_y"].tolist(), rel=1e-12)
    from tunekit.plots.rates import joins
    assert joins(run) == [(2, "block.1 joins"), (4, "block.0 joins"), (6, "embeddings joins")]
    fig = tk.plots.learning_rates(run)
    assert [a.text for a in fig.layout.annotations][-3:] == ["block.1 joins", "block.0 joins", "embeddings joins"]


def test_gradual_stages_of_given_length_and_where_they_stop(tiny_dir, small):
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    phases = tk.GradualUnfreeze(every=1, unit="epochs").phases_for(model, 4, 4)
    assert [p.steps for p in phases] == [4, 4, 4, 4]
    phases = tk.GradualUnfreeze(every=3).phases_for(model, 4, 3)
    assert [p.steps for p in phases] == [3, 3, 3, 3]
    assert tk.GradualUnfreeze(stop_at="block.1").stages(model) == [["pooler", "head"], ["pooler", "head", "block.1"]]
    with pytest.raises(ConfigError, match=r"every: 3 stages of 3 steps take 9 of the run's 8 steps.*at most 2 steps"):
        tk.GradualUnfreeze(every=3).phases_for(model, 4, 2)
    with pytest.raises(ConfigError, match="the run has 3 steps, fewer than its 4 stages"):
        tk.GradualUnfreeze().phases_for(model, 3, 1)
    with pytest.raises(ConfigError, match="needs at least two groups to unfreeze one after another; stop_at='head'"):
        tk.GradualUnfreeze(stop_at="head").stages(model)
    with pytest.raises(ConfigError, match=r"stop_at: 'block.9' is not a layer group of this model"):
        tk.GradualUnfreeze(stop_at="block.9").stages(model)
    for bad, words in ((dict(every=0), "GradualUnfreeze.every must be a positive integer"),
                       (dict(unit="batches"), "GradualUnfreeze.unit must be one of"),
                       (dict(stop_at=3), "GradualUnfreeze.stop_at must be a layer group name")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            tk.GradualUnfreeze(**bad)


def test_gradual_unfreezing_on_a_causal_lm(tiny_llama, articles, tmp_path):
    model = tk.load_model(tiny_llama, task="causal_lm")
    run = tk.train(model, articles, tk.GradualUnfreeze(), train_size=32, batch_size=4, max_length=32, epochs=1,
                   runs_dir=str(tmp_path), progress=False)
    assert run.status == "completed" and len(run.config["phases"]) == len(tk.GradualUnfreeze().stages(model))
    assert sum(p["steps"] for p in run.config["phases"]) == run.summary["steps"] == 8


# ----- the command line ---------------------------------------------------------------------------------
def test_the_command_line_sweeps_and_trains_with_rates(tiny_dir, small, tmp_path, capsys):
    from tunekit.cli import main
    csv = tmp_path / "small.csv"
    small.train.assign(label=small.train.label.map(dict(enumerate(small.label_names)))).to_csv(csv)
    common = ["--model", tiny_dir, "--data", str(csv), "--train-size", "64"]
    assert main(["lr-find", "--strategy", "full", *common, "--steps", "30", "--start", "1e-6",
                 "--plot", str(tmp_path / "find.html")]) == 0
    out = capsys.readouterr().out
    assert "full: " in out and "<- suggested" in out and "valley" in out
    assert (tmp_path / "find.html").stat().st_size > 1000
    assert main(["lr-find", *common, "--start", "1e-2", "--end", "1e-4"]) == 2
    assert "--end" in capsys.readouterr().err
    assert main(["train", "--strategy", "gradual", *common, "--eval-size", "16", "--lr-decay", "0.5",
                 "--schedule", "one_cycle", "--runs-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    [run] = tk.list_runs(tmp_path / "runs")
    assert run.config["train"]["lr_decay"] == 0.5 and run.config["train"]["schedule"] == "one_cycle"
    assert len(run.config["phases"]) == 4
    assert main(["train", *common, "--lr-decay", "1.5"]) == 2
    assert "--lr-decay" in capsys.readouterr().err


# ----- a decay as a strategy: side by side in one experiment --------------------------------------------
def test_discriminative_gives_one_strategy_its_decay(tiny_dir, small, fast):
    d = tk.Discriminative(tk.Full(), decay=0.5)
    assert d.label == "full-decay0.5" and tk.get_strategy(d.describe()) == d
    assert tk.get_strategy("discriminative") == tk.Discriminative(tk.Full(), 0.8)
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    assert d.count(model) == tk.Full().count(model)
    run = tk.train(model, small, d, lr=1e-3, **fast)
    assert run.summary["rates"][0] == pytest.approx({"embeddings": 1.25e-4, "block.0": 2.5e-4, "block.1": 5e-4,
                                                     "pooler": 1e-3, "head": 1e-3})
    assert run.label == "full-decay0.5"
    staged = tk.Discriminative(tk.GradualUnfreeze(), 0.5).phases_for(model, 2, 2)
    assert len(staged) == 4 and all(p.lr_decay == 0.5 for p in staged)
    for bad, words in ((dict(decay=0), "Discriminative.decay must be a number in (0, 1]"),
                       (dict(strategy=tk.Discriminative()), "must not be a Discriminative itself")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            tk.Discriminative(**bad)
    with pytest.raises(ConfigError, match="give one of them"):
        tk.train(model, small, d, lr={"head": 1e-3}, **fast)


def test_one_rate_and_a_decay_are_cells_of_one_experiment(tiny_dir, small, tmp_path):
    exp = tk.experiment([tk.Full(), tk.Discriminative(tk.Full(), 0.5)], small, sizes=[32], seeds=1, model=tiny_dir,
                        runs_dir=str(tmp_path), test_size=16, eval_size=8, progress=False)
    table = exp.table()
    assert sorted(table["strategy"]) == ["full", "full-decay0.5"]
