"""Figures, the HTML report and the command line.

Figures and the report are tested on synthetic run records written with RunWriter
(no training, milliseconds); the command line once end to end on the tiny BERT.
"""
from __future__ import annotations

import re
import subprocess
import sys

import plotly.offline
import pytest

from tunekit import plots
from tunekit.cli import main, parse_strategies
from tunekit.config import ConfigError
from tunekit.report import formatted_table, render_report, write_report
from tunekit.runs import Run, RunWriter, list_runs, table


def make_run(runs_dir, name, label, *, steps=6, evals=(3, 6), status="completed", reason=None,
             trainable=100, total=10_000, accuracy=0.8, wall=2.0, memory=500.0, data_name="rt",
             loss0=0.7):
    """A finished run record with ``steps`` training steps and evaluations at ``evals``."""
    w = RunWriter(runs_dir, name, {
        "strategy": {"name": label.split("-")[0]}, "strategy_label": label, "device": "cpu",
        "created": "2026-01-01T00:00:00",
        "params": {"trainable": trainable, "total": total, "percent": 100 * trainable / total},
        "model": {"source": "tiny", "architecture": "BertForSequenceClassification", "groups": ["a", "b"]},
        "data": {"name": data_name, "source": "test", "seed": 0, "label_names": ["neg", "pos"],
                 "train_used": 32, "validation_used": 16},
        "train": {"epochs": 1, "batch_size": 16, "seed": 0, "lr": None},
        "versions": {"tunekit": "0.1.0"},
    })
    w.log("phase_start", {"phase": 0, "lr": 1e-3})
    for s in range(1, steps + 1):
        w.log("step", {"step": s, "epoch": s / steps, "loss": loss0 - 0.05 * s + 0.02 * (-1) ** s, "lr": 1e-3,
                       "samples": 16 * s, "elapsed_s": 0.1 * s, "samples_per_s": 160.0})
        if s in evals:
            w.log("eval", {"step": s, "epoch": s / steps, "val_loss": 0.6, "val_accuracy": accuracy * s / steps,
                           "val_macro_f1": 0.5, "elapsed_s": 0.1 * s})
    summary = {"steps": steps, "wall_time_s": wall, "samples_per_s": 160.0 if steps else None,
               "peak_memory_mb": memory, "memory_kind": "process_rss"}
    if evals and steps:
        summary.update(val_accuracy=accuracy, val_macro_f1=0.5, val_loss=0.6)
    w.finish(status, reason, **summary)
    return Run(w.path)


@pytest.fixture
def three(tmp_path):
    d = tmp_path / "runs"
    return [make_run(d, "probe-1", "probe", trainable=100, accuracy=0.6, wall=1.0),
            make_run(d, "lora-1", "lora-r8", trainable=1_000, accuracy=0.8, wall=3.0),
            make_run(d, "full-1", "full", trainable=10_000, accuracy=0.7, wall=9.0, status="stopped",
                     reason="stopped by the user at step 6")]


@pytest.fixture
def empty(tmp_path):
    """A run that failed before its first step: no steps, no evaluations, no accuracy."""
    return make_run(tmp_path / "runs", "full-oom", "full", steps=0, evals=(), status="failed",
                    reason="out of GPU memory at step 0")


# ----- figures -----------------------------------------------------------------------------------
def test_training_curves_raw_and_smoothed(three):
    fig = plots.training_curves(three, smooth=0.6)
    assert len(fig.data) == 6  # a faint raw line and a smoothed line per run
    raw, smoothed = fig.data[0], fig.data[1]
    hist = three[0].history("step")
    assert list(raw.x) == hist["step"].tolist() and list(raw.y) == pytest.approx(hist["loss"].tolist())
    assert raw.opacity < 1 and raw.showlegend is False
    assert smoothed.y[0] == pytest.approx(hist["loss"][0])  # start-up corrected, not pulled to 0
    assert list(smoothed.y) != pytest.approx(list(raw.y))
    assert len(plots.training_curves(three, smooth=0).data) == 3
    assert list(plots.training_curves(three, x="samples").data[1].x) == hist["samples"].tolist()
    with pytest.raises(ConfigError, match="smooth"):
        plots.training_curves(three, smooth=1.0)


def test_ema():
    assert plots.ema([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])
    assert plots.ema([1.0, None, 3.0], 0.0) == [1.0, None, 3.0]
    assert plots.ema([0.0, 1.0], 0.5) == pytest.approx([0.0, 2 / 3])


def test_eval_curves(three):
    fig = plots.eval_curves(three)
    assert len(fig.data) == 3
    assert list(fig.data[1].x) == [3, 6] and list(fig.data[1].y) == pytest.approx([0.4, 0.8])
    assert list(plots.eval_curves(three, "val_loss").data[0].y) == [0.6, 0.6]
    with pytest.raises(ConfigError, match="metric"):
        plots.eval_curves(three, "accuracy")


def test_colours_consistent_and_failed_runs_marked(three):
    by_fig = [plots.training_curves(three, smooth=0), plots.eval_curves(three), plots.pareto(three)]
    for fig in by_fig:
        run_traces = [t for t in fig.data if t.name != "Pareto front"]
        colours = [t.line.color if t.mode != "markers+text" else t.marker.color for t in run_traces]
        assert colours == [plots.run_color(r) for r in three] and len(set(colours)) == 3  # three records in a row
    curve = by_fig[0].data
    assert [t.line.dash for t in curve] == ["solid", "solid", "dash"]
    assert curve[2].name == "#3 full · 32 ex · 1 ep [stopped]" and curve[0].name == "#1 probe · 32 ex · 1 ep"
    assert by_fig[2].data[2].marker.symbol == "circle-open"


def test_legend_tells_apart_runs_that_look_alike(tmp_path):
    runs = [make_run(tmp_path, "lora-a", "lora-r8"), make_run(tmp_path, "lora-b", "lora-r8"),
            make_run(tmp_path, "full", "full")]
    names = [t.name for t in plots.eval_curves(runs).data]  # #k: the k-th record of the folder
    assert names == ["#1 LoRA r8 · 32 ex · 1 ep", "#2 LoRA r8 · 32 ex · 1 ep", "#3 full · 32 ex · 1 ep"]


def test_runs_without_steps_do_not_crash(three, empty):
    runs = three + [empty]
    fig = plots.training_curves(runs)
    assert len(fig.data) == 8 and list(fig.data[-1].x) == []
    assert fig.data[-1].name == "#4 full · 32 ex · 1 ep [failed]"  # full-1 is #3: the 3rd record of the folder
    assert len(plots.eval_curves(runs).data) == 4
    fig = plots.pareto(runs)
    assert "#4 full · 32 ex · 1 ep [failed]" in fig.layout.annotations[0].text  # listed, not plotted
    assert plots.comparison_table(runs)["accuracy"].isna().tolist() == [False, False, False, True]
    assert len(plots.training_curves([empty]).data) == 2
    assert len(plots.pareto([]).data) == 0 and len(plots.training_curves([]).data) == 0


def test_comparison_table(three):
    df = plots.comparison_table(three)
    assert list(df.columns) == ["run", "strategy", "rank", "alpha", "lr", "epochs", "train examples", "batch size",
                                "seed", "accuracy", "macro-F1", "trainable params", "trainable %", "wall time s",
                                "samples/s", "memory MB", "status", "record"]
    assert df["run"].tolist() == ["#1 probe · 32 ex · 1 ep", "#2 LoRA r8 · 32 ex · 1 ep", "#3 full · 32 ex · 1 ep"]
    assert df["record"].tolist() == ["probe-1", "lora-1", "full-1"]
    assert df["strategy"].tolist() == ["probe", "lora-r8", "full"]
    assert df["rank"].tolist()[1] == 8 and df["train examples"].tolist() == [32, 32, 32]
    assert df["memory MB"].isna().all()  # process RSS (these records) is never shown
    assert df["trainable params"].tolist() == [100, 1_000, 10_000]
    assert df["trainable %"].tolist() == pytest.approx([1, 10, 100])
    assert df["status"].tolist() == ["completed", "completed", "stopped"]
    from_disk = plots.comparison_table(list_runs(three[0].path.parent))  # started in the same second: by name
    assert from_disk.sort_values("record").reset_index(drop=True).equals(
        df.sort_values("record").reset_index(drop=True))
    text = formatted_table(three)
    assert text["trainable params"].tolist() == ["100", "1,000", "10,000"] and text["accuracy"][1] == "0.800"


def test_pareto(three):
    fig = plots.pareto(three)
    assert fig.layout.xaxis.type == "log"
    points = [(t.x[0], t.y[0]) for t in fig.data if t.name != "Pareto front"]
    assert points == [(100, 0.6), (1_000, 0.8), (10_000, 0.7)]
    front = [t for t in fig.data if t.name == "Pareto front"][0]
    assert list(front.x) == [100, 1_000]  # full is both bigger and worse than LoRA
    memory = plots.pareto(three, x="peak_memory_mb")
    assert memory.layout.xaxis.type == "linear"
    assert len(memory.data) == 0 and "process RSS" in memory.layout.annotations[0].text  # RSS is not plotted
    assert [t.x[0] for t in plots.pareto(three, x="wall_time_s").data[:3]] == [1.0, 3.0, 9.0]
    assert len(plots.pareto(table(three)).data) == 4  # a runs.table() works too
    with pytest.raises(ConfigError, match="x must be"):
        plots.pareto(three, x="accuracy")


def test_pareto_points_say_the_run_number_and_are_never_clipped(three):
    """Issue 20: whole names as point labels were cut at the plot's edges and ran into each other."""
    fig = plots.pareto(three)
    points = [t for t in fig.data if t.mode == "markers+text"]
    assert [t.text[0] for t in points] == ["#1", "#2", "#3"] and all(t.cliponaxis is False for t in points)
    assert [t.name.split(" ")[0] for t in points] == ["#1", "#2", "#3"]  # the legend keeps the whole name


def test_a_point_label_goes_under_its_point_where_another_point_sits_just_above(tmp_path):
    """Issue 20: a prune record at its source's size, a little less accurate: its label, above
    it, fell on the source's marker."""
    d = tmp_path / "runs"
    runs = [make_run(d, "full-1", "full", trainable=1_000, accuracy=0.594),
            make_run(d, "full-1-prune", "prune", trainable=1_000, accuracy=0.562),
            make_run(d, "lora-1", "lora-r8", trainable=100, accuracy=0.58)]
    fig = plots.pareto(runs)
    positions = {t.text[0]: t.textposition for t in fig.data if t.mode == "markers+text"}
    assert positions == {"#1": "top center", "#2": "bottom center", "#3": "top center"}, positions
    # the chance line is drawn but not labelled (a stopped run's label at chance fell on "chance 0.5");
    # the axis title says what the dashed line is
    assert [s.line.dash for s in fig.layout.shapes] == ["dash"]
    assert not [a for a in fig.layout.annotations if "chance" in (a.text or "")]
    assert "dashed: chance" in fig.layout.yaxis.title.text


def test_pareto_front():
    assert plots.pareto_front([(1, 0.5), (2, 0.4), (3, 0.9), (3, 0.8)]) == [(1, 0.5), (3, 0.9)]


def test_accepts_runs_dir_and_single_run(three):
    assert len(plots.eval_curves(three[0].path.parent).data) == 3
    assert len(plots.eval_curves(three[0]).data) == 1
    with pytest.raises(ConfigError):
        plots.eval_curves([1, 2])


@pytest.mark.parametrize("module", ["tunekit.plots", "tunekit.report", "tunekit.cli"])
def test_imports_no_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_runs_command_needs_no_torch(three):
    code = ("import sys; from tunekit.cli import main; "
            f"rc = main(['runs', '--runs-dir', {str(three[0].path.parent)!r}]); "
            "assert rc == 0 and 'torch' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "lora-r8" in out and "stopped" in out


# ----- report ------------------------------------------------------------------------------------
def test_report_is_self_contained(three, empty, tmp_path):
    path = write_report(three + [empty], tmp_path / "out" / "report.html", title="My comparison")
    assert path == (tmp_path / "out" / "report.html").resolve() and path.is_file()
    text = path.read_text(encoding="utf-8")
    assert text.count(plotly.offline.get_plotlyjs()) == 1
    assert "<script src=" not in text and 'src="http' not in text
    assert text.count("Plotly.newPlot(") == 5
    assert "<title>My comparison</title>" in text and "lora-r8" in text and "full-oom" in text
    assert "out of GPU memory at step 0" in text  # the reason a run failed
    assert "cpu" in text and "rt (test" in text and "tiny (BertForSequenceClassification" in text
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary file left
    write_report(three, path)  # overwrites in place
    assert "full-oom" not in path.read_text(encoding="utf-8")


def test_report_escapes_record_text(tmp_path):
    evil = "<script>alert(1)</script>"
    runs = [make_run(tmp_path, "x", evil, data_name="<b>data</b>"), make_run(tmp_path, "y", "full")]
    text = render_report(runs, title="a < b")
    assert evil not in text and "<b>data</b>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "&lt;b&gt;data&lt;/b&gt;" in text
    assert "<title>a &lt; b</title>" in text


def test_report_of_no_runs(tmp_path):
    text = write_report([], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "No runs to show" in text


# ----- command line ----------------------------------------------------------------------------
def test_parse_strategies():
    probe, freeze, lora, lora4, full = parse_strategies("probe, freeze,lora,lora:4,full")
    assert (probe.name, freeze.train_blocks, lora.rank, lora4.rank, full.name) == \
        ("probe", (-2, -1), 8, 4, "full")
    assert parse_strategies("freeze:3")[0].train_blocks == (-3, -2, -1)


def test_cli_compare_end_to_end(tiny_dir, tmp_path, capsys):
    runs_dir, report = tmp_path / "runs", tmp_path / "report.html"
    rc = main(["compare", "--model", tiny_dir, "--strategies", "probe,lora:2,full", "--train-size", "32",
               "--eval-size", "32", "--runs-dir", str(runs_dir), "--report", str(report), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    runs = list_runs(runs_dir)
    assert sorted(r.label for r in runs) == ["full", "lora-r2", "probe"]
    assert all(r.status == "completed" for r in runs)
    assert report.is_file() and f"report: {report.resolve()}" in out
    assert "lora-r2" in out and "trainable params" in out
    text = report.read_text(encoding="utf-8")
    # 5 run figures + 9 instrument figures (heatmap, outside-blocks bar, difference, ranks,
    # spectrum, magnitude/direction, CKA, PCA, attribution heatmap); the stacked attributions are an HTML table
    assert text.count("Plotly.newPlot(") == 14
    for heading in ("Weight change per module", "Magnitude and direction", "Representation drift",
                    "Token attributions"):
        assert f"<h2>{heading}" in text
    assert re.search(r"minus #\d LoRA r2 α4 · 32 ex · 1 ep</h2>", text)  # the instruments name runs as every view does
    assert "<h2>Spectrum of one update (block 1 · " in text  # a matrix in words, not its parameter path

    assert main(["runs", "--runs-dir", str(runs_dir)]) == 0
    assert capsys.readouterr().out.count("completed") == 3


def test_cli_compare_without_instruments(tiny_dir, tmp_path):
    report = tmp_path / "plain.html"
    rc = main(["compare", "--model", tiny_dir, "--strategies", "probe", "--train-size", "16", "--eval-size", "16",
               "--runs-dir", str(tmp_path / "runs"), "--report", str(report), "--no-progress", "--no-inspect",
               "--max-length", "24"])
    assert rc == 0 and "Representation drift" not in report.read_text(encoding="utf-8")
    (run,) = list_runs(tmp_path / "runs")
    assert run.config["train"]["max_length"] == 24


@pytest.mark.parametrize("args, option", [
    (["--strategies", "probe,bogus"], "--strategies"),
    (["--strategies", "lora:x"], "--strategies"),
    (["--strategies", "full:2"], "--strategies"),
    (["--strategies", ""], "--strategies"),
    (["--epochs", "zero"], "--epochs"),
    (["--epochs", "0"], "--epochs"),
    (["--lr", "-1e-4"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--train-size", "1.5"], "--train-size"),
    (["--eval-size", "-3"], "--eval-size"),
    (["--batch-size", "x"], "--batch-size"),
    (["--max-length", "0"], "--max-length"),
    (["--seed", "-1"], "--seed"),
    (["--data", "MISSING.csv"], "--data"),
    (["--model", "./no/such/model"], "--model"),
])
def test_cli_bad_input(args, option, tmp_path, capsys):
    args = [a.replace("MISSING", str(tmp_path / "missing")) for a in args]
    rc = main(["compare", "--runs-dir", str(tmp_path / "runs"), "--report", str(tmp_path / "r.html"), *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert option in err and "Traceback" not in err
    assert not (tmp_path / "r.html").exists()


def test_cli_rank_too_large_for_the_model(tiny_dir, tmp_path, capsys):
    rc = main(["compare", "--model", tiny_dir, "--strategies", "lora:1000", "--train-size", "16",
               "--eval-size", "16", "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--strategies" in err and "LoRA.rank" in err and "Traceback" not in err


def test_cli_usage_errors(tmp_path, capsys):
    assert main([]) == 2
    assert main(["compare", "--no-such-option"]) == 2
    assert main(["--help"]) == 0
    capsys.readouterr()
    assert main(["runs", "--runs-dir", str(tmp_path / "nothing")]) == 0
    assert "no runs" in capsys.readouterr().out


def test_python_m_tunekit_cli():
    out = subprocess.run([sys.executable, "-m", "tunekit.cli", "compare", "--help"], check=True,
                         capture_output=True, text=True).stdout
    assert "--strategies" in out and "lora[:RANK" in out


def test_cli_checks_every_strategy_before_training(tiny_dir, tmp_path, capsys):
    rc = main(["compare", "--model", tiny_dir, "--strategies", "probe,freeze:9", "--train-size", "16",
               "--eval-size", "16", "--runs-dir", str(tmp_path / "runs"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "--strategies" in err and "Freeze.train_blocks" in err
    assert list_runs(tmp_path / "runs") == []  # probe was not trained first


def test_cli_unwritable_report_fails_before_training(tiny_dir, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    rc = main(["compare", "--model", tiny_dir, "--strategies", "probe", "--train-size", "16",
               "--runs-dir", str(tmp_path / "runs"), "--report", str(tmp_path / "a-file" / "r.html")])
    assert rc == 2 and "--report" in capsys.readouterr().err
    assert list_runs(tmp_path / "runs") == []


def test_log_axes_are_labelled_whole_at_the_text_size():
    """Issue 20: plotly writes the 2..9 of a decade as small digits (10.5 px where the text is 14),
    and on a short axis they ran into each other; 1, 2 and 5 of each decade, written whole."""
    from tunekit.plots.axes import log_ticks
    assert log_ticks(100, 10_000) == ([100, 200, 500, 1_000, 2_000, 5_000, 10_000],
                                      ["100", "200", "500", "1,000", "2,000", "5,000", "10k"])
    assert log_ticks(770, 22_000_000)[1] == ["1,000", "10k", "100k", "1M", "10M"]  # 1 of each, past 9 ticks
    assert log_ticks(0.0023, 0.1)[1] == ["0.002", "0.005", "0.01", "0.02", "0.05", "0.1"]
    assert log_ticks(1.6, 5.0)[1] == ["1.5", "2", "3", "4", "5", "6"]  # finer within less than a decade
    assert log_ticks(1.9, 1.9)[1] == ["1.5", "2"]  # one value: still two labels, whole
    assert log_ticks(0.0, 5.0) is None


def test_the_pareto_log_axis_has_whole_labels(three):
    fig = plots.pareto(three)  # trainable parameters 100 .. 10,000
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.tickmode == "array"
    assert list(fig.layout.xaxis.ticktext) == ["100", "200", "500", "1,000", "2,000", "5,000", "10k"]


@pytest.mark.parametrize("argv, words", [
    (["runs", "--runs-dir", "~nobody-here"], "argument --runs-dir: '~nobody-here' is not a usable path"),
    (["runs", "--report", "bad\x00name.html"], "argument --report: cannot write"),
    (["evaluate", "~nobody-here/run"], "argument RUN: '~nobody-here/run' is not a usable path"),
    (["evaluate", "a" * 5000], "argument RUN: 'aaaa"),
])
def test_paths_the_system_cannot_use_are_one_line_errors(argv, words, tmp_path, monkeypatch, capsys):
    """Found by the fuzz (issue 22): these raised RuntimeError ('Could not determine home directory'),
    ValueError ('embedded null byte') or OSError ('File name too long') as tracebacks."""
    from tunekit.cli import main
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


@pytest.mark.parametrize("draw, words", [
    (lambda: plots.training_curves([], x=[]), "x must be one of"),
    (lambda: plots.eval_curves([], metric=["val_loss"]), "metric must be one of"),
    (lambda: plots.pareto([], x={}), "x must be one of"),
    (lambda: plots.pareto([], y=[]), "y must be one of"),
])
def test_plot_choices_of_the_wrong_type_are_named(draw, words):
    """Found by the fuzz (issue 22): a list where a name goes raised "unhashable type: 'list'"."""
    with pytest.raises(ConfigError, match=words):
        draw()
