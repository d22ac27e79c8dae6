"""Prompt tuning (issue 23): learned virtual tokens before the text, no weight changed. It trains
through tunekit's own task modules exactly as peft's forward would run it, counts as peft
counts, reloads, its card's snippet reproduces tunekit's logits, the views show where its
change is (the virtual tokens, in words and in a figure), and what it cannot do is refused in words."""
import re

import pytest
import torch

import tunekit as tk
from tunekit.tiny import make_tiny

PROMPT = "the review says"


@pytest.fixture(scope="module")
def prompted(tiny_dir, small, tmp_path_factory):
    """Prompt-tuned runs on the tiny BERT: mean pooling (random start) and the model's own pooler
    (started from a text)."""
    root = tmp_path_factory.mktemp("prompt")
    runs = {}
    for pooling, strategy in (("mean", tk.PromptTuning(tokens=4)),
                              ("model", tk.PromptTuning(tokens=3, init="text", init_text=PROMPT))):
        model = tk.load_model(tiny_dir, label_names=small.label_names, pooling=pooling)
        runs[pooling] = tk.train(model, small, strategy, lr=3e-2, train_size=64, batch_size=16, evals_per_epoch=1,
                                 runs_dir=str(root / "runs"), progress=False)
    return runs


def test_it_trains_counts_as_peft_and_reloads_to_its_numbers(prompted, small):
    for run in prompted.values():
        assert run.status == "completed"
        assert run.config["params"]["trainable"] == run.model.peft.get_nb_trainable_parameters()[0]
        assert run.summary["params"]["by_group"]["prompt"]["trainable"] == run.config["strategy"]["tokens"] * 128
        assert run.summary["cache"][0]["kind"] is None  # every block sees the virtual tokens: nothing cached
        again = tk.load_run(run.path)
        got = tk.evaluate(again, small)
        assert got["accuracy"] == run.summary["val_accuracy"]
        assert got["loss"] == pytest.approx(run.summary["val_loss"], rel=1e-5)


def test_tunekits_forward_is_peft_own_with_the_virtual_tokens_first(prompted):
    """The model's own pooler: peft's PeftModel forward gives tunekit's logits; mean pooling:
    the mean over virtual and real tokens, computed here from peft's prompt."""
    from test_cards import TEXTS, _tunekit_logits
    for pooling, run in prompted.items():
        model = run.model
        enc = model.tokenizer(TEXTS, padding=True, return_tensors="pt")
        model.module.eval()
        with torch.no_grad():
            if pooling == "model":
                expected = model.peft(**enc).logits
            else:
                prompt = model.peft.get_prompt(batch_size=2)
                embeds = torch.cat([prompt, model.hf.get_input_embeddings()(enc["input_ids"])], dim=1)
                mask = torch.cat([torch.ones(2, prompt.shape[1], dtype=torch.long), enc["attention_mask"]], dim=1)
                hidden = model.hf.base_model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
                pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
                expected = model.module.head()(pooled)
        torch.testing.assert_close(_tunekit_logits(model), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["mean", "model"])
def test_the_adapter_cards_snippet_gives_tunekits_logits_without_tunekit(prompted, tiny_dir, pooling):
    from test_cards import _snippet_logits, _tunekit_logits
    run = prompted[pooling]
    model = tk.load_run(run.path).load_model()
    torch.testing.assert_close(_snippet_logits(run.path / "adapter", tiny_dir), _tunekit_logits(model),
                               atol=1e-5, rtol=1e-4)


def test_no_weight_changed_and_the_virtual_tokens_are_read_back(prompted, tiny_dir, small, tmp_path):
    run = prompted["model"]
    wc = tk.inspect.weight_change(run)
    assert set(wc[wc.delta_norm > 0].group) == {"head"}  # the blocks and embeddings as they were
    table = tk.inspect.virtual_tokens(run)
    prompt = run.model.module.prompt(1)[0].detach()
    assert list(table.token) == [0, 1, 2]
    assert table.norm.tolist() == pytest.approx(prompt.norm(dim=1).tolist(), rel=1e-5)
    assert all(len(n) == 5 and c == sorted(c, reverse=True) for n, c in zip(table.nearest, table.cosine))
    # started from the text and barely trained: each virtual token is still nearest to its word
    model = tk.load_model(tiny_dir, label_names=small.label_names, pooling="model")
    still = tk.train(model, small, tk.PromptTuning(tokens=3, init="text", init_text=PROMPT), lr=1e-9,
                     train_size=16, batch_size=16, evals_per_epoch=1, runs_dir=str(tmp_path / "runs"), progress=False)
    words = model.tokenizer.convert_ids_to_tokens(model.tokenizer(PROMPT)["input_ids"])[:3]  # as peft encodes it
    near = tk.inspect.virtual_tokens(still)
    assert [n[0] for n in near.nearest] == words and all(c[0] == pytest.approx(1.0, abs=1e-4) for c in near.cosine)
    fig = tk.plots.virtual_tokens(near)
    from tunekit.plots.captions import caption, kind_of
    assert kind_of(fig) == "virtual_tokens" and caption("virtual_tokens")
    assert list(fig.data[0].text) == words and len(fig.layout.shapes) == 1  # the typical word's length
    assert tk.inspect.virtual_tokens(tk.load_run(run.path)).norm.tolist() == pytest.approx(table.norm.tolist())
    with pytest.raises(tk.ConfigError, match="none of the runs is prompt tuning"):
        tk.plots.virtual_tokens(near.iloc[:0])


def test_what_cannot_fold_into_weights_is_refused_in_words(prompted, small, tmp_path):
    run = prompted["mean"]
    with pytest.raises(tk.ConfigError, match=r"prompt tuning adapter cannot be folded into the weights"):
        run.export(tmp_path / "exported")
    with pytest.raises(tk.ConfigError, match=r"prompt tuning adapter cannot be folded"):
        tk.quantize(run, "int8-weight", data=small, runs_dir=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no record of it
    with pytest.raises(tk.ConfigError, match=r"PromptTuning\.tokens.*1 \.\. 512"):
        tk.PromptTuning(tokens=0)
    with pytest.raises(tk.ConfigError, match=r"PromptTuning\.init.*random"):
        tk.PromptTuning(init="vocab")
    with pytest.raises(tk.ConfigError, match=r"PromptTuning\.init_text.*None unless init='text'"):
        tk.PromptTuning(init_text="hello")
    with pytest.raises(tk.ConfigError, match=r"PromptTuning\.init_text"):
        tk.PromptTuning(init="text")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_decoder_learns_virtual_tokens_as_a_language_model(family, tmp_path, small):
    path = make_tiny(family, tmp_path / "model")
    model = tk.load_model(str(path), task="causal_lm")
    run = tk.train(model, small, tk.PromptTuning(tokens=4), train_size=32, batch_size=16, evals_per_epoch=1,
                   runs_dir=str(tmp_path / "runs"), progress=False)
    assert run.status == "completed" and run.summary["val_perplexity"] > 1
    enc = model.tokenizer(["a small test"], return_tensors="pt")
    out = model.module({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    assert out.logits.shape[1] == enc["input_ids"].shape[1]  # the text's positions only
    again = tk.evaluate(tk.load_run(run.path), small)
    assert again["loss"] == pytest.approx(run.summary["val_loss"], rel=1e-5)


def test_the_cli_the_words_and_the_labs_box_name_its_tokens(tiny):
    from tunekit.arguments import parse_strategies, strategy_text
    from tunekit.run_names import strategy_words
    assert parse_strategies("prompt_tuning:8") == [tk.PromptTuning(tokens=8)]
    assert strategy_text(tk.PromptTuning(tokens=8).describe()) == "prompt_tuning:8"
    s = tk.PromptTuning(tokens=8, init="text", init_text=PROMPT)
    assert strategy_words({"strategy": s.describe(), "strategy_label": s.label}) == \
        "prompt tuning (8 tokens, from text)"
    pytest.importorskip("ipywidgets")
    from tunekit.widgets.controls import StrategyControls
    from tunekit.widgets.diagram import ModelDiagram
    controls = StrategyControls(tiny, ModelDiagram(tiny))
    controls.kind_w.value = "prompt_tuning"
    controls.rank.value = 12
    assert controls.rank.description == "Prompt tuning tokens" and controls.targets.layout.display == "none"
    assert controls.strategy() == tk.PromptTuning(tokens=12) and not controls.problem
    assert f"<b>{12 * 128 + 258:,}</b>" in controls.counts.value  # 12 x hidden 128, plus the head


def test_the_labs_weights_view_says_where_its_change_is(prompted, small, tmp_path):
    import re
    import shutil
    pytest.importorskip("ipywidgets")
    from tunekit.widgets.views import RunsPanel
    run = prompted["mean"]
    shutil.copytree(run.path, tmp_path / "runs" / run.name)
    panel = RunsPanel(str(tmp_path / "runs"), small)
    panel.wait()
    panel.select.value = (run.name,)
    panel.show("Weights", wait=True)
    assert panel.state["Weights"] == "drawn", panel.status["Weights"].value
    kids = list(panel.panes["Weights"].children)
    words = re.sub("<[^>]+>", "", " ".join(getattr(w, "value", "") for w in kids))
    assert "changes no weight of the model: prompt tuning learned virtual tokens" in words
    titles = [w.layout.title.text or "" for w in kids if type(w).__name__ == "FigureWidget"]
    assert any(t.startswith("Learned virtual tokens") for t in titles), titles
    assert "a typical word" in words  # its caption


# ----- prefix tuning: keys and values before the text, in every layer ----------------------------------
@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
def test_prefix_tuning_is_peft_own_forward_and_rebuilds_from_its_record(family, tmp_path, small):
    """tunekit's causal LM module with a prefix gives the logits and loss of peft's own forward, counts
    as peft counts, reloads to its numbers (every point of its snapshots too), and its card's snippet
    gives the same logits without tunekit."""
    from test_cards import TEXTS, _snippet_logits
    path = str(make_tiny(family, tmp_path / "model"))
    model = tk.load_model(path, task="causal_lm")
    run = tk.train(model, small, tk.PrefixTuning(tokens=4), lr=1e-2, train_size=32, batch_size=8,
                   evals_per_epoch=1, snapshots=3, max_length=32, runs_dir=str(tmp_path / "runs"), progress=False)
    assert run.status == "completed"
    assert run.config["params"]["trainable"] == run.model.peft.get_nb_trainable_parameters()[0] == \
        run.summary["params"]["by_group"]["prompt"]["trainable"]
    enc = model.tokenizer(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    model.module.eval()
    with torch.no_grad():
        ours = model.module({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        theirs = model.peft(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(ours.logits, model.hf(**enc).logits)  # the prefix is read: not the plain model
    again = tk.load_run(run.path)
    assert tk.evaluate(again, small)["loss"] == pytest.approx(run.summary["val_loss"], rel=1e-5)
    middle = again.snapshot_steps[1]
    assert set(again.load_model(step=middle).snapshot_parameters()) >= {
        n for n in model.snapshot_parameters() if n.startswith("prompt.")}
    assert tk.inspect.prompted(run)[["kind", "tokens"]].values.tolist() == [["prefix", 4]]
    assert tk.inspect.virtual_tokens(run).empty  # keys and values, not words: no nearest vocabulary token
    torch.testing.assert_close(_snippet_logits(run.path / "adapter", path), ours.logits, atol=1e-4, rtol=1e-4)


def test_prefix_tuning_is_refused_in_words_where_peft_cannot_apply_it(tiny):
    from tunekit.arguments import parse_strategies
    from tunekit.run_names import strategy_words
    with pytest.raises(tk.ConfigError, match=r"PrefixTuning is for causal language models.*'classification'.*"
                                             r"PromptTuning"):
        tk.PrefixTuning(tokens=4).count(tiny)
    with pytest.raises(tk.ConfigError, match=r"PrefixTuning\.tokens"):
        tk.PrefixTuning(tokens=0)
    with pytest.raises(tk.ConfigError, match=r"PrefixTuning\.projection"):
        tk.PrefixTuning(projection="yes")
    assert parse_strategies("prefix_tuning:6") == [tk.PrefixTuning(tokens=6)]
    s = tk.PrefixTuning(tokens=6, projection=True)
    assert strategy_words({"strategy": s.describe(), "strategy_label": s.label}) == "prefix tuning (6 tokens, projected)"


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_prefix_started_from_text_reads_as_that_text_before(family, tmp_path):
    """init='text': before any training, the model with the prefix gives each text's tokens the logits
    the plain model gives them after the prefix's own words (its keys and values are the model's own
    for those tokens, at their positions), which a random start does not."""
    path = str(make_tiny(family, tmp_path / "model"))
    model = tk.load_model(path, task="causal_lm")
    words = "The following is a short news article"
    strategy = tk.PrefixTuning(tokens=5, init="text", init_text=words)
    ids = strategy.text_ids(model)
    assert len(ids) == 5 and ids == model.tokenizer(words, add_special_tokens=False)["input_ids"][:5]
    model.adapt(strategy)
    text = model.tokenizer("Markets rose on Monday after the bank cut rates", add_special_tokens=False,
                           return_tensors="pt")["input_ids"]
    model.module.eval()
    with torch.no_grad():
        ours = model.module({"input_ids": text, "attention_mask": torch.ones_like(text)}).logits
        plain = model.peft.get_base_model()(input_ids=torch.cat([torch.tensor([ids]), text], 1)).logits[:, 5:]
    torch.testing.assert_close(ours, plain, atol=1e-4, rtol=1e-4)
    random = tk.load_model(path, task="causal_lm")
    random.adapt(tk.PrefixTuning(tokens=5))
    random.module.eval()
    with torch.no_grad():
        assert not torch.allclose(random.module({"input_ids": text, "attention_mask": torch.ones_like(text)}).logits,
                                  plain, atol=1e-2)
    assert strategy.label == "prefix-5-text" and tk.get_strategy(strategy.describe()) == strategy
    from tunekit.run_names import strategy_words
    assert strategy_words({"strategy": strategy.describe()}) == "prefix tuning (5 tokens, from text)"
    for bad, field in ((dict(init="text"), "PrefixTuning.init_text"), (dict(init="words"), "PrefixTuning.init"),
                       (dict(init_text="x"), "PrefixTuning.init_text"),
                       (dict(init="text", init_text="x", projection=True), "PrefixTuning.init")):
        with pytest.raises(tk.ConfigError, match=re.escape(field)):
            tk.PrefixTuning(**bad)


def test_the_prefix_view_measures_its_keys_and_values_against_the_models_own(tmp_path, small):
    """tk.inspect.prefix_layers: a prefix started from words and not yet moved (a rate of 1e-12) holds
    the model's own keys and values for them, so in every layer its length is the sentence's own
    (ratio 1); a random start's is not. The Weights view and the report draw it with its caption."""
    import shutil
    pytest.importorskip("ipywidgets")
    from tunekit.inspect.ranks import PREFIX_SENTENCE
    from tunekit.inspect.views import instrument_sections
    from tunekit.widgets.views import RunsPanel
    path = str(make_tiny("llama", tmp_path / "model"))
    n = len(tk.load_model(path, task="causal_lm").tokenizer(PREFIX_SENTENCE, add_special_tokens=False)["input_ids"])
    kw = dict(train_size=16, batch_size=8, max_length=32, runs_dir=str(tmp_path / "runs"), progress=False)
    words = tk.train(tk.load_model(path, task="causal_lm"), small,
                     tk.PrefixTuning(tokens=n, init="text", init_text=PREFIX_SENTENCE), lr=1e-12, **kw)
    random = tk.train(tk.load_model(path, task="causal_lm"), small, tk.PrefixTuning(tokens=n), lr=1e-2, **kw)
    table = tk.inspect.prefix_layers([words, random])
    assert len(table) == 2 * 2 * 2  # 2 runs x 2 layers x keys, values
    mine = table[table.run == words.name]
    assert mine["ratio"].tolist() == pytest.approx([1.0] * 4, abs=1e-4)
    assert not table[table.run == random.name]["ratio"].between(0.9, 1.1).all()
    assert tk.inspect.prefix_layers([tk.train(tk.load_model(path, task="causal_lm"), small, tk.LoRA(rank=2),
                                              **kw)]).empty
    fig = tk.plots.prefix_layers(tk.plots.named(table, [words, random]))
    assert len(fig.data) == 4 and fig.layout.title.text.startswith("Learned prefix")
    sections = dict(instrument_sections([words], data=small, n=8))
    assert "Learned prefix" in sections
    folder = tmp_path / "shown"
    shutil.copytree(words.path, folder / words.name)
    panel = RunsPanel(str(folder), small)
    panel.wait()
    panel.select.value = (words.name,)
    panel.show("Weights", wait=True)
    assert panel.state["Weights"] == "drawn", panel.status["Weights"].value
    kids = list(panel.panes["Weights"].children)
    titles = [w.layout.title.text or "" for w in kids if type(w).__name__ == "FigureWidget"]
    assert any(t.startswith("Learned prefix") for t in titles), titles
    assert not any(t.startswith(("Weight change", "Change outside")) for t in titles), "no empty map or bars"
    assert "as if tokens had come before the text" in " ".join(getattr(w, "value", "") for w in kids)
