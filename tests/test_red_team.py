"""Issue 22: the cases a red team found on main, each fixed where the value enters tunekit.
(The property-based fuzz of the same surface is in tests/test_fuzz_api.py and test_fuzz_records.py.)"""
from __future__ import annotations

import json

import pytest

import tunekit as tk
from tunekit.config import ConfigError


def _cli(argv, capsys):
    from tunekit.cli import main
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dir, small):
    """One fully fine-tuned tiny run, shared by the tests that only read it."""
    runs = tmp_path_factory.mktemp("runs")
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    return tk.train(model, small, tk.Full(), runs_dir=str(runs), train_size=64, batch_size=16, progress=False,
                    evals_per_epoch=1, lr=1e-3)


def _relabelled(small, names, order=None):
    """``small`` with its classes called ``names`` (in ``order`` of the original ids)."""
    order = order or list(range(len(names)))
    frames = {s: small.split(s).assign(label=lambda d: d["label"].map(lambda i: names[order[i]]))
              for s in ("train", "validation", "test")}
    df = tk.data.TextDataset("relabelled", frames["train"], frames["validation"], frames["test"], names)
    for s in ("train", "validation", "test"):  # numbered as from_dataframe numbers them: sorted names
        ids = {n: i for i, n in enumerate(names)}
        setattr(df, s, frames[s].assign(label=frames[s]["label"].map(ids)))
    return df


# ----- labels are matched by name, never by count ----------------------------------------------------
def test_the_same_label_names_in_another_order_are_renumbered(trained, small):
    names = list(small.label_names)
    swapped = _relabelled(small, names[::-1], order=[1, 0])  # the same classes, ids swapped
    assert swapped.label_names == names[::-1]
    assert (swapped.test["label"] != small.test["label"]).all()
    same = tk.evaluate(trained, small, split="test")
    renumbered = tk.evaluate(trained, swapped, split="test")
    assert renumbered["accuracy"] == same["accuracy"] and renumbered["loss"] == pytest.approx(same["loss"])


def test_other_label_names_of_the_same_count_are_refused_naming_both(trained, small, capsys, tmp_path):
    other = _relabelled(small, ["spam", "ham"])
    both = rf"\['spam', 'ham'\] are not the model's \['{small.label_names[0]}', '{small.label_names[1]}'\]"
    for call in (lambda: tk.evaluate(trained, other, split="test"),
                 lambda: tk.prune(trained, 0.5, data=other),
                 lambda: tk.distil(trained, student=[0], data=other, epochs=1, train_size=16)):
        with pytest.raises(ConfigError, match=both):
            call()
    assert [r.name for r in tk.list_runs(trained.path.parent)] == [trained.name]  # nothing written
    csv = tmp_path / "other.csv"
    other.test.assign(label=other.test["label"].map({0: "spam", 1: "ham"})).to_csv(csv, index=False)
    rc, err = _cli(["evaluate", trained.path, "--data", csv, "--split", "test"], capsys)
    last = err.strip().splitlines()[-1]  # argparse's usage, then the one error line
    assert rc == 2 and last.startswith("tunekit evaluate: error: argument --data:")
    assert f"are not the model's {small.label_names}" in last


def test_integer_labels_are_named_by_label_names_in_order(trained, small, tmp_path):
    csv = tmp_path / "numbers.csv"
    small.test.to_csv(csv, index=False)  # labels 0 / 1
    numbers = tk.data.from_csv(csv, validation_size=0, test_size=0.5)
    with pytest.raises(ConfigError, match="labels are numbers: name them in the model's order"):
        tk.evaluate(trained, numbers, split="test")
    named = tk.data.from_csv(csv, label_names=small.label_names, validation_size=0, test_size=0.5)
    assert named.label_names == small.label_names
    assert sorted(named.test["text"]) != [] and tk.evaluate(trained, named, split="test")["examples"] == len(named.test)


def test_data_with_some_of_the_models_classes_is_renumbered_into_them(trained, small):
    only_positive = _relabelled(small, small.label_names[::-1], order=[1, 0])
    assert tk.evaluate(trained, only_positive, split="test")["examples"] == len(small.test)


# ----- the CLI names the option the command has -------------------------------------------------------
def test_train_names_its_own_strategy_option(tiny_dir, tmp_path, capsys):
    for spec in ("lora:0", "freeze:99", "nonsense"):
        rc, err = _cli(["train", "--model", tiny_dir, "--strategy", spec, "--train-size", "16",
                        "--runs-dir", tmp_path / "runs"], capsys)
        last = err.strip().splitlines()[-1]
        assert rc == 2 and "--strategies" not in err, err
        assert last.startswith("tunekit train: error: argument --strategy:"), last


# ----- a run whose weights end non-finite failed ---------------------------------------------------------
def _poison_at(step_or_event):
    """A callback that fills the first weight with nan once the run reaches it."""
    import torch

    def poison(ev):
        if ev.name == "eval" or ev.payload.get("step") == step_or_event:
            with torch.no_grad():
                next(ev.trainer.model.module.parameters()).fill_(float("nan"))
    return poison


@pytest.mark.parametrize("event", ["step", "eval"])
def test_weights_that_end_nan_fail_the_run(tiny, small, fast, event):
    steps = 64 // 16
    callbacks = {event: _poison_at(steps)}  # "step": before the last evaluation; "eval": after it
    with pytest.raises(tk.TrainingError, match="nan") as caught:
        tk.train(tiny, small, tk.Full(), callbacks=callbacks, **{**fast, "evals_per_epoch": 1})
    run = caught.value.run
    assert run.status == "failed" and "nan" in run.summary["reason"]
    assert tk.load_run(run.path).status == "failed"


def test_cli_a_run_whose_last_step_breaks_the_weights_exits_1(tiny_dir, tmp_path, capsys):
    from tunekit.cli import main
    rc = main(["train", "--model", tiny_dir, "--strategy", "full", "--train-size", "16", "--batch-size", "16",
               "--eval-size", "16", "--lr", "1e38", "--no-progress", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "nan" in err, err
    (run,) = tk.list_runs(tmp_path / "runs")
    assert run.status == "failed"


# ----- a record rebuilds the head its model started with ------------------------------------------------
def test_a_pruned_model_loaded_with_a_seed_reloads_the_head_it_measured(tiny_dir, small, tmp_path):
    import torch
    model = tk.load_model(tiny_dir, label_names=small.label_names, seed=5)
    head = {k: v.clone() for k, v in model.hf.classifier.state_dict().items()}
    pruned = tk.prune(model, 0.3, data=small, runs_dir=str(tmp_path / "runs"))
    assert pruned.config["model"]["seed"] == 5
    again = tk.load_run(pruned.path).load_model()
    for k, v in again.hf.classifier.state_dict().items():
        assert torch.equal(v, head[k]), k
    measured = tk.evaluate(again, small, split="validation", precision="fp32", device="cpu")
    assert measured["loss"] == pytest.approx(pruned.summary["val_loss"], rel=1e-5)


# ----- no pickle is ever loaded -----------------------------------------------------------------------
def test_a_pickle_only_model_folder_is_refused_with_a_conversion_that_works(tiny_dir, small, tmp_path):
    import shlex
    import shutil
    import subprocess
    import sys

    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_dir, folder)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(tk.ModelNotFoundError, match="only as a pickle") as caught:
        tk.load_model(str(folder), label_names=small.label_names)
    command = shlex.split(str(caught.value).split("convert it once: ", 1)[1])
    assert command[:2] == ["python", "-c"]
    subprocess.run([sys.executable, "-c", command[2]], check=True)  # the user's python, here the tests' one
    model = tk.load_model(str(folder), label_names=small.label_names)
    loaded = model.hf.base_model.state_dict()  # the checkpoint is a bare BertModel's
    assert sum(k in loaded for k in state) >= len(state) - 2  # all but a pooler / position-id buffer
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k in loaded)


def test_an_adapter_record_holding_a_pickle_is_refused(tiny_dir, small, fast):
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    run = tk.train(model, small, tk.LoRA(rank=2), **fast)
    adapter = run.path / "adapter"
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    with pytest.raises(tk.RunRecordError, match="adapter_model.bin, a pickle, which tunekit never loads"):
        tk.load_run(run.path).load_model()


# ----- post-training: inputs refused before a record, interrupts read stopped -----------------------------
def test_post_training_arguments_refused_in_words(trained, small):
    cases = [
        (lambda: tk.prune(trained, amount=2), "amount is for method='heads' or 'neurons'"),
        (lambda: tk.distil(trained, loss="", data=small), "loss must name at least one term"),
        (lambda: tk.distil(trained, loss=" + ", data=small), "loss must name at least one term"),
        (lambda: tk.distil(trained, loss=[], data=small), "loss must name at least one term"),
        (lambda: tk.distil(trained, temperature=float("inf"), data=small), "temperature must be a finite number"),
    ]
    for call, words in cases:
        with pytest.raises(ConfigError, match=words):
            call()
    assert [r.name for r in tk.list_runs(trained.path.parent)] == [trained.name]


def test_a_refused_input_inside_an_operation_leaves_no_record(trained, small, monkeypatch):
    from tunekit.post import pruning

    def refuse(*a, **k):
        raise tk.data.DataError("data: refused while measuring")
    monkeypatch.setattr(pruning, "before_and_after", refuse)
    with pytest.raises(tk.data.DataError, match="refused while measuring"):
        tk.prune(trained, 0.5, data=small)
    assert [r.name for r in tk.list_runs(trained.path.parent)] == [trained.name]


def test_ctrl_c_in_prune_leaves_a_stopped_record(trained, small, monkeypatch, tmp_path):
    from tunekit.post import pruning

    def interrupt(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(pruning, "before_and_after", interrupt)
    with pytest.raises(KeyboardInterrupt):
        tk.prune(trained, 0.5, data=small, runs_dir=str(tmp_path))
    (record,) = tk.list_runs(tmp_path)
    assert record.status == "stopped" and "interrupted" in record.summary["reason"]


def test_measure_a_run_trained_on_your_own_data(tiny_dir, small, fast):
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    run = tk.train(model, small, tk.Probe(), **fast)  # small is not a built-in data set
    with pytest.raises(ConfigError, match="pass data="):
        tk.measure(run)
    out = tk.measure(run, data=small)
    assert out["params"] > 0 and out["latency_ms"] > 0
    assert tk.load_run(run.path).summary["size_mb"] == out["size_mb"]
    assert tk.measure(tk.load_model(tiny_dir, label_names=small.label_names), data=small)["params"] == out["params"]


# ----- data and lengths at the boundary -------------------------------------------------------------------
def test_empty_and_binary_text_inputs_are_named(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "nul.txt").write_bytes(b"one review\n\x00\x00\nanother\n")
    (tmp_path / "nul.csv").write_bytes(b"text,label\n\x00a,1\nb\x00,0\n")
    cases = [(lambda: tk.data.from_texts([]), "got no texts"),
             (lambda: tk.data.from_texts(tmp_path / "empty.txt"), "empty.txt' holds no texts"),
             (lambda: tk.data.from_texts(tmp_path / "nul.txt"), "nul.txt' holds NUL bytes"),
             (lambda: tk.data.from_csv(tmp_path / "nul.csv"), "nul.csv' holds NUL bytes")]
    for call, words in cases:
        with pytest.raises(tk.DataError, match=words):
            call()


def test_texts_that_differ_only_in_whitespace_are_one_text():
    import pandas as pd
    texts = [f"review number {i} was fine" for i in range(40)]
    df = pd.DataFrame({"text": texts + [t.replace(" ", "  ") + "\n" for t in texts], "label": [i % 2 for i in range(80)]})
    ds = tk.data.from_dataframe(df, validation_size=0.2, test_size=0.2)
    assert ds.info["duplicates_dropped"] == 40
    seen = [" ".join(t.split()) for s in ("train", "validation", "test") for t in ds.split(s)["text"]]
    assert len(seen) == len(set(seen)) == 40
    clash = df.assign(label=[0] * 40 + [1] * 40)
    with pytest.raises(tk.DataError, match="appear with different labels"):
        tk.data.from_dataframe(clash)
    lines = tk.data.from_texts(texts + [" " + t.replace(" ", "\t") for t in texts])
    assert sum(len(lines.split(s)) for s in ("train", "validation", "test")) == 40
    exact = tk.data.from_dataframe(df, validation_size=0.2, test_size=0.2, dedup="exact")  # the old rule
    assert exact.info == {"duplicates_dropped": 0, "dedup": "exact"} and ds.info["dedup"] == "words"
    with pytest.raises(ConfigError, match="dedup must be one of"):
        tk.data.from_dataframe(df, dedup="whitespace")


@pytest.mark.slow
def test_a_record_rebuilds_its_built_in_data_with_its_seed_sizes_and_duplicate_rule(tmp_path):
    from tunekit.runs import Run
    bbc = tk.data.bbc_news(seed=3, validation_size=50, test_size=0.1)
    old = tk.data.bbc_news(seed=3, validation_size=50, test_size=0.1, dedup="exact")
    assert old.describe()["sizes"] != bbc.describe()["sizes"]  # two articles differ only in whitespace
    for data, entry in ((bbc, bbc.describe()), (old, {k: v for k, v in old.describe().items() if k != "dedup"})):
        path = tmp_path / data.info["dedup"]
        path.mkdir()
        (path / "config.json").write_text(json.dumps({"kind": "train", "data": entry, "model": {}}))
        (path / "summary.json").write_text(json.dumps({"status": "completed"}))
        rebuilt = Run(path).dataset()
        assert rebuilt.seed == 3 and rebuilt.describe()["sizes"] == data.describe()["sizes"]
        assert rebuilt.validation["text"].tolist() == data.validation["text"].tolist()
    (path / "config.json").write_text(json.dumps({"kind": "train", "model": {}, "data": {
        **entry, "sizes": {"train": 1, "validation": 50, "test": 213}}}))
    with pytest.warns(UserWarning, match="not the .* this run recorded"):
        Run(path).dataset()


def test_max_length_is_refused_below_what_an_example_needs_and_lowered_above_the_positions(tiny, small, fast):
    for short in (1, 2):
        with pytest.raises(ConfigError, match="max_length must be at least 3 for this model"):
            tk.train(tiny, small, tk.Probe(), max_length=short, **fast)
        with pytest.raises(ConfigError, match="max_length must be at least 3"):
            tk.evaluate(tiny, small, max_length=short, size=8)
    assert tk.list_runs(fast["runs_dir"]) == []  # refused before any record
    with pytest.warns(UserWarning, match="max_length=100000 is more than the 512 tokens this model takes"):
        run = tk.train(tiny, small, tk.Probe(), max_length=100_000, **fast)
    assert run.config["train"]["max_length"] == 512 and run.status == "completed"


# ----- numpy scalars are numbers --------------------------------------------------------------------------
def test_numpy_scalars_are_taken_as_the_numbers_they_hold(tiny, small, fast, trained):
    import numpy as np
    cfg = tk.TrainConfig(epochs=np.int64(1), lr=np.float32(1e-3), warmup=np.float64(0.1), seed=np.int32(3))
    assert type(cfg.epochs) is int and type(cfg.lr) is float and type(cfg.seed) is int
    lora = tk.LoRA(rank=np.int64(4), alpha=np.float32(8), dropout=np.float16(0.0))
    assert lora.describe()["rank"] == 4 and type(lora.rank) is int
    assert list(tk.Freeze(train_blocks=[np.int64(1)]).train_blocks) == [1]
    run = tk.train(tiny, small, lora, **{**fast, "train_size": np.int64(32), "seed": np.uint8(2)})
    assert run.config["train"]["train_size"] == 32 and run.config["train"]["seed"] == 2
    assert tk.evaluate(run, small, size=np.int64(8))["examples"] == 8
    pruned = tk.prune(trained, np.float32(0.25), data=small)
    assert pruned.config["strategy"]["sparsity"] == 0.25
    with pytest.raises(ConfigError, match="LoRA.rank must be an integer >= 1"):
        tk.LoRA(rank=np.float64(2.5))


# ----- an export that fails part-way leaves nothing ----------------------------------------------------
@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("the card broke")])
def test_an_export_whose_card_fails_leaves_no_folder(trained, tmp_path, monkeypatch, error):
    from tunekit import restore

    def broken_card(*a, **k):
        raise error
    monkeypatch.setattr(restore, "write_card", broken_card)
    target = tmp_path / "exported"
    with pytest.raises(ConfigError if isinstance(error, OSError) else RuntimeError):
        trained.export(target)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor the temporary one beside it
    target.mkdir()  # an empty folder given is kept empty too
    with pytest.raises(ConfigError if isinstance(error, OSError) else RuntimeError):
        trained.export(target)
    assert [p.name for p in tmp_path.iterdir()] == ["exported"] and not any(target.iterdir())
    monkeypatch.undo()
    assert (trained.export(target) / "README.md").is_file()


# ----- the CLI's output is tunekit's alone, and one table reads a record one way -----------------------------
@pytest.mark.slow
def test_compare_then_runs_print_only_tunekits_lines_and_the_same_lr(tiny_dir, tmp_path):
    import os
    import subprocess
    import sys

    def cli(*argv):
        env = {**os.environ, "PYTHONWARNINGS": "default"}  # every warning shows, as in a terminal
        done = subprocess.run([sys.executable, "-m", "tunekit", *map(str, argv)], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stdout, done.stderr

    out, err = cli("compare", "--model", tiny_dir, "--strategies", "probe,lora:2,full", "--train-size", "16",
                   "--eval-size", "16", "--no-progress", "--runs-dir", "runs", "--report", "r.html")
    for line in (out + err).splitlines():
        assert "Warning" not in line and "warn(" not in line and "LOAD REPORT" not in line, line
    assert all(line.startswith("tunekit: ") for line in err.splitlines() if line.strip()), err

    def lr_column(text):
        lines = [ln for ln in text.splitlines() if "completed" in ln]
        header = next(ln for ln in text.splitlines() if ln.lstrip().startswith("run ") and " lr " in ln)
        end = header.index(" lr ") + 3  # to_string right-aligns each value under its header
        return {ln.split()[-1]: ln[:end].split()[-1] for ln in lines}  # run name (the last column): lr
    printed = lr_column(out)
    assert list(printed.values()) == ["0.01", "0.001", "0.0001"], out  # compare prints in the order asked
    listed, err = cli("runs", "--runs-dir", "runs")  # oldest first: within one second, by the record's number
    assert list(lr_column(listed).items()) == list(printed.items()) and err.strip() == "", (listed, err)


def test_the_default_learning_rates_are_one_table():
    from tunekit.strategies import REGISTRY
    from tunekit.strategy_registry import DEFAULT_LR
    assert {name: cls.default_lr for name, cls in REGISTRY.items() if name in DEFAULT_LR} == DEFAULT_LR


def test_head_pruning_a_model_with_one_head_per_block_says_so(tiny_dir, small, tmp_path):
    import shutil
    folder = tmp_path / "one-head"
    shutil.copytree(tiny_dir, folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "num_attention_heads": 1}))
    model = tk.load_model(str(folder), label_names=small.label_names)
    with pytest.raises(ConfigError, match=r"have 1 attention head\(s\).*no head to prune; try method='neurons'"):
        tk.prune(model, method="heads", amount=1, data=small, runs_dir=str(tmp_path / "runs"))
    assert tk.list_runs(tmp_path / "runs") == []
