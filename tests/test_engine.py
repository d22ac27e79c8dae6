"""The engine's loop: length-grouped batches, the frozen-prefix cache, the loss read back
only when logged, and several processes (2 on the CPU, gloo over loopback)."""
import json
import os
import subprocess
import sys

import pytest
import torch

import tunekit as tk
from tunekit.batches import LengthGroupedBatches, loader
from tunekit.tiny import make_tiny


def _lengths(n=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(3, 120, (n,), generator=g)).tolist()


def test_length_grouped_batches_cover_every_example_once_and_pad_less():
    lengths = _lengths()
    grouped = LengthGroupedBatches(lengths, 16, group_by_length=True, seed=1)
    plain = LengthGroupedBatches(lengths, 16, group_by_length=False, seed=1)
    for sampler in (grouped, plain):
        batches = list(sampler)
        assert len(batches) == len(sampler) == 32
        assert sorted(i for b in batches for i in b) == list(range(500))

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded(list(grouped)) < 0.6 * padded(list(plain))
    first = list(grouped)[0]
    assert max(lengths[i] for i in first) == max(lengths)  # the longest batch comes first


def test_length_grouping_is_seeded_and_reshuffles_every_pass():
    lengths = _lengths()
    a = LengthGroupedBatches(lengths, 16, seed=3)
    b = LengthGroupedBatches(lengths, 16, seed=3)
    first, second = list(a), list(a)
    assert first == list(b) and second == list(b)  # the same seed gives the same passes
    assert first != second                          # each pass draws a new order
    assert list(LengthGroupedBatches(lengths, 16, seed=4)) != first


def test_processes_share_each_global_batch():
    lengths = _lengths(101)
    whole = [b for b in LengthGroupedBatches(lengths, 10, seed=0) if len(b) > 1]
    shares = [list(LengthGroupedBatches(lengths, 10, seed=0, rank=r, world_size=2)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 10  # the 1-example remainder cannot be split: left out
    for g, s0, s1 in zip(whole, *shares):
        assert sorted(s0 + s1) == sorted(g) and len(s0) == len(s1)


def test_the_loader_pads_each_batch_to_its_longest_example(tiny, small):
    enc = tiny.task.encode(tiny.tokenizer, small.train["text"], small.train["label"], 64)
    for batch in loader(enc, 16, shuffle=True, group_by_length=True):
        lengths = batch["attention_mask"].sum(1)
        assert batch["input_ids"].shape[1] == int(lengths.max())
        assert set(batch) >= {"input_ids", "attention_mask", "labels"}


def test_the_loss_is_logged_every_log_every_steps_as_the_mean_since_the_last(tiny, small, fast):
    every = tk.train(tiny, small, tk.Full(), **{**fast, "log_every": 1, "evals_per_epoch": 1})
    m = tk.load_model(tiny.source, label_names=small.label_names)
    sparse = tk.train(m, small, tk.Full(), **{**fast, "log_every": 2, "evals_per_epoch": 1})
    per_step = every.history("step")["loss"].tolist()
    logged = sparse.history("step")
    assert logged["step"].tolist() == [2, 4]
    assert logged["loss"].tolist() == pytest.approx([sum(per_step[:2]) / 2, sum(per_step[2:]) / 2], rel=1e-5)


@pytest.mark.parametrize("family", ["bert", "distilbert", "deberta-v2", "gpt2", "llama"])
def test_a_cached_frozen_prefix_trains_exactly_like_recomputing_it(tmp_path_factory, small, fast, family):
    path = make_tiny(family, tmp_path_factory.mktemp(family), layers=3)
    curves, runs = [], []
    for budget in (4096.0, 0.0):
        m = tk.load_model(path, label_names=small.label_names)
        run = tk.train(m, small, tk.Freeze.top(1), precision="fp32", cache_budget_mb=budget,
                       epochs=2, **fast)
        curves.append(run.history("step")["loss"].tolist())
        runs.append(run)
    cached, recomputed = (r.summary["cache"][0] for r in runs)
    assert cached["kind"] == "prefix" and cached["blocks"] == 2 and cached["mb"] > 0
    assert recomputed["kind"] is None and "over cache_budget_mb=0" in recomputed["reason"]
    assert curves[0] == pytest.approx(curves[1], rel=1e-4, abs=1e-5)
    assert runs[0].summary["val_accuracy"] == runs[1].summary["val_accuracy"]
    assert runs[0].summary["memory"]["cache_mb"] == cached["mb"]


def test_nothing_is_cached_when_the_bottom_block_trains(tiny, small, fast):
    run = tk.train(tiny, small, tk.LoRA(rank=2), **fast)
    assert run.summary["cache"] == [{"kind": None, "blocks": 0, "mb": 0.0, "build_s": run.summary["cache"][0]["build_s"]}]


def test_a_probe_caches_its_features_within_the_budget_and_recomputes_above_it(tiny, small, fast):
    cached = tk.train(tiny, small, tk.Probe(), precision="fp32", **fast)
    m = tk.load_model(tiny.source, label_names=small.label_names)
    recomputed = tk.train(m, small, tk.Probe(), precision="fp32", cache_budget_mb=0, **fast)
    assert cached.summary["cache"][0]["kind"] == "features"
    assert "probe's features" in recomputed.summary["cache"][0]["reason"]
    assert cached.summary["val_accuracy"] == recomputed.summary["val_accuracy"]
    assert cached.history("step")["loss"].tolist() == pytest.approx(
        recomputed.history("step")["loss"].tolist(), rel=1e-4)


def test_the_record_says_which_precision_ran_and_why(tiny, small, fast):
    run = tk.train(tiny, small, tk.Probe(), precision="fp32", **fast)
    assert run.config["precision"] == {"requested": "fp32", "autocast": None, "why": "fp32 (asked for)"}
    assert run.config["world_size"] == 1 and run.config["per_process_batch_size"] == 16
    m = tk.load_model(tiny.source, label_names=small.label_names)
    auto = tk.train(m, small, tk.Probe(), **fast)
    assert auto.config["precision"]["requested"] == "auto" and auto.config["precision"]["why"].startswith(
        "bf16" if auto.config["precision"]["autocast"] else "fp32")


def _no_dropout_model(tmp_path, tiny_dir):
    import shutil
    path = tmp_path / "tiny-no-dropout"
    shutil.copytree(tiny_dir, path)
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("strategy", ["full", "lora:2"])
def test_two_processes_train_one_run_like_one_process_at_the_same_global_batch(tmp_path, tiny_dir, small,
                                                                                strategy):
    """``torchrun --nproc_per_node 2 -m tunekit train``: gloo over loopback on the CPU."""
    model = _no_dropout_model(tmp_path, tiny_dir)
    csv = tmp_path / "reviews.csv"
    small.train.iloc[:64].to_csv(csv, index=False)
    args = ["train", "--model", str(model), "--data", str(csv), "--strategy", strategy, "--batch-size", "8",
            "--train-size", "32", "--eval-size", "12", "--max-length", "32", "--precision", "fp32",
            "--no-progress", "--epochs", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    script = os.path.join(os.path.dirname(__file__), "ddp_cli.py")
    runs = {}
    for name, launcher in [("one", [sys.executable, script]),
                           ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc_per_node", "2", script])]:
        digests = tmp_path / f"digests-{name}"
        digests.mkdir()
        proc = subprocess.run(launcher + args + ["--runs-dir", str(tmp_path / name), "--name", name],
                              env={**env, "DIGEST_DIR": str(digests)}, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        runs[name] = (tk.list_runs(tmp_path / name), sorted(digests.iterdir()))
    (one,), one_digests = runs["one"]
    two_runs, two_digests = runs["two"]
    assert len(two_runs) == 1, "the main process alone writes the record"
    two = two_runs[0]
    assert two.status == "completed" and two.config["world_size"] == 2
    assert two.config["per_process_batch_size"] == 4 and two.config["train"]["batch_size"] == 8
    assert one.config["world_size"] == 1
    # every process ends with the same parameters
    rank0, rank1 = (json.loads(p.read_text()) for p in two_digests)
    assert rank0 == rank1
    # the curve of 2 x 4 equals the curve of 1 x 8, and the gathered validation metrics match
    assert two.history("step")["loss"].tolist() == pytest.approx(one.history("step")["loss"].tolist(),
                                                                 rel=1e-4, abs=1e-5)
    assert two.summary["val_loss"] == pytest.approx(one.summary["val_loss"], rel=1e-4)
    assert two.summary["val_accuracy"] == one.summary["val_accuracy"]
    assert two.summary["samples"] == one.summary["samples"] == 32


def test_compile_trains_the_same_model_as_eager(tmp_path, tiny_dir, small, fast):
    """``compile=True`` goes through torch.compile (inductor on the CPU); with dropout off (the
    compiled graph draws its own dropout masks) the loss curve is the eager one. dynamo's counters
    show that the compiled run captured the model as a graph (and the eager one nothing), so the
    setting is not only echoed."""
    import torch._dynamo
    from torch._dynamo.utils import counters
    model = _no_dropout_model(tmp_path, tiny_dir)
    curves = []
    for compiled in (False, True):
        m = tk.load_model(str(model), label_names=small.label_names)
        torch._dynamo.reset()  # forget graphs (and counts) of earlier tests
        counters.clear()
        run = tk.train(m, small, tk.Full(), compile=compiled, precision="fp32", max_length=32, **fast)
        assert run.status == "completed" and run.config["train"]["compile"] is compiled
        curves.append(run.history("step")["loss"].tolist())
        # dynamo's own counts: what it captured while this run trained
        frames, stats, aot = counters["frames"], counters["stats"], counters["aot_autograd"]
        if compiled:  # the model's forward became a graph, with its backward through AOT autograd
            assert frames["ok"] >= 1 and stats["unique_graphs"] >= 1 and aot["total"] >= 1, dict(counters)
            assert stats["calls_captured"] >= 100, dict(stats)  # the whole model, not a scrap of it
        else:
            assert not frames["total"] and not stats["unique_graphs"], dict(counters)
    assert curves[1] == pytest.approx(curves[0], rel=1e-4, abs=1e-5)
