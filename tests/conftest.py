"""Shared fixtures: a tiny random BERT (saved to disk, so runs can reload it) and
small slices of the real built-in data."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tunekit as tk  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A 2-block x 128 random-init BERT with the MiniLM tokenizer."""
    return str(tk.make_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def rt():
    return tk.data.rotten_tomatoes()


@pytest.fixture(scope="session")
def small(rt):
    """240 real reviews (deduplicated, stratified): 192 train / 24 validation / 24 test."""
    df = rt.train.iloc[:240].assign(label=lambda d: d["label"].map(dict(enumerate(rt.label_names))))
    return tk.data.from_dataframe(df, label_names=rt.label_names, validation_size=24, test_size=24,
                                  name="rt-small")


@pytest.fixture
def tiny(tiny_dir, small):
    return tk.load_model(tiny_dir, label_names=small.label_names)


@pytest.fixture
def fast(tmp_path):
    """TrainConfig overrides for quick runs."""
    return dict(runs_dir=str(tmp_path / "runs"), train_size=64, batch_size=16, progress=False,
                evals_per_epoch=2)
