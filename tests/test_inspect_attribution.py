"""Token attributions: completeness, baselines, targets, hooks, runs, and the stacked views."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

import tunekit as tk
from tunekit.inspect.attribution import (
    Attribution,
    attribute,
    attribute_runs,
    hook_counts,
    pad_baseline,
    removing_hooks,
)
from tunekit.plots.attribution import attribution_html, attribution_view

TEXT = "a gorgeous, witty, seductive movie."
EVIL = "<script>alert(1)</script> & friends"


def hooks_per_module(module: torch.nn.Module) -> list[tuple[int, int, int, int]]:
    return [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
             len(m._backward_pre_hooks)) for m in module.modules()]


def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.logits(ids, torch.ones_like(ids))[0]


# ----- completeness and the baseline --------------------------------------------------------------
def test_completeness_gap_equals_delta_and_is_small(tiny):
    a = attribute(tiny, TEXT)
    assert isinstance(a, Attribution) and len(a.tokens) == len(a.scores) == 10
    assert a.tokens[0] == "[CLS]" and a.tokens[-1] == "[SEP]" and a.n_steps == 50
    gap = abs(sum(a.scores) - (a.f_input - a.f_baseline))
    assert gap == pytest.approx(abs(a.delta), abs=1e-5) and a.gap == abs(a.delta)
    assert a.gap_relative == pytest.approx(abs(a.delta) / abs(a.f_input - a.f_baseline))
    assert a.gap_relative < 0.01
    # f_input and the probabilities are the model's own outputs for the sentence.
    ids = tiny.tokenize([TEXT])["input_ids"]
    assert a.f_input == pytest.approx(float(logits_of(tiny, ids)[a.target]), abs=1e-5)
    probs = tiny.predict_proba(TEXT)[0]
    assert list(a.probabilities) == tiny.label_names
    assert list(a.probabilities.values()) == pytest.approx(probs.tolist(), abs=1e-5)
    assert a.prediction == tiny.label_names[int(probs.argmax())] == a.target_label


def test_more_steps_shrink_the_gap(tiny):
    gaps = {n: attribute(tiny, TEXT, n_steps=n).gap_relative for n in (2, 50)}
    assert gaps[50] < gaps[2]


def test_baseline_keeps_special_tokens_and_pads_the_rest(tiny):
    tok = tiny.tokenizer
    enc = tok([TEXT], return_tensors="pt", return_special_tokens_mask=True)
    ids = enc["input_ids"]
    base = pad_baseline(tiny, ids, enc["special_tokens_mask"])
    assert base[0, 0] == tok.cls_token_id and base[0, -1] == tok.sep_token_id
    assert (base[0, 1:-1] == tok.pad_token_id).all() and base.shape == ids.shape
    # f_baseline is the model's target logit on exactly that baseline (attention mask of the sentence).
    a = attribute(tiny, TEXT)
    assert a.f_baseline == pytest.approx(float(logits_of(tiny, base)[a.target]), abs=1e-5)
    # Special tokens are in both endpoints with the same embedding: they get no attribution.
    assert a.scores[0] == pytest.approx(0.0, abs=1e-7) and a.scores[-1] == pytest.approx(0.0, abs=1e-7)


def test_decoder_last_token_pooling_sees_the_sentence_ids(tmp_path):
    """A decoder pools at its last non-pad token; a PAD baseline must not move that position
    (here pad = [SEP], so the baseline is all pad after [CLS])."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    from tunekit.sources import minilm_dir

    tok = AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.sep_token_id)
    torch.manual_seed(0)
    LlamaModel(cfg).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert tk.load_model(str(tmp_path)).pooling == "last"  # tunekit's default for a decoder with a score head
    # Hugging Face's own head finds the last token by comparing ids with the pad id
    model = tk.load_model(str(tmp_path), pooling="model")
    model.tokenizer.pad_token = "[SEP]"
    model.hf.config.pad_token_id = tok.sep_token_id
    a = attribute(model, TEXT)
    assert a.gap_relative < 1e-3  # measured 3e-5
    enc = model.tokenizer([TEXT], return_tensors="pt", return_special_tokens_mask=True)
    naive = float(logits_of(model, pad_baseline(model, enc["input_ids"], enc["special_tokens_mask"]))[a.target])
    assert abs(naive - a.f_baseline) > 10 * abs(a.delta)  # feeding the baseline ids whole would pool elsewhere
    # "last" pooling finds it from the attention mask, so the baseline's ids cannot move it
    model.pooling = "last"
    b = attribute(model, TEXT)
    assert b.gap_relative < 1e-3
    naive = float(logits_of(model, pad_baseline(model, enc["input_ids"], enc["special_tokens_mask"]))[b.target])
    assert naive == pytest.approx(b.f_baseline, abs=1e-5)


def test_batched_and_unbatched_steps_agree(tiny):
    a = attribute(tiny, TEXT, n_steps=8)
    b = attribute(tiny, TEXT, n_steps=8, internal_batch_size=3)
    assert b.scores == pytest.approx(a.scores, abs=1e-5) and b.delta == pytest.approx(a.delta, abs=1e-5)


def test_truncation_and_training_mode_restored(tiny):
    tiny.module.train()
    a = attribute(tiny, TEXT, max_length=5, n_steps=4)
    assert len(a.tokens) == 5 and a.tokens[-1] == "[SEP]"
    assert tiny.module.training
    tiny.module.eval()
    attribute(tiny, TEXT, n_steps=4)
    assert not tiny.module.training


# ----- targets -----------------------------------------------------------------------------------
def test_target_by_name_index_and_errors(tiny):
    names = tiny.label_names
    by_name = attribute(tiny, TEXT, target=names[0], n_steps=8)
    by_index = attribute(tiny, TEXT, target=0, n_steps=8)
    assert by_name.target == by_index.target == 0 and by_name.target_label == names[0]
    assert by_name.scores == pytest.approx(by_index.scores)
    other = attribute(tiny, TEXT, target=1, n_steps=8)
    assert other.target_label == names[1] and other.prediction == by_name.prediction
    assert attribute(tiny, TEXT, target=-1, n_steps=4).target == len(names) - 1
    for bad in ("nope", 2, True, 1.0):
        with pytest.raises(tk.ConfigError, match="target must be one of the labels") as e:
            attribute(tiny, TEXT, target=bad)
        assert all(n in str(e.value) for n in names)
    for kw in ({"n_steps": 0}, {"internal_batch_size": 0}, {"max_length": 1}):
        with pytest.raises(tk.ConfigError, match=next(iter(kw))):
            attribute(tiny, TEXT, **kw)
    with pytest.raises(tk.ConfigError, match="text"):
        attribute(tiny, "  ")


# ----- hooks ---------------------------------------------------------------------------------------
def test_no_hooks_left_after_a_call_or_an_exception(tiny, monkeypatch):
    before = hooks_per_module(tiny.module)
    attribute(tiny, TEXT, n_steps=6)
    assert hooks_per_module(tiny.module) == before
    assert hook_counts(tiny.module) == {"forward_hooks": 0, "forward_pre_hooks": 0,
                                        "backward_hooks": 0, "backward_pre_hooks": 0}

    seen = []
    original = tiny.logits

    def fails_mid_integration(input_ids, attention_mask):
        # Raise inside the batched pass, while captum's hook and ours are on the embedding.
        if input_ids.shape[0] == 6:
            emb = tiny.hf.get_input_embeddings()
            seen.append((len(emb._forward_hooks), len(emb._forward_pre_hooks)))
            raise RuntimeError("boom")
        return original(input_ids, attention_mask)

    monkeypatch.setattr(tiny, "logits", fails_mid_integration)
    tiny.module.train()
    with pytest.raises(RuntimeError, match="boom"):
        attribute(tiny, TEXT, n_steps=6)
    assert seen == [(1, 1)]  # the hooks were there when it failed ...
    assert hooks_per_module(tiny.module) == before  # ... and are gone now
    assert tiny.module.training


def test_removing_hooks_keeps_existing_ones():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    keep = net[0].register_forward_hook(lambda *a: None)
    with pytest.raises(ValueError), removing_hooks(net):
        net[0].register_forward_hook(lambda *a: None)
        net[1].register_forward_pre_hook(lambda *a, **k: None, with_kwargs=True)
        net.register_full_backward_hook(lambda *a: None)
        raise ValueError
    assert hooks_per_module(net) == [(0, 0, 0, 0), (1, 0, 0, 0), (0, 0, 0, 0)]
    assert not net[1]._forward_pre_hooks_with_kwargs
    keep.remove()


# ----- runs ----------------------------------------------------------------------------------------
def test_lora_probe_and_reloaded_runs(tiny_dir, small, fast):
    lora = tk.train(tk.load_model(tiny_dir, label_names=small.label_names), small, tk.LoRA(rank=4), **fast)
    probe = tk.train(tk.load_model(tiny_dir, label_names=small.label_names), small, tk.Probe(), **fast)
    before = hooks_per_module(lora.model.module)  # the model's own (adapters.match_linear_dtype)
    rows = attribute_runs([lora, probe], TEXT, n_steps=16)
    assert [r.run for r in rows] == ["base", lora.name, probe.name]
    assert [r.label for r in rows] == ["base", lora.label, probe.label]
    for r in rows:
        assert abs(sum(r.scores) - (r.f_input - r.f_baseline)) == pytest.approx(abs(r.delta), abs=1e-5)
        assert r.tokens == rows[0].tokens
    assert rows[1].scores != pytest.approx(rows[0].scores, abs=1e-6)  # LoRA changed something
    assert hooks_per_module(lora.model.module) == before  # attribution left none of its own behind

    # The same attributions from the records on disk (as after a kernel restart).
    again = attribute_runs([tk.load_run(lora.path), str(probe.path)], TEXT, n_steps=16)
    for a, b in zip(rows, again):
        assert (a.run, a.label, a.target) == (b.run, b.label, b.target)
        assert b.scores == pytest.approx(a.scores, abs=1e-4)
    # A fixed target applies to every model; include_base=False leaves the base out.
    fixed = attribute_runs(lora, TEXT, target=small.label_names[1], include_base=False, n_steps=4)
    assert len(fixed) == 1 and fixed[0].target == 1
    one = attribute(lora, TEXT, n_steps=4)
    assert (one.run, one.label) == (lora.name, lora.label)


# ----- views ----------------------------------------------------------------------------------------
def fake(label: str, scores, tokens=None, run=None) -> dict:
    tokens = tokens or ["[CLS]", "a", "film", "[SEP]"]
    return {"text": "a film", "tokens": tokens, "scores": scores, "target": 1, "target_label": "fresh",
            "prediction": "fresh", "probabilities": {"rotten": 0.3, "fresh": 0.7}, "delta": 1e-4,
            "gap_relative": 1e-3, "run": run or label, "label": label}


def test_html_escapes_every_token_and_label(tiny):
    a = attribute(tiny, EVIL, n_steps=4)
    out = attribution_html([a, fake("<b>lora</b>", [0.0, 1, -1, 0],
                                    tokens=["[CLS]", "<script>alert(1)</script>", "&", "[SEP]"])])
    assert "<script" not in out and "<b>lora" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out and "&lt;b&gt;lora&lt;/b&gt;" in out
    assert "&amp;" in out and "& " not in out
    assert out.count("<tr>") == 2 and "rgba(214,39,40" in out and "rgba(31,119,180" in out
    assert 'title="&lt;script&gt;alert(1)&lt;/script&gt;: +1"' in out
    # The plotly view escapes its tick labels, hover text and title as well.
    fig = attribution_view([a])
    texts = list(fig.layout.xaxis.ticktext) + list(fig.layout.yaxis.ticktext) + [fig.layout.title.text]
    texts += [t for row in fig.data[0].text for t in row]
    assert not any("<script" in t for t in texts)
    assert any("&lt;" in t for t in texts) and any("&amp;" in t for t in texts)


def test_html_normalisation_row_or_global():
    rows = [fake("base", [0.0, 1.0, -0.5, 0.0]), fake("full", [0.0, 10.0, 5.0, 0.0])]
    by_row = attribution_html(rows)
    glob = attribution_html(rows, normalize="global")
    assert by_row.count("rgba(214,39,40,0.850)") == 2  # each row's largest score is full colour
    assert glob.count("rgba(214,39,40,0.850)") == 1
    with pytest.raises(tk.ConfigError, match="normalize"):
        attribution_html(rows, normalize="max")
    diff = attribution_html(rows, difference=True)
    assert diff.count("<tr>") == 1 and "minus the base" in diff


def test_view_one_row_per_run_and_differences():
    rows = [fake("base", [0.0, 1.0, -0.5, 0.0]), fake("probe", [0.0, 0.5, 0.5, 0.0]),
            fake("full", [0.0, -2.0, 1.0, 0.0])]
    fig = attribution_view(rows)
    z = fig.data[0].z
    assert len(z) == 3 and all(len(r) == 4 for r in z)
    assert list(fig.layout.xaxis.ticktext) == ["[CLS]", "a", "film", "[SEP]"]
    assert fig.data[0].zmid == 0 and fig.data[0].zmin == -fig.data[0].zmax
    assert [t.split(":")[0] for t in fig.layout.yaxis.ticktext] == ["base", "probe", "full"]
    assert list(z[2]) == pytest.approx([0.0, -1.0, 0.5, 0.0])  # scaled per row
    d = attribution_view(rows, difference=True, normalize="none")
    assert len(d.data[0].z) == 2
    assert list(d.data[0].z[1]) == pytest.approx([0.0, -3.0, 1.5, 0.0])
    with pytest.raises(tk.ConfigError, match="same tokens"):
        attribution_view([rows[0], fake("x", [0.0, 1.0, 0.0], tokens=["[CLS]", "b", "[SEP]"])], difference=True)
    # Repeated labels get the run name; frames (one or concatenated) work like the objects.
    two = [fake("lora", [0.0, 1.0, 0.0, 0.0], run="lora-a"), fake("lora", [0.0, 0.0, 1.0, 0.0], run="lora-b")]
    assert [t.split(":")[0] for t in attribution_view(two).layout.yaxis.ticktext] == ["lora (lora-a)", "lora (lora-b)"]


def test_frames_round_trip(tiny):
    a = attribute(tiny, TEXT, n_steps=4)
    df = a.to_frame()
    assert list(df["token"]) == a.tokens and df["score"].tolist() == a.scores
    assert set(df["run"]) == {"base"} and df["delta"].iloc[0] == a.delta
    both = pd.concat([df, df.assign(run="other", label="other")])
    fig = attribution_view(both)
    assert len(fig.data[0].z) == 2
    assert attribution_html(df) == attribution_html(a) == a._repr_html_()


def test_plots_module_imports_no_torch(tiny):
    a = attribute(tiny, EVIL, n_steps=4)
    code = ("import sys, json; import tunekit.plots.attribution as m; import tunekit.plots as p; "
            "recs = json.loads(sys.stdin.read()); html = p.attribution_html(recs); "
            "fig = m.attribution_view(recs, difference=True); "
            "assert '<script' not in html and len(fig.data[0].z) == 1; "
            "assert 'torch' not in sys.modules, 'torch was imported'; print('ok')")
    records = json.dumps([a.to_dict(), {**a.to_dict(), "run": "x", "label": "x"}])
    out = subprocess.run([sys.executable, "-c", code], check=False, input=records, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# ----- the real model ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_gap_on_the_builtin_model(rt):
    model = tk.load_model(label_names=rt.label_names)
    text = "the plot is paper-thin and the acting is wooden."
    gaps = {n: attribute(model, text, n_steps=n).gap_relative for n in (10, 50, 200)}
    assert gaps[50] < 1e-2  # measured 9e-6 (0 .. 9e-4 over five sentences)
    assert gaps[200] < gaps[10]  # measured 1.2e-6 vs 0.18


def test_the_heatmap_names_rows_by_number_and_the_table_scrolls_inside_itself():
    """Issue 20: long run names squeezed the difference heatmap to 230 px, and the table's tokens
    were cut off."""
    rows = [fake("#1 probe · 200 ex · 1 ep", [0.1, 0.5, 0.1, 0.0]),
            fake("#12 LoRA r8 α16 · 200 ex · 1 ep", [0.2, 0.1, 0.0, 0.0])]
    fig = attribution_view(rows)
    assert [t.split(":")[0] for t in fig.layout.yaxis.ticktext] == ["#1", "#12"]
    assert "#12 LoRA r8 α16" in fig.data[0].text[1][0]  # the whole name in the hover
    html = attribution_html(rows)
    assert "overflow-x:auto;max-width:100%" in html and html.count("position:sticky;left:0") == 2


def test_step_counts_and_lengths_past_what_runs(tiny):
    """Found by the fuzz (issue 22): n_steps=2**31 ran out of memory, internal_batch_size=2**63
    raised OverflowError, and max_length=10**6 on a long sentence ran past BERT's 512 positions."""
    with pytest.raises(tk.ConfigError, match=r"n_steps must be an integer in 1 \.\. 10000"):
        attribute(tiny, "a fine film", n_steps=2**31)
    assert attribute(tiny, "a fine film", n_steps=4, internal_batch_size=2**63).delta is not None
    with pytest.warns(UserWarning, match="using max_length=512"):
        assert len(attribute(tiny, "word " * 700, n_steps=2, max_length=10**6).tokens) == 512
