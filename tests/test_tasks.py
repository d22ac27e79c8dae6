"""Tasks as modules: one forward returns the loss; causal LM end to end on a tiny Llama;
public evaluation equals what the engine records; DDP wraps the whole computation."""
import math

import pytest
import torch

import tunekit as tk
from tunekit.config import ConfigError
from tunekit.tiny import make_tiny


@pytest.fixture(scope="session")
def articles():
    """Real BBC News articles as plain text (labels dropped), 120 of them."""
    bbc = tk.data.bbc_news()
    return tk.data.from_texts(bbc.train["text"].tolist()[:120], name="bbc-texts", validation_size=24,
                              test_size=16)


# ----- one module, one forward ---------------------------------------------------------------------
def test_the_task_module_returns_the_loss_for_a_batch(tiny, small):
    enc = tiny.tokenize(small.train["text"][:4].tolist())
    labels = torch.tensor(small.train["label"][:4].tolist())
    out = tiny.module({**enc, "labels": labels})
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
    assert out.logits.shape == (4, 2) and out.count == 4
    no_labels = tiny.module(dict(enc))
    assert no_labels.loss is None
    assert isinstance(tiny.module, torch.nn.Module) and tiny.hf in list(tiny.module.children())


def test_causal_lm_loss_is_the_models_own_shifted_loss_without_padding(tiny_llama):
    m = tk.load_model(tiny_llama, task="causal_lm")
    assert m.task.name == "causal_lm" and m.group_names[-1] == "head" and m.label_names == []
    enc = m.tokenize(["a short one", "a somewhat longer text than the other"])
    m.module.eval()
    with torch.no_grad():
        out = m.module(dict(enc))
        alone = m.module(dict(m.tokenize(["a short one"])))
        logits = m.hf(**enc).logits
    # by hand: predict token t+1 from t, over real tokens only
    ids, mask = enc["input_ids"], enc["attention_mask"]
    target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    by_hand = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                ignore_index=-100)
    torch.testing.assert_close(out.loss, by_hand)
    assert out.count == int(mask[:, 1:].sum())
    assert alone.count == int(m.tokenize(["a short one"])["attention_mask"].sum()) - 1


def test_causal_lm_needs_a_decoder(tiny_dir, tmp_path):
    with pytest.raises(ConfigError, match="needs a decoder, but BertLMHeadModel .* lets each token see the tokens after"):
        tk.load_model(tiny_dir, task="causal_lm")
    with pytest.raises(ConfigError, match="needs a model with a causal language-model head"):
        tk.load_model(str(make_tiny("distilbert", tmp_path / "d")), task="causal_lm")
    for family in ("gpt2", "qwen2"):
        m = tk.load_model(str(make_tiny(family, tmp_path / family)), task="causal_lm")
        assert m.task.name == "causal_lm"


def test_causal_lm_refuses_classification_only_things(tiny_llama):
    with pytest.raises(ConfigError, match="task 'causal_lm' takes no label_names"):
        tk.load_model(tiny_llama, task="causal_lm", label_names=["a", "b"])
    with pytest.raises(ConfigError, match="task must be one of"):
        tk.load_model(tiny_llama, task="translation")
    m = tk.load_model(tiny_llama, task="causal_lm")
    with pytest.raises(ConfigError, match="Probe trains a classification head.*'causal_lm'"):
        tk.Probe().count(m)


@pytest.mark.parametrize("strategy", [tk.LoRA(rank=4), tk.IA3(), tk.Freeze.top(1), tk.Full()],
                         ids=lambda s: s.label)
def test_causal_lm_training_lowers_held_out_perplexity(tiny_llama, articles, tmp_path, strategy):
    m = tk.load_model(tiny_llama, task="causal_lm")
    before = tk.evaluate(m, articles)
    run = tk.train(m, articles, strategy, epochs=2, batch_size=8, max_length=64, lr=3e-3,
                   runs_dir=str(tmp_path), progress=False)
    s = run.summary
    assert run.config["task"] == "causal_lm" and run.status == "completed"
    assert {"val_loss", "val_perplexity"} <= set(s) and "val_accuracy" not in s
    assert s["val_perplexity"] == pytest.approx(math.exp(s["val_loss"]))
    assert s["val_perplexity"] < before["perplexity"]
    # the run evaluated on its cache of the frozen blocks (freeze): the same numbers, up to rounding
    assert tk.evaluate(run, articles)["perplexity"] == pytest.approx(s["val_perplexity"], rel=1e-4)
    with pytest.raises(ConfigError, match="trained on 'bbc-texts', which is not a built-in data set"):
        tk.evaluate(run)
    reloaded = tk.load_run(run.path)
    row = reloaded.row()
    assert row["perplexity"] == s["val_perplexity"] and "accuracy" not in row and row["task"] == "causal_lm"
    assert tk.evaluate(reloaded, articles)["perplexity"] == pytest.approx(s["val_perplexity"], rel=1e-5)


def test_from_texts_reads_paragraphs_and_refuses_bad_input(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("First paragraph,\nstill the first.\n\nSecond one.\n\n\nThird.\n\nSecond one.\n")
    d = tk.data.from_texts(f, validation_size=1, test_size=1)
    texts = sorted(d.train["text"].tolist() + d.validation["text"].tolist() + d.test["text"].tolist())
    assert texts == ["First paragraph,\nstill the first.", "Second one.", "Third."]
    assert d.info["duplicates_dropped"] == 1 and d.name == "notes" and d.label_names == ["text"]
    with pytest.raises(tk.DataError, match="does not exist"):
        tk.data.from_texts(tmp_path / "missing.txt")
    with pytest.raises(tk.DataError, match="at least 3 distinct"):
        tk.data.from_texts(["one", "one", ""])
    with pytest.raises(tk.DataError, match="item 1 is int"):
        tk.data.from_texts(["one", 2, "three"])


# ----- public evaluation ---------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", [tk.Full(), tk.Probe(), tk.LoRA(rank=2)], ids=lambda s: s.label)
def test_evaluate_gives_the_numbers_the_run_recorded(tiny_dir, small, fast, strategy):
    run = tk.train(tk.load_model(tiny_dir, label_names=small.label_names), small, strategy, eval_size=20, **fast)
    recorded = {k: run.summary[f"val_{k}"] for k in ("accuracy", "macro_f1", "loss")}
    live = tk.evaluate(run, small)
    reloaded = tk.evaluate(tk.load_run(run.path), small)
    for got in (live, reloaded):
        assert got["examples"] == 20
        assert got["accuracy"] == recorded["accuracy"] and got["macro_f1"] == recorded["macro_f1"]
        assert got["loss"] == pytest.approx(recorded["loss"], rel=1e-5)  # the probe recorded it on cached features
    test = tk.evaluate(run, small, split="test")
    assert test["examples"] == len(small.test)
    with pytest.raises(ConfigError, match="split must be one of"):
        tk.evaluate(run, small, split="dev")


def test_evaluate_a_model_needs_data_with_its_labels(tiny, small, tiny_dir):
    with pytest.raises(ConfigError, match="evaluate needs data"):
        tk.evaluate(tiny)
    three = tk.load_model(tiny_dir, num_labels=3)
    with pytest.raises(ConfigError, match=r"are not the model.s \[.LABEL_0., .LABEL_1., .LABEL_2.\]"):
        tk.evaluate(three, small)
    assert 0 <= tk.evaluate(tiny, small, size=8)["accuracy"] <= 1


# ----- one wrapper wraps everything ----------------------------------------------------------------
@pytest.mark.parametrize("strategy", [tk.LoRA(rank=2), tk.Probe(), tk.Full()], ids=lambda s: s.label)
def test_ddp_in_a_one_process_gloo_group_trains_through_the_wrapper(tiny, small, fast, tmp_path, strategy):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        wrappers, calls = [], []

        def wrap(module):
            ddp = DDP(module)
            ddp.register_forward_pre_hook(lambda *_: calls.append(1))
            wrappers.append(ddp)
            return ddp

        before = {n: p.detach().clone() for n, p in tiny.hf.named_parameters()}
        run = tk.train(tiny, small, strategy, wrap=wrap, **fast)
    finally:
        dist.destroy_process_group()
    assert run.status == "completed" and len(wrappers) == 1 and wrappers[0].module is tiny.module
    steps, evals = run.summary["steps"], len(run.history("eval"))
    assert len(calls) == steps and evals  # every step went through the wrapper; evaluation does not
    # (a DDP forward is a collective, and processes evaluate unequal shares)
    layout = tiny.backbone.layout  # the head of a LoRA run trains as peft's copy of the original
    moved = [n for n, p in tiny.hf.named_parameters()
             if p.requires_grad and layout.role(n) != "adapter" and not torch.equal(before[layout.canonical(n)], p)]
    assert moved, "no trainable tensor changed through the DDP wrapper"


def test_each_task_collates_its_own_batches(tiny, tiny_llama, small):
    enc = tiny.task.encode(tiny.tokenizer, small.train["text"][:3], small.train["label"][:3], 32)
    batch = enc.collate([0, 1, 2])
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["labels"].tolist() == small.train["label"][:3].tolist()
    lm = tk.load_model(tiny_llama, task="causal_lm")
    enc = lm.task.encode(lm.tokenizer, ["a b c d e", "f g"], [0, 0], 32)
    batch = enc.collate([0, 1])
    # and each text's place in its split (tk.text_losses keeps each text's loss by it)
    assert enc.labels is None and set(batch) == {"input_ids", "attention_mask", "labels", "index"}
    assert batch["index"].tolist() == [0, 1]
    # the targets are the ids, padding left out of the loss (as transformers' LM collator does)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert torch.equal(batch["labels"], ids.masked_fill(mask == 0, -100)) and (batch["labels"][1] == -100).any()
