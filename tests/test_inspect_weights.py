import math

import numpy as np
import pytest
import torch

import tunekit as tk
from tunekit.inspect import weights as W


@pytest.fixture
def runs(tiny_dir, small, fast):
    return tk.compare([tk.Probe(), tk.Freeze(train_blocks=[1]), tk.LoRA(rank=2), tk.Full()], small,
                      model=tiny_dir, **fast)


def test_frozen_modules_change_exactly_zero(runs):
    wc = W.weight_change(runs)
    probe, freeze, lora, full = (wc[wc.run == r.name] for r in runs)
    assert (probe[probe.group != "head"].delta_norm == 0).all()
    assert (probe[probe.group == "head"].rel_change > 0).all()
    assert (freeze[freeze.group.isin(["embeddings", "block.0"])].delta_norm == 0).all()
    assert (freeze[freeze.group == "block.1"].rel_change > 0).all()
    moved = set(lora[lora.delta_norm > 0].module)
    assert moved == {"query", "value", "head"}  # LoRA's default targets, plus the trained head
    assert (full[full.group.isin(["block.0", "block.1"])].rel_change > 0).all()


def test_same_axes_for_every_strategy(runs):
    wc = W.weight_change(runs)
    keys = [set(map(tuple, wc[wc.run == r.name][["group", "module"]].values.tolist())) for r in runs]
    assert all(k == keys[0] for k in keys)
    mods = set(wc[wc.group == "block.0"].module)
    assert {"query", "key", "value", "attn_out", "intermediate", "output"} <= mods


def test_relative_change_is_the_frobenius_ratio(runs):
    full = runs[-1]
    deltas = W.weight_deltas(full)
    w0, d = deltas["bert.encoder.layer.0.attention.self.query.weight"]
    b0, db = deltas["bert.encoder.layer.0.attention.self.query.bias"]
    row = W.weight_change([full]).query("group == 'block.0' and module == 'query'").iloc[0]
    expected = math.sqrt(float(d.pow(2).sum() + db.pow(2).sum())) / math.sqrt(float(w0.pow(2).sum() + b0.pow(2).sum()))
    assert row.rel_change == pytest.approx(expected, rel=1e-5)
    tuned = dict(full.model.hf.named_parameters())["bert.encoder.layer.0.attention.self.query.weight"]
    torch.testing.assert_close(w0 + d, tuned.detach())


def test_lora_update_is_rank_r_and_base_plus_delta_is_the_merged_weight(tiny_dir, small, fast):
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    run = tk.train(model, small, tk.LoRA(rank=2), **fast)
    deltas = W.weight_deltas(run)
    merged = model.peft.merge_and_unload()  # plain peft folds scale * B @ A into W
    merged_state = dict(merged.named_parameters())
    checked = 0
    for name, (w0, d) in deltas.items():
        if name.endswith(("query.weight", "value.weight")):
            assert torch.linalg.matrix_rank(d.double(), rtol=1e-6) <= 2
            torch.testing.assert_close(w0 + d, merged_state[name].detach(), atol=1e-6, rtol=1e-5)
            checked += 1
    assert checked == 4
    spectra = W.update_spectra([run])
    q = spectra.table[spectra.table.module.isin(["query", "value"])]
    assert (q.energy90 <= 2).all() and (q.effective_rank <= 2 + 1e-6).all() and (q.stable_rank <= 2 + 1e-6).all()
    one = q["name"].iloc[0]  # one matrix alone (the Weights view's slider draws one): the same numbers
    alone = W.update_spectra([run], names=[one])
    assert list(alone.table["name"]) == [one] and list(alone.singular_values) == [(run.name, one)]
    assert alone.table.iloc[0].to_dict() == spectra.table[spectra.table["name"] == one].iloc[0].to_dict()


def test_instruments_work_on_a_run_reloaded_from_disk(runs):
    live = W.weight_change(runs[2:])
    again = W.weight_change([tk.load_run(r.path) for r in runs[2:]])
    torch.testing.assert_close(torch.tensor(again.delta_norm.values), torch.tensor(live.delta_norm.values),
                               atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("r", [1, 3, 7])
def test_rank_measures_on_matrices_of_known_rank(r):
    g = torch.Generator().manual_seed(r)
    u, _ = torch.linalg.qr(torch.randn(64, r, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(48, r, generator=g, dtype=torch.float64))
    a = u @ torch.diag(torch.full((r,), 2.5, dtype=torch.float64)) @ v.T  # r equal singular values
    s = W.singular_values(a)
    assert W.effective_rank(s) == pytest.approx(r, rel=1e-6)
    assert W.stable_rank(s) == pytest.approx(r, rel=1e-6)
    assert W.energy_rank(s, 0.9) == math.ceil(0.9 * r)
    assert W.energy_rank(s, 1.0) == r
    torch.testing.assert_close(s[:r], torch.full((r,), 2.5, dtype=torch.float64))
    assert float(s[r:].abs().max()) < 1e-6


def test_rank_measures_on_a_spread_spectrum_and_zero():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0], dtype=torch.float64)
    p = s / s.sum()
    assert W.effective_rank(s) == pytest.approx(float(torch.exp(-(p * p.log()).sum())))
    assert W.stable_rank(s) == pytest.approx((16 + 4 + 1 + 1) / 16)
    assert W.energy_rank(s, 0.9) == 2  # 20 / 22 = 0.909
    zero = torch.zeros(5, dtype=torch.float64)
    assert (W.effective_rank(zero), W.stable_rank(zero), W.energy_rank(zero)) == (0.0, 0.0, 0)


def test_singular_values_and_vectors_match_a_full_svd():
    a = torch.randn(96, 40, generator=torch.Generator().manual_seed(0))
    for m in (a, a.T):
        ref = torch.linalg.svd(m.double(), full_matrices=False)
        torch.testing.assert_close(W.singular_values(m), ref.S, atol=1e-9, rtol=1e-9)
        u = W.left_singular_vectors(m, 5)
        cos = (u.double().T @ ref.U[:, :5]).abs().diagonal()
        assert float((cos - 1).abs().max()) < 1e-4


def test_intruder_dimensions():
    g = torch.Generator().manual_seed(0)
    w0 = torch.linalg.qr(torch.randn(32, 32, generator=g, dtype=torch.float64))[0][:, :8] @ \
        torch.diag(torch.arange(8, 0, -1, dtype=torch.float64)) @ torch.randn(8, 24, generator=g, dtype=torch.float64)
    # W0 has rank 8, so its left singular vectors beyond 8 are arbitrary; use k <= 8 for a clean test
    assert W.intruder_dimensions(w0, w0, k=5)[0] == 0
    x = torch.zeros(32, dtype=torch.float64)
    x[0] = 1.0
    x = x - W.left_singular_vectors(w0, 8).double() @ (W.left_singular_vectors(w0, 8).double().T @ x)
    x = x / x.norm()  # a direction orthogonal to W0's column space
    spike = 100.0 * torch.outer(x, torch.randn(24, generator=g, dtype=torch.float64)).div(5)
    count, cos = W.intruder_dimensions(w0 + spike, w0, k=5, u0=W.left_singular_vectors(w0, 8).double())
    assert count == 1 and min(cos) < 0.5


def test_noise_reference_is_gaussian_noise_of_the_updates_shape_and_norm(runs):
    """The dotted line of the spectra plot: what an unstructured update of the same size would
    look like. Checked against an independent Gaussian sample (numpy's generator and SVD): the
    spectra of two such samples agree to a few % of the largest value at 128 x 128."""
    sp = W.update_spectra(runs[2:])  # LoRA rank 2, full fine-tune
    for run in runs[2:]:
        (key, s), = [(k, v) for k, v in sp.singular_values.items()
                     if k[0] == run.name and k[1].endswith("layer.0.attention.self.query.weight")]
        s, noise = np.array(s), np.array(sp.noise[key])
        norm = float(np.sqrt((s ** 2).sum()))
        g = np.random.default_rng(12345).standard_normal((128, 128))
        reference = np.linalg.svd(g * norm / np.linalg.norm(g), compute_uv=False)
        assert noise.shape == reference.shape and np.all(np.diff(noise) <= 0), run.name
        assert np.abs(noise - reference).max() < 0.08 * reference[0], run.name
        assert float(np.sqrt((noise ** 2).sum())) == pytest.approx(norm, rel=1e-6)
        if run is runs[2]:  # a rank-2 update sits far from its noise line: 2 directions against ~100
            assert W.effective_rank(torch.tensor(s)) <= 2 + 1e-6 < 90 < W.effective_rank(torch.tensor(noise))


def test_runs_that_never_trained_are_left_out_with_a_warning(tiny_dir, small, fast):
    """A run with no step (stopped before it began, or failed at once) would pose as its own base."""
    from tunekit.config import ConfigError

    done = tk.train(tk.load_model(tiny_dir, label_names=small.label_names), small, tk.Full(), **fast)
    trainer = tk.Trainer(tk.load_model(tiny_dir, label_names=small.label_names), small, tk.Full(), **fast)
    trainer.stop()
    idle = trainer.run()
    assert idle.summary["steps"] == 0 and idle.status == "stopped"
    with pytest.warns(UserWarning, match=f"run '{idle.name}' \\(stopped\\) took no training step"):
        wc = W.weight_change([done, idle])
    assert set(wc["run"]) == {done.name}
    with pytest.raises(ConfigError, match="none of the runs took a training step"), pytest.warns(UserWarning):
        W.weight_change([idle])
