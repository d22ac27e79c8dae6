"""Saved adapters and exported models carry a filled-in model card whose snippet, run where
tunekit cannot be imported, gives tunekit's logits exactly."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch
import yaml

import tunekit as tk

TEXTS = ["A gorgeous, witty film, though the last act drags badly.", "Dull and far too long."]


def _front_matter(readme: str) -> dict:
    m = re.match(r"^---\n(.*?)\n---\n", readme, re.S)
    assert m, readme[:300]
    return yaml.safe_load(m.group(1))


def _snippet_logits(folder, base) -> torch.Tensor:
    """Run the card's code in a fresh process in which ``import tunekit`` fails."""
    readme = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    (folder / "use.py").write_text(code)
    runner = ("import sys, json, runpy; sys.modules['tunekit'] = None; "
              f"g = runpy.run_path({str(folder / 'use.py')!r}, run_name='__main__'); "
              "assert g['texts'] == %r; print('LOGITS', json.dumps(g['logits'].tolist()))" % TEXTS)
    out = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "BASE_MODEL": str(base), "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("LOGITS "))
    return torch.tensor(json.loads(line[len("LOGITS "):]))


def _tunekit_logits(model, max_length=128) -> torch.Tensor:
    model.module.eval()
    enc = model.tokenizer(TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        return model.logits(enc["input_ids"], enc["attention_mask"])


@pytest.mark.parametrize("pooling,strategy", [("mean", tk.LoRA(rank=2)), ("model", tk.IA3()),
                                              ("last", tk.LoRA(rank=2))], ids=["mean-lora", "model-ia3", "last-lora"])
def test_adapter_card_snippet_reproduces_the_logits(tiny_dir, tiny_llama, small, fast, pooling, strategy):
    base = tiny_llama if pooling == "last" else tiny_dir
    model = tk.load_model(base, label_names=small.label_names, pooling=pooling)
    run = tk.train(model, small, strategy, **fast)
    folder = run.path / "adapter"
    meta = _front_matter((folder / "README.md").read_text())
    assert meta["pipeline_tag"] == "text-classification" and meta["library_name"] == "peft"
    assert meta["pooling"] == pooling and meta["labels"] == small.label_names
    assert meta["metrics_measured"]["accuracy"] == pytest.approx(run.summary["val_accuracy"])
    assert "base_model" not in meta  # a local checkpoint has no hub id; the card names its path instead
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == base
    torch.testing.assert_close(_snippet_logits(folder, base), _tunekit_logits(model), atol=1e-5, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")  # plain peft reads it
def test_last_token_pooling_is_the_stock_decoder_head(tiny_llama, small, fast):
    """LlamaForSequenceClassification pools the last real token itself: the plain load is enough."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification
    model = tk.load_model(tiny_llama, label_names=small.label_names)
    assert model.pooling == "last"
    run = tk.train(model, small, tk.LoRA(rank=2), **fast)
    card = (run.path / "adapter" / "README.md").read_text()
    assert "the plain load gives" in card and "logits = model(**batch).logits" in card
    plain = AutoModelForSequenceClassification.from_pretrained(tiny_llama, num_labels=2)
    plain = PeftModel.from_pretrained(plain, str(run.path / "adapter")).eval()
    enc = model.tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(plain(**enc).logits, _tunekit_logits(model), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("strategy", [tk.Full(), tk.LoRA(rank=2)], ids=lambda s: s.label)
def test_exported_model_folder_loads_without_tunekit(tiny_dir, small, fast, tmp_path, strategy):
    model = tk.load_model(tiny_dir, label_names=small.label_names, pooling="mean")
    run = tk.train(model, small, strategy, **fast)
    folder = run.export(tmp_path / "exported")
    meta = _front_matter((folder / "README.md").read_text())
    assert meta["library_name"] == "transformers" and meta["pooling"] == "mean"
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}
    torch.testing.assert_close(_snippet_logits(folder, tiny_dir), _tunekit_logits(model), atol=1e-5, rtol=1e-4)
    with pytest.raises(tk.ConfigError, match="exists and is not empty"):
        run.export(folder)


def test_causal_lm_card(tiny_llama, small, fast):
    model = tk.load_model(tiny_llama, task="causal_lm")
    run = tk.train(model, small, tk.LoRA(rank=2), max_length=32, **fast)
    folder = run.path / "adapter"
    meta = _front_matter((folder / "README.md").read_text())
    assert meta["pipeline_tag"] == "text-generation" and "pooling" not in meta
    assert meta["metrics_measured"]["perplexity"] == pytest.approx(run.summary["val_perplexity"])
    enc = model.tokenizer(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    model.module.eval()
    with torch.no_grad():
        ours = model.hf(**enc).logits
    torch.testing.assert_close(_snippet_logits(folder, tiny_llama), ours, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_real_minilm_adapter_card_names_the_hub_model_and_classifies_as_tunekit(small, fast):
    from tunekit.sources import minilm_dir
    model = tk.load_model(label_names=small.label_names)
    run = tk.train(model, small, tk.LoRA(rank=4), **fast)
    folder = run.path / "adapter"
    meta = _front_matter((folder / "README.md").read_text())
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and meta["pooling"] == "mean"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    torch.testing.assert_close(_snippet_logits(folder, minilm_dir()), _tunekit_logits(model), atol=1e-5, rtol=1e-4)


def test_post_training_records_export_where_transformers_can_load_them(tiny_dir, small, fast, tmp_path):
    """A distilled student and a neuron-pruned model export as plain folders (their config says the new
    shapes) and the card's snippet reproduces tunekit's logits; pruned heads and torchao tensors cannot be
    described to plain transformers, and exporting them says so."""
    model = tk.load_model(tiny_dir, label_names=small.label_names, pooling="mean")
    run = tk.train(model, small, tk.Full(), **fast)
    kw = {k: v for k, v in fast.items() if k != "runs_dir"}
    student = tk.distil(run, student=[1], data=small, **kw)
    neurons = tk.prune(run, method="neurons", amount=0.25, data=small, importance="magnitude")
    for i, rec in enumerate((student, neurons)):
        folder = rec.export(tmp_path / f"exported-{i}")
        torch.testing.assert_close(_snippet_logits(folder, tiny_dir), _tunekit_logits(rec.load_model()),
                                   atol=1e-5, rtol=1e-4)
    heads = tk.prune(run, method="heads", amount=1, data=small)
    with pytest.raises(tk.ConfigError, match="pruned attention heads cannot be exported"):
        heads.export(tmp_path / "heads")
    quantized = tk.quantize(run, data=small)
    with pytest.raises(tk.ConfigError, match="quantized with torchao"):
        quantized.export(tmp_path / "quantized")
    assert not (tmp_path / "heads").exists() and not (tmp_path / "quantized").exists()
