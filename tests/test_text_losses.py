"""Per-text losses of a language model and the perplexity's interval over texts and seeds."""
import math

import numpy as np
import pytest
import torch

import tunekit as tk
from tunekit.config import ConfigError
from tunekit.metrics import bootstrap_mean, paired_perplexity, perplexity_interval


@pytest.fixture(scope="module")
def articles():
    bbc = tk.data.bbc_news()
    return tk.data.from_texts(bbc.train["text"].tolist()[:60], name="bbc-texts", validation_size=12, test_size=12)


def test_text_losses_are_each_texts_own_and_add_up_to_evaluate(tiny_llama, articles):
    model = tk.load_model(tiny_llama, task="causal_lm")
    df = tk.text_losses(model, articles, "test", size=9, seed=3, batch_size=4, max_length=40)
    assert list(df.columns) == ["text", "loss", "tokens"] and len(df) == 9
    # the split's seeded subset, in its order (evaluate reads the same texts)
    from tunekit.evaluation import subset
    test = articles.split("test")
    assert df["text"].tolist() == test.iloc[subset(len(test), 9, 3)]["text"].tolist()
    assert (df["tokens"] > 0).all() and np.isfinite(df["loss"]).all()
    said = tk.evaluate(model, articles, "test", size=9, seed=3, batch_size=4, max_length=40)
    weighted = float((df["loss"] * df["tokens"]).sum() / df["tokens"].sum())
    assert weighted == pytest.approx(said["loss"], rel=1e-5)
    assert df.attrs["metrics"]["perplexity"] == pytest.approx(said["perplexity"], rel=1e-6)
    # one text by hand: transformers' own loss on it alone (no padding, no batch)
    text = df["text"].iloc[0]
    ids = torch.tensor([model.tokenizer(text, truncation=True, max_length=40)["input_ids"]])
    with torch.no_grad():
        own = model.module.hf(input_ids=ids, labels=ids).loss.item()
    assert df["loss"].iloc[0] == pytest.approx(own, rel=1e-4) and df["tokens"].iloc[0] == ids.shape[1] - 1
    with pytest.raises(ConfigError, match="text_losses\\(\\) is for language models"):
        tk.text_losses(tk.load_model(tiny_llama, label_names=["a", "b"]), articles)


def test_the_weighted_bootstrap_is_the_token_weighted_mean():
    rng = np.random.default_rng(0)
    losses = rng.normal(3.0, 0.5, size=(2, 50))
    tokens = rng.integers(5, 60, size=50)
    mean, lo, hi = bootstrap_mean(losses, weights=tokens)
    assert mean == pytest.approx(np.average(losses, axis=1, weights=tokens).mean())
    assert lo < mean < hi
    assert bootstrap_mean(losses, weights=np.ones(50)) == pytest.approx(bootstrap_mean(losses))  # equal weights
    # a text that holds almost every token pulls the mean to its own loss
    heavy = tokens.copy()
    heavy[7] = 10 ** 6
    assert bootstrap_mean(losses, weights=heavy)[0] == pytest.approx(losses[:, 7].mean(), abs=0.01)
    with pytest.raises(ValueError, match="weights"):
        bootstrap_mean(losses, weights=np.zeros(50))

    ppl, low, high = perplexity_interval(losses, tokens)
    assert (ppl, low, high) == pytest.approx((math.exp(mean), math.exp(lo), math.exp(hi)))
    assert perplexity_interval(losses[0], tokens)[0] == pytest.approx(math.exp(np.average(losses[0], weights=tokens)))

    same = paired_perplexity(losses, losses, tokens, "a", "b")
    assert same["ratio"] == pytest.approx(1.0) and same["inside_noise"] and same["said"].endswith("inside the noise")
    better = paired_perplexity(losses - 0.1, losses, tokens, "a", "b")
    assert better["ratio"] == pytest.approx(math.exp(-0.1)) and better["said"].endswith("a better")
    assert "over 50 texts x 2 seeds" in better["said"]
    noisy = paired_perplexity(losses + rng.normal(0, 0.5, size=losses.shape), losses, tokens, "a", "b")
    assert noisy["low"] < 1 < noisy["high"] and noisy["inside_noise"]
    with pytest.raises(ValueError, match="equally shaped"):
        paired_perplexity(losses, losses[:, :10], tokens)
