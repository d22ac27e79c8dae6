"""The families users bring, as tiny random-init checkpoints: every strategy trains, and every
view (weight change, spectra, CKA, attribution) reads the runs, with module labels shared
across families. One parameter row per family, seconds each."""
import pytest
import torch

import tunekit as tk
from tunekit.architectures import LABEL_ORDER
from tunekit.tiny import make_tiny

# family -> the labels LoRA's default targets carry, and IA3's
FAMILIES = {
    "roberta": ({"query", "value"}, {"key", "value", "attn_out", "output"}),
    "electra": ({"query", "value"}, {"key", "value", "attn_out", "output"}),
    "deberta-v2": ({"query", "value"}, {"key", "value", "attn_out", "output"}),
    "distilbert": ({"query", "value"}, {"key", "value", "output"}),
    "gpt2": ({"qkv"}, {"qkv", "output"}),
    "qwen2": ({"query", "value"}, {"query", "value", "output"}),  # peft's IA3 table: q_proj, v_proj, down_proj
    "llama": ({"query", "value"}, {"key", "value", "output"}),
}
STRATEGIES = [tk.Probe(), tk.Freeze.top(1), tk.LoRA(rank=2), tk.IA3(), tk.Full()]


@pytest.fixture(scope="module")
def family_runs(tmp_path_factory, small):
    made = {}

    def runs_of(family):
        if family not in made:
            root = tmp_path_factory.mktemp(family)
            path = make_tiny(family, root / "model")
            made[family] = [tk.train(tk.load_model(str(path), label_names=small.label_names), small, s,
                                     train_size=32, batch_size=16, evals_per_epoch=1, runs_dir=str(root / "runs"),
                                     progress=False) for s in STRATEGIES]
        return made[family]
    return runs_of


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_strategy_and_view_works_on_the_family(family, family_runs, small):
    runs = family_runs(family)
    assert [r.status for r in runs] == ["completed"] * len(STRATEGIES)
    model = runs[0].model
    assert model.group_names[0] == "embeddings" and model.group_names[-1] == "head" and model.num_blocks == 2
    for run in runs:  # counted before training = what trained (peft's own count for the adapters)
        assert run.config["params"]["trainable"] == run.model.parameter_counts()["trainable"] > 0
    lora, ia3 = runs[2], runs[3]
    assert lora.model.peft.get_nb_trainable_parameters()[0] == lora.config["params"]["trainable"]
    assert ia3.model.peft.get_nb_trainable_parameters()[0] == ia3.config["params"]["trainable"]

    wc = tk.inspect.weight_change(runs)
    block_modules = set(wc[wc.block.notna()].module)
    assert block_modules <= set(LABEL_ORDER), f"raw module names reached the views: {block_modules - set(LABEL_ORDER)}"
    lora_labels, ia3_labels = FAMILIES[family]
    for run, labels in ((lora, lora_labels), (ia3, ia3_labels)):
        rows = wc[(wc.run == run.name) & wc.block.notna()]
        assert set(rows[rows.delta_norm > 0].module) == labels, run.label  # exactly where the adapter acts
    probe_rows = wc[wc.run == runs[0].name]
    assert set(probe_rows[probe_rows.delta_norm > 0].group) == {"head"}

    spectra = tk.inspect.update_spectra([lora])
    moved = spectra.table[spectra.table.delta_norm > 0]
    assert set(moved[moved.block.notna()].module) == lora_labels
    assert (moved[moved.block.notna()].energy90 <= 2).all()  # a rank-2 update

    drift = tk.inspect.representation_drift(runs, data=small, n=8)
    assert drift[drift.run == runs[0].name].cka.tolist() == [1.0] * (model.num_blocks + 1)  # a probe moves nothing
    assert drift.cka.notna().all()

    attributions = tk.inspect.attribute_runs(runs, "a warm and funny film", n_steps=8)
    assert [a.label for a in attributions] == ["base"] + [r.label for r in runs]
    assert all(len(a.tokens) == len(a.scores) and torch.isfinite(torch.tensor(a.scores)).all() for a in attributions)


def test_defaults_come_from_peft_or_from_the_canonical_labels(tmp_path):
    distil = tk.load_model(str(make_tiny("distilbert", tmp_path / "d")))
    assert sorted(tk.LoRA().peft_config(distil).target_modules) == ["attention.q_lin", "attention.v_lin"]
    gpt2 = tk.load_model(str(make_tiny("gpt2", tmp_path / "g")))
    assert sorted(tk.LoRA().peft_config(gpt2).target_modules) == ["c_attn"]  # peft's table; a Conv1D layer
    with pytest.raises(tk.ConfigError, match=r"match no layer that peft can adapt.*attn.c_attn \(qkv\)"):
        tk.LoRA(target_modules=["q_proj"]).count(gpt2)


PEFT_FAMILY = [tk.DoRA(rank=2), tk.AdaLoRA(target_rank=1, init_rank=2), tk.VeRA(rank=16), tk.LoHa(rank=2),
               tk.LoKr(rank=2), tk.LoRA(rank=2, init="pissa"), tk.LoRA(rank=2, init="gaussian", rslora=True),
               tk.LNTuning(), tk.PromptTuning(tokens=4)]
LINEAR_ONLY = {"gpt2": ("LoHa", "LoKr")}  # peft adapts nn.Linear only with these; GPT-2's layers are Conv1D


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_peft_family_counts_as_peft_and_runs_on_the_family_or_is_refused_in_words(family, tmp_path, small):
    """Each method of the PEFT family, on each family: counted before it is applied exactly as peft counts
    it once applied, and a forward pass gives finite logits (virtual tokens included); where peft cannot
    apply it, a ConfigError that names the family and the method."""
    path = str(make_tiny(family, tmp_path / "model"))
    enc = None
    for strategy in PEFT_FAMILY:
        model = tk.load_model(path, label_names=small.label_names)
        who = type(strategy).__name__
        if who in LINEAR_ONLY.get(family, ()):
            with pytest.raises(tk.ConfigError, match=rf"{who} is not available for '{family}' models"):
                strategy.count(model)
            continue
        counted = strategy.count(model)["trainable"]
        model.adapt(strategy)
        assert model.peft.get_nb_trainable_parameters()[0] == counted == model.parameter_counts()["trainable"], who
        enc = enc or model.tokenizer(["a warm and funny film", "dull"], padding=True, return_tensors="pt")
        model.module.eval()
        with torch.no_grad():
            logits = model.logits(enc["input_ids"], enc["attention_mask"])
        assert logits.shape == (2, 2) and torch.isfinite(logits).all(), who


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_peft_family_trains_saves_and_reloads_on_the_family(family, tmp_path, small):
    """Each method of the PEFT family that peft applies to the family trains a few steps, is saved in
    peft's format and reloads to the numbers it recorded; its weight change draws (or, for the methods
    that change no weight matrix, names where its change is)."""
    path = str(make_tiny(family, tmp_path / "model"))
    runs = []
    for strategy in PEFT_FAMILY:
        if type(strategy).__name__ in LINEAR_ONLY.get(family, ()):
            continue  # refused in words: the test above
        model = tk.load_model(path, label_names=small.label_names)
        run = tk.train(model, small, strategy, lr=5e-3, train_size=32, batch_size=8, evals_per_epoch=1,
                       runs_dir=str(tmp_path / "runs"), progress=False)
        assert run.status == "completed" and (run.path / "adapter" / "adapter_model.safetensors").is_file(), run.label
        got = tk.evaluate(tk.load_run(run.path), small)
        assert got["accuracy"] == run.summary["val_accuracy"], run.label
        assert got["loss"] == pytest.approx(run.summary["val_loss"], rel=1e-4, abs=1e-6), run.label
        runs.append(run)
    wc = tk.inspect.weight_change(runs)
    moved = wc[(wc.delta_norm > 0) & wc.block.notna()]
    for run in runs:
        modules = set(moved[moved.run == run.name].module)
        if isinstance(tk.strategies.get_strategy(run.strategy), tk.PromptTuning):
            assert not modules and tk.inspect.prompted(run).kind.tolist() == ["prompt"]
        elif isinstance(tk.strategies.get_strategy(run.strategy), tk.LNTuning):
            assert modules and modules <= {"attn_norm", "out_norm"}, (run.label, modules)
        else:
            assert modules and modules <= set(LABEL_ORDER), (run.label, modules)
