"""What the cells of one experiment share (issue 21, "cheap where it can be"): each example is
tokenised once, a pristine backbone's probe features and frozen prefixes are computed once per
example, and probe and Freeze cells are scored from shared test features or prefixes; the
results are those of cells that share nothing, and a model that is not pristine shares nothing."""
from __future__ import annotations

import pytest
import torch

import tunekit as tk
from tunekit.cache import feature_cache, prefix_cache
from tunekit.config import ConfigError
from tunekit.evaluation import subset
from tunekit.experiments import runner
from tunekit.sharing import SharedInputs


@pytest.fixture
def kw(tmp_path):
    """fp32, so that the only difference sharing makes is the order of float sums (batches)."""
    return dict(runs_dir=str(tmp_path / "runs"), batch_size=16, progress=False, precision="fp32", seed=0)


def _counting_features(model) -> list[int]:
    """Wrap ``model.module.features`` to record how many rows each call computes."""
    calls, real = [], model.module.features

    def features(input_ids, attention_mask):
        calls.append(len(input_ids))
        return real(input_ids, attention_mask)

    model.module.features = features
    return calls


def test_a_second_probe_computes_features_only_for_rows_it_has_not_seen(tiny_dir, small, kw):
    memo = SharedInputs()
    first = tk.load_model(tiny_dir, label_names=small.label_names)
    tk.Trainer(first, small, tk.Probe(), shared=memo, train_size=16, **kw).run()
    # 16 training rows and the 24 validation rows, each tokenised and run through the backbone once
    assert memo.misses == {"tokens": 40, "features": 40} and memo.hits == {}

    second = tk.load_model(tiny_dir, label_names=small.label_names, seed=1)  # another head, the same backbone
    calls = _counting_features(second)
    run = tk.Trainer(second, small, tk.Probe(), shared=memo, train_size=48, **kw).run()
    # seed 0's 48 examples hold its 16: only the 32 new ones are tokenised and computed
    assert sum(calls) == 32
    assert memo.misses == {"tokens": 72, "features": 72} and memo.hits == {"tokens": 40, "features": 40}
    assert run.summary["cache"][0]["kind"] == "features" and memo.bypassed == []

    # what the memo assembled is what the run would have computed alone (batches differ: fp32 rounding)
    again = tk.Trainer(tk.load_model(tiny_dir, label_names=small.label_names), small, tk.Probe(), shared=memo,
                       train_size=48, **kw)
    shared_split, _ = again._examples()
    alone_split, _ = tk.Trainer(tk.load_model(tiny_dir, label_names=small.label_names), small, tk.Probe(),
                                train_size=48, **kw)._examples()
    assert shared_split.input_ids == alone_split.input_ids and torch.equal(shared_split.labels, alone_split.labels)
    calls = _counting_features(again.model)
    shared = feature_cache(again.model, shared_split, 64, None, memo).features
    assert calls == []  # every row from the memo: the backbone did not run
    alone = feature_cache(again.model, alone_split, 64).features
    assert torch.allclose(shared, alone, atol=1e-5) and not torch.equal(shared, torch.zeros_like(shared))


def test_freeze_cells_share_the_frozen_prefix(tiny_dir, small, kw):
    memo = SharedInputs()
    test = len(small.test)
    for n, size in enumerate((16, 48)):
        model = tk.load_model(tiny_dir, label_names=small.label_names)
        run = tk.Trainer(model, small, tk.Freeze.top(1), shared=memo, train_size=size, **kw).run()
        cached = run.summary["cache"][0]
        assert cached["kind"] == "prefix" and cached["blocks"] == 1
        # scored on the test split from the shared prefix: its trained top block runs on it
        assert runner._test_correct(model, small.test, 16, 128, memo, cached) == \
            runner._test_correct(model, small.test, 16, 128)
        assert memo.hits.get("prefix", 0) == [0, 16 + 24 + test][n]  # the second cell computed no test prefix
    assert memo.misses["prefix"] == 16 + 24 + test + 32 and memo.bypassed == []
    # the last one fully fine-tuned: its frozen block changed, so the shared test prefix is not read
    tk.train(model, small, tk.Full(), train_size=16, **{**kw, "lr": 1e-3})
    hits = memo.hits["prefix"]
    assert runner._test_correct(model, small.test, 16, 128, memo, cached) == \
        runner._test_correct(model, small.test, 16, 128)
    assert memo.hits["prefix"] == hits and memo.bypassed == [
        "it was trained since this memo saw it, and the weights that compute its prefix changed"]
    model = tk.load_model(tiny_dir, label_names=small.label_names)
    split = memo.encode(model, small.train, "train", None, 128)
    alone, _ = prefix_cache(model, split, 1, 64)
    shared, _ = prefix_cache(model, split, 1, 64, None, memo)
    assert len(shared) == len(alone) and all(torch.allclose(a, b, atol=1e-5) for a, b in zip(alone, shared))


def test_a_model_that_is_not_pristine_shares_nothing(tiny_dir, small, kw):
    memo = SharedInputs()
    fresh = tk.load_model(tiny_dir, label_names=small.label_names)
    tk.Trainer(fresh, small, tk.Full(), shared=memo, train_size=16, **kw).run()
    assert "features" not in memo.misses  # full fine-tuning caches no features: only tokens were shared

    # trained before the memo saw it: its features are neither read nor kept
    trained = tk.load_model(tiny_dir, label_names=small.label_names)
    tk.train(trained, small, tk.Full(), train_size=16, **kw)
    tk.Trainer(trained, small, tk.Probe(), shared=memo, train_size=16, **kw).run()
    assert memo.bypassed == ["it was trained before this memo saw it"] * 2  # training and validation rows
    assert "features" not in memo.misses and "features" not in memo.hits

    # seen pristine, then fully fine-tuned: scoring it on the test split must not read the pristine features
    probed = tk.load_model(tiny_dir, label_names=small.label_names)
    tk.Trainer(probed, small, tk.Probe(), shared=memo, train_size=16, **kw).run()
    probe = {"kind": "features"}
    expected = runner._test_correct(probed, small.test, 16, 128)
    assert runner._test_correct(probed, small.test, 16, 128, memo, probe) == expected  # only its head trained
    assert memo.misses["features"] == 40 + 24 and memo.hits.get("features", 0) == 0
    tk.train(probed, small, tk.Full(), train_size=16, **{**kw, "lr": 1e-3})
    bypassed = len(memo.bypassed)
    assert runner._test_correct(probed, small.test, 16, 128, memo, probe) == \
        runner._test_correct(probed, small.test, 16, 128)
    assert memo.bypassed[bypassed:] == ["it was trained since this memo saw it, and the weights that compute "
                                        "its features changed"]
    assert memo.hits.get("features", 0) == 0

    # edited by hand, with no history: another fingerprint, so another backbone: computed, not read
    edited = tk.load_model(tiny_dir, label_names=small.label_names)
    with torch.no_grad():
        edited.hf.bert.encoder.layer[0].output.dense.weight.mul_(1.5)
    split = memo.encode(edited, small.test, "test", None, 128)
    misses = memo.misses["features"]
    feature_cache(edited, split, 64, None, memo)
    assert memo.hits.get("features", 0) == 0 and memo.misses["features"] == misses + len(small.test)


def test_the_budget_bounds_what_is_kept(tiny_dir, small, kw):
    memo = SharedInputs(budget_mb=0)
    tk.Trainer(tk.load_model(tiny_dir, label_names=small.label_names), small, tk.Probe(), shared=memo,
               train_size=16, **kw).run()
    assert memo.mb == 0 and memo.not_kept == {"tokens": 40, "features": 40} and memo.hits == {}
    with pytest.raises(ConfigError, match="budget_mb"):
        SharedInputs(budget_mb=-1)
    with pytest.raises(ConfigError, match="shared must be"):
        tk.Trainer(tk.load_model(tiny_dir, label_names=small.label_names), small, shared={}, **kw)


def test_an_experiment_with_sharing_gives_the_cells_of_one_without(tiny_dir, small, tmp_path, monkeypatch):
    """fp32: every cell's test predictions are the same with and without sharing. Full cells train
    on the same token ids and so are identical; a probe's features and a Freeze run's prefixes
    come in other batches (about 1e-6 apart in fp32), which moves no prediction of this grid. Under bf16
    autocast they are about 5e-3 apart, as with another ``eval_batch_size``, and a prediction on
    the edge may flip: accuracies then agree within a few test examples, not exactly."""
    memos = []

    class Recorded(SharedInputs):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            memos.append(self)

    monkeypatch.setattr(runner, "SharedInputs", Recorded)
    grid = dict(sizes=[16, 48], seeds=2, model=tiny_dir, runs_dir=str(tmp_path / "runs"), eval_size=16,
                batch_size=16, precision="fp32", progress=False)
    strategies = [tk.Probe(), tk.Freeze.top(1), tk.Full()]
    on = tk.experiment(strategies, small, name="shared", **grid)
    off = tk.experiment(strategies, small, name="alone", share=False, **grid)
    assert len(memos) == 1 and len(on.done()) == len(off.done()) == 12
    for key, cell in on.cells.items():
        assert cell["correct"] == off.cells[key]["correct"], key
    memo = memos[0]
    # each row of the union of the seeds' subsets is tokenised once, and computed once per kind
    train = len(set(subset(192, 48, 0)) | set(subset(192, 48, 1)))
    validation = len(set(subset(24, 16, 1)) | set(subset(24, 16, 2)))
    test = len(small.test)
    unique = train + validation + test
    assert memo.misses == {"tokens": unique, "features": unique, "prefix": unique}
    asked = (16 + 16) + (48 + 16)  # a seed's two sizes, training and validation rows
    assert memo.hits == {"tokens": 3 * 2 * asked + 8 * test - unique,  # test: the probe and freeze cells
                         "features": 2 * asked + 4 * test - unique, "prefix": 2 * asked + 4 * test - unique}
    assert memo.bypassed == [] and memo.not_kept == {}
    assert on.grid == off.grid  # sharing is not part of the grid that a resume compares
