"""Post-training: pruning, quantization, distillation and forgetting, on tiny random models and
real data (the built-in MiniLM in the one marked slow test)."""
from __future__ import annotations

import copy

import pytest
import torch

import tunekit as tk
from tunekit import structure as st
from tunekit.config import ConfigError
from tunekit.post.base import size_mb
from tunekit.post.distillation import DistillationModule, layer_map, relation_loss, response_loss
from tunekit.post.pruning import block_linears


@pytest.fixture(scope="module")
def tiny4_dir(tmp_path_factory):
    return str(tk.make_tiny("bert", tmp_path_factory.mktemp("tiny4"), layers=4))


@pytest.fixture
def trained(tiny4_dir, small, fast):
    return tk.train(tk.load_model(tiny4_dir, label_names=small.label_names), small, tk.Full(), **fast)


def _logits(model, texts):
    enc = model.tokenize(texts)
    model.module.eval()
    with torch.no_grad():
        return model.logits(enc["input_ids"], enc["attention_mask"])


TEXTS = ["a quiet, well-acted surprise", "two hours I will not get back", "fine"]


# ----- pruning -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_magnitude_pruning_writes_real_zeros_that_reload(trained, small, scope):
    pruned = tk.prune(trained, sparsity=0.6, scope=scope, data=small)
    assert pruned.kind == "prune" and pruned.parent["name"] == trained.name and pruned.status == "completed"
    reloaded = tk.load_run(pruned.path).load_model()
    weights = [m.weight for _, m in block_linears(reloaded)]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert zeros == pytest.approx(0.6, abs=0.01)
    if scope == "layer":  # each layer loses the same fraction
        for w in weights:
            assert float((w == 0).float().mean()) == pytest.approx(0.6, abs=0.01)
    s = pruned.summary
    assert s["sparsity"] == pytest.approx(zeros) and s["nonzero_params"] < s["before"]["nonzero_params"]
    assert s["params"] == s["before"]["params"]  # unstructured: the shapes stay
    # the parent's weights outside the pruned zeros are unchanged
    parent = trained.load_model()
    before = [m.weight.detach() for _, m in block_linears(parent)]
    assert len(before) == len(weights) == 4 * 6  # every Linear of the 4 blocks
    for (name, _), b, w in zip(block_linears(parent), before, weights):
        kept = w != 0
        assert torch.equal(b[kept], w.detach()[kept]), name
    # ... and the ones it zeroed are the smallest: ranked over all the matrices together (global)
    # or within each one (layer); a tie at the threshold may fall on either side
    groups = [list(zip(before, weights))] if scope == "global" else [[bw] for bw in zip(before, weights)]
    for group in groups:
        pruned_abs = torch.cat([b[w == 0].abs() for b, w in group])
        kept_abs = torch.cat([b[w != 0].abs() for b, w in group])
        assert pruned_abs.numel() and kept_abs.numel()
        assert float(pruned_abs.max()) <= float(kept_abs.min()), (scope, float(pruned_abs.max()), float(kept_abs.min()))
    # what evaluate says of the reloaded record is what the record measured
    assert tk.evaluate(pruned, small)["accuracy"] == pytest.approx(s["val_accuracy"])


def test_sparsity_sweep_is_one_call(trained, small):
    runs = tk.prune(trained, sparsity=[0.0, 0.5, 0.9], data=small)
    assert [round(r.summary["sparsity"], 2) for r in runs] == [0.0, 0.5, 0.9]
    shown = tk.plots.comparison_table([trained, *runs])
    assert list(shown["kind"]) == ["train", "prune", "prune", "prune"] and shown["size MB"].notna().sum() == 4  # the start too
    assert "CPU latency ms" in tk.report.formatted_table([trained, *runs]).columns
    fig = tk.plots.sparsity_curve(runs)
    assert [round(x, 2) for x in fig.data[0].x] == [0.0, 0.5, 0.9]  # the parent is the point at 0
    table = tk.post.sweep_table(runs)
    assert list(table["sparsity"].round(2)) == [0.0, 0.5, 0.9]
    assert table["nonzero_params"].is_monotonic_decreasing
    assert runs[0].summary["val_accuracy"] == runs[0].summary["before"]["val_accuracy"]  # 0 changes nothing


@pytest.mark.parametrize("family", ["bert", "distilbert", "llama", "roberta"])
def test_head_pruning_shrinks_the_matrices_and_reloads(family, tmp_path, small, fast):
    path = tk.make_tiny(family, tmp_path / family, layers=2, hidden=128)
    model = tk.load_model(str(path), label_names=small.label_names)
    run = tk.train(model, small, tk.Full(), **fast)
    pruned = tk.prune(run, method="heads", amount=1, data=small)
    step = pruned.config["structure"][0]["heads"]
    assert all(len(kept) == 1 for kept in step.values())  # 2 heads per block, 1 removed
    reloaded = tk.load_run(pruned.path).load_model()
    for block in st.blocks(reloaded):
        assert st.heads_of(reloaded, block) == 1
    assert pruned.summary["params"] < pruned.summary["before"]["params"]
    assert reloaded.parameter_counts()["total"] == pruned.summary["params"]
    # the live pruned model and the reloaded one agree, and both still run
    again = tk.load_run(pruned.path).load_model()
    assert torch.allclose(_logits(reloaded, TEXTS), _logits(again, TEXTS))
    # the record reloaded from disk evaluates to the numbers it holds
    from_disk = tk.load_run(str(pruned.path))
    assert from_disk.model is None
    measured = tk.evaluate(from_disk, small)
    assert measured["accuracy"] == pytest.approx(pruned.summary["val_accuracy"])
    assert measured["loss"] == pytest.approx(pruned.summary["val_loss"], rel=1e-4)


def test_head_pruning_removes_the_least_important_head(trained, small):
    pruned = tk.prune(trained, method="heads", amount=1, data=small)
    scores = pruned.summary["importance_scores"]
    for block, kept in pruned.config["structure"][0]["heads"].items():
        assert kept == [max(range(len(scores[int(block)])), key=scores[int(block)].__getitem__)]


def test_removing_a_head_equals_zeroing_it(trained, small):
    """Slicing out head h gives the same logits as zeroing its query/key/value rows and its
    attention-output columns in the unpruned model (the head then contributes nothing)."""
    model = trained.load_model()
    zeroed = copy.deepcopy(model)
    size = st.head_size(model)
    for block in st.blocks(zeroed):
        with torch.no_grad():
            for _, layer in st.block_layers(block, ("value",)):
                layer.weight[:size] = 0
                layer.bias[:size] = 0
            for _, layer in st.block_layers(block, ("attn_out",)):
                layer.weight[:, :size] = 0
    kept = {str(i): list(range(1, st.heads_of(model, b))) for i, b in enumerate(st.blocks(model))}
    st.apply_steps(model, [{"heads": kept}])
    assert torch.allclose(_logits(model, TEXTS), _logits(zeroed, TEXTS), atol=1e-5)


def test_neuron_pruning_shrinks_the_ffn(trained, small):
    pruned = tk.prune(trained, method="neurons", amount=0.5, data=small, importance="magnitude")
    reloaded = pruned.load_model()
    full = trained.load_model()
    for a, b in zip(st.blocks(reloaded), st.blocks(full)):
        assert st.neurons_of(a) == st.neurons_of(b) // 2
    assert tk.evaluate(pruned, small)["accuracy"] == pytest.approx(pruned.summary["val_accuracy"])


def test_recovery_keeps_the_zeros(trained, small):
    recovered = tk.prune(trained, sparsity=0.5, data=small, recover={"epochs": 1, "train_size": 32, "progress": False})
    assert recovered.kind == "train" and recovered.parent_run().kind == "prune"
    before = recovered.parent_run().load_model()
    after = recovered.load_model()
    changed = False
    for (_, a), (_, b) in zip(block_linears(before), block_linears(after)):
        assert torch.equal(a.weight == 0, b.weight == 0)  # the same weights are zero
        changed |= not torch.equal(a.weight, b.weight)
    assert changed and recovered.summary["size_mb"] > 0


def test_pruning_bad_input_names_the_parameter(trained, small):
    for kw, word in [({"sparsity": 1.0}, "sparsity"), ({"sparsity": -0.1}, "sparsity"),
                     ({"sparsity": "half"}, "sparsity"), ({"method": "random"}, "method"),
                     ({"scope": "block"}, "scope"), ({"method": "heads", "amount": 2}, "every attention head"),
                     ({"method": "heads", "amount": 0}, "amount"), ({"method": "neurons", "amount": 1.0}, "amount"),
                     ({"method": "heads", "amount": 1, "importance": "random"}, "importance"),
                     ({"recover": {"epochs": 0}}, "epochs")]:
        with pytest.raises(ConfigError, match=word):
            tk.prune(trained, data=small, **kw)


def test_head_pruning_refuses_shared_key_value_heads(tmp_path, small):
    import transformers as t
    cfg = t.LlamaConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=1, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=256, pad_token_id=0)
    t.AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "gqa")
    from transformers import AutoTokenizer
    AutoTokenizer.from_pretrained(tk.models.minilm_dir()).save_pretrained(tmp_path / "gqa")
    model = tk.load_model(str(tmp_path / "gqa"), label_names=small.label_names)
    with pytest.raises(ConfigError, match="key/value"):
        tk.prune(model, method="heads", amount=1, data=small)


# ----- quantization ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,bits", [("int8-dynamic", None), ("int8-weight", None), ("intx-dynamic", 4)])
def test_quantized_outputs_stay_close_and_reload(trained, small, method, bits):
    q = tk.quantize(trained, method=method, bits=bits, data=small)
    assert q.kind == "quantize" and q.format == "torchao" and q.parent["name"] == trained.name
    float_logits = _logits(trained.load_model(), TEXTS)
    reloaded = q.load_model()
    from torchao.utils import TorchAOBaseTensor
    # every Linear of every block is quantized, found here without tunekit's own list of them
    linears = {f"{i}.{n}": m for i, b in enumerate(st.blocks(reloaded)) for n, m in b.named_modules()
               if isinstance(m, torch.nn.Linear)}
    assert len(linears) == 4 * 6 and q.summary["quantized_layers"] == len(linears)
    assert len(q.strategy["layers"]) == len(linears)
    for name, layer in linears.items():
        assert isinstance(layer.weight, TorchAOBaseTensor), name
    assert not isinstance(reloaded.hf.classifier.weight, TorchAOBaseTensor)  # the head stays in float
    float_model = trained.load_model()
    quantized_params = sum(m.weight.numel() for b in st.blocks(float_model) for m in b.modules()
                           if isinstance(m, torch.nn.Linear))
    assert q.summary["quantized_params"] == quantized_params
    # the file shrinks by about those weights' bytes: 4 per weight in float32, 1 as int8 (torchao
    # keeps 2..7-bit weights one per byte too), less a little for the per-row scales
    float_bytes = size_mb(float_model) * 2 ** 20
    saved = float_bytes - (q.path / "weights.safetensors").stat().st_size
    assert 0.97 * 3 * quantized_params <= saved <= 3 * quantized_params, (saved, 3 * quantized_params)
    q_logits = _logits(reloaded, TEXTS)
    scale = float(float_logits.abs().max())
    assert float((q_logits - float_logits).abs().max()) < (0.05 if bits is None else 0.3) * max(scale, 1.0)
    assert q.summary["max_logit_diff"] < (0.05 if bits is None else 0.3) * max(scale, 1.0)
    # the record's file is the quantized model: smaller than the float one
    assert (q.path / "weights.safetensors").stat().st_size < q.summary["before"]["size_mb"] * 2 ** 20
    assert q.summary["size_mb"] < q.summary["before"]["size_mb"]
    assert tk.evaluate(q, small)["accuracy"] == pytest.approx(q.summary["val_accuracy"])


def test_quantize_bad_input(trained, small, monkeypatch):
    with pytest.raises(ConfigError, match="method must be one of"):
        tk.quantize(trained, method="int3-magic", data=small)
    with pytest.raises(ConfigError, match="bits"):
        tk.quantize(trained, method="intx-dynamic", bits=1, data=small)
    with pytest.raises(ConfigError, match="bits"):
        tk.quantize(trained, method="int8-dynamic", bits=4, data=small)
    q = tk.quantize(trained, data=small)
    for op in (lambda r: tk.quantize(r, data=small), lambda r: tk.prune(r, data=small),
               lambda r: tk.distil(r, data=small)):
        with pytest.raises(ConfigError, match="is quantized.*float run it came from"):
            op(q)
    from tunekit import quantizers
    monkeypatch.setattr(quantizers, "torchao_available", lambda: False)
    with pytest.raises(ConfigError, match="torchao.*not installed.*pip install torchao=="):
        tk.quantize(trained, data=small)


def test_qat_trains_fake_quantized_and_converts_to_what_it_saw(tiny4_dir, small, fast):
    model = tk.load_model(tiny4_dir, label_names=small.label_names)
    run = tk.train(model, small, tk.QAT(bits=8), precision="fp32", **fast)
    from torchao.quantization.qat.linear import FakeQuantizedLinear
    assert isinstance(st.blocks(run.model)[0].attention.self.query, FakeQuantizedLinear)
    live = _logits(run.model, TEXTS)  # the fake-quantized model, as it trained
    q = tk.quantize(run, data=small)
    assert q.strategy["method"] == "intx-dynamic" and q.strategy["trained_for"] == "qat"
    assert torch.allclose(_logits(q.load_model(), TEXTS), live, atol=1e-4)
    with pytest.raises(ConfigError, match="QAT.bits"):
        tk.QAT(bits=16)


# ----- distillation -------------------------------------------------------------------------------------------
def test_every_distillation_loss_is_zero_when_the_student_is_the_teacher(trained, small):
    teacher = trained.load_model(merged=True)
    student = copy.deepcopy(teacher)
    module = DistillationModule(student.module, teacher.module, {"response": 1.0, "feature": 1.0, "relation": 1.0},
                                0.0, 3.0, list(st.blocks(student)), list(st.blocks(teacher)), causal=False)
    module.eval()
    enc = teacher.tokenize(small.train["text"].tolist()[:8])
    out = module({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                  "labels": torch.tensor(small.train["label"].tolist()[:8])})
    assert out.loss.item() == 0.0
    # ... and each one is positive for a different student
    with torch.no_grad():
        for p in student.hf.parameters():
            p.add_(0.05 * torch.randn_like(p))
    for name in ("response", "feature", "relation"):
        m = DistillationModule(student.module, teacher.module, {name: 1.0}, 0.0, 3.0, list(st.blocks(student)),
                               list(st.blocks(teacher)), causal=False).eval()
        assert m({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}).loss.item() > 0, name


def test_response_loss_is_hinton_kl_times_t_squared():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    T = 2.5
    expected = torch.nn.functional.kl_div((s / T).log_softmax(-1), (t / T).softmax(-1), reduction="batchmean") * T * T
    assert response_loss(s, t, T).item() == pytest.approx(expected.item(), rel=1e-5)
    x = torch.randn(6, 5)
    assert relation_loss(x * 3.0, x).item() == pytest.approx(0.0, abs=1e-6)  # RKD is scale-free
    assert layer_map(3, 6) == [1, 3, 5] and layer_map(6, 6) == list(range(6))


def test_distil_a_block_subset_and_compare_with_the_student_alone(trained, small, fast):
    kw = {k: v for k, v in fast.items() if k != "runs_dir"}
    distilled, alone = tk.distil(trained, student=[0, 2], loss="response+feature", data=small, baseline=True, **kw)
    assert distilled.kind == "distil" and distilled.config["teacher"]["name"] == trained.name
    assert distilled.parent["name"] == trained.name and distilled.config["structure"] == [{"blocks": [0, 2]}]
    assert alone.kind == "train" and alone.label == "student-alone"
    assert alone.config["train"]["seed"] == distilled.config["train"]["seed"]
    assert alone.config["data"]["train_used"] == distilled.config["data"]["train_used"]
    reloaded = tk.load_run(distilled.path).load_model()
    assert reloaded.num_blocks == 2
    assert torch.allclose(_logits(reloaded, TEXTS), _logits(distilled.model, TEXTS), atol=1e-5)
    start = tk.load_run(distilled.path).load_start()  # the teacher's blocks 0 and 2
    teacher = trained.load_model()
    assert torch.equal(st.blocks(start)[1].attention.self.query.weight, st.blocks(teacher)[2].attention.self.query.weight)
    s = distilled.summary
    assert s["params"] < s["teacher"]["params"] and s["size_mb"] < s["teacher"]["size_mb"]
    assert s["latency_ms"] > 0 and "val_accuracy" in s["teacher"]


def test_distil_bad_input(trained, small, tiny4_dir, rt):
    with pytest.raises(ConfigError, match="loss"):
        tk.distil(trained, loss="attention", data=small)
    with pytest.raises(ConfigError, match="student blocks"):
        tk.distil(trained, student=[0, 9], data=small)
    with pytest.raises(ConfigError, match="temperature"):
        tk.distil(trained, temperature=0, data=small)
    other = tk.load_model(tiny4_dir, label_names=["a", "b", "c"])
    with pytest.raises(ConfigError, match="student: its labels"):
        tk.distil(trained, student=other, data=small)
    with pytest.raises(ConfigError, match="student must be"):
        tk.distil(trained, student="half", data=small)
    with pytest.raises(ConfigError, match="nothing to learn"):
        tk.distil(trained, loss=None, hard=0, data=small)


# ----- forgetting ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bbc_small():
    bbc = tk.data.bbc_news()
    df = bbc.train.sample(150, random_state=0).assign(label=lambda d: d["label"].map(dict(enumerate(bbc.label_names))))
    return tk.data.from_dataframe(df, label_names=bbc.label_names, validation_size=20, test_size=30, name="bbc-small")


def test_forgetting_a_probe_forgets_nothing(tiny4_dir, small, bbc_small, fast):
    df = tk.forgetting([tk.Probe(), tk.Full()], first=small, then=bbc_small, model=tiny4_dir, n=24,
                       lr=5e-3, **fast)
    assert list(df.columns[:7]) == ["strategy", "a_before", "a_after", "forgot", "b_before", "b_after", "learned"]
    assert {"drift", "knn_agreement", "drift_from_base", "run"} <= set(df.columns)
    probe, full = df.iloc[0], df.iloc[1]
    assert probe["a_after"] == probe["a_before"] and probe["forgot"] == 0.0
    assert probe["drift"] == pytest.approx(0.0, abs=1e-6) and probe["knn_agreement"] == 1.0
    assert full["drift"] > 1e-4 and full["knn_agreement"] < 1.0
    assert (df["forgot"] == df["a_before"] - df["a_after"]).all()
    # task B's record reloads: the body B changed, wearing B's head
    import os
    b = tk.load_run(os.path.join(fast["runs_dir"], full["run"]))
    assert b.parent["name"] == df.attrs["first_run"] and b.load_model().label_names == bbc_small.label_names
    assert df.attrs["split"] == "test"
    fig = tk.plots.forgetting_map(df)
    assert [t.name for t in fig.data] == ["probe", "full"] and fig.data[0].x[0] == 0.0
    assert "forgotten" in fig.layout.xaxis.title.text
    with pytest.raises(ConfigError, match="x must be"):
        tk.plots.forgetting_map(df, x="a_after")


# ----- the built-in model ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_post_training_on_minilm(tmp_path, rt):
    model = tk.load_model("minilm", label_names=rt.label_names)
    run = tk.train(model, rt, tk.LoRA(rank=4), train_size=64, eval_size=64, runs_dir=str(tmp_path), progress=False)
    q = tk.quantize(run)
    assert q.summary["max_logit_diff"] < 0.1 and abs(q.summary["val_accuracy"] - q.summary["before"]["val_accuracy"]) < 0.05
    h = tk.prune(run, method="heads", amount=4)
    assert h.summary["params"] < h.summary["before"]["params"] and h.load_model().num_blocks == 6


# ----- the command line ------------------------------------------------------------------------------------------
def test_cli_prune_quantize_distil(trained, small, tmp_path, capsys):
    from tunekit.cli import main
    small.train.assign(label=small.train["label"].map(dict(enumerate(small.label_names)))).to_csv(
        tmp_path / "small.csv", index=False)
    csv = str(tmp_path / "small.csv")
    runs_dir = str(trained.path.parent)
    assert main(["prune", trained.name, "--runs-dir", runs_dir, "--data", csv, "--sparsity", "0.3,0.6"]) == 0
    out = capsys.readouterr().out
    assert "prune30" in out and "prune60" in out and "(was" in out and "latency measured on" in out
    assert main(["quantize", str(trained.path), "--data", csv]) == 0
    assert "int8-dynamic" in capsys.readouterr().out
    assert main(["distil", str(trained.path), "--data", csv, "--student", "0,3", "--no-progress"]) == 0
    assert "distil-response" in capsys.readouterr().out
    for argv, option in [(["prune", str(trained.path), "--data", csv, "--sparsity", "1.5"], "--sparsity"),
                         (["prune", str(trained.path), "--data", csv, "--method", "heads", "--amount", "2"], "--amount"),
                         (["quantize", str(trained.path), "--data", csv, "--method", "intx-dynamic", "--bits", "1"],
                          "--bits"),
                         (["distil", str(trained.path), "--data", csv, "--student", "0,9"], "--student"),
                         (["distil", str(trained.path), "--data", csv, "--loss", "attention"], "--loss"),
                         (["prune", "no-such-run", "--runs-dir", runs_dir], "RUN")]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"argument {option}" in err and "Traceback" not in err, (argv, err)


# ----- language models ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_llama_dir(tmp_path_factory):
    return str(tk.make_tiny("llama", tmp_path_factory.mktemp("llama"), layers=4))


def test_language_model_distillation_prune_and_quantize(tiny_llama_dir, small, fast):
    texts = tk.data.from_texts(small.train["text"].tolist(), name="texts")
    lm = tk.load_model(tiny_llama_dir, task="causal_lm")
    teacher = tk.train(lm, texts, tk.Full(), **fast)
    kw = {k: v for k, v in fast.items() if k != "runs_dir"}
    student = tk.distil(teacher, student=[0, 3], loss="response+relation", data=texts, **kw)
    assert student.task == "causal_lm" and "val_perplexity" in student.summary
    assert tk.load_run(student.path).load_model().num_blocks == 2
    # the token-level response loss is zero for the teacher itself
    t = teacher.load_model(merged=True)
    m = DistillationModule(copy.deepcopy(t).module, t.module, {"response": 1.0}, 0.0, 2.0, [], [], causal=True).eval()
    enc = t.tokenize(TEXTS)
    assert m({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
              "labels": enc["input_ids"]}).loss.item() == 0.0
    heads = tk.prune(teacher, method="heads", amount=1, data=texts)
    assert tk.evaluate(heads, texts)["perplexity"] == pytest.approx(heads.summary["val_perplexity"])
    q = tk.quantize(teacher, data=texts)
    assert q.summary["val_perplexity"] == pytest.approx(q.summary["before"]["val_perplexity"], rel=0.05)


def test_forgetting_for_a_language_model_is_perplexity(tiny_llama_dir, small, bbc_small, fast):
    a = tk.data.from_texts(small.train["text"].tolist(), name="reviews", test_size=0.2)
    b = tk.data.from_texts(bbc_small.train["text"].tolist(), name="news", test_size=0.2)
    df = tk.forgetting([tk.LoRA(rank=2), tk.Full()], first=a, then=b, model=tiny_llama_dir, task="causal_lm",
                       n=16, lr=1e-3, **fast)
    assert df.attrs["metric"] == "perplexity" and not df.attrs["higher_is_better"]
    assert (df["forgot"] == df["a_after"] - df["a_before"]).all()  # perplexity rose by this much
    assert (df["learned"] == df["b_before"] - df["b_after"]).all()
    assert "perplexity_change" in df.columns and df["b_after"].notna().all()


def test_forgetting_can_start_from_a_run_that_learned_task_a(trained, small, bbc_small, fast):
    import os
    before = set(os.listdir(fast["runs_dir"]))
    df = tk.forgetting([tk.Probe()], first=small, then=bbc_small, first_run=trained, n=24, **fast)
    assert df.attrs["first_run"] == trained.name
    assert len(set(os.listdir(fast["runs_dir"])) - before) == 1  # B's run only: A was not trained again
    assert df.loc[0, "forgot"] == 0.0
    with pytest.raises(ConfigError, match="first_run"):
        tk.forgetting([tk.Probe()], first=bbc_small, then=small, first_run=trained, **fast)


def test_records_of_one_parent_with_other_shapes_do_not_share_a_start(trained, small):
    """Issue 20: a magnitude prune and a heads prune of one run start from the same parent, but
    the heads prune replays its structure on its start: the two must not share one start, and
    no instrument may change a start it shares."""
    magnitude = tk.prune(trained, sparsity=0.5, data=small)
    heads = tk.prune(trained, method="heads", amount=1, data=small)
    quantized = tk.quantize(trained, data=small)
    for order in ([heads, magnitude, quantized], [magnitude, heads, quantized]):
        wc = tk.inspect.weight_change(order)
        assert set(wc.run) == {r.name for r in order}
    pairs = tk.inspect.models.load_pairs([magnitude, quantized, heads])
    assert pairs[0].start is pairs[1].start and pairs[2].start is not pairs[0].start
    before = {n: p.detach().clone() for n, p in pairs[0].start.hf.named_parameters()}
    tk.inspect.weight_change(pairs)
    tk.inspect.update_spectra(pairs)
    after = dict(pairs[0].start.hf.named_parameters())
    assert all(torch.equal(v, after[n]) for n, v in before.items())


def test_the_run_an_operation_starts_from_gets_its_size_and_latency_once(trained, small):
    """Issue 20: Pareto by size or latency plotted the post-training records but not the run they
    came from ("not plotted (no value)"); the operation's 'before' measurements are kept in it."""
    assert trained.summary.get("size_mb") is None
    pruned = tk.prune(trained, sparsity=0.5, data=small)
    parent = tk.load_run(trained.path)
    for key in ("size_mb", "latency_ms", "nonzero_params"):
        assert parent.summary[key] == pruned.summary["before"][key], key
    assert parent.summary["params"]["total"] == pruned.summary["before"]["params"]  # its own counts stay
    first = parent.summary["latency_ms"]
    tk.quantize(trained, data=small)
    assert tk.load_run(trained.path).summary["latency_ms"] == first  # measured once, not overwritten
    for x in ("size_mb", "latency_ms"):
        fig = tk.plots.pareto([parent, pruned], x=x)
        assert not any("not plotted" in (a.text or "") for a in fig.layout.annotations), x
        assert sum(len(t.x) for t in fig.data if t.mode and "markers" in t.mode) >= 2, x


def test_latency_is_also_a_paired_ratio_with_its_spread():
    """Issue 20: milliseconds wander with the machine's load; the ratio of two models timed in
    turns is reported with its quartiles."""
    from tunekit.post.base import latency_ratio
    got = latency_ratio([2.0, 4.2, 1.0, 6.0, 3.0], [1.0, 2.0, 0.5, 3.0, 1.0])
    assert got == {"latency_ratio": 2.0, "latency_ratio_q1": 2.0, "latency_ratio_q3": 2.1}
    assert latency_ratio([1.0], [1.0]) == {}


def test_an_operation_records_the_latency_ratio(trained, small):
    pruned = tk.prune(trained, sparsity=0.5, data=small)
    s = pruned.summary
    assert s["latency_ratio_q1"] <= s["latency_ratio"] <= s["latency_ratio_q3"]
    assert "latency_ratio" not in s["before"]


def test_size_and_speed_are_said_in_words(trained, small):
    """Issue 20: why a magnitude prune is no smaller or faster, and why int8 is not a quarter."""
    pruned = tk.prune(trained, sparsity=0.5, data=small)
    text = tk.post.in_words(pruned)
    assert "50 % of the block weights are now exactly zero" in text and "dense matrices" in text
    assert f"It takes {pruned.summary['latency_ratio']:.2f}x the time of the model before (" in text
    q = tk.quantize(trained, data=small)
    text = tk.post.in_words(q)
    assert "not a quarter" in text and "stay in 32-bit float" in text
    rest = q.summary["before"]["params"] - q.summary["quantized_params"]
    assert f"the other {rest:,} parameters" in text and 0 < q.summary["quantized_params"] < q.summary["before"]["params"]
    assert tk.post.in_words(trained) == ""  # a training run: nothing measured
