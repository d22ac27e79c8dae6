import json
import threading

import pytest
import torch

import tunekit as tk
from tunekit.config import ConfigError
from tunekit.engine import TrainingError
from tunekit.metrics import macro_f1


def _state(model):
    return {n: p.detach().clone() for n, p in model.hf.named_parameters()}


def test_events_arrive_in_order_with_payloads(tiny, small, fast):
    seen = []
    cbs = {e: (lambda ev: seen.append((ev.name, ev.payload))) for e in tk.engine.EVENTS}
    run = tk.train(tiny, small, tk.Full(), epochs=2, callbacks=cbs, **fast)
    names = [n for n, _ in seen]
    assert names[0] == "train_start" and names[1] == "phase_start" and names[-1] == "train_end"
    assert names.count("step") == 8 and names.count("eval") == 4 and names.count("epoch_end") == 2
    start = seen[0][1]
    assert start["params"]["trainable"] == tiny.parameter_counts()["trainable"] and start["total_steps"] == 8
    step = next(p for n, p in seen if n == "step")
    assert {"step", "epoch", "loss", "lr", "samples", "elapsed_s", "samples_per_s"} <= set(step)
    ev = next(p for n, p in seen if n == "eval")
    assert 0 <= ev["val_accuracy"] <= 1 and 0 <= ev["val_macro_f1"] <= 1
    assert run.status == "completed"
    # the same events are on disk, one JSON line each
    lines = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert [x["event"] for x in lines] == names


def test_full_run_writes_a_complete_record(tiny, small, fast):
    run = tk.train(tiny, small, tk.Full(), **fast)
    files = {p.name for p in run.path.iterdir()}
    assert {"config.json", "metrics.jsonl", "summary.json", "weights.safetensors", "initial.safetensors"} <= files
    cfg = run.config
    assert cfg["data"]["name"] == "rt-small" and cfg["data"]["seed"] == 0 and cfg["train"]["seed"] == 0
    assert cfg["strategy"] == {"name": "full"} and cfg["model"]["source"] == tiny.source
    assert {"torch", "transformers", "peft", "tunekit", "python"} <= set(cfg["versions"])
    s = run.summary
    assert s["status"] == "completed" and s["steps"] == 4 and s["samples"] == 64
    assert s["samples_per_s"] > 0 and s["memory_kind"] == "measured_tensors"
    # memory from the tensors themselves: fp32 weights, one gradient and two AdamW moments each
    n, mb = sum(p.numel() for p in tiny.hf.parameters()), 4 / 2**20
    buffers = sum(b.numel() * b.element_size() for b in tiny.hf.buffers()) / 2**20
    mem = s["memory"]
    assert mem["weights_mb"] == pytest.approx(n * mb + buffers, abs=0.01)
    assert mem["gradients_mb"] == pytest.approx(n * mb, abs=0.01)
    assert mem["optimizer_mb"] == pytest.approx(2 * n * mb, abs=0.02)  # + AdamW's step counters
    assert 0 < mem["activations_mb"] < 50 and mem["cache_mb"] == 0
    assert s["peak_memory_mb"] == mem["total_mb"] == pytest.approx(sum(
        mem[k] for k in ("weights_mb", "gradients_mb", "optimizer_mb", "activations_mb", "cache_mb")), abs=0.05)
    assert not list(run.path.glob("*.tmp")) and not list(run.path.glob(".*tmp"))


@pytest.mark.parametrize("strategy", [tk.Probe(), tk.Freeze(train_blocks=[1]), tk.LoRA(rank=2)],
                         ids=lambda s: s.label)
def test_frozen_parameters_are_bit_identical_after_training(tiny, small, fast, strategy):
    before = _state(tiny)
    tk.train(tiny, small, strategy, **fast)
    layout = tiny.backbone.layout  # peft's structure says which tensors are the plain model's
    after = {layout.canonical(n): p for n, p in tiny.hf.named_parameters() if layout.role(n) in ("base", "original")}
    assert set(after) == set(before)
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    frozen_groups = {"probe": {"embeddings", "block.0", "block.1", "pooler"},
                     "freeze-train-1": {"embeddings", "block.0"},
                     "lora-r2": {"embeddings", "block.0", "block.1", "pooler", "head"}}[strategy.label]
    for n in before:
        if tiny.group_of(n) in frozen_groups:
            assert n not in changed, f"{n} changed under {strategy.label}"
    if strategy.label != "lora-r2":
        assert any(tiny.group_of(n) == "head" for n in changed)


def test_same_seed_same_run_on_cpu(tiny_dir, small, fast):
    losses = []
    for _ in range(2):
        m = tk.load_model(tiny_dir, label_names=small.label_names, seed=3)
        run = tk.train(m, small, tk.LoRA(rank=2), seed=3, **fast)
        losses.append(run.history("step")["loss"].tolist())
    assert losses[0] == losses[1]


def test_dynamic_padding_pads_only_to_the_longest_in_batch(tiny, small):
    from tunekit.batches import EncodedSplit
    enc = EncodedSplit.encode(tiny.tokenizer, ["short", "a somewhat longer sentence here"], [0, 1], 128)
    b = enc.collate([0, 1])
    assert b["input_ids"].shape == (2, len(enc.input_ids[1]))
    assert b["attention_mask"][0].sum() == len(enc.input_ids[0])


@pytest.mark.parametrize("pooling", ["mean", "model"])
def test_probe_features_are_computed_once(tiny, small, fast, pooling):
    calls = []
    handle = tiny.hf.base_model.register_forward_hook(lambda *a: calls.append(1))
    try:
        tk.train(tiny, small, tk.Probe(pooling=pooling), epochs=3, eval_batch_size=64, **fast)
    finally:
        handle.remove()
    # 64 train + 24 validation examples at 64 per batch: 1 + 1 forward passes, not 3 epochs' worth
    assert len(calls) == 2


def test_lpft_trains_the_head_then_everything(tiny_dir, small, fast):
    m = tk.load_model(tiny_dir, label_names=small.label_names)
    phases = []
    run = tk.train(m, small, tk.LPFT(), callbacks={"phase_start": lambda ev: phases.append(ev.payload)}, **fast)
    assert [p["params"]["trainable"] for p in phases] == [258, m.parameter_counts()["trainable"]]
    assert run.summary["steps"] == 8 and run.status == "completed"


def test_stop_from_another_thread_keeps_a_partial_record(tiny, small, fast):
    trainer = tk.Trainer(tiny, small, tk.Full(), epochs=50, **fast)
    stopped_at = []

    def stop_after_three(ev):
        if ev.payload["step"] == 3:
            threading.Thread(target=trainer.stop).start()
            stopped_at.append(3)
    trainer.add_callback("step", stop_after_three)
    worker = threading.Thread(target=lambda: stopped_at.append(trainer.run()))
    worker.start()
    worker.join(timeout=120)
    run = stopped_at[-1]
    assert run.status == "stopped" and "stopped by the user" in run.summary["reason"]
    assert 3 <= run.summary["steps"] < 10
    assert len(run.history("step")) == run.summary["steps"]
    assert (run.path / "weights.safetensors").is_file() and "val_accuracy" in run.summary


def test_callback_can_stop_a_run(tiny, small, fast):
    def stop(ev):
        raise tk.StopTraining()
    run = tk.train(tiny, small, tk.Probe(), callbacks={"step": stop}, **fast)
    assert run.status == "stopped" and run.summary["steps"] == 1


def test_nan_loss_fails_at_that_step_and_keeps_the_record(tiny, small, fast):
    def poison(ev):
        if ev.payload["step"] == 2:
            with torch.no_grad():
                tiny.hf.classifier.weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="loss became nan at step 3") as e:  # no evaluation before step 4
        tk.train(tiny, small, tk.Full(), callbacks={"step": poison}, **{**fast, "evals_per_epoch": 1})
    run = e.value.run
    assert run.status == "failed" and "step 3" in run.summary["reason"]
    assert len(run.history("step")) == 2 and run.summary["steps"] == 2
    assert not (run.path / "weights.safetensors").exists()  # NaN weights are not kept as a result


def test_a_failing_strategy_does_not_stop_compare(tiny_dir, small, fast):
    def poison(ev):  # make the full fine-tune diverge after its first step
        if ev.trainer.strategy.name == "full":
            with torch.no_grad():
                ev.trainer.model.hf.classifier.bias.fill_(float("inf"))
    with pytest.warns(UserWarning, match="full failed"):
        runs = tk.compare([tk.Probe(), tk.Full(), tk.LoRA(rank=2)], small, model=tiny_dir,
                          callbacks={"step": poison}, **fast)
    assert [r.status for r in runs] == ["completed", "failed", "completed"]


@pytest.mark.parametrize("kw,words", [
    (dict(epochs=0), "epochs must be a positive integer"),
    (dict(lr=-1.0), "lr must be a positive number"),
    (dict(device="cuda:0"), "CUDA is not available"),
])
def test_bad_train_arguments(tiny, small, fast, kw, words):
    if "device" in kw and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match=words):
        tk.train(tiny, small, tk.Full(), **{**fast, **kw})


def test_unwritable_runs_dir_fails_before_training(tiny, small, fast, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="runs_dir .* cannot be written"):
        tk.train(tiny, small, tk.Full(), **{**fast, "runs_dir": str(blocker / "runs")})


def test_label_count_mismatch(tiny_dir, small, fast):
    m = tk.load_model(tiny_dir, num_labels=3)
    with pytest.raises(ConfigError, match=r"are not the model's .*load the model with tk.load_model\(\.\.\., label_names="):
        tk.train(m, small, **fast)


def test_compare_refuses_a_loaded_model(tiny, small):
    with pytest.raises(ConfigError, match="pass the model's name or path"):
        tk.compare([tk.Probe()], small, model=tiny)


def test_macro_f1_matches_hand_computation():
    import numpy as np
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([0, 1, 1, 1, 0])
    # class 0: tp1 fp1 fn1 -> .5; class 1: tp2 fp1 fn0 -> .8; class 2: tp0 fp0 fn1 -> 0
    assert macro_f1(p, y, 3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def _bf16_matmul_works() -> bool:
    try:
        torch.ones(2, 2, dtype=torch.bfloat16) @ torch.ones(2, 2, dtype=torch.bfloat16)
    except RuntimeError:
        return False
    return True


def _train_recording_linear_dtypes(model, small, fast, precision):
    """Train with ``precision``; the dtypes of every nn.Linear output during training steps."""
    dtypes = set()

    def record(module, inputs, output):
        if torch.is_grad_enabled():  # a training step, not the evaluation
            dtypes.add(output.dtype)
    handles = [m.register_forward_hook(record) for m in model.hf.modules() if isinstance(m, torch.nn.Linear)]
    try:
        run = tk.train(model, small, tk.LoRA(rank=2), precision=precision, **fast)
    finally:
        for h in handles:
            h.remove()
    return run, dtypes


@pytest.mark.skipif(not _bf16_matmul_works(), reason="this CPU build cannot multiply bf16 matrices")
def test_bf16_precision_runs_the_matmuls_in_bf16(tiny_dir, small, fast):
    """The CUDA path uses bf16 autocast; precision='bf16' takes the same code on the CPU, and the
    linear layers then compute in bf16 (in fp32 under precision='fp32')."""
    run, dtypes = _train_recording_linear_dtypes(tk.load_model(tiny_dir, label_names=small.label_names),
                                                 small, fast, "bf16")
    assert run.config["precision"]["autocast"] == "bf16"
    assert dtypes == {torch.bfloat16}, f"linear outputs during training: {dtypes}"
    assert run.status == "completed" and all(torch.isfinite(torch.tensor(run.history("step")["loss"].tolist())))
    run, dtypes = _train_recording_linear_dtypes(tk.load_model(tiny_dir, label_names=small.label_names),
                                                 small, fast, "fp32")
    assert run.config["precision"]["autocast"] is None and dtypes == {torch.float32}


def test_keyboard_interrupt_is_recorded_and_propagates(tiny, small, fast, tmp_path):
    def interrupt(ev):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        tk.train(tiny, small, tk.Full(), callbacks={"step": interrupt}, **fast)
    [run] = tk.list_runs(fast["runs_dir"])
    assert run.status == "stopped" and "interrupted at step 1" in run.summary["reason"]


def test_compare_checks_every_strategy_before_training_any(tiny_dir, small, fast):
    with pytest.raises(ConfigError, match="unknown layer group"):
        tk.compare([tk.Probe(), tk.Freeze(train=["nope"])], small, model=tiny_dir, **fast)
    assert tk.list_runs(fast["runs_dir"]) == []


def test_logged_learning_rate_is_the_one_used_for_that_step(tiny, small, fast):
    """Each step event's lr is the one the optimizer stepped with (read by torch's own step
    hook), and follows the linear schedule: 4 steps from 0.01 down, no warmup."""
    used = []
    from torch.optim.optimizer import register_optimizer_step_pre_hook  # every optimizer's step
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: used.append(opt.param_groups[0]["lr"]))
    try:
        run = tk.train(tiny, small, tk.Probe(), lr=0.01, warmup=0.0, schedule="linear", log_every=1, **fast)
    finally:
        handle.remove()
    logged = run.history("step")["lr"].tolist()
    assert len(logged) == run.summary["steps"] == 4
    assert logged == used
    assert logged == pytest.approx([0.01, 0.0075, 0.005, 0.0025])
