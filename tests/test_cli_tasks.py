"""`tunekit evaluate`, and `tunekit compare --task causal_lm` with its report."""
import pytest

import tunekit as tk
from tunekit.cli import main
from tunekit.tiny import make_tiny


def test_cli_evaluate_prints_the_recorded_metrics(tiny_dir, small, fast, capsys, tmp_path):
    run = tk.train(tk.load_model(tiny_dir, label_names=small.label_names), small, tk.Full(), **fast)
    csv = tmp_path / "small.csv"
    small.validation.assign(label=small.validation.label.map(dict(enumerate(small.label_names)))).to_csv(csv)
    # the run was trained on an in-memory data set: by name it cannot be found, and the error says so
    assert main(["evaluate", str(run.path)]) == 2
    assert "not a built-in data set" in capsys.readouterr().err
    assert main(["evaluate", run.name, "--runs-dir", fast["runs_dir"], "--data", str(csv), "--split", "train",
                 "--size", "all"]) == 0
    out = capsys.readouterr().out
    assert f"{run.name} (full, classification) on train" in out
    for key in ("accuracy", "macro_f1", "loss"):
        assert key in out
    assert main(["evaluate", "no-such-run", "--runs-dir", fast["runs_dir"]]) == 2
    assert "argument RUN" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_evaluate_on_a_built_in_data_set_equals_the_record(capsys, tmp_path):
    runs_dir = tmp_path / "runs"
    assert main(["compare", "--strategies", "probe", "--train-size", "32", "--eval-size", "40",
                 "--runs-dir", str(runs_dir), "--report", str(tmp_path / "r.html"), "--no-progress",
                 "--no-inspect"]) == 0
    run = tk.list_runs(runs_dir)[0]
    capsys.readouterr()
    assert main(["evaluate", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "40 examples" in out and f"{run.summary['val_accuracy']:.3f}" in out


def test_cli_compare_causal_lm_with_its_report(tmp_path, capsys):
    model = make_tiny("llama", tmp_path / "llama")
    runs_dir, report = tmp_path / "runs", tmp_path / "report.html"
    rc = main(["compare", "--task", "causal_lm", "--model", str(model), "--data", "bbc_news",
               "--strategies", "lora:2,ia3,freeze:1", "--train-size", "24", "--eval-size", "16", "--max-length", "48",
               "--runs-dir", str(runs_dir), "--report", str(report), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    runs = tk.list_runs(runs_dir)
    assert [r.task for r in runs] == ["causal_lm"] * 3 and all(r.status == "completed" for r in runs)
    out = capsys.readouterr().out
    assert "perplexity" in out and "accuracy" not in out
    text = report.read_text(encoding="utf-8")
    for heading in ("Validation perplexity", "Perplexity vs trainable parameters", "Weight change per module",
                    "Representation drift"):
        assert f"<h2>{heading}" in text, heading
    assert "Token attributions" not in text  # attributions explain a class logit
    assert main(["compare", "--task", "causal_lm", "--model", str(model), "--strategies", "probe",
                 "--runs-dir", str(runs_dir), "--report", str(report)]) == 2
    assert "Probe trains a classification head" in capsys.readouterr().err


def test_cli_train_one_strategy_and_its_errors(tiny_dir, small, tmp_path, capsys):
    csv = tmp_path / "reviews.csv"
    small.train.iloc[:48].to_csv(csv, index=False)
    base = ["train", "--model", tiny_dir, "--data", str(csv), "--train-size", "32", "--eval-size", "8",
            "--runs-dir", str(tmp_path / "runs"), "--no-progress", "--max-length", "32"]
    assert main(base + ["--strategy", "lora:2", "--name", "one", "--no-group-by-length", "--log-every", "2",
                        "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    (run,) = tk.list_runs(tmp_path / "runs")
    assert run.name == "one" and run.label == "lora-r2" and f"run: {run.path.resolve()}" in out
    assert run.config["train"]["group_by_length"] is False and run.config["precision"]["autocast"] is None
    assert run.config["train"]["log_every"] == 2
    assert main(base + ["--strategy", "probe,full"]) == 2
    assert "argument --strategy: train takes one strategy" in capsys.readouterr().err
    assert main(base + ["--strategy", "freeze:9"]) == 2
    assert "argument --strategy" in capsys.readouterr().err


def test_the_global_batch_must_split_evenly_across_processes(tiny, small, fast, monkeypatch):
    from tunekit import engine
    from tunekit.config import ConfigError
    from tunekit.distributed import World
    monkeypatch.setattr(engine, "current_world", lambda device=None: World(rank=0, size=3))
    with pytest.raises(ConfigError, match="batch_size is the global batch \\(16\\); with 3 processes"):
        tk.train(tiny, small, tk.Full(), **fast)
