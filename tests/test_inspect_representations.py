"""Representation drift: CKA against its mathematics, drift of tiny runs, PCA, figures."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import tunekit as tk
from tunekit.inspect.representations import (
    debiased_cka,
    head_features,
    linear_cka,
    linear_cka_gram,
    pca_features,
    pooled_hidden_states,
    representation_drift,
)
from tunekit.plots.representations import cka_by_layer, pca_scatter


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _orthogonal(d, seed=0):
    q, _ = torch.linalg.qr(_randn(d, d, seed=seed))
    return q


@pytest.fixture(scope="module")
def pair():
    X = _randn(40, 12, seed=1)
    Y = X @ _randn(12, 9, seed=2) + 0.7 * _randn(40, 9, seed=3)
    return X, Y


# ----- CKA: the mathematics ------------------------------------------------------------------------
def test_gram_and_feature_forms_agree(pair):
    X, Y = pair
    assert linear_cka(X, Y) == pytest.approx(linear_cka_gram(X, Y), abs=1e-12)
    # the Gram form centres K = X X^T itself: uncentred inputs with large offsets agree too
    assert linear_cka_gram(X + 50.0, Y - 3.0) == pytest.approx(linear_cka(X, Y), abs=1e-9)
    assert 0.0 < linear_cka(X, Y) < 1.0


def test_accepts_numpy_and_float32(pair):
    X, Y = pair
    ref = linear_cka(X, Y)
    assert linear_cka(X.numpy(), Y.numpy()) == pytest.approx(ref, abs=1e-12)
    assert linear_cka(X.float(), Y.numpy().astype(np.float32)) == pytest.approx(ref, abs=1e-5)
    assert debiased_cka(X.numpy(), Y) == pytest.approx(debiased_cka(X, Y), abs=1e-12)


@pytest.mark.parametrize("fn", [linear_cka, linear_cka_gram, debiased_cka])
def test_invariant_to_orthogonal_maps_and_isotropic_scaling(pair, fn):
    X, Y = pair
    ref = fn(X, Y)
    assert fn(X @ _orthogonal(12, seed=5), Y) == pytest.approx(ref, abs=1e-10)
    assert fn(X, 3.7 * Y @ _orthogonal(9, seed=6)) == pytest.approx(ref, abs=1e-10)
    assert fn(0.01 * X, Y + 4.0) == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("fn", [linear_cka, linear_cka_gram, debiased_cka])
def test_identical_features_give_one(pair, fn):
    X, _ = pair
    assert fn(X, X) == pytest.approx(1.0, abs=1e-12)
    assert fn(X, X.clone()) == pytest.approx(1.0, abs=1e-12)


def test_not_invariant_to_a_general_invertible_map():
    # Two directions of very different variance: stretching the weak one (an invertible but
    # anisotropic map) changes which direction dominates, so CKA falls well below 1.
    X = _randn(200, 2, seed=7) * torch.tensor([10.0, 0.1], dtype=torch.float64)
    A = torch.tensor([[1.0, 0.0], [0.0, 1000.0]], dtype=torch.float64)
    assert torch.linalg.matrix_rank(A) == 2
    assert linear_cka(X, X @ A) < 0.6
    assert linear_cka_gram(X, X @ A) == pytest.approx(linear_cka(X, X @ A), abs=1e-12)


def test_debiased_removes_the_small_sample_bias():
    # n small vs d: independent features look alike to the biased estimate, not to the debiased one
    pairs = [(_randn(32, 1000, seed=s), _randn(32, 1000, seed=100 + s)) for s in range(5)]
    assert min(linear_cka(X, Y) for X, Y in pairs) > 0.9
    debiased = [debiased_cka(X, Y) for X, Y in pairs]
    assert max(abs(v) for v in debiased) < 0.15 and abs(sum(debiased) / len(debiased)) < 0.05
    # with n large the debiased estimate of independent features is ~0
    X, Y = _randn(1500, 20, seed=10), _randn(1500, 20, seed=11)
    assert abs(debiased_cka(X, Y)) < 0.005 < linear_cka(X, Y)


def test_debiased_matches_a_reference_implementation(pair):
    # Kornblith et al.'s centering of the Gram matrix for the unbiased HSIC (numpy)
    def unbiased_centre(g):
        g = g.copy()
        n = g.shape[0]
        np.fill_diagonal(g, 0)
        means = g.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        g -= means[:, None] + means[None, :]
        np.fill_diagonal(g, 0)
        return g

    X, Y = (a.numpy() for a in pair)
    k, l_ = unbiased_centre(X @ X.T), unbiased_centre(Y @ Y.T)
    ref = (k * l_).sum() / (np.linalg.norm(k) * np.linalg.norm(l_))
    assert debiased_cka(X, Y) == pytest.approx(ref, abs=1e-12)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="at least 4 examples"):
        debiased_cka(_randn(3, 5), _randn(3, 5))
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(_randn(5, 3), _randn(6, 3))
    with pytest.raises(ValueError, match="2-D"):
        linear_cka(_randn(5), _randn(5))
    assert math.isnan(linear_cka(torch.ones(5, 3), _randn(5, 3)))


# ----- drift of tiny runs ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tiny_dir, small, tmp_path_factory):
    """probe, LoRA and full runs of the tiny BERT, trained from the same start."""
    return tk.compare(["probe", "lora", "full"], small, model=tiny_dir,
                      runs_dir=str(tmp_path_factory.mktemp("runs")), train_size=64, batch_size=16,
                      progress=False, evals_per_epoch=1)


@pytest.fixture(scope="module")
def drift(runs, small):
    return representation_drift(runs, data=small)


def test_pooled_hidden_states_shape_order_and_determinism(tiny_dir, small):
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    texts = small.validation["text"].tolist()[:10]
    model.module.train()
    states = pooled_hidden_states(model, texts, batch_size=3)
    assert states.shape == (model.num_blocks + 1, 10, model.hidden_size)
    assert model.module.training  # eval mode only while it ran (dropout off: deterministic)
    # batching and length-sorting do not change the result; the text order is kept
    one = torch.stack([pooled_hidden_states(model, [t])[:, 0] for t in texts[:3]], 1)
    torch.testing.assert_close(states[:, :3], one, atol=1e-5, rtol=1e-5)
    assert torch.equal(states, pooled_hidden_states(model, texts, batch_size=3))
    # what the head sees: BERT's pooler output ("model" pooling), or the mean-pooled last layer
    assert model.pooling == "model"
    enc = model.tokenize(texts)
    model.module.eval()
    with torch.no_grad():
        pooler = model.hf.base_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
    torch.testing.assert_close(head_features(model, texts), pooler, atol=1e-5, rtol=1e-5)
    model.pooling = "mean"
    torch.testing.assert_close(head_features(model, texts), states[-1], atol=1e-5, rtol=1e-5)
    assert not model.head()._forward_pre_hooks  # the hook that reads the head's input is gone


def test_probe_drift_is_exactly_one_and_full_drift_is_not(runs, drift, small):
    probe, lora, full = runs
    assert list(drift.columns) == ["run", "label", "layer", "cka", "debiased_cka"]
    assert len(drift) == 3 * 3  # 3 runs x (embeddings + 2 blocks)
    p = drift[drift["run"] == probe.name]
    assert (p["cka"] == 1.0).all() and (p["debiased_cka"] == 1.0).all()
    f = drift[drift["run"] == full.name]
    assert (f["cka"] < 1.0 - 1e-7).any() and (f["cka"] <= 1.0).all()
    lo = drift[drift["run"] == lora.name].set_index("layer")
    assert lo.loc[0, "cka"] == 1.0  # LoRA adapts attention only: the embeddings did not move
    assert drift.attrs["n"] == len(small.validation) == 24  # n=256 > 24: all of them


def test_drift_equals_cka_of_the_pooled_states(runs, small):
    texts = small.validation["text"].tolist()[:12]
    df = representation_drift(runs[2], texts=texts)
    base = pooled_hidden_states(tk.inspect.base_model(runs[2]), texts)
    tuned = pooled_hidden_states(tk.inspect.tuned_model(runs[2]), texts)
    for layer, row in df.set_index("layer").iterrows():
        assert row["cka"] == pytest.approx(linear_cka(base[layer], tuned[layer]), abs=1e-10)
        assert row["debiased_cka"] == pytest.approx(debiased_cka(base[layer], tuned[layer]), abs=1e-10)


def test_one_base_pass_for_runs_that_share_a_base(runs, small, monkeypatch):
    calls = []
    load_start = tk.runs.Run.load_start
    monkeypatch.setattr(tk.runs.Run, "load_start", lambda self, *a: calls.append(self.name) or load_start(self, *a))
    representation_drift(runs, texts=small.validation["text"].tolist()[:8])
    assert len(calls) == 1


def test_drift_of_runs_reloaded_from_disk(runs, drift, small):
    reloaded = [tk.load_run(r.path) for r in runs]
    assert all(r.model is None for r in reloaded)
    again = representation_drift(reloaded, data=small)
    assert again[["run", "layer"]].equals(drift[["run", "layer"]])
    np.testing.assert_allclose(again[["cka", "debiased_cka"]], drift[["cka", "debiased_cka"]], atol=1e-9)
    # a run directory works as well
    assert representation_drift(str(runs[0].path), data=small)["cka"].eq(1.0).all()


def test_drift_needs_examples(runs):
    with pytest.raises(tk.ConfigError, match="texts=.*data="):
        representation_drift(runs[0])
    with pytest.raises(tk.ConfigError, match="at least 4"):
        representation_drift(runs[0], texts=["a", "b", "c"])


# ----- PCA ----------------------------------------------------------------------------------------
def test_pca_features_before_and_after_on_the_same_axes(runs, small):
    probe, lora, full = runs
    df = pca_features(runs, small, n=20, seed=1)
    assert list(df.columns) == ["run", "label", "stage", "x", "y", "class", "text"]
    assert len(df) == 3 * 2 * 20
    assert set(df["class"]) <= set(small.label_names)
    before = df[(df["run"] == probe.name) & (df["stage"] == "before")]
    after = df[(df["run"] == probe.name) & (df["stage"] == "after")]
    np.testing.assert_array_equal(before[["x", "y"]].to_numpy(), after[["x", "y"]].to_numpy())
    # the base's PCs: centred projections, first one the wider
    assert abs(before["x"].mean()) < 1e-9 and before["x"].var() >= before["y"].var()
    fb = df[(df["run"] == full.name) & (df["stage"] == "before")][["x", "y"]].to_numpy()
    fa = df[(df["run"] == full.name) & (df["stage"] == "after")][["x", "y"]].to_numpy()
    np.testing.assert_array_equal(fb, before[["x", "y"]].to_numpy())  # same base, same axes
    assert not np.array_equal(fa, fb)
    la = df[(df["run"] == lora.name) & (df["stage"] == "after")][["x", "y"]].to_numpy()
    assert not np.array_equal(la, fb)  # LoRA's head input (under peft's wrappers) moved too
    ev = df.attrs["explained_variance"]
    assert set(ev) == {r.name for r in runs} and 0 < ev[probe.name][1] <= ev[probe.name][0] < 1
    assert df.attrs["explained_variance_after"][probe.name] == pytest.approx(ev[probe.name])
    # deterministic for a seed
    again = pca_features(runs, small, n=20, seed=1)
    np.testing.assert_array_equal(again[["x", "y"]].to_numpy(), df[["x", "y"]].to_numpy())


# ----- figures ------------------------------------------------------------------------------------
def test_cka_figure_has_one_line_per_run(runs, drift):
    fig = cka_by_layer(drift)
    assert len(fig.data) == len(runs)
    assert [t.name for t in fig.data] == [r.label for r in runs]
    assert list(fig.data[0].x) == [0, 1, 2]
    assert list(fig.layout.xaxis.ticktext) == ["embeddings", "block 0", "block 1"]
    assert fig.layout.yaxis.range[0] == 0.0 and fig.layout.yaxis.range[1] >= 1.0
    assert len(cka_by_layer(drift, metric="debiased_cka").data) == len(runs)
    with pytest.raises(tk.ConfigError, match="metric"):
        cka_by_layer(drift, metric="r2")
    json.dumps(fig.to_plotly_json(), default=str)


def test_pca_scatter_escapes_the_hover_text():
    import pandas as pd
    rows = [{"run": r, "label": r, "stage": s, "x": float(i), "y": 1.0, "class": c, "text": t}
            for r in ("a", "b") for s in ("before", "after")
            for i, (c, t) in enumerate([("good", "<b>bold</b> & co"), ("bad", "plain")])]
    df = pd.DataFrame(rows)
    fig = pca_scatter(df)
    assert len(fig.data) == 2 * 2 * 2  # runs x stages x classes
    hover = [h for t in fig.data for h in t.customdata]
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in hover and "<b>bold" not in " ".join(hover)
    before = [t for t in fig.data if "(before)" in t.name]
    assert all(t.marker.opacity < 0.5 for t in before)
    assert sum(t.showlegend is not False for t in fig.data) == 4  # one legend entry per class x stage


def test_plots_module_imports_no_torch():
    code = ("import sys, tunekit.plots.representations, tunekit.plots; tunekit.plots.cka_by_layer; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----- the real model -----------------------------------------------------------------------------
@pytest.mark.slow
def test_real_minilm_probe_is_unchanged_and_the_base_is_self_similar(rt, tmp_path):
    run = tk.train(tk.load_model(label_names=rt.label_names), rt, tk.Probe(), train_size=32, eval_size=32,
                   runs_dir=str(tmp_path), progress=False, evals_per_epoch=1)
    df = representation_drift(run, data=rt, n=32)
    assert len(df) == 7 and (df["cka"] == 1.0).all()


@pytest.mark.parametrize("kw, words", [
    (dict(seed=2**63), r"seed must be an integer in 0 \.\. 2\*\*32 - 1"), (dict(seed=False), "seed must be"),
    (dict(n=0.0), "n must be a positive integer"), (dict(max_length=1.5), "max_length must be an integer >= 2"),
    (dict(texts=3), "texts must be a list of texts"),
])
def test_drift_and_pca_arguments_are_named(probe_run, small, kw, words):
    """Found by the fuzz (issue 22): seed=2**63 raised numpy's 'Seed must be between 0 and 2**32 - 1',
    seed=False sklearn's random_state error, n=0.0 a TypeError, texts=3 'int is not iterable'."""
    with pytest.raises(tk.ConfigError, match=words):
        tk.inspect.representation_drift(probe_run, data=small, **{"n": 4, **kw})
    if "texts" not in kw:
        with pytest.raises(tk.ConfigError, match=words):
            tk.inspect.pca_features(probe_run, small, **{"n": 4, **kw})


@pytest.fixture
def probe_run(tiny_dir, small, fast):
    return tk.train(tk.load_model(tiny_dir, label_names=small.label_names), small, "probe", **{**fast, "train_size": 16})


def test_drift_clamps_a_max_length_past_the_positions(probe_run):
    with pytest.warns(UserWarning, match="using max_length=512"):
        df = tk.inspect.representation_drift(probe_run, texts=["word " * 700, "a film", "a play", "a book"],
                                                 max_length=10**6)
    assert len(df) == probe_run.model.num_blocks + 1
