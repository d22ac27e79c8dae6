"""Adapters and fine-tunes made elsewhere (issue 23): tk.import_run. The folders are made here
with plain transformers and peft, as the HF Trainer leaves them; the import is then checked
against plain transformers and peft: the same logits, the weight change equal to peft's merge,
curves from trainer_state.json, the source files unchanged, every bad input refused in words."""
import copy
import hashlib
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import (
    AdaLoraConfig,
    IA3Config,
    LNTuningConfig,
    LoHaConfig,
    LoKrConfig,
    LoraConfig,
    PeftModel,
    PromptTuningConfig,
    VeraConfig,
    get_peft_model,
)
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
)

import tunekit as tk
from tunekit.adapters import checkpointing_notice_quiet as quiet  # transformers' notice, raised by peft
from tunekit.cli import main
from tunekit.sources import minilm_dir

TEXTS = ["A gorgeous, witty film.", "Dull, and far too long for what it has to say."]
METHODS = {
    "lora": LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"]),
    "dora": LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value"], use_dora=True),
    "ia3": IA3Config(task_type="SEQ_CLS", target_modules=["query", "value", "output.dense"],
                     feedforward_modules=["output.dense"]),
    "vera": VeraConfig(task_type="SEQ_CLS", r=8, target_modules=["query", "value"]),
    "loha": LoHaConfig(task_type="SEQ_CLS", r=2, target_modules=["query", "value"]),
    "lokr": LoKrConfig(task_type="SEQ_CLS", r=2, target_modules=["query", "value"]),
    "ln_tuning": LNTuningConfig(task_type="SEQ_CLS", target_modules=["LayerNorm"]),
}
"""peft configs as a practitioner writes them; the head trains in full (peft's SEQ_CLS default)."""


# ----- folders made with plain transformers and peft ------------------------------------------------------
def tokenizer():
    return AutoTokenizer.from_pretrained(str(minilm_dir()))


def save_bert(folder: Path, seed: int = 0, layers: int = 2, hidden: int = 64) -> Path:
    """A tiny random BERT classifier with the data's labels, as save_pretrained writes it."""
    tok = tokenizer()
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, id2label={0: "rotten", 1: "fresh"},
                        label2id={"rotten": 0, "fresh": 1})
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_llama(folder: Path) -> Path:
    """A tiny random Llama decoder, as save_pretrained writes it."""
    tok = tokenizer()
    config = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=128, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_adapter(base: Path, config, folder: Path, seed: int = 1) -> Path:
    """peft's adapter on ``base`` with every trained tensor moved off its start (as training would)."""
    with quiet():
        model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(base), copy.deepcopy(config))
    torch.manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    return folder


def digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def plain_adapter(base: Path, adapter: Path, auto=AutoModelForSequenceClassification):
    with quiet():
        return PeftModel.from_pretrained(auto.from_pretrained(base), str(adapter)).eval()


@torch.no_grad()
def logits(hf, texts=TEXTS) -> torch.Tensor:
    batch = tokenizer()(texts, padding=True, return_tensors="pt")
    return hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_bert(tmp_path_factory.mktemp("import") / "base")


@pytest.fixture(scope="module")
def lora(base) -> Path:
    return save_adapter(base, METHODS["lora"], base.parent / "lora")


@pytest.fixture(scope="module")
def imported(lora, small, tmp_path_factory):
    before = digests(lora)
    run = tk.import_run(lora, data=small, runs_dir=str(tmp_path_factory.mktemp("runs")))
    assert digests(lora) == before  # read, never changed
    return run


# ----- an adapter -------------------------------------------------------------------------------------------
def test_an_adapter_lists_reloads_to_peft_logits_and_is_evaluated(imported, lora, base, small):
    run = tk.load_run(imported.path)  # from disk, as after a kernel restart
    assert [r.name for r in tk.list_runs(run.path.parent)] == [run.name]
    assert (run.kind, run.parent, run.format, run.task, run.status) == ("import", None, "peft", "classification",
                                                                        "completed")
    assert run.config["model"]["source"] == str(base)  # from adapter_config.json's base_model_name_or_path
    assert run.config["model"]["label_names"] == ["rotten", "fresh"] and run.pooling == "model"
    assert run.display_name == "imported LoRA r4 α8"
    assert {n: digests(run.path / "adapter")[n] for n in ("adapter_config.json", "adapter_model.safetensors")} == \
        {n: digests(lora)[n] for n in ("adapter_config.json", "adapter_model.safetensors")}  # copied byte for byte
    model = run.load_model()
    assert model.peft is not None
    assert torch.allclose(model.logits(**_encoded(model)), logits(plain_adapter(base, lora)), atol=1e-6)
    assert run.summary["eval_examples"] == len(small.validation)
    assert tk.evaluate(run, small)["accuracy"] == run.summary["val_accuracy"]  # its numbers, reloaded
    assert run.config["params"]["trainable"] == sum(p.numel() for _, p in _adapter_tensors(lora))


def test_an_imported_adapter_exports_as_a_plain_model_with_its_card(imported, lora, base, tmp_path):
    folder = tk.load_run(imported.path).export(tmp_path / "exported")
    with quiet():
        merged = plain_adapter(base, lora).merge_and_unload()
    exported = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert torch.allclose(logits(exported), logits(merged), atol=1e-5)
    card = (folder / "README.md").read_text()
    assert f"imported with tunekit {tk.__version__} from `{lora.resolve()}` (`lora`" in card


def _encoded(model) -> dict:
    enc = model.tokenize(TEXTS)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _adapter_tensors(folder: Path):
    from safetensors.torch import load_file
    return load_file(str(folder / "adapter_model.safetensors")).items()


@pytest.mark.parametrize("method", list(METHODS))
def test_the_weight_change_is_peft_merge_at_the_targets_and_zero_elsewhere(method, base, tmp_path):
    adapter = save_adapter(base, METHODS[method], tmp_path / method)
    run = tk.import_run(adapter, runs_dir=str(tmp_path / "runs"))
    with quiet():
        merged = {n.replace(".modules_to_save.default", ""): p  # peft leaves LN tuning's head wrapped
                  for n, p in plain_adapter(base, adapter).merge_and_unload().named_parameters()
                  if ".original_module." not in n}
    start = dict(AutoModelForSequenceClassification.from_pretrained(base).named_parameters())
    deltas = tk.inspect.weight_deltas(tk.load_run(run.path))
    assert set(deltas) == set(start)
    moved = set()
    for name, (_, delta) in deltas.items():
        expected = (merged[name].detach().double() - start[name].detach().double()).float()
        assert torch.allclose(delta, expected, atol=1e-6), name
        if expected.abs().max() > 0:
            moved.add(name.rsplit(".", 2)[-2])
    assert "classifier" in moved  # the head trained in full (modules_to_save)
    assert moved - {"classifier"} == ({"LayerNorm"} if method == "ln_tuning" else
                                      {"query", "value", "dense"} if method == "ia3" else {"query", "value"})


MORE = {
    "adalora": (AdaLoraConfig(task_type="SEQ_CLS", init_r=4, target_r=2, total_step=100,
                              target_modules=["query", "value"]), "imported AdaLoRA r2 of 4"),
    "pissa": (LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"],
                         init_lora_weights="pissa"), "imported LoRA r4 α8 PiSSA"),
    "olora": (LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"],
                         init_lora_weights="olora", use_rslora=True), "imported LoRA r4 α8 OLoRA rs"),
    "prompt_tuning": (PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=4), "imported prompt tuning"),
}
"""The methods whose adapter reloads in another shape (AdaLoRA), rebuilds part of the base (PiSSA,
OLoRA: peft starts them again on the original weights) or lives beside the model (prompt tuning)."""


@pytest.mark.parametrize("method", list(MORE))
def test_adalora_pissa_olora_and_prompt_tuning_adapters_import_as_peft_loads_them(method, base, small, tmp_path):
    config, words = MORE[method]
    adapter = save_adapter(base, config, tmp_path / method)
    run = tk.import_run(adapter, runs_dir=str(tmp_path / "runs"))
    assert words in run.display_name, run.display_name
    reloaded = tk.load_run(run.path).load_model()
    assert torch.allclose(reloaded.logits(**_encoded(reloaded)), logits(plain_adapter(base, adapter)), atol=1e-5)
    wc = tk.inspect.weight_change([run])
    moved = set(wc[(wc.delta_norm > 0) & wc.block.notna()].module)
    assert moved == (set() if method == "prompt_tuning" else {"query", "value"})
    from tunekit.inspect.views import rebased_words
    said = rebased_words([run], {})
    assert ("measured against the original checkpoint" in said) == (method in ("pissa", "olora"))
    if method == "pissa":  # the fast SVD's start is PiSSA too (peft redraws it on each load: not compared)
        from tunekit.imports import _adapter_strategy
        assert _adapter_strategy({"peft_type": "LORA", "init_lora_weights": "pissa_niter_4"})["init"] == "pissa"
    if method == "prompt_tuning":  # its change is in what the model reads: the learned tokens
        assert tk.inspect.prompted(run).kind.tolist() == ["prompt"] and len(tk.inspect.virtual_tokens(run)) == 4


def test_a_head_for_more_classes_than_the_base_names_takes_transformers_default_names(tmp_path):
    """A base without a head (as a pretrained encoder is on the hub), an adapter trained with a
    3-class head: the record's head has 3 rows, named as transformers names them (data sets are
    matched to them by position), and gives peft's logits. A base holding a head of another size
    is refused in words."""
    tok = tokenizer()
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128)).save_pretrained(tmp_path / "encoder")
    tok.save_pretrained(tmp_path / "encoder")
    with quiet():
        model = get_peft_model(AutoModelForSequenceClassification.from_pretrained(tmp_path / "encoder", num_labels=3),
                               copy.deepcopy(METHODS["lora"]))
    model.save_pretrained(tmp_path / "three")
    run = tk.import_run(tmp_path / "three", runs_dir=str(tmp_path / "runs"))
    assert run.config["model"]["label_names"] == ["LABEL_0", "LABEL_1", "LABEL_2"]
    with quiet():
        plain = PeftModel.from_pretrained(
            AutoModelForSequenceClassification.from_pretrained(tmp_path / "encoder", num_labels=3),
            str(tmp_path / "three")).eval()
    reloaded = tk.load_run(run.path).load_model()
    assert torch.allclose(reloaded.logits(**_encoded(reloaded)), logits(plain), atol=1e-6)
    two_classes = save_bert(tmp_path / "two-classes")
    with pytest.raises(tk.ConfigError, match=r"base: '.*two-classes' holds a 2-class head and the adapter in "
                                             r".*three a 3-class one"):
        tk.import_run(tmp_path / "three", base=str(two_classes), runs_dir=str(tmp_path / "runs"))


def test_the_views_draw_it(imported, small):
    pairs = tk.inspect.load_pairs([imported])
    wc = tk.inspect.weight_change(pairs)
    assert set(wc[(wc.delta_norm > 0) & wc.block.notna()].module) == {"query", "value"}
    tk.plots.weight_change_heatmap(wc)
    spectra = tk.inspect.update_spectra(pairs)
    assert (spectra.table[spectra.table.block.notna()].delta_norm > 0).any()
    md = tk.inspect.magnitude_direction(pairs)
    assert set(md.module) == {"query", "value"}
    tk.plots.magnitude_direction(md)
    drift = tk.inspect.representation_drift(pairs, data=small, n=16)
    tk.plots.cka_by_layer(drift)
    attributions = tk.inspect.attribute_runs(pairs, TEXTS[0], n_steps=4)
    assert [a.run for a in attributions][-1] == imported.name
    sections = tk.inspect.instrument_sections([imported], small, n=16)
    assert any("Magnitude" in heading for heading, _ in sections)


def test_post_training_reads_it_prune_quantize_distil_each_writing_a_record(imported, small):
    pruned = tk.prune(imported, sparsity=0.5, data=small)
    assert pruned.kind == "prune" and pruned.parent["name"] == imported.name
    assert pruned.display_name.startswith("prune 50 % of #") and pruned.status == "completed"
    assert pruned.summary["nonzero_params"] < pruned.summary["before"]["nonzero_params"]
    tk.load_run(pruned.path).load_model()
    quantized = tk.quantize(imported, data=small)  # int8 weights and activations (torchao)
    assert quantized.kind == "quantize" and quantized.parent["name"] == imported.name
    assert quantized.status == "completed" and quantized.summary["size_mb"] < quantized.summary["before"]["size_mb"]
    distilled = tk.distil(imported, student=[1], data=small, train_size=32, batch_size=16, epochs=1,
                          progress=False)  # the imported model teaches a one-block student
    assert distilled.kind == "distil" and distilled.config["teacher"]["name"] == imported.name
    assert tk.load_run(distilled.path).load_model().num_blocks == 1


# ----- the Trainer's curves -------------------------------------------------------------------------------
TRAINER_STATE = {
    "global_step": 20, "num_train_epochs": 2, "train_batch_size": 8,
    "log_history": [
        {"epoch": 0.5, "grad_norm": 1.5, "learning_rate": 4e-05, "loss": 0.71, "step": 5},
        {"epoch": 1.0, "grad_norm": 1.1, "learning_rate": 5e-05, "loss": 0.65, "step": 10},
        {"epoch": 1.0, "eval_loss": 0.62, "eval_accuracy": 0.7, "eval_runtime": 0.3,
         "eval_samples_per_second": 80.0, "eval_steps_per_second": 10.0, "step": 10},
        {"epoch": 2.0, "learning_rate": 1e-05, "loss": 0.55, "step": 20},
        {"epoch": 2.0, "eval_loss": 0.58, "eval_accuracy": 0.75, "eval_runtime": 0.3, "step": 20},
        {"epoch": 2.0, "step": 20, "total_flos": 123.0, "train_loss": 0.63, "train_runtime": 12.5,
         "train_samples_per_second": 25.6, "train_steps_per_second": 1.6},
    ],
}


@pytest.mark.parametrize("where", ["beside", "inside"])
def test_a_trainer_state_in_or_beside_the_folder_becomes_the_curves(base, tmp_path, where):
    out = tmp_path / "output"  # the Trainer's output_dir (its state beside the adapter) or a checkpoint-N/
    adapter = save_adapter(base, METHODS["lora"], out / "adapter")
    (out / "trainer_state.json" if where == "beside" else adapter / "trainer_state.json").write_text(
        json.dumps(TRAINER_STATE))
    run = tk.load_run(tk.import_run(adapter, runs_dir=str(tmp_path / "runs")).path)
    steps, evals = run.history("step"), run.history("eval")
    assert steps[["step", "loss", "lr"]].values.tolist() == [[5, 0.71, 4e-05], [10, 0.65, 5e-05], [20, 0.55, 1e-05]]
    assert steps["epoch"].tolist() == [0.5, 1.0, 2.0] and steps["grad_norm"].tolist()[:2] == [1.5, 1.1]
    assert evals.to_dict("records") == [{"step": 10, "epoch": 1.0, "val_loss": 0.62, "val_accuracy": 0.7},
                                        {"step": 20, "epoch": 2.0, "val_loss": 0.58, "val_accuracy": 0.75}]
    assert (run.summary["steps"], run.summary["wall_time_s"], run.summary["samples_per_s"]) == (20, 12.5, 25.6)
    assert {k: run.config["train"][k] for k in ("epochs", "batch_size", "lr")} == \
        {"epochs": 2, "batch_size": 8, "lr": 5e-05}
    assert run.display_name == "imported LoRA r4 α8 · 2 ep · lr 5e-5 · batch 8"
    assert "val_accuracy" not in run.summary  # no data given: the Trainer's own numbers stay in its curves
    tk.plots.training_curves([run]), tk.plots.eval_curves([run])


# ----- a full fine-tune -----------------------------------------------------------------------------------
def fine_tune(base: Path, folder: Path) -> Path:
    """The base with two tensors changed, saved as transformers saves a fine-tune (no tokenizer)."""
    model = AutoModelForSequenceClassification.from_pretrained(base)
    torch.manual_seed(2)
    with torch.no_grad():
        model.bert.encoder.layer[1].attention.self.query.weight.add_(0.05)
        model.classifier.weight.mul_(1.5)
    model.save_pretrained(folder)
    return folder


def test_a_fine_tuned_model_imports_with_its_base(base, small, tmp_path):
    tuned = fine_tune(base, tmp_path / "tuned")
    before = digests(tuned)
    run = tk.import_run(tuned, base=str(base), data=small, runs_dir=str(tmp_path / "runs"), name="my-fine-tune")
    assert digests(tuned) == before
    run = tk.load_run(run.path)
    assert (run.name, run.format, run.kind, run.parent, run.display_name) == (
        "my-fine-tune", "safetensors", "import", None, "imported full fine-tune")
    from safetensors.torch import load_file
    saved = load_file(str(run.path / "weights.safetensors"))
    assert set(saved) == {"bert.encoder.layer.1.attention.self.query.weight", "classifier.weight"}
    plain = AutoModelForSequenceClassification.from_pretrained(tuned).eval()
    model = run.load_model()
    assert torch.allclose(model.logits(**_encoded(model)), logits(plain), atol=1e-6)
    deltas = tk.inspect.weight_deltas(run)
    moved = {n for n, (_, d) in deltas.items() if d.abs().max() > 0}
    assert moved == set(saved)
    w0, delta = deltas["classifier.weight"]
    assert torch.allclose(delta, 0.5 * w0)
    assert run.summary["val_accuracy"] == tk.evaluate(run, small)["accuracy"]


# ----- a causal language model ----------------------------------------------------------------------------
def test_a_causal_lm_adapter_reloads_to_peft_logits(tmp_path, small):
    save_llama(tmp_path / "llama")
    with quiet():
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tmp_path / "llama"),
                               LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.save_pretrained(tmp_path / "adapter")
    run = tk.import_run(tmp_path / "adapter", data=small, runs_dir=str(tmp_path / "runs"))
    assert run.task == "causal_lm" and run.summary["val_perplexity"] > 1
    reloaded = tk.load_run(run.path).load_model()
    plain = plain_adapter(tmp_path / "llama", tmp_path / "adapter", AutoModelForCausalLM)
    assert torch.allclose(reloaded.logits(**_encoded(reloaded)), logits(plain), atol=1e-5)
    wc = tk.inspect.weight_change(run)
    assert set(wc[wc.delta_norm > 0].module) == {"query", "value"}


# ----- what is refused ------------------------------------------------------------------------------------
def _pickle_adapter(lora: Path, folder: Path) -> Path:
    """The adapter as older peft saved it: its tensors in adapter_model.bin, a pickle."""
    folder.mkdir()
    (folder / "adapter_config.json").write_bytes((lora / "adapter_config.json").read_bytes())
    torch.save(dict(_adapter_tensors(lora)), folder / "adapter_model.bin")
    (folder / "training_args.bin").write_bytes(b"never opened")
    return folder


def test_a_pickled_adapter_is_refused_with_a_conversion_that_works(lora, base, tmp_path):
    folder = _pickle_adapter(lora, tmp_path / "old-adapter")
    before = digests(folder)
    with pytest.raises(tk.ConfigError, match="adapter_model.bin.*pickle.*convert it once") as caught:
        tk.import_run(folder, runs_dir=str(tmp_path / "runs"))
    assert digests(folder) == before and tk.list_runs(tmp_path / "runs") == []
    command = shlex.split(str(caught.value).split("convert it once (tunekit never changes the folder itself): ")[1])
    assert command[:2] == ["python", "-c"]
    subprocess.run([sys.executable, "-c", command[2]], check=True, capture_output=True)
    run = tk.import_run(folder, runs_dir=str(tmp_path / "runs"))  # the converted file imports
    assert torch.allclose(tk.load_run(run.path).load_model().logits(**_encoded(run.model)),
                          logits(plain_adapter(base, lora)), atol=1e-6)


def test_a_pickled_fine_tune_is_refused_naming_the_file(base, tmp_path):
    folder = tmp_path / "old-fine-tune"
    folder.mkdir()
    (folder / "config.json").write_bytes((base / "config.json").read_bytes())
    torch.save({"x": torch.zeros(1)}, folder / "pytorch_model.bin")
    with pytest.raises(tk.ConfigError, match=r"pytorch_model.bin.*safetensors only.*model.safetensors"):
        tk.import_run(folder, base=str(base))


def _adapter_for(tmp_path: Path, base_model_name_or_path: str, lora: Path) -> Path:
    folder = tmp_path / "moved-adapter"
    folder.mkdir()
    config = json.loads((lora / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path":
                                                            base_model_name_or_path}))
    (folder / "adapter_model.safetensors").write_bytes((lora / "adapter_model.safetensors").read_bytes())
    return folder


BAD = {
    "no folder": (lambda tmp, lora, base: dict(path=tmp / "nowhere"),
                  r"path '.*nowhere' does not exist; import_run takes a peft adapter folder"),
    "a file": (lambda tmp, lora, base: dict(path=lora / "adapter_config.json"), r"is a file; import_run takes"),
    "neither kind": (lambda tmp, lora, base: dict(path=tmp),
                     r"is neither kind of folder .*peft adapter folder \(adapter_config.json \+ "
                     r"adapter_model.safetensors\) or a fine-tuned model folder"),
    "a tunekit record": (lambda tmp, lora, base: dict(path=tmp / "record"), r"is a tunekit run record already"),
    "base not found": (lambda tmp, lora, base: dict(path=_adapter_for(tmp, "/no/such/base", lora)),
                       r"base: '/no/such/base' \(.*adapter_config.json's base_model_name_or_path\) cannot be found"),
    "no base named": (lambda tmp, lora, base: dict(path=_adapter_for(tmp, "", lora)),
                      r"base: .*adapter_config.json names no base model"),
    "base of another size": (lambda tmp, lora, base: dict(path=lora, base=str(save_bert(tmp / "wide", hidden=32))),
                             r"base: '.*wide' \(a bert BertForSequenceClassification\) does not match .*lora: "
                             r".*does not fit"),
    "base with fewer blocks": (lambda tmp, lora, base: dict(path=lora, base=str(save_bert(tmp / "short", layers=1))),
                               r"does not match .*lora: 4 of the adapter's tensors have no place in it"),
    "fine-tune without base": (lambda tmp, lora, base: dict(path=fine_tune(base, tmp / "ft")),
                               r"base: .*ft is a fine-tuned model folder; pass base="),
    "fine-tune of another model": (lambda tmp, lora, base: dict(path=fine_tune(base, tmp / "ft"),
                                                                   base=str(save_llama(tmp / "llama"))),
                                   r"base: '.*llama' \(a llama .*\) does not match .*ft: it is a 'bert' model"),
    "the base itself": (lambda tmp, lora, base: dict(path=base, base=str(base)),
                        r"path: .*base holds the same weights as base .*nothing was fine-tuned"),
    "unknown task": (lambda tmp, lora, base: dict(path=lora, task="ner"),
                     r"task must be one of \['causal_lm', 'classification', 'seq2seq', 'sft'\] \(got 'ner'\)"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_in_words_and_writes_nothing(case, lora, base, tmp_path, imported):
    import shutil
    shutil.copytree(imported.path, tmp_path / "record")
    made, said = BAD[case]
    kwargs = made(tmp_path, lora, base)
    with pytest.raises((tk.ConfigError, tk.RunRecordError), match=said):
        tk.import_run(runs_dir=str(tmp_path / "runs"), **kwargs)
    assert tk.list_runs(tmp_path / "runs") == []


# ----- the command line -----------------------------------------------------------------------------------
def test_the_cli_imports_and_says_where_the_record_went(lora, tmp_path, capsys):
    assert main(["import", str(lora), "--runs-dir", str(tmp_path / "runs"), "--name", "from-the-hub"]) == 0
    out = capsys.readouterr().out
    assert f"run: {(tmp_path / 'runs' / 'from-the-hub').resolve()}" in out
    assert tk.load_run(tmp_path / "runs" / "from-the-hub").kind == "import"
    assert main(["import", str(tmp_path / "nowhere"), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "argument PATH: path" in capsys.readouterr().err
    assert main(["import", str(lora), "--base", "/no/such/base", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "argument --base: base: '/no/such/base'" in capsys.readouterr().err


# ----- the lab --------------------------------------------------------------------------------------------
def test_the_runs_panel_imports_from_its_path_box(lora, small, tmp_path):
    from tunekit.widgets.views import RunsPanel
    panel = RunsPanel(str(tmp_path / "runs"), small, model=str(tmp_path))
    box = panel.importer
    box.path.value = str(tmp_path / "nowhere")
    assert box.apply(wait=True)
    assert "Not imported: path" in box.status.value and panel.select.options == ()
    box.path.value = str(lora)
    assert box.apply(wait=True)
    [run] = tk.list_runs(tmp_path / "runs")
    assert "#1 imported LoRA r4 α8: accuracy" in box.status.value, box.status.value
    assert [name for _, name in panel.select.options] == [run.name] and run.summary["eval_examples"] > 0
