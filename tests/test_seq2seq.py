"""Sequence to sequence on encoder-decoders (T5, BART, Marian; tiny random ones made here, trained on
real BBC headline pairs): groups per stack with cross-attention named, every strategy, records that
reload to their numbers, the views per side, and the errors in words."""
import math

import pandas as pd
import pytest
import torch

import tunekit as tk
from tunekit.config import ConfigError
from tunekit.tiny import make_tiny

FAMILIES = ("t5", "bart", "marian")


@pytest.fixture(scope="session")
def headlines():
    data = tk.data.bbc_headlines()
    return tk.data.from_pairs(pd.DataFrame({"source": data.train["text"][:60], "target": data.train["target"][:60]}),
                              name="headlines-60", validation_size=12, test_size=8)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    return {f: str(make_tiny(f, tmp_path_factory.mktemp(f"tiny-{f}"))) for f in FAMILIES}


def fast(tmp_path, **kw):
    return dict(dict(train_size=16, eval_size=6, epochs=1, batch_size=8, max_length=64, runs_dir=str(tmp_path),
                     progress=False), **kw)


@pytest.mark.parametrize("family", FAMILIES)
def test_groups_follow_the_input_through_both_stacks(family, tiny):
    m = tk.load_model(tiny[family], task="seq2seq")
    b = m.backbone
    assert b.encoder_decoder and m.num_blocks == 4 and b.encoder_blocks == 2
    assert [b.block_title(i) for i in range(4)] == ["encoder 0", "encoder 1", "decoder 0", "decoder 1"]
    stacks = [p.split(".")[-4] for p in b.block_prefixes]  # ...encoder.block.0. / ...decoder.layers.1.
    assert stacks == ["encoder", "encoder", "decoder", "decoder"]
    counts = m.parameter_counts()
    assert counts["total"] == sum(p.numel() for p in m.hf.parameters())
    assert sum(g["total"] for g in counts["by_group"].values()) == counts["total"]
    labels = {b.locate(n)[2] for n, _ in m.hf.named_parameters() if b.locate(n)[1] == 3}
    assert {"cross_query", "cross_key", "cross_value", "cross_out", "query", "intermediate"} <= labels
    encoder_labels = {b.locate(n)[2] for n, _ in m.hf.named_parameters() if b.locate(n)[1] == 0}
    assert not any(label.startswith("cross_") for label in encoder_labels)
    assert len(b.blocks) == 4 and b.blocks[2] is m.hf.get_decoder().get_submodule(b.stack_paths[1].split(".", 1)[1])[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_strategy_trains_and_reloads_to_its_numbers(family, tiny, headlines, tmp_path):
    strategies = [tk.LoRA(rank=2), tk.IA3(), tk.Freeze(train_blocks=[3]), "full", tk.PromptTuning(tokens=3),
                  tk.LNTuning()] if family == "t5" else [tk.LoRA(rank=2), tk.Freeze(train_blocks=[0]), "full"]
    runs = tk.compare(strategies, headlines, model=tiny[family], task="seq2seq",
                      task_options={"generation": {"examples": 3, "max_new_tokens": 4}}, **fast(tmp_path, lr=1e-3))
    assert [r.status for r in runs] == ["completed"] * len(strategies)
    for run in runs:
        s = run.summary
        assert run.task == "seq2seq" and s["val_generated"] == 3 and math.isfinite(s["val_perplexity"])
        assert run.config["data"]["truncated"]["train"]["sources_truncated"] == 16  # articles are long
        assert {g["reference"] for g in run.generations()} <= set(headlines.validation["target"])
        again = tk.evaluate(tk.load_run(run.path), headlines)
        for key in ("perplexity", "rougeL", "chrf"):
            assert again[key] == pytest.approx(s[f"val_{key}"], rel=1e-4, abs=1e-6), (run.label, key)


PEFT_FAMILY = [tk.DoRA(rank=2), tk.AdaLoRA(target_rank=1, init_rank=2), tk.VeRA(rank=16), tk.LoHa(rank=2),
               tk.LoKr(rank=2), tk.LoRA(rank=2, init="pissa"), tk.LoRA(rank=2, init="olora"),
               tk.LoRA(rank=2, rslora=True)]


@pytest.mark.parametrize("family", FAMILIES)
def test_the_peft_family_trains_counts_and_reloads_on_encoder_decoders(family, tiny, headlines, tmp_path):
    """The rest of the PEFT family on both stacks: each counts before training what the run then trained,
    its adapter lands in the encoder's and the decoder's blocks, and the record reloads to its numbers."""
    for strategy in PEFT_FAMILY:
        m = tk.load_model(tiny[family], task="seq2seq", generation={"examples": 3, "max_new_tokens": 4})
        counted = strategy.count(m)["trainable"]
        run = tk.train(m, headlines, strategy, **fast(tmp_path, lr=1e-3))
        assert run.status == "completed" and run.summary["params"]["trainable"] == counted > 0, run.label
        by_group = run.summary["params"]["by_group"]
        assert all(by_group[f"block.{i}"]["trainable"] > 0 for i in range(4)), (run.label, by_group)
        again = tk.evaluate(tk.load_run(run.path), headlines)
        for key in ("perplexity", "rougeL", "chrf"):
            assert again[key] == pytest.approx(run.summary[f"val_{key}"], rel=1e-4, abs=1e-6), (run.label, key)


def test_the_loss_is_the_models_teacher_forced_loss_over_target_tokens(tiny, headlines):
    m = tk.load_model(tiny["bart"], task="seq2seq", instruction="headline:")
    enc = m.task.encode_frame(m.tokenizer, headlines.train.iloc[:3], 48)
    batch = enc.collate(range(3))
    m.module.eval()
    out = m.module(batch)
    targets = [m.tokenizer(text_target=t)["input_ids"] for t in headlines.train["target"][:3]]
    assert int(out.count) == sum(len(t) for t in targets)
    with torch.no_grad():
        logits = m.hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      labels=batch["labels"]).logits
    mine = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
    assert out.loss.item() == pytest.approx(mine.item(), rel=1e-5)
    assert m.tokenizer.decode(enc.input_ids[0], skip_special_tokens=True).startswith("headline :")
    assert all(len(ids) <= 48 for ids in enc.input_ids) and enc.truncated == {"sources_truncated": 3}


def test_seq2seq_refuses_decoders_texts_chat_templates_and_prefix_tuning(tiny, headlines, tmp_path):
    llama = str(make_tiny("llama", tmp_path / "llama"))
    with pytest.raises(ConfigError, match="needs an encoder-decoder model"):
        tk.load_model(llama, task="seq2seq")
    with pytest.raises(ConfigError, match="chat_template is for task='sft'"):
        tk.load_model(tiny["t5"], task="seq2seq", chat_template=True)
    m = tk.load_model(tiny["t5"], task="seq2seq")
    with pytest.raises(ConfigError, match="trains on \\(source, target\\) pairs"):
        tk.train(m, tk.data.from_texts([f"text {i}" for i in range(10)]), "full", **fast(tmp_path))
    with pytest.raises(ConfigError, match="PrefixTuning is for causal language models"):
        tk.train(m, headlines, tk.PrefixTuning(tokens=2), **fast(tmp_path))
    with pytest.raises(ConfigError, match="Probe trains a classification head"):
        tk.train(m, headlines, "probe", **fast(tmp_path))


def test_weight_change_and_representation_drift_cover_both_stacks(tiny, headlines, tmp_path):
    from tunekit import inspect as ti
    m = tk.load_model(tiny["t5"], task="seq2seq", generation={"examples": 2, "max_new_tokens": 3})
    run = tk.train(m, headlines, "full", **fast(tmp_path, lr=1e-3))
    wc = ti.weight_change([run])
    assert set(range(4)) <= set(wc["block"].dropna().astype(int))
    assert {"cross_query", "cross_value"} <= set(wc["module"])
    drift = ti.representation_drift([run], data=headlines, n=8)
    assert len(drift) == 4 + 1 and drift["cka"].between(-1e-6, 1 + 1e-6).all()


@pytest.mark.parametrize("family,strategy", [("t5", tk.LoRA(rank=2)), ("bart", "full")], ids=["t5-lora", "bart-full"])
def test_the_card_snippet_writes_what_tunekit_writes(family, strategy, tiny, headlines, tmp_path):
    from test_sft import _snippet_generations, _snippet_ids
    m = tk.load_model(tiny[family], task="seq2seq", instruction="headline:",
                      generation={"max_new_tokens": 5, "examples": 2})
    run = tk.train(m, headlines, strategy, **fast(tmp_path, lr=1e-3))
    folder = run.path / "adapter" if run.format == "peft" else tk.load_run(run.path).export(tmp_path / "exported")
    assert "pipeline_tag: text2text-generation" in (folder / "README.md").read_text()
    sources, theirs = _snippet_generations(folder, tiny[family])
    model = tk.load_run(run.path).load_model()
    df = pd.DataFrame({"text": sources, "target": ["x"] * len(sources), "label": 0})
    batch = model.task.encode_frame(model.tokenizer, df, 64).collate(range(len(sources)))
    ours = [s["generated"] for s in model.module.generate_samples(batch, len(sources))]
    assert theirs == ours, (theirs, ours)
    # the tokens too (a tiny random model may write only special tokens, which decode to nothing)
    ids = model.module.generate_ids(batch["input_ids"], batch["attention_mask"])
    assert _snippet_ids(folder, tiny[family]) == ids.tolist()
