"""Issue 11: every mistake a user can make reaches them as one of tunekit's own errors,
naming the parameter or the file, and no run is left reading "running"."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import tunekit as tk
from tunekit.config import ConfigError


def _summary(path):
    return json.loads((path / "summary.json").read_text())


# ----- devices ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device, words", [
    ("xpu", "trains on"), ("meta", "trains on"), ("cuda:5", "cuda"), ("cpu:3", "one CPU"),
    ("gpu", "device must be one of"), ("", None),
])
def test_a_device_tunekit_cannot_train_on_fails_before_any_record(tiny, small, fast, tmp_path, device, words):
    if words is None:  # "" means "choose": it trains
        assert tk.train(tiny, small, tk.Probe(), device=device, **fast).summary["status"] == "completed"
        return
    with pytest.raises(ConfigError, match=words):
        tk.train(tiny, small, tk.Probe(), device=device, **fast)
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "no record may be left behind"


def test_a_device_that_fails_while_moving_the_model_finishes_the_record(tiny, small, fast, monkeypatch):
    def broken_to(*a, **k):
        raise RuntimeError("backend went away")
    monkeypatch.setattr(type(tiny), "to", broken_to)
    with pytest.raises(tk.TrainingError, match="backend went away") as e:
        tk.train(tiny, small, tk.Probe(), **fast)
    assert e.value.run is not None
    s = _summary(e.value.run.path)
    assert s["status"] == "failed" and "backend went away" in s["reason"]


# ----- callbacks ----------------------------------------------------------------------------------
def test_a_train_end_callback_that_raises_leaves_a_finished_record(tiny, small, fast, tmp_path):
    def boom(ev):
        raise ValueError("my callback is broken")
    with pytest.raises(ValueError, match="my callback is broken"):
        tk.train(tiny, small, tk.Probe(), callbacks={"train_end": boom}, name="cb", **fast)
    s = _summary(tmp_path / "runs" / "cb")
    assert s["status"] == "completed" and s["steps"] > 0 and s["weights"] == "weights.safetensors"
    assert tk.load_run(tmp_path / "runs" / "cb").summary["status"] == "completed"


def test_a_train_end_callback_sees_the_final_record(tiny, small, fast):
    seen = []
    tk.train(tiny, small, tk.Probe(), callbacks={"train_end": lambda ev: seen.append(
        (ev.payload["status"], tk.load_run(ev.trainer.writer.path).summary["status"]))}, **fast)
    assert seen == [("completed", "completed")]


def test_saving_that_fails_marks_the_record_failed(tiny, small, fast, monkeypatch, tmp_path):
    from tunekit.writer import RunWriter

    save = RunWriter.save_tensors

    def full(self, filename, tensors):  # the disk fills as the final weights are written
        if filename == "weights.safetensors":
            raise OSError(28, "No space left on device")
        save(self, filename, tensors)
    monkeypatch.setattr(RunWriter, "save_tensors", full)
    with pytest.raises(tk.TrainingError, match="saving the run failed.*No space left"):
        tk.train(tiny, small, tk.Probe(), name="full", **fast)
    s = _summary(tmp_path / "runs" / "full")
    assert s["status"] == "failed" and "No space left" in s["reason"]


# ----- models -------------------------------------------------------------------------------------
def _variant(tiny_dir, tmp_path, change):
    import shutil
    d = tmp_path / "model"
    shutil.copytree(tiny_dir, d)
    change(d)
    return str(d)


def _drop_weights(d):
    for p in d.glob("*.safetensors"):
        p.unlink()


def _config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    cfg = {k: v for k, v in cfg.items() if v is not None}
    (d / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("change, error, words", [
    (_drop_weights, "ModelNotFoundError", "no weights"),
    (lambda d: [p.write_bytes(p.read_bytes()[:1000]) for p in d.glob("*.safetensors")],
     "ModelNotFoundError", "weights cannot be loaded"),
    (lambda d: (d / "config.json").write_text("{not json"), "ModelNotFoundError", "config.json cannot be read"),
    (lambda d: (d / "config.json").write_text("[1, 2]"), "ModelNotFoundError", "JSON object"),
    (lambda d: _config(d, model_type=None), "ModelNotFoundError", "no 'model_type'"),
    (lambda d: _config(d, model_type="no-such-arch"), "ConfigError", "not an architecture"),
    (lambda d: _config(d, hidden_size=64), "ModelNotFoundError", "do not match config.json"),
    (lambda d: (d / "tokenizer.json").write_text("{x"), "ModelNotFoundError", "tokenizer files"),
])
def test_a_broken_model_directory_is_named_in_words(tiny_dir, tmp_path, change, error, words):
    path = _variant(tiny_dir, tmp_path, change)
    with pytest.raises(tk.TunekitError, match=words) as e:
        tk.load_model(path)
    assert type(e.value).__name__ == error and path in str(e.value)


def test_a_vision_model_is_refused_as_not_a_text_model(tmp_path):
    from transformers import ViTConfig, ViTModel
    ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                       image_size=32, patch_size=8)).save_pretrained(tmp_path / "vit")
    for task in ("classification", "causal_lm"):
        with pytest.raises(ConfigError, match="no classification head|needs a model with a causal language-model head.*'vit'"):
            tk.load_model(str(tmp_path / "vit"), task=task)


def test_a_run_record_passed_as_a_model_says_how_to_open_it(tiny, small, fast):
    run = tk.train(tiny, small, tk.Probe(), **fast)
    with pytest.raises(tk.ModelNotFoundError, match=r"run record.*tk.load_run"):
        tk.load_model(str(run.path))


@pytest.mark.parametrize("kw, words", [
    (dict(label_names=["a", "a"]), "distinct"), (dict(label_names=[1, 2]), "non-empty strings"),
    (dict(label_names="ab"), "a list of class names"), (dict(seed=-1), "seed"), (dict(seed="0"), "seed"),
    (dict(config_overrides=[1]), "config_overrides must be"),
    (dict(config_overrides={"hidden_size": 7}), "config_overrides .* do not fit"),
])
def test_bad_load_model_arguments(tiny_dir, kw, words):
    with pytest.raises(ConfigError, match=words):
        tk.load_model(tiny_dir, **kw)


def test_a_file_given_as_the_model_directory(tiny_dir):
    with pytest.raises(tk.ModelNotFoundError, match="is a file"):
        tk.load_model(str(tiny_dir) + "/config.json")


# ----- strategies ---------------------------------------------------------------------------------
@pytest.mark.parametrize("make, words", [
    (lambda: tk.LoRA(alpha=float("inf")), "LoRA.alpha must be a finite number"),
    (lambda: tk.LoRA(alpha=True), "LoRA.alpha must be a finite number"),
    (lambda: tk.LoRA(rank=8, alpha=1e30), r"LoRA.alpha must be at most 1000 x rank = 8000"),
    (lambda: tk.LoRA(target_modules=5), "LoRA.target_modules must be"),
    (lambda: tk.LoRA(target_modules=["query", 3]), "LoRA.target_modules must be"),
    (lambda: tk.IA3(target_modules=[None]), "IA3.target_modules must be"),
    (lambda: tk.LPFT(probe_lr="1e-3"), "LPFT.probe_lr must be a finite number"),
    (lambda: tk.LPFT(probe_lr=float("inf")), "LPFT.probe_lr must be a finite number"),
    (lambda: tk.Freeze(train=[1]), "Freeze.train must be layer group names"),
    (lambda: tk.Freeze.top(True), "Freeze.top"),
    (lambda: tk.get_strategy({"name": "lora", "rnk": 4}), r"LoRA has no parameter 'rnk'; its parameters are"),
    (lambda: tk.get_strategy({"name": ["lora"]}), "unknown strategy"),
])
def test_bad_strategy_arguments(make, words):
    with pytest.raises(ConfigError, match=words):
        make()


def test_freeze_with_no_blocks_is_named_for_what_it_trains(tiny):
    s = tk.Freeze(train_blocks=[])
    assert s.label == tk.Freeze.top(0).label == "freeze-top0"
    assert "block.0" not in s.plan(tiny).train and "head" in s.plan(tiny).train


def test_an_adapter_on_a_model_that_has_one_says_how_to_fold_it_in(tiny, small, fast):
    run = tk.train(tiny, small, tk.LoRA(rank=2), **fast)
    with pytest.raises(ConfigError, match=r"already carries an adapter.*merged=True"):
        tk.train(run.load_model(), small, tk.IA3(), **fast)
    assert tk.train(run.load_model(merged=True), small, tk.LoRA(rank=2), **fast).summary["status"] == "completed"
    with pytest.raises(ConfigError, match=r"run.load_model\(\)"):
        tk.train(tk.load_run(run.path).model, small, tk.Full(), **fast)


# ----- data ---------------------------------------------------------------------------------------
@pytest.fixture
def reviews(rt):
    return rt.train.iloc[:200].copy()


def test_a_misspelt_built_in_name_lists_the_built_ins():
    with pytest.raises(tk.DataError, match=r"did you mean 'rotten_tomatoes'\?.*\['bbc_headlines', 'bbc_news', 'rotten_tomatoes'\]"):
        tk.data.load("rotten-tomatoes")


def test_data_that_is_all_duplicates_says_so():
    df = pd.DataFrame({"text": ["good film", "bad film"] * 50, "label": [1, 0] * 50})
    with pytest.raises(tk.DataError, match=r"validation_size=0.1 of 2 distinct examples \(after dropping 98 "):
        tk.data.from_dataframe(df)


def test_the_same_text_with_two_labels(reviews):
    clash = pd.concat([reviews, reviews.iloc[:10].assign(label=1 - reviews["label"].iloc[:10])])
    with pytest.raises(tk.DataError, match=r"10 text\(s\) appear with different labels"):
        tk.data.from_dataframe(clash)
    dropped = tk.data.from_dataframe(clash, conflicts="drop")
    assert dropped.info["conflicting_texts"] == 10 and sum(map(len, (dropped.train, dropped.validation, dropped.test))) == 190
    first = tk.data.from_dataframe(clash, conflicts="first")
    assert sum(map(len, (first.train, first.validation, first.test))) == 200


@pytest.mark.parametrize("labels, words", [
    (lambda n: np.linspace(0, 1, n), "continuous numbers"),
    (lambda n: range(n), "its own class"),
    (lambda n: [[1]] * n, "must hold class labels"),
])
def test_labels_that_are_not_classes(reviews, labels, words):
    with pytest.raises(tk.DataError, match=words):
        tk.data.from_dataframe(reviews.assign(label=list(labels(len(reviews)))))


def test_integral_float_labels_are_classes(reviews):
    assert tk.data.from_dataframe(reviews.assign(label=reviews["label"].astype(float))).label_names == ["0", "1"]


@pytest.mark.parametrize("kw, words", [
    (dict(seed=-5), r"seed must be an integer in 0 \.\. 2\*\*63 - 1"),
    (dict(label_names=[0, 1, 1]), "label_names must be distinct"),
    (dict(validation_size=True), "validation_size"), (dict(conflicts="keep"), "conflicts must be one of"),
    (dict(txt="x"), r"takes no \['txt'\]"),
])
def test_bad_data_arguments(reviews, kw, words):
    with pytest.raises(ConfigError, match=words):
        tk.data.load(reviews, **kw)


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe\x00garbage", "not UTF-8"), (b"", "cannot be read as CSV"),
    (b'text,label\n"a,1\nb,0\n', "cannot be read as CSV"),
])
def test_an_unreadable_csv_is_named(tmp_path, content, words):
    (tmp_path / "d.csv").write_bytes(content)
    with pytest.raises(tk.DataError, match=words) as e:
        tk.data.load(str(tmp_path / "d.csv"))
    assert "d.csv" in str(e.value)


# ----- the lab --------------------------------------------------------------------------------------
def test_the_lab_says_an_unknown_pick_in_its_status_line(tiny_dir, small, tmp_path):
    pytest.importorskip("ipywidgets")
    lab = tk.Lab(model=tiny_dir, data=small, runs_dir=str(tmp_path / "runs"))
    assert lab.select(model="no-such-model") is False
    assert "Unknown model &#x27;no-such-model&#x27;" in lab.status and lab.model_w.value == tiny_dir
    assert lab.select(data="imdb") is False and "Unknown data &#x27;imdb&#x27;" in lab.status
    with pytest.raises(ConfigError, match="train_size must be a positive integer"):
        tk.Lab(model=tiny_dir, data=small, train_size=-1)


def test_a_model_directory_that_breaks_after_the_lab_opened(tiny_dir, small, tmp_path):
    pytest.importorskip("ipywidgets")
    import shutil
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_dir, model_dir)
    lab = tk.Lab(model=str(model_dir), data=small, runs_dir=str(tmp_path / "runs"))
    _drop_weights(model_dir)
    lab.train_button.click()  # must not raise out of the click handler
    assert not lab.running and "Not started" in lab.status and "no weights" in lab.status
    (model_dir / "config.json").write_text("{")
    lab.train_button.click()
    assert "Not started" in lab.status and "config.json cannot be read" in lab.status


# ----- the command line ---------------------------------------------------------------------------
def _cli(argv, capsys):
    from tunekit.cli import main
    rc = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


def test_export_into_a_folder_that_cannot_be_written(tmp_path, capsys):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    nbformat.write(nb, str(tmp_path / "n.ipynb"))
    (tmp_path / "a-file").write_text("x")
    rc, err = _cli(["export", str(tmp_path / "n.ipynb"), "--out", str(tmp_path / "a-file" / "site")], capsys)
    assert rc == 2 and "argument --out: cannot write into" in err and "a-file" in err


def test_cli_names_a_broken_model_directory_in_one_line(tiny_dir, tmp_path, capsys):
    path = _variant(tiny_dir, tmp_path, _drop_weights)
    rc, err = _cli(["train", "--model", path, "--strategy", "probe", "--train-size", "16",
                    "--runs-dir", str(tmp_path / "runs")], capsys)
    last = err.strip().splitlines()[-1]  # argparse's usage, then the one error line
    assert rc == 2 and last.startswith("tunekit train: error: argument --model:") and "no weights" in last


def test_cli_a_misspelt_data_name(tiny_dir, tmp_path, capsys):
    rc, err = _cli(["train", "--model", tiny_dir, "--data", "rotten-tomatoes", "--runs-dir", str(tmp_path)], capsys)
    assert rc == 2 and "did you mean 'rotten_tomatoes'" in err


# ----- the rest of the public API -----------------------------------------------------------------
@pytest.fixture
def full_run(tiny, small, fast):
    return tk.train(tiny, small, tk.Full(), **fast)


def test_bad_arguments_across_the_api(full_run, small, tmp_path):
    (tmp_path / "a-file").write_text("x")
    cases = [
        (lambda: tk.evaluate(full_run, small, size=-1), "size must be a positive integer"),
        (lambda: tk.inspect.update_spectra([full_run], top_k=0), "top_k must be a positive integer"),
        (lambda: tk.inspect.update_spectra([full_run], eps=-1), "eps must be a number in"),
        (lambda: tk.report.write_report([full_run], tmp_path / "a-file" / "r.html"), "cannot create the folder"),
        (lambda: tk.report.write_report([full_run], tmp_path), "is a folder"),
        (lambda: tk.Trainer(full_run.model, small, tk.Probe()).add_callback("step", 5), "must be a function"),
    ]
    for call, words in cases:
        with pytest.raises(ConfigError, match=words):
            call()


@pytest.mark.parametrize("content, words", [("{bad", "not a Jupyter notebook"), ('{"cells": 5}', "not a Jupyter notebook")])
def test_export_a_file_that_is_not_a_notebook(tmp_path, capsys, content, words):
    pytest.importorskip("nbformat")
    (tmp_path / "n.ipynb").write_text(content)
    rc, err = _cli(["export", str(tmp_path / "n.ipynb"), "--out", str(tmp_path / "site")], capsys)
    assert rc == 2 and words in err and "n.ipynb" in err


def test_the_post_training_tab_says_a_bad_student_in_words(tiny_dir, small, tmp_path):
    pytest.importorskip("ipywidgets")
    lab = tk.Lab(model=tiny_dir, data=small, runs_dir=str(tmp_path / "runs"), train_size=32, eval_size=16)
    lab.controls.kind_w.value = "full"
    assert lab.train(wait=True)
    post = lab.runs.post
    post.run_w.value = lab.last_run
    post.op_w.value = "distil into fewer blocks"
    post.student_w.value = "0, two"
    assert post.apply() is False
    assert "student blocks must be block numbers" in post.status.value and not post.running


# ----- records ------------------------------------------------------------------------------------
def test_records_that_cannot_say_what_they_trained(full_run, tmp_path):
    import shutil
    with pytest.raises(tk.RunRecordError, match="folder's path"):
        tk.load_run(5)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(tk.RunRecordError, match="is a file"):
        tk.load_run(tmp_path / "f.txt")
    copy = tmp_path / "copy"
    shutil.copytree(full_run.path, copy)
    cfg = json.loads((copy / "config.json").read_text())
    del cfg["model"]
    (copy / "config.json").write_text(json.dumps(cfg))
    run = tk.load_run(copy)
    assert run.summary["status"] == "completed"  # it still lists and reads
    with pytest.raises(tk.RunRecordError, match="does not say which model"):
        run.load_model()
    with pytest.raises(ConfigError, match="trains on"):
        full_run.load_model(device="xpu")
    assert isinstance(tk.RunRecordError("x"), tk.TunekitError)


def test_run_export_into_a_folder_that_cannot_be_written(full_run, tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ConfigError, match="cannot be written"):
        full_run.export(tmp_path / "a-file" / "out")
