import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import tunekit as tk
from tunekit.runs import RunWriter, list_runs, sanitize_name

SENTENCES = ["a warm, funny and moving film", "the plot makes no sense and the acting is wooden"]


def _logits(model):
    model.module.eval()
    enc = model.tokenize(SENTENCES)
    with torch.no_grad():
        return model.logits(enc["input_ids"], enc["attention_mask"])


@pytest.mark.parametrize("strategy", [tk.Full(), tk.Freeze(train_blocks=[1]), tk.Probe(pooling="mean"),
                                      tk.LoRA(rank=2), tk.LPFT()], ids=lambda s: s.label)
def test_runs_reload_in_a_new_process_with_the_same_logits(tiny_dir, small, fast, strategy, tmp_path):
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    run = tk.train(model, small, strategy, **fast)
    expected = _logits(model)
    script = textwrap.dedent(f"""
        import json, torch, tunekit as tk
        runs = tk.list_runs({str(tmp_path / 'runs')!r})
        assert [r.name for r in runs] == [{run.name!r}], runs
        m = runs[0].load_model()
        enc = m.tokenize({SENTENCES!r})
        with torch.no_grad():
            print(json.dumps(m.logits(enc["input_ids"], enc["attention_mask"]).tolist()))
        print(runs[0].status, runs[0].summary["steps"])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    torch.testing.assert_close(torch.tensor(json.loads(lines[-2])), expected, atol=1e-5, rtol=1e-4)
    assert lines[-1] == f"completed {run.summary['steps']}"


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # peft reads it
def test_adapter_loads_in_plain_peft_with_identical_logits(tiny_dir, small, fast):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    run = tk.train(model, small, tk.LoRA(rank=4), **fast)
    ours = _logits(model)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_dir, num_labels=2)
    plain = PeftModel.from_pretrained(base, str(run.path / "adapter")).eval()
    enc = model.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = plain(**enc).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)
    assert json.loads((run.path / "adapter" / "adapter_config.json").read_text())["r"] == 4


def test_initial_values_of_new_tensors_are_kept(tiny_dir, small, fast):
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    head0 = model.hf.classifier.weight.detach().clone()
    run = tk.train(model, small, tk.LoRA(rank=2), **fast)
    init = run.initial_tensors()
    assert set(init) == {"classifier.weight", "classifier.bias"}  # canonical names, the new head only
    assert torch.equal(init["classifier.weight"], head0)  # base weights come from the checkpoint; an
    # adapter needs no start values: without it the model is its start


@pytest.mark.parametrize("bad,good", [("../../etc/passwd", "etc-passwd"), ("my run/1", "my-run-1"),
                                      ("<script>x", "script-x"), ("ok_name-1.2", "ok_name-1.2")])
def test_run_names_are_sanitised(bad, good):
    assert sanitize_name(bad) == good


def test_name_collisions_get_a_suffix_and_stay_inside_the_root(tmp_path):
    a = RunWriter(tmp_path, "../x", {})
    b = RunWriter(tmp_path, "../x", {})
    assert (a.name, b.name) == ("x", "x-2")
    assert a.path.parent == tmp_path and b.path.parent == tmp_path
    with pytest.raises(tk.ConfigError, match="no usable characters"):
        RunWriter(tmp_path, "../", {})


def test_corrupt_records_are_skipped_with_a_warning(tmp_path):
    good = RunWriter(tmp_path, "good", {"strategy": {"name": "full"}})
    good.finish("completed")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{ not json")
    (bad / "summary.json").write_text("{}")
    (tmp_path / "not-a-run").mkdir()
    with pytest.warns(UserWarning, match="skipping run record"):
        runs = list_runs(tmp_path)
    assert [r.name for r in runs] == ["good"]


def test_one_damaged_record_never_hides_the_others(tmp_path):
    """Bytes that are not UTF-8 in metrics.jsonl, a `started` that is not a string and a JSON
    number too long to parse: the good records still list, and so does the table."""
    good = RunWriter(tmp_path, "good", {"strategy": {"name": "full"}})
    good.log("step", {"step": 1, "loss": 0.5})
    good.finish("completed")
    bytes_ = RunWriter(tmp_path, "bytes", {})
    bytes_.log("step", {"step": 1, "loss": 0.7})
    bytes_.finish("completed")
    with open(bytes_.path / "metrics.jsonl", "ab") as f:
        f.write(b'{"event": "step", "step": 2, "loss": "\xff\xfe"}\n' + b"\xff\xfe\n" + b'{"event": "step", "step": 3, "loss": 9' + b"9" * 5000 + b"}\n")
    started = RunWriter(tmp_path, "started", {})
    started.finish("completed", started=12345)
    huge = tmp_path / "huge"
    huge.mkdir()
    (huge / "config.json").write_text('{"params": {"total": 1' + "0" * 5000 + "}}")
    (huge / "summary.json").write_text("{}")
    with pytest.warns(UserWarning, match=r"skipping run record: .*huge.*config.json is corrupt"):
        runs = list_runs(tmp_path)
    assert sorted(r.name for r in runs) == ["bytes", "good", "started"]
    assert tk.load_run(bytes_.path).history("step")["step"].tolist() == [1]  # the unreadable lines are skipped
    assert len(tk.runs.table(runs)) == 3


def test_a_torn_last_metrics_line_is_skipped(tmp_path):
    w = RunWriter(tmp_path, "r", {})
    w.log("step", {"step": 1, "loss": 0.5})
    w.finish("stopped", "stopped by the user at step 1")
    with open(w.path / "metrics.jsonl", "a") as f:
        f.write('{"event": "step", "st')
    run = tk.load_run(w.path)
    assert run.history("step").to_dict("records") == [{"step": 1, "loss": 0.5}]


def test_a_run_whose_process_died_is_reported_as_crashed(tmp_path):
    script = f"from tunekit.runs import RunWriter; RunWriter({str(tmp_path)!r}, 'dead', {{}})"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    run = tk.load_run(tmp_path / "dead")
    assert run.status == "crashed" and "ended before the run finished" in run.summary["reason"]
    assert json.loads((tmp_path / "dead" / "summary.json").read_text())["status"] == "running"


def test_load_run_of_a_missing_directory(tmp_path):
    with pytest.raises(tk.runs.RunRecordError, match="is not a run record"):
        tk.load_run(tmp_path / "nothing")
